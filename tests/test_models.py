"""Models and training: every backend follows the same loss curve from the same weights and
batches; an LSTM learns the adding problem; the training records and ``rnnbench train``."""
import json

import numpy as np
import pytest

import impls
from impls.models import ModelIO, build_trainer
from impls.spec import RNNSpec
from rnnbench import cli, tasks
from rnnbench.config import ConfigError
from rnnbench.store import TRAINING_FIELDS
from rnnbench.jobs import TrainJob
from rnnbench.sweep import training_jobs
from rnnbench.train import failure_record, run_training

# float32, 20 Adam steps: the backends' sums differ in their last bits and Adam carries the
# differences forward; measured worst relative gap 1.4e-5 (jax_scan), 4e-7 (torch_eager, triton).
CURVE_RTOL = 1e-4
STEPS = 20


def loss_curve(backend, task_name, seq_len, hidden, batch, steps=STEPS, seed=0, lr=1e-2, cell="lstm"):
    """Losses of ``steps`` Adam steps from seeded weights on seeded batches (what run_training does)."""
    task = tasks.get(task_name, seq_len=seq_len, seed=seed)
    trainer = build_trainer(backend, RNNSpec(cell, hidden, hidden), ModelIO(**task.io()), lr=lr, seed=seed,
                            forget_bias=2.0)
    batches = np.random.default_rng([seed, 2])
    return np.array([trainer.step(*task.train_batch(batches, batch))["loss"] for _ in range(steps)])


def usable(backend):
    ok, reason = impls.available(backend, "cpu")
    if not ok:
        pytest.skip(f"{backend}: {reason}")


@pytest.mark.parametrize("backend, task_name, seq_len", [
    ("torch_eager", "copy", 5),  # embedding in, a loss at every step
    ("torch_eager", "adding", 10),  # linear in, a loss at the last step
    ("jax_scan", "copy", 5),
    pytest.param("jax_scan", "adding", 10, marks=pytest.mark.slow),
    ("triton", "adding", 4),  # under the interpreter on a CPU: a tiny case
])
def test_loss_curves_agree_with_torch_cudnn(backend, task_name, seq_len):
    usable(backend)
    hidden, batch = 16, (4 if backend == "triton" else 8)
    ref = loss_curve("torch_cudnn", task_name, seq_len, hidden, batch)
    got = loss_curve(backend, task_name, seq_len, hidden, batch)
    assert ref[-1] < ref[0]  # it trains
    np.testing.assert_allclose(got, ref, rtol=CURVE_RTOL)


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_parallel_cells_train_alike_sequential_and_parallel(cell):
    """minGRU/minLSTM: the parallel scans (torch log space, JAX associative) follow the sequential loop's
    loss curve from the same weights and batches, and it falls."""
    ref = loss_curve("torch_eager", "copy", 5, 16, 8, cell=cell)
    assert ref[-1] < ref[0]
    for backend in ("torch_scan", "jax_minscan_assoc"):
        usable(backend)
        np.testing.assert_allclose(loss_curve(backend, "copy", 5, 16, 8, cell=cell), ref, rtol=CURVE_RTOL,
                                   err_msg=backend)


@pytest.mark.slow  # JAX compiles a whole transformer training step; test_transformer checks the model itself
def test_baseline_trains_in_both_frameworks_from_the_same_weights():
    usable("transformer_jax")
    torch_curve = loss_curve("transformer_sdpa", "adding", 6, 16, 8, lr=1e-3)
    jax_curve = loss_curve("transformer_jax", "adding", 6, 16, 8, lr=1e-3)
    assert torch_curve[-1] < torch_curve[0]
    np.testing.assert_allclose(jax_curve, torch_curve, rtol=CURVE_RTOL)


def test_lstm_learns_adding_quick():
    recs = run_training(TrainJob("adding", "torch_cudnn", hidden=32, seq_len=10, batch=32, steps=150,
                                    eval_every=50))
    assert recs[-1]["status"] == "ok"
    assert recs[-1]["metric"] < 0.05 < recs[-1]["baseline_metric"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch_cudnn", "torch_eager", "jax_scan"])
def test_lstm_learns_adding_at_T50(backend):
    usable(backend)
    recs = run_training(TrainJob("adding", backend, seq_len=50))  # the default short setting
    assert recs[-1]["metric"] < 0.05, [r["metric"] for r in recs if r["metric"] is not None]


def test_training_records_follow_the_schema():
    cfg = TrainJob("adding", "torch_cudnn", hidden=16, seq_len=10, batch=8, steps=5, eval_every=2)
    recs = run_training(cfg)
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5]
    for r in recs:
        for field in ("kind", "backend", "backend_kind", "framework", "impl_label", "device", "dtype", "cell",
                      "layers", "batch", "seq_len", "input_size", "hidden", "status", "message", "threads",
                      "matmul_precision", *TRAINING_FIELDS):
            assert field in r, field
        assert r["kind"] == "training" and r["status"] == "ok" and r["step_s"] > 0 and r["nan_count"] == 0
        assert r["baseline_metric"] == pytest.approx(1 / 6)
    assert [r["metric"] is not None for r in recs] == [False, True, False, True, True]
    np.testing.assert_allclose([r["loss"] for r in recs], loss_curve("torch_cudnn", "adding", 10, 16, 8, steps=5),
                               rtol=1e-6)  # the harness feeds the same batches as the helper above
    json.dumps(recs)  # a record is plain JSON


def test_failures_are_records_and_bad_input_is_a_config_error():
    if impls.available("torch_cudnn", "cuda")[0]:
        pytest.skip("a CUDA device is present")
    recs = run_training(TrainJob("adding", "torch_cudnn", device="cuda", steps=2))
    assert len(recs) == 1 and recs[0]["status"] == "unsupported" and recs[0]["kind"] == "training"
    rec = failure_record(TrainJob("copy", "torch_eager"), "timeout", "killed")
    assert rec["status"] == "timeout" and rec["task"] == "copy" and rec["framework"] == "torch"
    with pytest.raises(ConfigError, match="valid: copy, adding"):
        TrainJob("nope", "torch_cudnn")
    with pytest.raises(ConfigError, match="valid: torch_eager"):
        run_training(TrainJob("copy", "nope"))
    with pytest.raises(ConfigError, match="fixed length of 64"):
        run_training(TrainJob("seqdigits", "torch_cudnn", seq_len=10))
    with pytest.raises(ConfigError, match="from 1 to 246"):  # sunspots: 309 years, the last 20% held out
        run_training(TrainJob("forecast", "torch_cudnn", seq_len=247))


def test_config_round_trips_and_fills_task_defaults():
    cfg = TrainJob("copy", "torch_cudnn")
    default = tasks.TASKS["copy"].default
    assert (cfg.seq_len, cfg.hidden, cfg.steps, cfg.batch, cfg.lr) == (
        default.seq_len, default.hidden, default.steps, default.batch, default.lr)
    assert TrainJob.from_dict({"job": "train", **cfg.to_dict()}) == cfg


def test_tasks_suite_covers_every_task_at_its_short_setting():
    jobs = training_jobs({"backends": ["torch_cudnn", "jax_scan"], "seq_len": [20]})
    assert {(j.task, j.backend) for j in jobs} == {(t, b) for t in tasks.names() for b in ("torch_cudnn", "jax_scan")}
    for j in jobs:  # a length override reaches only the tasks whose length is free
        assert j.seq_len == (64 if j.task.startswith("seqdigits") else 20)
    defaults = {j.backend for j in training_jobs({})}
    assert "torch_cudnn" in defaults and "triton" not in defaults  # no interpreter in the default set


def test_training_job_runs_in_a_fresh_process():
    from rnnbench.sweep import run_in_child

    recs = run_in_child(TrainJob("forecast", "torch_cudnn", hidden=8, seq_len=8, steps=3, batch=4))
    assert [(r["kind"], r["status"], r["step"]) for r in recs] == [("training", "ok", s) for s in (1, 2, 3)]


def test_rnnbench_train_cli(tmp_path, capsys):
    out = tmp_path / "runs"
    assert cli.main(["train", "--task", "forecast", "--backend", "torch_cudnn", "--hidden", "8", "--seq-len", "8",
                     "--steps", "3", "--out", str(out), "--machine", "m"]) == 0
    (run_dir,) = (out / "m").iterdir()
    recs = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and recs[-1]["metric"] is not None and recs[-1]["run_id"] == run_dir.name
    assert "forecast" in capsys.readouterr().out
    for bad in (["--task", "nope", "--backend", "torch_cudnn"], ["--task", "copy", "--backend", "nope"],
                ["--task", "copy", "--backend", "torch_cudnn", "--cell", "nope"]):
        assert cli.main(["train", *bad, "--out", str(tmp_path / "bad")]) == 2
        assert not (tmp_path / "bad").exists()
        assert "valid:" in capsys.readouterr().err


def test_resume_of_a_tasks_suite_over_two_cells_trains_both(tmp_path):
    """The resume key of a training job holds every identity field: the second cell is not skipped."""
    from rnnbench import store
    from rnnbench.sweep import run_sweep

    jobs = [TrainJob("adding", "torch_eager", cell, hidden=4, seq_len=6, batch=4, steps=2, eval_every=2)
            for cell in ("lstm", "gru")]
    run = store.Run.create(tmp_path, "m", {"jobs": [j.to_dict() for j in jobs]})
    run_sweep(run, jobs[:1], progress=False)  # interrupted after the first cell
    run_sweep(store.Run.resume(run.path), jobs, progress=False)
    cells = [r["cell"] for r in store.read_records(run.path / store.RECORDS)]
    assert cells == ["lstm", "lstm", "gru", "gru"]  # two steps each, the first not repeated

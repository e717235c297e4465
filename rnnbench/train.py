"""Short training runs of any backend on any task: ``rnnbench train`` and the ``tasks`` suite.

Every backend starts from the same weights (seeded NumPy, ``impls.models``) and
sees the same batches (one generator seeded by the run's seed), so the loss
curves of two backends differ only by their arithmetic.  Each step's loss,
gradient norm (before clipping), NaN count and time are recorded; the task's
metric is computed on its fixed validation set every ``eval_every`` steps and at
the end, beside the task's naive baseline.

A step's time is one ``trainer.step`` on the harness's device timer
(the runner's ``timer`` hook, as ``rnnbench.measure`` uses: sync, clock, call,
sync); it includes copying the batch to the device, not generating it.  The job
itself (``rnnbench.jobs.TrainJob``) holds the settings and their defaults.
"""
from __future__ import annotations

import math
import time

import numpy as np

from .config import backend_identity
from .suites import SETTINGS


def failure_record(cfg, status: str, message: str) -> dict:
    """A training record for a run that did not train (unsupported, error, timeout, oom)."""
    return {"kind": "training", **cfg.record_fields, "status": status, "message": message[-2000:], "step": None,
            **backend_identity(cfg.backend)}


def run_training(cfg) -> list[dict]:
    """Train, and return one record per step (the metric on evaluation steps and the last one)."""
    import impls
    from impls.models import ModelIO, build_trainer
    from impls.runner import hook
    from impls.spec import RNNSpec

    from . import tasks
    from .measure import classify

    cfg.validate()
    try:
        ok, reason = impls.available(cfg.backend, cfg.device)
        if not ok:
            return [failure_record(cfg, "unsupported", reason)]
        task = tasks.get(cfg.task, cfg.seq_len, cfg.seed)
        spec = RNNSpec(cfg.cell, cfg.input_size, cfg.hidden, cfg.layers)
        trainer = build_trainer(cfg.backend, spec, ModelIO(**task.io()), cfg.device, cfg.dtype, cfg.seed,
                                cfg.lr, cfg.clip, cfg.forget_bias)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a record
        return [failure_record(cfg, classify(exc), f"{type(exc).__name__}: {exc}")]
    backend = impls.get(cfg.backend)
    base = {
        "kind": "training", **cfg.record_fields, "status": "ok", "message": "",
        "backend_kind": impls.kind_of(cfg.backend), "framework": backend.framework,
        "impl_label": trainer.runner.impl_label(), "threads": hook(trainer.runner, "threads")(),
        "matmul_precision": hook(trainer.runner, "matmul_precision")(),
        "baseline_metric": task.baseline(), "metric_name": task.metric_name, "data_sha256": task.data_sha256(),
        "param_count": trainer.param_count(),
    }
    attention = hook(trainer.runner, "attention_kernel")()
    if attention is not None:  # a transformer baseline: which attention kernel ran
        base["sdpa_kernel"] = attention
    timer = hook(trainer.runner, "timer")(trainer.sync)
    batches = np.random.default_rng([cfg.seed, 2])  # the same batches for every backend
    x_val, y_val = task.validation()
    records = []
    start = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        x, y = task.train_batch(batches, cfg.batch)
        out = {}
        try:
            step_s = timer.time(lambda: out.update(trainer.step(x, y)))
        except Exception as exc:  # noqa: BLE001
            records.append({**base, "step": step, "status": classify(exc), "message": f"{type(exc).__name__}: {exc}"})
            break
        rec = {**base, "step": step, **out, "step_s": step_s, "metric": None, "beats_baseline": None}
        stop = None
        if not math.isfinite(out["loss"]):
            stop = ("error", f"non-finite loss at step {step}; stopped")
        elif time.perf_counter() - start > SETTINGS.timeout_share * cfg.timeout_s and step < cfg.steps:
            stop = ("timeout", f"stopped after {step} of {cfg.steps} steps, near timeout_s={cfg.timeout_s:.0f}")
        if step % cfg.eval_every == 0 or step == cfg.steps or stop:
            rec["metric"] = task.metric(trainer.predict(x_val), y_val)
            rec["beats_baseline"] = task.beats_baseline(rec["metric"])
        rec["elapsed_s"] = time.perf_counter() - start
        if stop:
            rec["status"], rec["message"] = stop
        records.append(rec)
        if stop:
            break
    return records

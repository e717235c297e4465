"""Short training runs of any backend on any task: ``rnnbench train`` and the ``tasks`` suite.

Every backend starts from the same weights (seeded NumPy, ``impls.models``) and
sees the same batches (one generator seeded by the run's seed), so the loss
curves of two backends differ only by their arithmetic.  Each step's loss,
gradient norm (before clipping), NaN count and time are recorded; the task's
metric is computed on its fixed validation set every ``eval_every`` steps and at
the end, beside the task's naive baseline and its quality target.

Budget: ``steps`` optimizer steps and ``budget_s`` seconds of training, whichever
is larger (a run ends when both are spent); with ``stop_at_target`` it ends at the
first evaluation that meets the task's target.  The last record carries the
run's time to quality (``time_to_quality``).

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
        "param_count": trainer.param_count(), "target_metric": float(task.target),
    }
    attention = hook(trainer.runner, "attention_kernel")()
    if attention is not None:  # a transformer baseline: which attention kernel ran
        base["sdpa_kernel"] = attention
    timer = hook(trainer.runner, "timer")(trainer.sync)
    batches = np.random.default_rng([cfg.seed, 2])  # the same batches for every backend
    x_val, y_val = task.validation()
    records, step_times, reached_at = [], [], None
    start = time.perf_counter()
    step = 0
    while True:
        step += 1
        x, y = task.train_batch(batches, cfg.batch)
        out = {}
        try:
            step_s = timer.time(lambda: out.update(trainer.step(x, y)))
        except Exception as exc:  # noqa: BLE001
            records.append({**base, "step": step, "status": classify(exc), "message": f"{type(exc).__name__}: {exc}"})
            break
        step_times.append(step_s)
        rec = {**base, "step": step, **out, "step_s": step_s, "metric": None, "beats_baseline": None}
        spent = step >= cfg.steps and sum(step_times) >= cfg.budget_s  # both budgets: the larger one binds
        stop = None
        if not math.isfinite(out["loss"]):
            stop = ("error", f"non-finite loss at step {step}; stopped")
        elif time.perf_counter() - start > SETTINGS.timeout_share * cfg.timeout_s and not spent:
            stop = ("timeout", f"stopped after {step} steps of at least {cfg.steps}, near timeout_s={cfg.timeout_s:.0f}")
        if step % cfg.eval_every == 0 or spent or stop:
            rec["metric"] = task.metric(trainer.predict(x_val), y_val)
            rec["beats_baseline"] = task.beats_baseline(rec["metric"])
            if reached_at is None and task.reached(rec["metric"]):
                reached_at = step
        rec["elapsed_s"] = time.perf_counter() - start
        if stop:
            rec["status"], rec["message"] = stop
        records.append(rec)
        if stop or spent or (reached_at and cfg.stop_at_target):
            break
    if step_times:
        records[-1].update(time_to_quality(step_times, reached_at))
    return records


def time_to_quality(step_times: list[float], reached_at: int | None) -> dict:
    """The run's verdict, on its last record: the steps and training seconds to the target, or not reached.

    The first step also compiles and warms up; its excess over the median of the later steps is
    ``compile_s``, counted apart (MLPerf leaves model creation and compilation out of the clock too).
    Seconds are the device timer's step times only: evaluations and batch generation are not in them.
    """
    compile_s = max(0.0, step_times[0] - float(np.median(step_times[1:]))) if len(step_times) > 1 else 0.0
    reached = reached_at is not None
    return {"target_reached": reached, "steps_to_target": reached_at,
            "time_to_target_s": sum(step_times[:reached_at]) - compile_s if reached else None,
            "compile_s": compile_s, "train_s": sum(step_times) - compile_s}


def run_depth(job) -> list[dict]:
    """A memory-depth walk (``rnnbench.jobs.DepthJob``): its training records, the model's gradient
    profile at the longest length tried, and the verdict (a ``depth`` record)."""
    records, reached, tried, failed = [], [], [], None

    def train(seq_len, seed) -> bool:
        nonlocal failed
        run = run_training(job.training(seq_len, seed))
        records.extend(run)
        if run[-1]["status"] != "ok" and failed is None:
            failed = run[-1]
        return bool(run[-1].get("target_reached"))

    for seq_len in job.lengths():
        tried.append(seq_len)
        if not train(seq_len, 0):
            break
        reached.append(seq_len)
    boundary = reached[-1] if reached else None
    hits = 1 + sum(train(boundary, seed) for seed in range(1, job.seeds)) if boundary else 0
    if failed is not None and not reached:  # nothing learned because nothing ran: the walk failed
        return records + [job.failure(failed["status"], failed["message"])]
    profile = reach_profile(job, tried[-1])
    verdict = {
        **{k: profile.get(k) for k in ("backend_kind", "framework", "impl_label", "threads", "matmul_precision")},
        "kind": "depth", **job.record_fields, "status": "ok", "message": failed["message"] if failed else "",
        "tried_seq_lens": tried, "reached_seq_lens": reached, "boundary_seq_len": boundary,
        "boundary_reached": hits, "boundary_runs": job.seeds if boundary else 0,
        "grad_decay_per_step": profile.get("grad_decay_per_step"),
    }
    return records + [profile, verdict]


def reach_profile(job, seq_len: int) -> dict:
    """A stability record of the job's model as training starts, at ``seq_len`` steps: how far back
    its gradient reaches before it has learned anything (``rnnbench.stability``)."""
    import impls
    from impls.models import build_core
    from impls.runner import hook
    from impls.spec import RNNSpec, make_inputs

    from .measure import classify
    from .stability import gradient_profile

    spec = RNNSpec(job.cell, job.input_size, job.hidden, job.layers)
    shape = {k: v for k, v in job.record_fields.items()
             if k in ("backend", "device", "dtype", "cell", "layers", "batch", "input_size", "hidden")}
    fields = {"kind": "stability", **shape, "seq_len": seq_len, **backend_identity(job.backend)}
    try:
        runner = build_core(job.backend, spec, job.device, job.dtype, 0, SETTINGS.forget_bias)
        x, _, _ = make_inputs(spec, seq_len, job.batch, seed=1)  # [T, B, I]
        kind = impls.kind_of(job.backend)
        profile = gradient_profile(runner, x, hook(runner, "output_size")(),
                                   reverse_from=spec.hidden_size if kind == "rnn" else None)
    except Exception as exc:  # noqa: BLE001 - a profile that cannot be taken is a record saying why
        return {**fields, "status": classify(exc), "message": f"{type(exc).__name__}: {exc}"}
    return {**fields, "status": "ok", "message": "", "backend_kind": kind, "impl_label": runner.impl_label(),
            "threads": hook(runner, "threads")(), "matmul_precision": hook(runner, "matmul_precision")(),
            "mode": "train", **profile}


"""Short training runs of any backend on any task: ``rnnbench train`` and the ``tasks`` suite.

Every backend starts from the same weights (seeded NumPy, ``impls.models``) and
sees the same batches (one generator seeded by the run's seed), so the loss
curves of two backends differ only by their arithmetic.  Each step's loss,
gradient norm (before clipping), NaN count and time are recorded; the task's
metric is computed on its fixed validation set every ``eval_every`` steps and at
the end, beside the task's naive baseline.

A step's time is one ``trainer.step`` on the harness's device timer
(``impls.runtime.DeviceTimer``, as ``rnnbench.measure`` uses: sync, clock, call,
sync); it includes copying the batch to the device, not generating it.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from .config import ConfigError, JobFields, backend_identity, check_common

CLIP_NORM = 1.0
TIMEOUT_SHARE = 0.8  # the rest is for start-up, so the process executor's kill never comes first
FORGET_BIAS = 2.0  # an open forget gate at the start (see impls.models): copy T=10 fell to 0.43 nats in 1000
# steps with it, to 0.54 in 1200 without (baseline 0.69)
# The tasks suite's backends, where available at full speed: the RNN backends (their variants,
# jax_scan_unroll4 and jax_scan_autodiff, compute the same model) and the torch transformer.
SUITE_BACKENDS = ("torch_cudnn", "torch_eager", "jax_scan", "triton", "transformer_sdpa")


@dataclass(frozen=True)
class TrainConfig(JobFields):
    """One training run.  Sizes left as None take the task's default short setting."""

    task: str
    backend: str
    cell: str = "lstm"
    hidden: int | None = None
    seq_len: int | None = None
    steps: int | None = None
    seed: int = 0
    batch: int | None = None
    lr: float | None = None
    device: str = "cpu"
    dtype: str = "float32"
    timeout_s: float = 600.0  # the run stops (status timeout) after TIMEOUT_SHARE of this, keeping its records
    layers: int = 1
    input_size: int | None = None  # width of the input layer's output (the core's input); default hidden
    eval_every: int | None = None
    clip: float = CLIP_NORM
    forget_bias: float = FORGET_BIAS  # added to an LSTM's forget-gate bias at initialisation

    def __post_init__(self):
        from . import tasks

        if self.task not in tasks.TASKS:
            raise ConfigError(f"unknown task {self.task!r}; valid: {', '.join(tasks.names())}")
        default = tasks.TASKS[self.task].default
        for name in ("hidden", "seq_len", "steps", "batch", "lr", "eval_every"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(default, name))
        if self.input_size is None:
            object.__setattr__(self, "input_size", self.hidden)

    @property
    def record_fields(self) -> dict:
        return {**super().record_fields, "task": self.task}


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError naming the valid choices (the task was checked on construction)."""
    from . import tasks

    check_common(cfg.backend, cfg.cell, cfg.dtype, cfg.device, {n: getattr(cfg, n) for n in
                 ("hidden", "seq_len", "steps", "batch", "layers", "input_size", "eval_every")})
    try:
        tasks.TASKS[cfg.task].check_seq_len(cfg.seq_len)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def failure_record(cfg: TrainConfig, status: str, message: str) -> dict:
    """A training record for a run that did not train (unsupported, error, timeout, oom)."""
    return {"kind": "training", **cfg.record_fields, "status": status, "message": message[-2000:], "step": None,
            **backend_identity(cfg.backend)}


def run_training(cfg: TrainConfig) -> list[dict]:
    """Train, and return one record per step (the metric on evaluation steps and the last one)."""
    import impls
    from impls import runtime
    from impls.models import ModelIO, build_trainer
    from impls.spec import RNNSpec

    from . import tasks
    from .measure import classify

    validate(cfg)
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
        "impl_label": trainer.runner.impl_label(), "threads": runtime.threads(backend.framework),
        "matmul_precision": runtime.matmul_precision(backend.framework, cfg.device),
        "baseline_metric": task.baseline(), "metric_name": task.metric_name, "data_sha256": task.data_sha256(),
        "param_count": trainer.param_count(),
    }
    if hasattr(trainer.runner, "sdpa_kernel"):  # a transformer baseline: which attention kernel ran
        base["sdpa_kernel"] = trainer.runner.sdpa_kernel()
    timer = runtime.DeviceTimer(backend.framework, cfg.device, trainer.sync)
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
        elif time.perf_counter() - start > TIMEOUT_SHARE * cfg.timeout_s and step < cfg.steps:
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


# -- the tasks suite -------------------------------------------------------------------------------


def default_backends(device: str) -> list[str]:
    """SUITE_BACKENDS that are registered, available on the device and not interpreted."""
    import impls

    from .sweep import _interpreted

    return [n for n in SUITE_BACKENDS
            if n in impls.names() and impls.available(n, device)[0] and not _interpreted(n, device)]


def suite_jobs(axes: dict) -> list[TrainConfig]:
    """The ``tasks`` suite: every task at its default short setting for each backend.

    Axes from the CLI that apply: backends, device, cells, hidden, dtype, and
    seq_len (for the tasks whose length is free).
    """
    from . import tasks

    jobs = []
    for device in axes.get("device") or ["cpu"]:
        for name in tasks.names():
            variable = tasks.TASKS[name].variable_length
            for backend in axes.get("backends") or default_backends(device):
                for cell in axes.get("cells") or ["lstm"]:
                    for hidden in axes.get("hidden") or [None]:
                        for seq_len in (axes.get("seq_len") if variable else None) or [None]:
                            for dtype in axes.get("dtype") or ["float32"]:
                                jobs.append(TrainConfig(name, backend, cell, hidden=hidden, seq_len=seq_len,
                                                        device=device, dtype=dtype))
    for job in jobs:
        validate(job)
    return jobs


def summary_frame(records):
    """One row per run: task, setting, backend, steps, final metric, baseline, seconds, verdict."""
    import pandas as pd

    rows = []
    frame = pd.DataFrame([r for r in records if r.get("kind") == "training"])
    if frame.empty:
        return frame
    for _, run in frame.groupby(["task", "backend", "cell", "seq_len", "hidden"], sort=False, dropna=False):
        last = run.iloc[-1]
        evaluated = run[run["metric"].notna()] if "metric" in run else run.iloc[:0]
        final = evaluated.iloc[-1] if len(evaluated) else last
        rows.append({
            "task": last["task"], "setting": f"T={last['seq_len']} H={last['hidden']} B={last['batch']}",
            "backend": last["backend"], "steps": last.get("step"), "metric": last.get("metric_name"),
            "final": final.get("metric"), "baseline": last.get("baseline_metric"),
            "beats": final.get("beats_baseline"), "seconds": run["step_s"].sum() if "step_s" in run else None,
            "status": last["status"],
        })
    return pd.DataFrame(rows)


def print_summary(records) -> None:
    import pandas as pd

    df = summary_frame(records)
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_columns", 20):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
    for r in records:
        if r.get("status") != "ok":
            print(f"  {r['task']} {r['backend']}: {r['status']}: {str(r.get('message', ''))[:200]}")


# -- rnnbench train --------------------------------------------------------------------------------


def main(args) -> int:
    """``rnnbench train``: one run into a new run folder, then a one-line verdict per run."""
    from impls import runtime

    from .cli import _environment
    from .store import Run

    cfg = TrainConfig(args.task, args.backend, args.cell, hidden=args.hidden, seq_len=args.seq_len,
                      steps=args.steps, seed=args.seed, device=args.device)
    validate(cfg)
    ok, reason = runtime.device_present(cfg.device)
    if not ok:
        raise ConfigError(f"device {cfg.device} is not available here ({reason}); valid here: cpu")
    from .sweep import job_to_dict

    info = _environment([cfg.device])
    info["jobs"] = [job_to_dict(cfg)]
    run = Run.create(args.out, args.machine, info)
    print(f"run folder: {run.path}", file=sys.stderr)
    records = [run.append(rec) for rec in run_training(cfg)]
    print_summary(records)
    print(f"\nrecords: {run.path / 'records.jsonl'}")
    return 0 if all(r.get("status") == "ok" for r in records) else 1

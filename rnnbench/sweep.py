"""Configurations -> records, through an executor.

Executors: ``inline`` (this process; memory probes in a fresh child),
``process`` (a fresh process per configuration: a crash, an out-of-memory kill
or a hang becomes a record and the sweep goes on) and ``ray`` (each
configuration a Ray task in a fresh worker; see ``rnnbench.ray_executor``).
Records are appended to the run as each configuration finishes, so a sweep cut
short keeps what it measured and ``--resume`` completes it.
"""
from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import cost
from .config import Config, ConfigError, record_key, validate

SWEEP_AXES = ("backends", "cells", "batch", "seq_len", "input_size", "hidden", "layers", "dtype", "mode", "device")

# Named presets.  Each is the axes of a product; "extra" lists configurations added as they are.
SUITES = {
    "quick": {  # the default: every available backend, small shapes, a few minutes on a laptop CPU
        "cells": ["lstm", "gru"], "batch": [16], "seq_len": [32, 128], "input_size": [32], "hidden": [64],
        "layers": [1], "dtype": ["float32"], "mode": ["forward", "train"], "device": ["cpu"],
        "timing": {"min_time_s": 0.2, "max_time_s": 1.0},
    },
    "cpu": {  # the committed CPU result set
        "cells": ["lstm", "gru"], "batch": [16, 64], "seq_len": [32, 256], "input_size": [64],
        "hidden": [64, 256], "layers": [1], "dtype": ["float32"], "mode": ["train"],
        "device": ["cpu"], "timing": {"min_time_s": 0.3, "max_time_s": 1.5},
    },
    "kernels": {  # GPU kernels (DESIGN.md): LSTM grid, plus GRU and tanh RNN at one point
        "cells": ["lstm"], "batch": [16, 64], "seq_len": [256, 1024], "input_size": None, "hidden": [64, 128, 256],
        "layers": [1], "dtype": ["float32", "bfloat16"], "mode": ["forward", "train"], "device": ["cuda"],
        "timing": {"min_time_s": 0.2, "max_time_s": 0.5, "min_repeats": 3},
        "extra": [{"cell": c, "batch": 64, "seq_len": 1024, "hidden": 128, "dtype": "bfloat16", "mode": "train"}
                  for c in ("gru", "rnn_tanh")],
    },
}
# Shapes for a backend that runs under an interpreter (Triton on a CPU): exactness, not speed.
INTERPRETED_SHAPE = {"batch": 4, "seq_len": 8, "input_size": 8, "hidden": 16}


def suite_names() -> list[str]:
    return list(SUITES) + ["tasks"]


def _interpreted(backend: str, device: str) -> bool:
    import impls

    try:
        fn = getattr(impls.get(backend), "interpreted_on", None)
    except ImportError:
        return False
    return bool(fn and fn(device))


def default_backends(device: str) -> list[str]:
    """Every registered backend available on this device (RNNs and baselines)."""
    import impls

    return [n for n in impls.names() if impls.available(n, device)[0]]


def build_configs(suite: str = "quick", overrides: dict | None = None) -> list[Config]:
    """The sweep's configurations: a suite's axes with any axis replaced by ``overrides``."""
    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r}; valid: {', '.join(suite_names())}")
    axes = {k: v for k, v in SUITES[suite].items() if k not in ("timing", "extra")}
    extra = SUITES[suite].get("extra", [])
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if set(overrides) - {"backends", "device"}:
        extra = []  # a suite's fixed extras belong to the suite's shapes, not to a custom grid
    axes.update(overrides)
    timing = SUITES[suite]["timing"]
    devices = axes["device"]
    configs = []
    for device in devices:
        backends = axes.get("backends") or default_backends(device)
        for backend in backends:
            interpreted = _interpreted(backend, device) and "backends" not in overrides
            for cell, b, t, i, h, layers, dtype, mode in itertools.product(
                axes["cells"], axes["batch"], axes["seq_len"], axes["input_size"] or [None], axes["hidden"],
                axes["layers"], axes["dtype"], axes["mode"]):
                shape = dict(batch=b, seq_len=t, input_size=i or h, hidden=h)
                if interpreted:
                    shape = dict(INTERPRETED_SHAPE)
                configs.append(Config(backend, cell, layers, dtype=dtype, mode=mode, device=device, **shape, **timing))
            for e in extra:
                configs.append(Config(backend, layers=1, device=device, input_size=e["hidden"], **e, **timing))
    seen, unique = set(), []
    for cfg in configs:  # interpreted backends collapse to one shape: keep each configuration once
        if cfg.key() not in seen:
            seen.add(cfg.key())
            unique.append(cfg)
    for cfg in unique:
        validate(cfg)
    return unique


def load_config_file(path: str) -> dict:
    """A sweep from a JSON or TOML file with the CLI's axis names (lists or single values)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(p.read_text())
        else:
            data = json.loads(p.read_text())
    except ValueError as exc:
        raise ConfigError(f"config file {path} is not valid {p.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    unknown = sorted(set(data) - set(SWEEP_AXES) - {"suite"})
    if unknown:
        raise ConfigError(f"unknown keys {unknown} in {path}; valid: {', '.join(SWEEP_AXES + ('suite',))}")
    return {k: (v if isinstance(v, list) or k == "suite" else [v]) for k, v in data.items()}


# -- executing one job ---------------------------------------------------------------------


def job_from_dict(d: dict):
    if d.get("job") == "train":
        from .train import TrainConfig

        return TrainConfig.from_dict(d)
    return Config.from_dict(d)


def job_to_dict(job) -> dict:
    return {"job": "train" if job.__class__.__name__ == "TrainConfig" else "timing", **job.to_dict()}


def run_job(job, fresh_process: bool) -> list[dict]:
    """All records of one job, in this process (a job with its own ``run`` method runs itself)."""
    if callable(getattr(job, "run", None)):  # e.g. the faults that the executors' tests inject
        return job.run(fresh_process)
    if isinstance(job, Config):
        from .measure import measure

        return measure(job, memory="fresh" if fresh_process else "subprocess")
    from .train import run_training

    return run_training(job)


def failure(job, status: str, message: str) -> list[dict]:
    if isinstance(job, Config):
        from .measure import failure_record

        return [failure_record(job, status, message)]
    from .train import failure_record as train_failure

    return [train_failure(job, status, message)]


def run_in_child(job) -> list[dict]:
    """One job in a fresh Python process; a crash, kill or hang becomes a record."""
    from .measure import RECORD_PREFIX, child_env

    cmd = [sys.executable, "-m", "rnnbench.worker", json.dumps(job_to_dict(job))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=job.timeout_s, env=child_env())
    except subprocess.TimeoutExpired:
        return failure(job, "timeout", f"no result after {job.timeout_s:.0f} s; the process was killed")
    records = [json.loads(line[len(RECORD_PREFIX):]) for line in proc.stdout.splitlines()
               if line.startswith(RECORD_PREFIX)]
    if proc.returncode == 0 and records:
        return records
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        status = "oom" if sig == "SIGKILL" and "memory" in tail.lower() else "error"
        return records + failure(job, status, f"worker killed by {sig}: {tail}")
    return records + failure(job, "error", f"worker exited with status {proc.returncode}: {tail}")


def execute_inline(jobs):
    for job in jobs:
        try:
            yield job, run_job(job, fresh_process=False)
        except Exception as exc:  # noqa: BLE001 - a failing configuration must not stop the sweep
            yield job, failure(job, "error", f"{type(exc).__name__}: {exc}")


def execute_process(jobs):
    for job in jobs:
        yield job, run_in_child(job)


def execute_ray(jobs, address: str | None = None):
    from .ray_executor import execute

    yield from execute(jobs, address)


EXECUTORS = {"inline": execute_inline, "process": execute_process, "ray": execute_ray}


def describe(job) -> str:
    if isinstance(job, Config):
        return f"{job.backend} {job.cell} {job.mode} B={job.batch} T={job.seq_len} H={job.hidden} {job.dtype}"
    return f"{job.backend} {job.task} T={job.seq_len} steps={job.steps}"


def run_sweep(run, jobs, executor: str = "inline", ray_address: str | None = None, progress: bool = True) -> list[dict]:
    """Run the jobs not yet recorded in ``run``; append records as each finishes."""
    from tqdm import tqdm

    done = {record_key(r) if r.get("kind") != "training" else ("train", r.get("task"), r.get("backend"))
            for r in run.records()}
    pending = [j for j in jobs if _job_key(j) not in done]
    kwargs = {"address": ray_address} if executor == "ray" else {}
    bar = tqdm(total=len(pending), disable=not progress, unit="config", dynamic_ncols=True, file=sys.stderr)
    written = []
    start = time.perf_counter()
    ceilings = run.info.get("ceilings")
    try:
        for job, records in EXECUTORS[executor](pending, **kwargs):
            for rec in records:
                written.append(run.append(cost.complete(rec, ceilings)))
            bar.set_postfix_str(describe(job), refresh=False)
            bar.update(1)
    finally:
        bar.close()
        run.update_info(wall_s=run.info.get("wall_s", 0) + time.perf_counter() - start)
    return written


def _job_key(job):
    if isinstance(job, Config):
        return job.key()
    return ("train", job.task, job.backend)

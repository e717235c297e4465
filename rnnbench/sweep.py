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

from . import suites
from .config import MODES, ConfigError, check_devices
from .jobs import TimingJob, TrainJob, job_from_dict, record_key
from .suites import INTERPRETED_SHAPE, INTERPRETED_TIMING, SWEEP_AXES


def _interpreted(backend: str, device: str) -> bool:
    import impls
    from impls.runner import interpreted

    try:
        return interpreted(impls.get(backend), device)
    except ImportError:
        return False


def default_backends(device: str) -> list[str]:
    """Every registered backend available on this device (RNNs and baselines)."""
    import impls

    return [n for n in impls.names() if impls.available(n, device)[0]]


def training_backends(device: str) -> list[str]:
    """The tasks suite's backends: per implementing module and framework, the first registered name
    (its variants, e.g. jax_scan_unroll8, train the same model), where it runs at full speed here."""
    import impls

    chosen, seen = [], set()
    for name in default_backends(device):
        family = (impls.module_of(name), impls.get(name).framework)
        if family not in seen and not _interpreted(name, device):
            seen.add(family)
            chosen.append(name)
    return chosen


def build_jobs(suite: str = "quick", overrides: dict | None = None) -> list:
    """The validated jobs of a suite, with any axis replaced by ``overrides``."""
    try:
        preset = suites.get(suite)
    except KeyError as exc:
        raise ConfigError(exc.args[0]) from None
    if preset.kind == "training":
        return training_jobs(overrides or {})
    return build_configs(suite, overrides)


def build_configs(suite: str = "quick", overrides: dict | None = None) -> list[TimingJob]:
    """A timing suite's configurations: its axes with any axis replaced by ``overrides``."""
    preset = suites.get(suite)
    axes = dict(preset.axes)
    extra = list(preset.extra)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if set(overrides) - {"backends", "device"}:
        extra = []  # a suite's fixed extras belong to the suite's shapes, not to a custom grid
    axes.update(overrides)
    timing = preset.timing
    configs = []
    for device in axes.get("device") or [preset.device]:
        backends = axes.get("backends") or default_backends(device)
        for backend in backends:
            interpreted = _interpreted(backend, device) and "backends" not in overrides
            for cell, b, t, i, h, layers, dtype, mode in itertools.product(
                axes["cells"], axes["batch"], axes["seq_len"], axes["input_size"] or [None], axes["hidden"],
                axes["layers"], axes["dtype"], axes["mode"]):
                shape = dict(batch=b, seq_len=t, input_size=i or h, hidden=h)
                settings = timing
                if interpreted:
                    shape, settings = dict(INTERPRETED_SHAPE), {**timing, **INTERPRETED_TIMING}
                configs.append(TimingJob(backend, cell, layers, dtype=dtype, mode=mode, device=device, **shape,
                                         **settings))
            for e in extra:
                configs.append(TimingJob(backend, layers=1, device=device, input_size=e["hidden"], **e, **timing))
    seen, unique = set(), []
    for cfg in configs:  # interpreted backends collapse to one shape: keep each configuration once
        if cfg.key() not in seen:
            seen.add(cfg.key())
            unique.append(cfg)
    for cfg in unique:
        cfg.validate()
    return unique


def training_jobs(axes: dict) -> list[TrainJob]:
    """The ``tasks`` suite: every task at its default short setting for each backend.

    Axes that apply: backends, device, cells, hidden, dtype, and seq_len (for the
    tasks whose length is free).
    """
    from . import tasks

    jobs = []
    for device in axes.get("device") or [suites.get("tasks").device]:
        for name in tasks.names():
            variable = tasks.TASKS[name].variable_length
            for backend in axes.get("backends") or training_backends(device):
                for cell in axes.get("cells") or ["lstm"]:
                    for hidden in axes.get("hidden") or [None]:
                        for seq_len in (axes.get("seq_len") if variable else None) or [None]:
                            for dtype in axes.get("dtype") or ["float32"]:
                                jobs.append(TrainJob(name, backend, cell, hidden=hidden, seq_len=seq_len,
                                                     device=device, dtype=dtype))
    for job in jobs:
        job.validate()
    return jobs


def check_axes(axes: dict) -> None:
    """Every named choice of a sweep's axes is valid; ConfigError naming the valid ones."""
    import impls
    from impls.spec import CELLS, DTYPES

    for label, key, valid in (("backend", "backends", impls.names()), ("cell", "cells", CELLS),
                              ("dtype", "dtype", DTYPES), ("mode", "mode", MODES)):
        for v in axes.get(key) or []:
            if v not in valid:
                raise ConfigError(f"unknown {label} {v!r}; valid: {', '.join(valid)}")


def plan(suite: str | None, axes: dict, config_file: str | None = None) -> tuple[list, list[str]]:
    """The validated jobs of ``rnnbench run`` and the devices they use; raises ConfigError.

    ``axes``: the CLI's (None where not given), over those of ``config_file``.
    """
    merged = load_config_file(config_file) if config_file else {}
    suite = suite or merged.pop("suite", None) or "quick"
    merged.pop("suite", None)
    merged.update({k: v for k, v in axes.items() if v is not None})
    if suite not in suites.SUITES:
        raise ConfigError(f"unknown suite {suite!r}; valid: {', '.join(suites.suite_names())}")
    check_axes(merged)
    devices = merged.get("device") or [suites.get(suite).device]
    check_devices(devices)
    return build_jobs(suite, merged), devices


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


# -- executing jobs ------------------------------------------------------------------------


def run_in_child(job) -> list[dict]:
    """One job in a fresh Python process; a crash, kill or hang becomes a record."""
    from .measure import RECORD_PREFIX, child_env

    cmd = [sys.executable, "-m", "rnnbench.worker", json.dumps(job.to_dict())]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=job.timeout_s, env=child_env())
    except subprocess.TimeoutExpired:
        return [job.failure("timeout", f"no result after {job.timeout_s:.0f} s; the process was killed")]
    records = [json.loads(line[len(RECORD_PREFIX):]) for line in proc.stdout.splitlines()
               if line.startswith(RECORD_PREFIX)]
    if proc.returncode == 0 and records:
        return records
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        status = "oom" if sig == "SIGKILL" and "memory" in tail.lower() else "error"
        return records + [job.failure(status, f"worker killed by {sig}: {tail}")]
    return records + [job.failure("error", f"worker exited with status {proc.returncode}: {tail}")]


def execute_inline(jobs):
    for job in jobs:
        try:
            yield job, job.run(fresh_process=False)
        except Exception as exc:  # noqa: BLE001 - a failing configuration must not stop the sweep
            yield job, [job.failure("error", f"{type(exc).__name__}: {exc}")]


def execute_process(jobs):
    for job in jobs:
        yield job, run_in_child(job)


def execute_ray(jobs, address: str | None = None):
    from .ray_executor import execute

    yield from execute(jobs, address)


EXECUTORS = {"inline": execute_inline, "process": execute_process, "ray": execute_ray}


def run_sweep(run, jobs, executor: str = "inline", ray_address: str | None = None, progress: bool = True) -> list[dict]:
    """Run the jobs not yet recorded in ``run``; append records as each finishes."""
    from tqdm import tqdm

    done = {record_key(r) for r in run.records()}
    pending = [j for j in jobs if j.key() not in done]
    kwargs = {"address": ray_address} if executor == "ray" else {}
    bar = tqdm(total=len(pending), disable=not progress, unit="config", dynamic_ncols=True, file=sys.stderr)
    written = []
    start = time.perf_counter()
    try:
        for job, records in EXECUTORS[executor](pending, **kwargs):
            for rec in records:
                written.append(run.append(rec))
            bar.set_postfix_str(job.describe(), refresh=False)
            bar.update(1)
    finally:
        bar.close()
        run.update_info(wall_s=run.info.get("wall_s", 0) + time.perf_counter() - start)
    return written


# -- a run: created or resumed ------------------------------------------------------------------


def create_run(jobs, devices, executor: str, out, machine: str | None, argv=None):
    """A new run folder holding the environment, the jobs and the machine's ceilings."""
    from .measure import machine_ceilings
    from .store import Run, environment

    info = {**environment(devices, argv), "executor": executor, "jobs": [j.to_dict() for j in jobs]}
    timing = [j for j in jobs if j.RECORD_KIND == "timing"]
    if timing:  # what fraction_of_peak is measured against (cached per machine; see measure)
        info["ceilings"] = machine_ceilings(timing)
    return Run.create(out, machine, info)


def resume_run(path):
    """(run, jobs, executor) of an existing run folder; ConfigError when it is not one."""
    from .store import Run

    try:
        run = Run.resume(path)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    return run, [job_from_dict(d) for d in run.info["jobs"]], run.info.get("executor", "inline")

"""Configurations -> records, through an executor.

Executors: ``inline`` (this process; memory probes in a fresh child),
``process`` (a fresh process per configuration: a crash, an out-of-memory kill
or a hang becomes a record and the sweep goes on) and ``ray`` (each
configuration a Ray task in a fresh worker; see ``rnnbench.ray_executor``).
Records are appended to the run as each configuration finishes, so a sweep cut
short keeps what it measured and ``--resume`` completes it (``retry_failed``: and
re-runs the configurations whose last record is error, timeout or oom).

Faults stay contained: a worker process dies with its parent (``PR_SET_PDEATHSIG``);
a worker killed by SIGKILL while the kernel's OOM-kill count of our memory cgroup
rose is ``oom``; the inline executor runs each configuration under a watchdog
that records ``timeout`` after ``timeout_s``, abandons it and runs the rest of the
sweep in fresh processes; a suite member whose estimated memory exceeds what is
free is an ``unsupported`` record, and the sweep goes on.
"""
from __future__ import annotations

import ctypes
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import ragged, suites
from .config import MODES, ConfigError, check_devices, check_fits, parse_bool
from .jobs import TimingJob, TrainJob, job_from_dict, record_key
from .suites import INTERPRETED_SHAPE, INTERPRETED_TIMING, SWEEP_AXES


def _untimed(backend: str, device: str, cell: str | None = None) -> bool:
    """Its timings (of ``cell``; of any cell when None) do not mean speed here: exactness only."""
    import impls
    from impls.runner import capabilities, timed

    try:
        b = impls.get(backend)
        cells = [cell] if cell is not None else list(capabilities(b, device))
        return any(not timed(b, device, c)[0] for c in cells)
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
        if family not in seen and not _untimed(name, device):
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
    if set(overrides) - {"backends", "device", "rounds"}:
        extra = []  # a suite's fixed extras belong to the suite's shapes, not to a custom grid
    axes.update(overrides)
    timing = preset.timing
    configs = []
    for device, ax in ((d, g) for d in axes.get("device") or [preset.device]
                       for g in device_grids(preset, d, axes, overrides)):
        backends = ax.get("backends") or default_backends(device)
        for backend in backends:
            # not timed as speed here (an interpreter): one tiny shape, unless the backends were named
            tiny = {c: "backends" not in overrides and _untimed(backend, device, c) for c in ax["cells"]}
            for cell, b, t, i, h, layers, dtype, mode, bidirectional, lengths in itertools.product(
                ax["cells"], ax["batch"], ax["seq_len"], ax["input_size"] or [None], ax["hidden"],
                ax["layers"], ax["dtype"], ax["mode"], ax.get("bidirectional") or [False],
                ax.get("lengths") or [ragged.FULL]):
                shape = dict(batch=b, seq_len=t, input_size=i or h, hidden=h)
                settings = timing
                if tiny[cell]:
                    shape, settings = dict(INTERPRETED_SHAPE), {**timing, **INTERPRETED_TIMING}
                configs.append(TimingJob(backend, cell, layers, dtype=dtype, mode=mode, device=device, **shape,
                                         bidirectional=bidirectional, lengths=lengths, **settings))
            for e in extra:
                configs.append(TimingJob(backend, layers=1, device=device, input_size=e["hidden"], **e, **timing))
    seen, unique = set(), []
    for cfg in configs:  # interpreted backends collapse to one shape: keep each configuration once
        if cfg.key() not in seen:
            seen.add(cfg.key())
            unique.append(cfg)
    for cfg in unique:
        cfg.validate()
    return in_rounds(unique, overrides.get("rounds") or preset.rounds)


def device_grids(preset, device: str, axes: dict, overrides: dict) -> list[dict]:
    """The axes of each of the suite's grids on ``device``: the suite's, then its axes for that kind of
    device (``device_axes``), then the grid's own (``grids``), then the user's flags."""
    on_device = preset.device_axes.get(device.split(":")[0], {})
    return [{**axes, **on_device, **grid, **overrides} for grid in preset.grids or ({},)]


def in_rounds(configs: list[TimingJob], rounds: int) -> list[TimingJob]:
    """The grid visited ``rounds`` times, each visit in its own shuffled order (seeded by the round),
    so that a configuration's rounds are minutes apart and no backend always follows the same one."""
    import dataclasses
    import random

    ordered = []
    for r in range(rounds):
        visit = [dataclasses.replace(cfg, round=r) for cfg in configs]
        random.Random(r).shuffle(visit)
        ordered += visit
    return ordered


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
    for name in axes.get("lengths") or []:
        ragged.parse(name)


def plan(suite: str | None, axes: dict, config_file: str | None = None,
         check_memory: bool = True) -> tuple[list, list[str]]:
    """The validated jobs of ``rnnbench run`` and the devices they use; raises ConfigError.

    ``axes``: the CLI's (None where not given), over those of ``config_file``.  A single
    configuration that cannot fit the machine's free memory is refused (``check_memory``:
    where it runs here); in a larger sweep such a member becomes an ``unsupported`` record.
    """
    merged = load_config_file(config_file) if config_file else {}
    suite = suite or merged.pop("suite", None) or "quick"
    merged.pop("suite", None)
    merged.update({k: v for k, v in axes.items() if v is not None})
    if "bidirectional" in merged:  # a config file may say true/false as words
        merged["bidirectional"] = [parse_bool(v) for v in merged["bidirectional"]]
    if suite not in suites.SUITES:
        raise ConfigError(f"unknown suite {suite!r}; valid: {', '.join(suites.suite_names())}")
    check_axes(merged)
    devices = merged.get("device") or [suites.get(suite).device]
    check_devices(devices)
    jobs = build_jobs(suite, merged)
    configurations = {tuple(v for f, v in zip(j.IDENTITY, j.key()[1:]) if f != "round") for j in jobs}
    too_big = check_fits(jobs[0]) if check_memory and len(configurations) == 1 else None
    if too_big:
        raise ConfigError(f"{too_big}; refused before anything is written")
    return jobs, devices


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
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold an object of axes ({', '.join(SWEEP_AXES)}, suite), "
                          f"got {json.dumps(data)[:40]}")
    empty = [k for k, v in data.items() if v in ([], None, "")]
    if empty:
        raise ConfigError(f"config file {path}: {', '.join(empty)} empty; name at least one value, or leave the "
                          "key out for the suite's default")
    unknown = sorted(set(data) - set(SWEEP_AXES) - {"suite"})
    if unknown:
        raise ConfigError(f"unknown keys {unknown} in {path}; valid: {', '.join(SWEEP_AXES + ('suite',))}")
    return {k: (v if isinstance(v, list) or k == "suite" else [v]) for k, v in data.items()}


# -- executing jobs ------------------------------------------------------------------------


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int):
    """In the forked child, before exec: the kernel kills it when its parent dies (even by SIGKILL)."""
    def arm():
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)
    return arm


def run_in_child(job) -> list[dict]:
    """One job in a fresh Python process; a crash, kill or hang becomes a record; it dies with us."""
    from impls.runtime import memory_cgroup, oom_kill_count

    from .measure import RECORD_PREFIX, child_env

    cmd = [sys.executable, "-m", "rnnbench.worker", json.dumps(job.to_dict())]
    cgroup = memory_cgroup()  # the worker's too: it inherits ours
    ooms_before = oom_kill_count(cgroup)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                            preexec_fn=_die_with_parent(os.getpid()))
    try:
        stdout, stderr = proc.communicate(timeout=job.timeout_s)
    except subprocess.TimeoutExpired:
        return [job.failure("timeout", f"no result after {job.timeout_s:.0f} s; the process was killed")]
    finally:
        if proc.poll() is None:  # a timeout, an interrupt, any exception: the worker goes with us
            proc.kill()
            proc.communicate()
    records = [json.loads(line[len(RECORD_PREFIX):]) for line in stdout.splitlines()
               if line.startswith(RECORD_PREFIX)]
    if proc.returncode == 0 and records:
        return records
    tail = " | ".join(stderr.strip().splitlines()[-3:])
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        ooms_after = oom_kill_count(cgroup)
        if sig == "SIGKILL" and ooms_before is not None and ooms_after is not None and ooms_after > ooms_before:
            return records + [job.failure("oom", f"worker killed by SIGKILL from the kernel's OOM killer (oom_kill "
                                                 f"count of cgroup {cgroup[0]} rose {ooms_before} -> {ooms_after})"
                                                 + (f": {tail}" if tail else ""))]
        status = "oom" if sig == "SIGKILL" and "memory" in tail.lower() else "error"
        return records + [job.failure(status, f"worker killed by {sig}: {tail}")]
    return records + [job.failure("error", f"worker exited with status {proc.returncode}: {tail}")]


def _run_watched(job) -> list[dict] | None:
    """``job.run`` in this process under a watchdog: its records, or None after ``timeout_s``."""
    outcome = []

    def work():
        try:
            outcome.append(job.run(fresh_process=False))
        except Exception as exc:  # noqa: BLE001 - a failing configuration must not stop the sweep
            outcome.append([job.failure("error", f"{type(exc).__name__}: {exc}")])

    worker = threading.Thread(target=work, name=f"rnnbench {job.describe()}", daemon=True)
    worker.start()
    worker.join(job.timeout_s)
    return outcome[0] if outcome else None


def execute_inline(jobs):
    jobs = list(jobs)
    for i, job in enumerate(jobs):
        records = _run_watched(job)
        if records is not None:
            yield job, records
            continue
        # A thread cannot be stopped: it is abandoned (it ends with this process), and the rest of the
        # sweep runs in fresh processes, so nothing else shares this process with it.
        yield job, [job.failure("timeout", f"no result after {job.timeout_s:.0f} s (inline watchdog); abandoned, "
                                           "and the rest of the sweep ran in fresh processes")]
        yield from execute_process(jobs[i + 1:])
        return


def execute_process(jobs):
    for job in jobs:
        yield job, run_in_child(job)


def execute_ray(jobs, address: str | None = None):
    from .ray_executor import execute

    yield from execute(jobs, address)


EXECUTORS = {"inline": execute_inline, "process": execute_process, "ray": execute_ray}


FAILED = ("error", "timeout", "oom")


def check_portable(jobs, executor: str) -> None:
    """ConfigError, before anything is written, where a job of the process or Ray executor names a
    backend that another process cannot register (one a script registered from its ``__main__``)."""
    import impls

    if executor == "inline":
        return
    for name in sorted({job.backend for job in jobs}):
        ok, reason = impls.portable(name)
        if not ok:
            raise ConfigError(f"--executor {executor}: {reason}")


def pending_jobs(run, jobs, retry_failed: bool = False) -> list:
    """The jobs with no record in ``run``; with ``retry_failed`` also those whose last record failed."""
    last = {}
    for r in run.records():
        last[record_key(r)] = r.get("status")
    return [j for j in jobs if j.key() not in last or (retry_failed and last[j.key()] in FAILED)]


def run_sweep(run, jobs, executor: str = "inline", ray_address: str | None = None, progress: bool = True,
              retry_failed: bool = False) -> list[dict]:
    """Run the jobs not yet recorded in ``run``; append records as each finishes.

    With nothing to run, nothing is written (not even run.json's wall time).
    """
    from tqdm import tqdm

    pending = pending_jobs(run, jobs, retry_failed)
    if not pending:
        return []
    written = []
    if executor != "ray":  # what runs here must fit here (a Ray node's memory is not ours to read)
        for job in list(pending):
            too_big = check_fits(job)
            if too_big:
                written.append(run.append(job.failure("unsupported", f"{too_big}; not run")))
                pending.remove(job)
    kwargs = {"address": ray_address} if executor == "ray" else {}
    bar = tqdm(total=len(pending), disable=not progress, unit="config", dynamic_ncols=True, file=sys.stderr)
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

    import impls

    info = {**environment(devices, argv), "executor": executor, "jobs": [j.to_dict() for j in jobs]}
    if impls.plugins():  # what a resume must load to find these backends again
        info["plugins"] = impls.plugins()
    timing = [j for j in jobs if j.RECORD_KIND == "timing"]
    if timing:  # what fraction_of_peak is measured against (cached per machine; see measure)
        info["ceilings"] = machine_ceilings(timing)
    return Run.create(out, machine, info)


def resume_run(path):
    """(run, jobs, executor) of an existing run folder, locked for writing; ConfigError when it is not
    one, is in use, or its planned jobs are not valid jobs."""
    from .store import RUN_JSON, Run

    import impls

    run = Run.resume(path)
    jobs = []
    try:
        try:
            impls.load_recorded_plugins(run.info.get("plugins", []), str(run.path / RUN_JSON))
        except impls.PluginError as exc:
            raise ConfigError(str(exc)) from None
        for i, d in enumerate(run.info.get("jobs", [])):
            try:
                job = job_from_dict(d)
                job.validate()
            except ConfigError as exc:
                raise ConfigError(f"{run.path / RUN_JSON}: job {i}: {exc}") from None
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{run.path / RUN_JSON}: job {i} is not a job of this rnnbench ({exc!r})") from None
            jobs.append(job)
    except BaseException:
        run.release()
        raise
    return run, jobs, run.info.get("executor", "inline")

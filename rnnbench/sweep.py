"""Configurations -> records, through an executor.

Executors: ``inline`` (this process; memory probes in a fresh child; with more than one round or a
thread limit, each round of each backend in one fresh process of its own, ``run_batch_in_child``),
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
from .config import METRICS, MODES, ConfigError, check_devices, check_fits, parse_bool
from .jobs import DepthJob, InstructionJob, TimingJob, TrainJob, job_from_dict, record_key
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


def runs_cell(backend: str, device: str, cell: str) -> bool:
    """Whether ``backend`` declares ``cell`` on ``device``: a suite that names no backends pairs each cell
    only with those (a backend named outright still gets its ``unsupported`` record, with the reason)."""
    import impls
    from impls.spec import supports

    return supports(impls.get(backend), device, cell)[0]


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
    if preset.kind == "quality":
        return quality_jobs(overrides or {})
    return build_configs(suite, overrides)


def build_configs(suite: str = "quick", overrides: dict | None = None) -> list[TimingJob]:
    """A timing suite's configurations: its axes with any axis replaced by ``overrides``."""
    preset = suites.get(suite)
    axes = dict(preset.axes)
    extra = list(preset.extra)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if set(overrides) - {"backends", "device", "rounds", "threads"}:
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
            cells = ax["cells"] if ax.get("backends") else [c for c in ax["cells"] if runs_cell(backend, device, c)]
            for cell, b, t, i, h, layers, dtype, mode, bidirectional, lengths, threads in itertools.product(
                cells, ax["batch"], ax["seq_len"], ax["input_size"] or [None], ax["hidden"],
                ax["layers"], ax["dtype"], ax["mode"], ax.get("bidirectional") or [False],
                ax.get("lengths") or [ragged.FULL], ax.get("threads") or [0]):
                shape = dict(batch=b, seq_len=t, input_size=i or h, hidden=h)
                settings = timing
                if tiny[cell]:
                    shape, settings = dict(INTERPRETED_SHAPE), {**timing, **INTERPRETED_TIMING}
                configs.append(TimingJob(backend, cell, layers, dtype=dtype, mode=mode, device=device, **shape,
                                         bidirectional=bidirectional, lengths=lengths, thread_limit=threads,
                                         **settings))
            extras = [e for e in extra if ax.get("backends") or runs_cell(backend, device, e["cell"])]
            for e, threads in itertools.product(extras, ax.get("threads") or [0]):
                configs.append(TimingJob(backend, layers=1, device=device, input_size=e["hidden"], **e, **timing,
                                         thread_limit=threads))
    seen, unique = set(), []
    for cfg in configs:  # interpreted backends collapse to one shape: keep each configuration once
        if cfg.key() not in seen:
            seen.add(cfg.key())
            unique.append(cfg)
    for cfg in unique:
        cfg.validate()
    return in_rounds(unique, overrides.get("rounds") or preset.rounds)


def device_grids(preset, device: str, axes: dict, overrides: dict) -> list[dict]:
    """The axes of each of the suite's grids on ``device``: the suite's, then the grid's own (``grids``),
    then its axes for that kind of device (``device_axes``: a GPU's range replaces a CPU grid's), then the
    user's flags."""
    on_device = preset.device_axes.get(device.split(":")[0], {})
    return [{**axes, **grid, **on_device, **overrides} for grid in preset.grids or ({},)]


def in_rounds(configs: list[TimingJob], rounds: int) -> list[TimingJob]:
    """The grid visited ``rounds`` times.  A visit takes the backends (at each thread limit) in a shuffled
    order, and each backend's configurations in a shuffled order of their own (both seeded by the round),
    so that a configuration's rounds are minutes apart, no backend always follows the same one, and one
    round of one backend is one batch (``batches``: with rounds, one fresh process).  Where a
    configuration has a ``max_point_s`` its batch goes up in T (shuffled within each T), so the time per
    token at a shorter T is known when a longer one is predicted (``within_point_cap``)."""
    import dataclasses
    import random

    ordered = []
    for r in range(rounds):
        rng = random.Random(r)
        groups: dict = {}
        for cfg in configs:
            groups.setdefault((cfg.backend, cfg.thread_limit), []).append(dataclasses.replace(cfg, round=r))
        order = list(groups)
        rng.shuffle(order)
        for group in order:
            visit = groups[group]
            rng.shuffle(visit)
            if any(getattr(cfg, "max_point_s", None) for cfg in visit):
                visit.sort(key=lambda cfg: cfg.seq_len)  # stable: the shuffle stands within each T
            ordered += visit
    return ordered


def in_processes(jobs) -> bool:
    """Whether the inline executor runs ``jobs`` (a run's planned jobs) as ``batches`` in fresh processes:
    with more than one round (pyperf's rule: a record's spread must include what moves a whole process:
    allocation, JIT and layout) or a thread limit (XLA fixes its thread count when it starts)."""
    return any(getattr(j, "round", 0) or getattr(j, "thread_limit", 0) for j in jobs)


def batch_key(job) -> tuple:
    """What one fresh process runs: one round of one backend at one thread limit (and one T where a point
    cap must read the shorter T's time first)."""
    return job.round, job.backend, job.thread_limit, job.seq_len if job.max_point_s else None


def batches(jobs) -> list[list]:
    """``jobs`` (in order) cut where ``batch_key`` changes."""
    out: list[list] = []
    for job in jobs:
        if out and batch_key(out[-1][0]) == batch_key(job):
            out[-1].append(job)
        else:
            out.append([job])
    return out


def _family(job) -> tuple:
    """A timing job's identity without T and round: the points of one curve against T."""
    return tuple(v for f, v in zip(job.IDENTITY, job.key()[1:]) if f not in ("seq_len", "round"))


def _tokens(job) -> float:
    """Valid tokens one call carries: B in decode and step, else the batch's lengths summed."""
    return job.batch if job.mode in ("decode", "step") else job.record_fields["length_mean"] * job.batch


def within_point_cap(jobs, run, written: list):
    """The jobs, less those predicted to take longer than their ``max_point_s``: each of those is
    recorded ``unsupported`` with its estimate instead (appended to ``run`` and to ``written``).  The
    prediction reads the time per token at the longest shorter T of the same curve, from the run's
    records and from ``written``, the list the sweep appends each finished job's records to."""
    from .cost import predicted_point_s

    measured: dict = {}  # family -> {T: seconds per token}

    def learn(records):
        for rec in records:
            key = record_key(rec) if rec.get("kind") == "timing" and rec.get("status") == "ok" else None
            if key is not None and rec.get("tokens_per_s"):
                job = TimingJob.from_dict(dict(zip(TimingJob.IDENTITY, key[1:])))
                measured.setdefault(_family(job), {})[job.seq_len] = 1.0 / rec["tokens_per_s"]

    learn(run.records())
    seen = len(written)
    for job in jobs:
        learn(written[seen:])
        seen = len(written)
        cap = getattr(job, "max_point_s", None)
        shorter = {t: s for t, s in measured.get(_family(job), {}).items() if t < job.seq_len} if cap else {}
        if shorter:
            t_prev = max(shorter)
            estimate = predicted_point_s(shorter[t_prev], _tokens(job), job.min_repeats, job.min_time_s,
                                         job.max_time_s, first_round=job.round == 0)
            if estimate > cap:
                written.append(run.append(job.failure(
                    "unsupported", f"predicted {estimate:.0f} s ({shorter[t_prev] * 1e6:.3g} us per token at "
                                   f"T={t_prev} x {_tokens(job):.0f} tokens a call x its calls) exceeds this "
                                   f"suite's {cap:.0f} s per point; not run")))
                seen = len(written)
                continue
        yield job


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
                    if not axes.get("backends") and not runs_cell(backend, device, cell):
                        continue
                    for hidden in axes.get("hidden") or [None]:
                        for seq_len in (axes.get("seq_len") if variable else None) or [None]:
                            for dtype in axes.get("dtype") or ["float32"]:
                                jobs.append(TrainJob(name, backend, cell, hidden=hidden, seq_len=seq_len,
                                                     device=device, dtype=dtype))
    for job in jobs:
        job.validate()
    return jobs


def quality_jobs(axes: dict, grid=suites.QUALITY) -> list:
    """The ``quality`` suite: each task to its target at its default setting per backend (LSTM), then a
    memory-depth walk (``DepthJob``) of each model over the depth tasks' lengths.

    Each run's budget is ``grid.step_factor`` times the steps an LSTM needed at the task's shortest
    length (``Task.lstm_steps_to_target``), or ``grid.budget_s`` seconds of training if that is longer.
    Axes that apply: backends (time to quality), cells (memory depth's RNN cells), seq_len (memory
    depth's lengths), device, dtype.
    """
    from . import tasks

    jobs = []
    for device in axes.get("device") or [suites.get("quality").device]:
        for dtype in axes.get("dtype") or ["float32"]:
            common = dict(device=device, dtype=dtype, budget_s=grid.budget_s, eval_every=grid.eval_every)
            for name in tasks.names():
                steps = grid.step_factor * tasks.TASKS[name].lstm_steps_to_target
                for backend in axes.get("backends") or grid.backends:
                    jobs.append(TrainJob(name, backend, "lstm", steps=steps, stop_at_target=True, **common))
            cells = axes.get("cells")
            models = [(c, b) for c, b in grid.depth_models if cells is None or c in cells or b.startswith("transformer")]
            lengths = ",".join(map(str, axes["seq_len"])) if axes.get("seq_len") else grid.depth_seq_lens
            for name in grid.depth_tasks:
                steps = grid.step_factor * tasks.TASKS[name].lstm_steps_to_target
                for cell, backend in models:
                    jobs.append(DepthJob(name, backend, cell, seq_lens=lengths, seeds=grid.depth_seeds, steps=steps,
                                         **common))
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
    for n in axes.get("threads") or []:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"threads {n!r} is not a positive integer (intra-op threads of every framework)")


def plan(suite: str | None, axes: dict, config_file: str | None = None,
         check_memory: bool = True, metric: str = "time") -> tuple[list, list[str]]:
    """The validated jobs of ``rnnbench run`` and the devices they use; raises ConfigError.

    ``axes``: the CLI's (None where not given), over those of ``config_file``.  A single
    configuration that cannot fit the machine's free memory is refused (``check_memory``:
    where it runs here); in a larger sweep such a member becomes an ``unsupported`` record.
    ``metric``: ``time`` (timing jobs), or ``instructions`` (the same configurations counted under
    callgrind: CPU only, and refused here, before any work, where valgrind cannot run).
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
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
    if metric == "instructions":
        jobs = instruction_jobs(jobs, suite)
    configurations = {tuple(v for f, v in zip(j.IDENTITY, j.key()[1:]) if f != "round") for j in jobs}
    too_big = check_fits(jobs[0]) if check_memory and len(configurations) == 1 else None
    if too_big:
        raise ConfigError(f"{too_big}; refused before anything is written")
    return jobs, devices


def instruction_jobs(jobs, suite: str) -> list[InstructionJob]:
    """The timing jobs as jobs that count instructions; ConfigError where they cannot be counted here."""
    import dataclasses

    from . import callgrind

    if not all(isinstance(j, TimingJob) for j in jobs):
        raise ConfigError(f"--metric instructions counts timed calls; the {suite} suite trains (valid: a timing suite, "
                          f"{', '.join(s for s in suites.suite_names() if suites.get(s).kind != 'training')})")
    counted = [InstructionJob(**{**{f.name: getattr(j, f.name) for f in dataclasses.fields(j)},
                                 "timeout_s": suites.SETTINGS.instructions_timeout_s}) for j in jobs]
    for job in counted:
        job.validate()
    problem = callgrind.setup_problem()
    if problem:
        raise ConfigError(f"--metric instructions: {problem}")
    return counted


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
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(getattr(job, "thread_limit", 0)), preexec_fn=_die_with_parent(os.getpid()))
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
    return records + [_exit_failure(job, proc.returncode, stderr.strip().splitlines(), cgroup, ooms_before)]


def _exit_failure(job, returncode: int, stderr_lines, cgroup, ooms_before) -> dict:
    """The record of ``job``, whose worker ended with ``returncode`` before finishing it: oom where the
    kernel's OOM killer took it (its cgroup's count rose), else error naming the signal or status."""
    from impls.runtime import oom_kill_count

    tail = " | ".join(list(stderr_lines)[-3:])
    if returncode < 0:
        sig = signal.Signals(-returncode).name
        ooms_after = oom_kill_count(cgroup)
        if sig == "SIGKILL" and ooms_before is not None and ooms_after is not None and ooms_after > ooms_before:
            return job.failure("oom", f"worker killed by SIGKILL from the kernel's OOM killer (oom_kill "
                                      f"count of cgroup {cgroup[0]} rose {ooms_before} -> {ooms_after})"
                                      + (f": {tail}" if tail else ""))
        status = "oom" if sig == "SIGKILL" and "memory" in tail.lower() else "error"
        return job.failure(status, f"worker killed by {sig}: {tail}")
    return job.failure("error", f"worker exited with status {returncode}: {tail}")


def _pump(stream, put) -> None:
    """Every line of ``stream`` through ``put``, then None (the end)."""
    for line in stream:
        put(line.rstrip("\n"))
    put(None)


def run_batch_in_child(jobs):
    """A batch of jobs (one round of one backend) in one fresh process (``rnnbench.worker --jobs``).

    Yields ``(None, [calibration record])`` when the process has timed its calibration workload, then
    ``(job, records)`` as each job finishes, so the sweep appends them at once.  A job that crashes its
    process, or runs past its ``timeout_s``, becomes its failure record (the process is killed), and the
    rest of the batch goes on in a new process (which calibrates again).  The worker dies with us.
    """
    import queue
    from collections import deque

    from impls.runtime import memory_cgroup, oom_kill_count

    from .measure import RECORD_PREFIX, child_env
    from .worker import DONE_PREFIX

    todo = list(jobs)
    while todo:
        first = todo[0]
        plan = {"jobs": [j.to_dict() for j in todo],
                "calibration": {"backend": first.backend, "round_": first.round, "thread_limit": first.thread_limit}}
        cgroup = memory_cgroup()
        ooms_before = oom_kill_count(cgroup)
        proc = subprocess.Popen([sys.executable, "-m", "rnnbench.worker", "--jobs"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=child_env(first.thread_limit), preexec_fn=_die_with_parent(os.getpid()))
        lines, stderr_tail = queue.Queue(), deque(maxlen=20)
        threading.Thread(target=_pump, args=(proc.stdout, lines.put), daemon=True).start()
        threading.Thread(target=_pump, args=(proc.stderr, lambda line: line is not None and stderr_tail.append(line)),
                         daemon=True).start()
        try:
            proc.stdin.write(json.dumps(plan))
            proc.stdin.close()
            records, deadline = [], time.monotonic() + first.timeout_s
            while todo:
                try:
                    line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    job = todo.pop(0)
                    yield job, [job.failure("timeout", f"no result after {job.timeout_s:.0f} s; the process was "
                                                       "killed and the rest of its batch ran in a new one")]
                    break
                if line is None:  # the process ended before its list did
                    proc.wait()
                    time.sleep(0.05)  # the stderr pump's last lines
                    job = todo.pop(0)
                    yield job, records + [_exit_failure(job, proc.returncode, stderr_tail, cgroup, ooms_before)]
                    break
                if line.startswith(RECORD_PREFIX):
                    rec = json.loads(line[len(RECORD_PREFIX):])
                    if rec.get("kind") == "calibration":
                        yield None, [rec]
                    else:
                        records.append(rec)
                elif line.startswith(DONE_PREFIX):
                    yield todo.pop(0), records
                    records = []
                    deadline = time.monotonic() + (todo[0].timeout_s if todo else 0.0)
            else:
                proc.wait(timeout=60)  # its list done: it is exiting
        finally:
            if proc.poll() is None:  # a hang, an interrupt, a generator closed early: the worker goes with us
                proc.kill()
            proc.wait()


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
    """Jobs are taken one at a time (``within_point_cap`` decides each from what came before)."""
    jobs = iter(jobs)
    for job in jobs:
        records = _run_watched(job)
        if records is not None:
            yield job, records
            continue
        # A thread cannot be stopped: it is abandoned (it ends with this process), and the rest of the
        # sweep runs in fresh processes, so nothing else shares this process with it.
        yield job, [job.failure("timeout", f"no result after {job.timeout_s:.0f} s (inline watchdog); abandoned, "
                                           "and the rest of the sweep ran in fresh processes")]
        yield from execute_process(jobs)
        return


def execute_process(jobs):
    for job in jobs:
        yield job, run_in_child(job)


def execute_batches(job_batches):
    """Each batch (an iterable of lists, taken one at a time) in a fresh process of its own."""
    for batch in job_batches:
        if batch:
            yield from run_batch_in_child(batch)


def execute_ray(jobs, address: str | None = None):
    from .ray_executor import execute

    yield from execute(jobs, address)


def execute_callgrind(jobs):
    from .instructions import execute

    yield from execute(jobs)


# callgrind: every job in one process under valgrind (--metric instructions; never chosen by --executor)
EXECUTORS = {"inline": execute_inline, "process": execute_process, "ray": execute_ray, "callgrind": execute_callgrind}


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
        if executor == "ray":  # Ray runs its tasks at once, so a point cap cannot read the shorter T first there
            stream = execute_ray(pending, **kwargs)
        elif executor == "inline" and in_processes(jobs):  # each batch capped when it is about to start
            stream = execute_batches(list(within_point_cap(batch, run, written)) for batch in batches(pending))
        else:
            stream = EXECUTORS[executor](within_point_cap(pending, run, written))
        for job, records in stream:
            for rec in records:
                written.append(run.append(rec))
            if job is not None:  # None: a process's calibration record
                bar.set_postfix_str(job.describe(), refresh=False)
                bar.update(1)
    finally:
        bar.close()
        run.update_info(wall_s=run.info.get("wall_s", 0) + time.perf_counter() - start)
    return written


# -- a run: created or resumed ------------------------------------------------------------------


def create_run(jobs, devices, executor: str, out, machine: str | None, argv=None):
    """A new run folder holding the environment, the jobs and the machine's ceilings."""
    from .measure import ceilings_or_none
    from .store import Run, environment

    import impls

    info = {**environment(devices, argv), "executor": executor, "jobs": [j.to_dict() for j in jobs]}
    if impls.plugins():  # what a resume must load to find these backends again
        info["plugins"] = impls.plugins()
    timing = [j for j in jobs if j.RECORD_KIND == "timing"]
    if timing:  # what fraction_of_peak is measured against (cached per machine; see measure)
        info["ceilings"] = ceilings_or_none(timing)
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

"""``--metric instructions``: each configuration's calls counted under callgrind, every configuration of a
run in one process under valgrind (its start-up, torch's import under emulation, is paid once).

The parent starts ``valgrind --tool=callgrind --instr-atstart=no python -m rnnbench.worker
--instructions JOBS_FILE`` (``execute``); the worker builds each configuration as ``measure`` does
(``Prepared``), warms it up outside any window, and counts two windows of fixed call counts
(``callgrind.Collector``).  A count is deterministic to about 0.01% under load (docs/design.md
"Instruction counts"); it measures the code path on valgrind's emulated CPU, which has no AVX-512
or AMX (oneDNN and XLA take their AVX2 paths), never this CPU's speed: docs/instructions.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from . import callgrind
from .measure import RECORD_PREFIX, Prepared, _available, _features, base_record, child_env, classify, failure_record
from .measure import cache_dir

METRIC = "instructions"
WARMUP_CALLS = 2  # the first calls compile (JAX), allocate and fill caches: never counted
DONE_PREFIX = "RNNBENCH_JOB_DONE "  # the worker's line after each job's records


def count(cfg, collector: callgrind.Collector | None = None) -> list[dict]:
    """The instructions record of one configuration, counted in this process (which runs under callgrind)."""
    import impls
    from impls.runner import timed

    try:
        ok, reason = _available(cfg)
        if ok:
            ok, reason = _features(cfg)
        if ok:
            speed, why = timed(impls.get(cfg.backend), cfg.device, cfg.cell)
            if not speed:  # an interpreter's count is the interpreter's, as its time is
                ok, reason = False, f"{why}: its count would be the interpreter's"
        if not ok:
            return [failure_record(cfg, "unsupported", reason, kind=METRIC)]
        collector = collector or callgrind.Collector(cache_dir())
        p = Prepared(cfg)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a record
        return [failure_record(cfg, classify(exc), f"{type(exc).__name__}: {exc}", kind=METRIC)]
    rec = {**base_record(cfg, METRIC), **p.base_fields()}
    try:
        def call():
            p.fn()
            p.runner.sync()

        for _ in range(WARMUP_CALLS):
            call()
        per_call, windows = collector.count(call)
        rec.update(instructions=per_call, instruction_windows=[[n, windows[n]] for n in sorted(windows)],
                   impl_label=p.runner.impl_label())
    except Exception as exc:  # noqa: BLE001
        rec.update(status=classify(exc), message=f"{type(exc).__name__}: {exc}"[-2000:])
    return [rec]


def count_here(jobs) -> None:
    """In the process under valgrind: every job's records on stdout, then a line saying it is done."""
    collector = None
    problem = ""
    try:
        collector = callgrind.Collector(cache_dir())
    except Exception as exc:  # noqa: BLE001 - each job gets the reason
        problem = f"callgrind client requests unavailable: {type(exc).__name__}: {exc}"
    for job in jobs:
        records = count(job, collector) if collector else [job.failure("error", problem)]
        for rec in records:
            print(RECORD_PREFIX + json.dumps(rec), flush=True)
        print(DONE_PREFIX + json.dumps(list(job.key())), flush=True)


def execute(jobs):
    """The executor of ``--metric instructions``: (job, records) as the one process under valgrind
    finishes each; a crash, or a job past its ``timeout_s`` (which kills the process), gives the job
    in progress a failure record and each job left an error record naming why."""
    jobs = list(jobs)
    if not jobs:
        return
    callgrind.build_helper(cache_dir())  # built here, where a compiler's error is readable, not under valgrind
    with tempfile.TemporaryDirectory(prefix="rnnbench-callgrind-") as out_dir:
        jobs_file = os.path.join(out_dir, "jobs.json")
        with open(jobs_file, "w") as f:
            json.dump([j.to_dict() for j in jobs], f)
        cmd = callgrind.command(out_dir, [sys.executable, "-m", "rnnbench.worker", "--instructions", jobs_file])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=callgrind.environment(out_dir, child_env()))
        stderr_tail: list[str] = []
        drain = _drain(proc.stderr, stderr_tail)
        pending, records = list(jobs), []
        deadline = time.monotonic() + STARTUP_S + pending[0].timeout_s
        try:
            for line in _lines_until(proc.stdout, lambda: deadline):
                if line.startswith(RECORD_PREFIX):
                    records.append(json.loads(line[len(RECORD_PREFIX):]))
                elif line.startswith(DONE_PREFIX) and pending:
                    yield pending.pop(0), records
                    records = []
                    deadline = time.monotonic() + (pending[0].timeout_s if pending else STARTUP_S)
            timed_out = proc.poll() is None
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            drain.join(5)
    if pending:
        tail = " | ".join(stderr_tail[-3:])
        why = ("no result in time under valgrind; the process was killed" if timed_out
               else f"the process under valgrind exited with status {proc.returncode}: {tail}")
        yield pending[0], records + [pending[0].failure("timeout" if timed_out else "error", why)]
        for job in pending[1:]:
            yield job, [job.failure("error", f"not counted: an earlier configuration ended the process ({why})")]


STARTUP_S = 900  # valgrind's start-up and the frameworks' imports under emulation (1-2 min on 2 quiet cores)


def _drain(stream, tail: list):
    """A thread keeping the last lines of ``stream`` (valgrind's own messages), so the pipe never fills."""
    import threading

    def read():
        for raw in stream:
            tail.append(raw.decode(errors="replace").rstrip())
            del tail[:-20]

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _lines_until(stream, deadline):
    """Lines of ``stream`` until it ends or ``deadline()`` (a monotonic time, read at each wait) passes."""
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    buffer = b""
    while True:
        left = deadline() - time.monotonic()
        if left <= 0 or not selector.select(left):
            return
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from (line.decode(errors="replace") for line in lines)

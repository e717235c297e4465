"""Entry point of a fresh measuring process (process and ray executors, rounds in processes, memory probes).

``python -m rnnbench.worker [--memory-only | --ceilings] JSON`` prints each record on
a line starting with ``RNNBENCH_RECORD``; anything else on stdout is ignored.
``python -m rnnbench.worker --instructions JOBS_FILE`` (under callgrind: ``rnnbench.instructions``)
counts every job of the file in this one process.
``python -m rnnbench.worker --jobs`` reads ``{"jobs": [...], "calibration": {...}}`` from
stdin: it times the calibration workload first (``measure.calibration_record``), then runs
the jobs in order, printing each one's records as it finishes and then ``RNNBENCH_DONE i``,
so the parent appends them at once and knows where a crash or a hang fell.
``python -m rnnbench.worker --probe-server`` answers one memory probe per job line on stdin.
Plugins come with ``$RNNBENCH_PLUGINS``, which the parent exports (``impls.discover``).
"""
from __future__ import annotations

import importlib
import json
import os
import sys

import impls
from impls.runtime import prepare_process

DONE_PREFIX = "RNNBENCH_DONE "


def run_jobs(plan: dict, emit) -> None:
    """``--jobs``: the calibration record, then each job's records and its done line, through ``emit(line)``."""
    from .jobs import job_from_dict
    from .measure import RECORD_PREFIX, calibration_record

    if plan.get("calibration") is not None:
        emit(RECORD_PREFIX + json.dumps(calibration_record(**plan["calibration"])))
    for i, d in enumerate(plan["jobs"]):
        # the first job has the process to itself (memory probed here); later ones probe in a fresh child
        for rec in job_from_dict(d).run(fresh_process=i == 0):
            emit(RECORD_PREFIX + json.dumps(rec))
        emit(f"{DONE_PREFIX}{i}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = argv.pop(0) if argv and argv[0] in ("--memory-only", "--ceilings", "--instructions", "--jobs",
                                              "--probe-server") else None
    prepare_process()
    from .measure import RECORD_PREFIX

    if mode == "--instructions":  # every job in this one process under valgrind, each job's records as it ends
        from .instructions import count_here
        from .jobs import job_from_dict

        with open(argv[0]) as f:
            count_here([job_from_dict(d) for d in json.load(f)])
        return 0
    if mode == "--jobs":
        run_jobs(json.loads(sys.stdin.read()), lambda line: print(line, flush=True))
        return 0
    if mode == "--probe-server":
        serve_probes(sys.stdin, sys.stdout.fileno())
        return 0
    if mode == "--ceilings":  # the machine's ceilings, measured here so no timing process runs them
        from .measure import measure_ceilings_here

        plan = json.loads(argv[0])
        records = [measure_ceilings_here(plan["device"], plan["dtypes"], plan["shapes"], plan["tf32"])]
    else:
        from .jobs import job_from_dict

        job = job_from_dict(json.loads(argv[0]))  # a TimingJob, or a TrainJob ("job": "train")
        if mode == "--memory-only":
            from .measure import Prepared

            peak, method = Prepared(job).peak_memory(fresh_process=True)
            records = [{"peak_bytes": peak, "peak_method": method}]
        else:
            records = job.run(fresh_process=True)
    for rec in records:
        print(RECORD_PREFIX + json.dumps(rec), flush=True)
    return 0


def serve_probes(stdin, stdout_fd: int) -> None:
    """The probe server (``python -m rnnbench.worker --probe-server``): imports the registered
    frameworks once, then for each job line on ``stdin`` forks a probe and writes its answer line."""
    for name in impls.names():
        try:
            importlib.import_module(impls.get(name).framework)
        except ImportError:  # a framework that is not installed has nothing to preload
            continue
    from .jobs import job_from_dict
    from .measure import RECORD_PREFIX, Prepared

    for line in stdin:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the probe: a fresh address space that has run nothing
            os.close(read_end)
            try:
                peak, method = Prepared(job_from_dict(json.loads(line))).peak_memory(fresh_process=True)
                answer = {"peak_bytes": peak, "peak_method": method}
            except Exception as exc:  # noqa: BLE001 - the failure is the probe's answer
                answer = {"peak_bytes": None, "peak_method": f"memory probe failed: {type(exc).__name__}: {exc}"[-500:]}
            with os.fdopen(write_end, "w") as out:
                out.write(json.dumps(answer))
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as answers:
            answer = answers.read()
        _, status = os.waitpid(pid, 0)
        if not answer:
            answer = json.dumps({"peak_bytes": None, "peak_method": "memory probe failed: the process exited with "
                                 f"status {os.waitstatus_to_exitcode(status)}"})
        os.write(stdout_fd, (RECORD_PREFIX + answer + "\n").encode())


if __name__ == "__main__":
    sys.exit(main())

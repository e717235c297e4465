"""Entry point of a fresh measuring process (process and ray executors, rounds in processes, memory probes).

``python -m rnnbench.worker [--memory-only | --ceilings] JSON`` prints each record on
a line starting with ``RNNBENCH_RECORD``; anything else on stdout is ignored.
``python -m rnnbench.worker --instructions JOBS_FILE`` (under callgrind: ``rnnbench.instructions``)
counts every job of the file in this one process.
``python -m rnnbench.worker --jobs`` reads ``{"jobs": [...], "calibration": {...}}`` from
stdin: it times the calibration workload first (``measure.calibration_record``), then runs
the jobs in order, printing each one's records as it finishes and then ``RNNBENCH_DONE i``,
so the parent appends them at once and knows where a crash or a hang fell.
"""
from __future__ import annotations

import json
import sys

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
    mode = argv.pop(0) if argv and argv[0] in ("--memory-only", "--ceilings", "--instructions", "--jobs") else None
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


if __name__ == "__main__":
    sys.exit(main())

"""Entry point of a fresh measuring process (process and ray executors, memory probes).

``python -m rnnbench.worker [--memory-only | --ceilings] JSON`` prints each record on
a line starting with ``RNNBENCH_RECORD``; anything else on stdout is ignored.
``python -m rnnbench.worker --instructions JOBS_FILE`` (under callgrind: ``rnnbench.instructions``)
counts every job of the file in this one process.
"""
from __future__ import annotations

import json
import sys

from impls.runtime import prepare_process


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = argv.pop(0) if argv and argv[0] in ("--memory-only", "--ceilings", "--instructions") else None
    prepare_process()
    from .measure import RECORD_PREFIX

    if mode == "--instructions":  # every job in this one process under valgrind, each job's records as it ends
        from .instructions import count_here
        from .jobs import job_from_dict

        with open(argv[0]) as f:
            count_here([job_from_dict(d) for d in json.load(f)])
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

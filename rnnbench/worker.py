"""Entry point of a fresh measuring process (process and ray executors, memory probes).

``python -m rnnbench.worker [--memory-only] CONFIG_JSON`` prints each record on
a line starting with ``RNNBENCH_RECORD``; anything else on stdout is ignored.
"""
from __future__ import annotations

import json
import sys

from impls.runtime import prepare_process


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    memory_only = "--memory-only" in argv
    argv = [a for a in argv if a != "--memory-only"]
    prepare_process()
    from .measure import RECORD_PREFIX, Prepared
    from .sweep import job_from_dict, run_job

    job = job_from_dict(json.loads(argv[0]))  # a timing Config, or a TrainConfig ("job": "train")
    if memory_only:
        peak, method = Prepared(job).peak_memory(fresh_process=True)
        records = [{"peak_bytes": peak, "peak_method": method}]
    else:
        records = run_job(job, fresh_process=True)
    for rec in records:
        print(RECORD_PREFIX + json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

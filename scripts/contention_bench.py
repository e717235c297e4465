"""Quiet vs loaded: what one busy core does to a timing, and whether the record says so (issue 16, item 1).

A benchmark, not a test.  The same configuration (torch_cudnn LSTM train B=16 T=64 I=64 H=64, the
audit's case) is measured by ``rnnbench.measure`` alternately on a quiet machine and with a busy loop
that is not ours (started in a new session, killed by its pid), ``--pairs`` times.  Each row: the
median, the samples' spread, the contention measured around the timed window (others' CPU, cores),
how often it was re-measured, and the ``contended`` flag the record ends with.

    .venv/bin/python scripts/contention_bench.py --pairs 3
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def busy_elsewhere() -> int:
    """A busy loop outside this process tree, as a neighbour's job would be (the unit test's own: our
    own children's CPU is ours, not contention); its pid, once it has reached its loop."""
    from rnnbench.contention import start_detached_busy

    pid = start_detached_busy()
    time.sleep(0.5)
    return pid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3, help="quiet/loaded pairs (default 3)")
    args = ap.parse_args()
    from rnnbench.jobs import TimingJob
    from rnnbench.measure import measure

    job = TimingJob("torch_cudnn", cell="lstm", batch=16, seq_len=64, input_size=64, hidden=64, mode="train")
    print(f"{'machine':<8} {'median ms':>10} {'min-max ms':>17} {'contention':>11} {'remeasured':>10} contended")
    for _ in range(args.pairs):
        for label in ("quiet", "loaded"):
            busy = busy_elsewhere() if label == "loaded" else None
            try:
                (rec,) = [r for r in measure(job, memory="skip") if r["kind"] == "timing"]
            finally:
                if busy is not None:
                    os.kill(busy, signal.SIGKILL)
            ms = [s * 1e3 for s in rec["samples_s"]]
            print(f"{label:<8} {rec['median_s'] * 1e3:>10.3f} {min(ms):>8.3f}-{max(ms):<8.3f} {rec['contention']:>11.2f} "
                  f"{rec['remeasured']:>10} {rec['contended']}", flush=True)


if __name__ == "__main__":
    main()

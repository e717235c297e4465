"""Does process state leak into a timing?  A benchmark (not a test): prints a table for the note.

Two questions (issue 16, item 5):
1. Ceilings first: an eager timing measured in a fresh process, against the same timing measured
   after the machine's ceilings -- once the way ``rnnbench.measure.machine_ceilings`` gets them now
   (a child process, cached), once measured in the same process (what runs did before, leaving
   glibc's malloc thresholds raised by the large matmuls).
2. Position in a sweep: the same configuration measured first and last in one inline sweep.
Each with the allocator set up as the CLI does (``impls.runtime.prepare_process`` fixes glibc's
malloc thresholds) and, for the "before" rows, with glibc's dynamic thresholds (`` (dynamic malloc)``).

Every variant runs in its own fresh process, alternating, ``--pairs`` times, so that a slow minute
of a shared machine falls on all of them alike; each row gives the median of the processes' medians,
their spread and the contention each saw (``rnnbench.contention``: others' CPU in cores).

    .venv/bin/python scripts/state_leak_bench.py --pairs 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = dict(backend="torch_eager", cell="lstm", batch=16, seq_len=64, input_size=64, hidden=64, mode="train")
OTHERS = [dict(CONFIG, backend=b, hidden=h) for b in ("torch_cudnn", "jax_scan") for h in (64, 256)]
DYNAMIC = " (dynamic malloc)"  # glibc's default: thresholds that rise after the first large free


def variant(name: str) -> list[dict]:
    """In this fresh process: the timing record(s) of one variant, with where they came in the process.
    A name ending in DYNAMIC skips the allocator set-up the CLI does first (glibc's dynamic thresholds)."""
    from impls.runtime import prepare_process
    from rnnbench import measure
    from rnnbench.jobs import TimingJob

    base, suffix = name.removesuffix(DYNAMIC), DYNAMIC if name.endswith(DYNAMIC) else ""
    if not suffix:
        prepare_process()  # as the CLI and the workers do first: the malloc thresholds fixed
    job = TimingJob(**CONFIG, min_time_s=0.3, max_time_s=1.0)
    if base == "ceilings-in-process":  # the old way: large matmuls in the process that times
        measure.measure_ceilings_here("cpu", ["float32"], [(16, 64, 4, "float32")])
    elif base == "ceilings-cached":  # the way a run gets them now: from the cache, or from a child
        measure.machine_ceilings([job])
    if base != "sweep":
        return [{"variant": name, **_fields(measure.measure(job, memory="skip")[0])}]
    jobs = [job, *(TimingJob(**c, min_time_s=0.3, max_time_s=1.0) for c in OTHERS), job]
    out = [_fields(measure.measure(j, memory="skip")[0]) for j in jobs]
    return [{"variant": f"sweep: first{suffix}", **out[0]}, {"variant": f"sweep: last{suffix}", **out[-1]}]


def _fields(rec: dict) -> dict:
    return {k: rec.get(k) for k in ("backend", "median_s", "repeats", "contention", "contended", "status")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5, help="fresh processes per variant (default 5)")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # the child's side
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(variant(args.variant)))
        return
    variants = ["fresh", "ceilings-cached", "ceilings-in-process", "sweep", "fresh" + DYNAMIC,
                "ceilings-in-process" + DYNAMIC, "sweep" + DYNAMIC]
    rows: dict[str, list] = {}
    for _ in range(args.pairs):
        for name in variants:
            proc = subprocess.run([sys.executable, __file__, "--variant", name], capture_output=True, text=True,
                                  cwd=ROOT, check=True)
            for rec in json.loads(proc.stdout.strip().splitlines()[-1]):
                rows.setdefault(rec["variant"], []).append(rec)
    base = statistics.median(r["median_s"] for r in rows["fresh"])
    print(f"torch_eager LSTM train B=16 T=64 H=64, {args.pairs} fresh processes per row")
    print(f"{'variant':<38} {'median ms':>10} {'min-max ms':>17} {'vs fresh':>9} {'contention':>16} contended")
    for name, recs in rows.items():
        ms = [r["median_s"] * 1e3 for r in recs]
        cores = [r["contention"] for r in recs]
        print(f"{name:<38} {statistics.median(ms):>10.3f} {min(ms):>8.3f}-{max(ms):<8.3f} "
              f"{statistics.median(ms) / base / 1e3:>9.3f} {min(cores):>7.2f}-{max(cores):<7.2f}  "
              f"{sum(bool(r['contended']) for r in recs)}/{len(recs)}")


if __name__ == "__main__":
    main()

"""Identical runs and a planted slowdown, compared on per-round medians (issue 16, item 2).

Three runs of one 24-configuration grid (torch_cudnn_planted, torch_eager, jax_scan; LSTM and
GRU forward; B=16; T 32, 64; H 32, 64), each in a fresh process set up as the CLI sets up its own
and visited in ``--rounds`` shuffled rounds: A, A' with no change, and B where the test-only backend ``scripts/planted_backend.py`` is 1.5x slower
($RNNBENCH_PLANTED_FACTOR).  Prints, per configuration, A' vs A and B vs A by the report's rule
(``rnnbench.results.compare_rounds``), next to the old rule (Mann-Whitney on every sample of one
round), with the contention each run saw.  Contended records are compared too (and counted): on a
shared machine they may be all there is; the report itself leaves them out.

    .venv/bin/python scripts/rounds_noise_bench.py --rounds 5 --out /tmp/noise.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def grid():
    from rnnbench.jobs import TimingJob

    return [TimingJob(b, c, batch=16, seq_len=t, input_size=h, hidden=h, mode="forward", min_time_s=0.1,
                      max_time_s=0.5)
            for b, c, t, h in itertools.product(("torch_cudnn_planted", "torch_eager", "jax_scan"), ("lstm", "gru"),
                                                (32, 64), (32, 64))]


def one_run(rounds: int, factor: float) -> list[dict]:
    """One run, in this process (a fresh one: two runs compared are two processes, as two `rnnbench run`s)."""
    from impls.runtime import prepare_process

    prepare_process()  # as the CLI does first
    os.environ["RNNBENCH_PLANTED_FACTOR"] = str(factor)
    from rnnbench.measure import measure
    from rnnbench.sweep import in_rounds
    import planted_backend  # scripts/, beside this file

    planted_backend.register()
    return [rec for job in in_rounds(grid(), rounds) for rec in measure(job, memory="skip", ceilings={})
            if rec["kind"] == "timing"]


def run_in_fresh_process(rounds: int, factor: float) -> list[dict]:
    proc = subprocess.run([sys.executable, __file__, "--one-run", str(factor), "--rounds", str(rounds)],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(a: list[dict], b: list[dict]) -> list[dict]:
    import pandas as pd

    from scipy.stats import mannwhitneyu

    from rnnbench.results import compare_rounds, round_medians

    key = ["backend", "cell", "seq_len", "hidden"]
    fa, fb = pd.DataFrame(a), pd.DataFrame(b)
    rows = []
    for k, ga in fa.groupby(key):
        gb = fb.set_index(key).loc[k].reset_index()
        ra, rb = list(round_medians(ga).values()), list(round_medians(gb).values())
        c = compare_rounds(ra, rb)
        old = float(mannwhitneyu(ga[ga["round"] == 0]["samples_s"].iloc[0], gb[gb["round"] == 0]["samples_s"].iloc[0],
                                 alternative="two-sided").pvalue)  # the old rule: the samples of one round
        rows.append({**dict(zip(key, k)), "ratio": c.ratio, "p_rounds": c.p, "flagged": c.significant,
                     "p_samples_round0": old, "contended_a": int(ga["contended"].sum()),
                     "contended_b": int(gb["contended"].sum())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="noise.json")
    ap.add_argument("--one-run", type=float, help=argparse.SUPPRESS)  # the child's side: the planted factor
    args = ap.parse_args()
    if args.one_run is not None:
        print(json.dumps(one_run(args.rounds, args.one_run)))
        return
    runs = {}
    for name, factor in (("A", 1.0), ("A2", 1.0), ("B", 1.5)):
        runs[name] = run_in_fresh_process(args.rounds, factor)
        Path(args.out).write_text(json.dumps(runs))
        cont = [r["contention"] for r in runs[name]]
        print(f"run {name}: {len(cont)} records, contention median {sorted(cont)[len(cont) // 2]:.2f} cores, "
              f"{sum(r['contended'] for r in runs[name])} contended", flush=True)
    for label, other in (("A' vs A (no change)", "A2"), ("B vs A (torch_cudnn_planted 1.5x)", "B")):
        rows = compare(runs["A"], runs[other])
        print(f"\n{label}: {sum(r['flagged'] for r in rows)} of {len(rows)} flagged; old rule (samples of one "
              f"round, p < 0.01): {sum((r['p_samples_round0'] or 1) < 0.01 for r in rows)}")
        print(f"{'backend':<20} {'cell':<5} {'T':>3} {'H':>3} {'ratio':>6} {'p (rounds)':>10} {'flag':>5} "
              f"{'p (samples)':>11} contended A/B")
        for r in rows:
            print(f"{r['backend']:<20} {r['cell']:<5} {r['seq_len']:>3} {r['hidden']:>3} {r['ratio']:>6.3f} "
                  f"{r['p_rounds']:>10.4f} {str(r['flagged']):>5} {r['p_samples_round0']:>11.2g} "
                  f"{r['contended_a']}/{r['contended_b']}")


if __name__ == "__main__":
    main()

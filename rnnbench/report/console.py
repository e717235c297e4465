"""What ``rnnbench run`` prints at its end: a summary read in ten seconds, or the full table.

Summary: per regime (device, dtype, cell, mode, short/long T) the fastest RNN
backend, its margin over the runner-up and the transformer baseline's time over
the winner's; the count of configurations that did not finish; the rows of
backends under an interpreter, listed apart as exactness checks.
"""
from __future__ import annotations


from .. import results
from ..suites import SETTINGS

FULL_COLUMNS = ["backend", "impl", "cell", "mode", "dtype", "B", "T", "I", "H", "median_ms", "iqr_ms", "tokens_per_s",
                "peak_MB", "GFLOP_s", "of_peak", "of_roofline", "status"]


def _print_frame(df) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_columns", 20):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))


def timing_frame(timing):
    """The full table's rows: one per timing record, in milliseconds and MB."""
    import pandas as pd

    df = pd.DataFrame(timing)
    for col in ("median_s", "iqr_s", "tokens_per_s", "peak_bytes", "impl_label", "achieved_flops_per_s",
                "fraction_of_peak", "fraction_of_recurrent_roofline"):
        if col not in df:
            df[col] = None
    df["median_ms"] = df["median_s"].astype(float) * 1e3
    df["iqr_ms"] = df["iqr_s"].astype(float) * 1e3
    df["peak_MB"] = df["peak_bytes"].astype(float) / 1e6
    df["GFLOP_s"] = df["achieved_flops_per_s"].astype(float) / 1e9
    df = df.rename(columns={"impl_label": "impl", "seq_len": "T", "batch": "B", "hidden": "H", "input_size": "I",
                            "fraction_of_peak": "of_peak", "fraction_of_recurrent_roofline": "of_roofline"})
    return df[FULL_COLUMNS].sort_values(["cell", "mode", "T", "median_ms"])


def regime_summary(records):
    """Per regime: fastest RNN backend, margin over the runner-up, baseline time over the winner's."""
    import numpy as np
    import pandas as pd

    df = pd.DataFrame(records)
    for col in ("impl_label", "median_s", "samples_s", "backend_kind"):
        if col not in df:
            df[col] = None
    df = results.with_axis_defaults(df)
    table, reason = results.regime_table(df)
    if table is None:
        return None, reason
    speed = results.speed_rows(df)
    speed = speed.assign(**{"T range": np.where(speed["seq_len"] <= SETTINGS.short_t_max, "short", "long")})
    baselines = set(speed.loc[speed["backend_kind"] == "baseline", "backend"])
    rows = []
    for _, r in table.iterrows():
        regime = speed[(speed["device"] == r["device"]) & (speed["dtype"] == r["dtype"]) & (speed["cell"] == r["cell"])
                       & (speed["mode"] == r["mode"]) & (speed["T range"] == r["T range"].split()[0])
                       & (speed["model"] == r["model"]) & (speed["lengths"] == r["lengths"])]
        times = results.config_times(regime)
        base = times[[b for b in times if b in baselines]].div(times[r["fastest"]], axis=0).stack().dropna()
        rows.append({"device": r["device"], "dtype": r["dtype"], "cell": r["cell"], "mode": r["mode"],
                     "T": r["T range"].split()[0], "model": r["model"], "lengths": r["lengths"],
                     "fastest": r["fastest"], "runner-up": r["runner-up"], "margin": r["margin"],
                     "transformer / fastest": results.fmt_ratio(results.geometric_mean(base)) if len(base) else "-"})
    summary = pd.DataFrame(rows)
    return summary.drop(columns=[c for c in ("model", "lengths") if summary[c].nunique() == 1]), None


def print_end_of_run(records, table: str = "summary") -> None:
    """The end of ``rnnbench run``: ``summary`` (compact) or ``full`` (every timing row)."""
    timing = [r for r in records if r.get("kind") == "timing"]
    training = [r for r in records if r.get("kind") == "training"]
    counted = [r for r in records if r.get("kind") == "instructions"]
    if training:
        print_training(training)
    if counted:
        print_instructions(counted)
    if not timing:
        if not training and not counted:
            print("no timing records")
        return
    interpreted = [r for r in timing if r.get("impl_label") == "interpreted"]
    bad = [r for r in timing if r.get("status") != "ok"]
    if table == "full":
        _print_frame(timing_frame(timing))
    else:
        summary, reason = regime_summary(timing)
        if summary is None:
            print(f"no regime summary: {reason}")
        else:
            print(f"fastest RNN backend per regime (T short: <= {SETTINGS.short_t_max}; margin: runner-up's time "
                  "over the fastest's; transformer / fastest: the baseline's time over the fastest's; "
                  f"{results.RATIO_RULE}):")
            _print_frame(summary)
        if interpreted:
            ok = [r for r in interpreted if r.get("status") == "ok"]
            worst = max((r.get("max_rel_err") or 0.0 for r in ok), default=None)
            print(f"\nexactness only (under an interpreter, not timed as speed): {len(interpreted)} row(s) of "
                  f"{', '.join(sorted({r['backend'] for r in interpreted}))}, {len(ok)} ok"
                  + (f", worst max_rel_err {worst:.2g}" if worst is not None else ""))
        print(f"\n{len(timing)} timing configurations; rnnbench run --table full lists every row")
    if bad:
        counts = {}
        for r in bad:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        print(f"\n{len(bad)} configuration(s) not ok ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}):")
        for r in results.failure_reasons(bad).itertuples():  # one line per reason, not per shape and round
            shapes = f"x{r.records}, T {r.T}" if r.records > 1 else f"T={r.T}"
            print(f"  {r.backend} {r.cell} {r.mode}: {r.status}: {r.message[:200]} ({shapes})")


def print_instructions(records) -> None:
    """One row per configuration: instructions per call under callgrind (--metric instructions), or why not."""
    import pandas as pd

    rows = [{"backend": r["backend"], "cell": r["cell"], "mode": r.get("mode"), "B": r["batch"], "T": r["seq_len"],
             "H": r["hidden"], "dtype": r["dtype"], "round": r.get("round"),
             "instructions/call": f"{r['instructions']:,.0f}" if r.get("status") == "ok" else r["status"],
             "message": r.get("message", "")[:80]} for r in records]
    print("instructions per call under callgrind (valgrind's emulated CPU: the code path, not this CPU's speed):")
    _print_frame(pd.DataFrame(rows))


def print_training(records) -> None:
    """One line per training run (final metric beside the task's baseline), then what did not finish."""
    _print_frame(results.training_summary(records))
    for r in records:
        if r.get("status") != "ok":
            print(f"  {r['task']} {r['backend']}: {r['status']}: {str(r.get('message', ''))[:200]}")

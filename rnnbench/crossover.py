"""Where an RNN and a transformer cross against T (docs/design.md "Decode"; the ``crossover`` suite).

For each pair (RNN backend, transformer baseline) at one shape and mode, two
curves against T: time per token (1 / tokens_per_s: decode, forward, train) and
memory (``state_bytes`` in decode: what the context costs to keep; ``peak_bytes``
in forward and train).  The crossover is the first T where the log of their
ratio changes sign, interpolated linearly in log T between the two measured
points around it.  Its range comes from the spread of the repeats: the same
crossing of the curves moved to the favourable and the unfavourable ends of each
point's interquartile range (every kept sample, pooled over rounds); a range end
beyond the measured grid is open.  Where the sign never changes the answer is
"no crossover below T=<longest measured>", with the side that wins everywhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from . import results

MODES = ("decode", "forward", "train")
GROUP = ("device", "dtype", "cell", "layers", "input_size", "hidden", "batch", "mode")
MEMORY_FIELD = {"decode": "state_bytes", "forward": "peak_bytes", "train": "peak_bytes"}


@dataclass(frozen=True)
class Crossover:
    """The crossing of curve a (the RNN) with curve b (the transformer) over the measured ``ts``."""

    ts: tuple  # the T both were measured at, ascending
    t: float | None  # the first crossing (None: the sign never changes)
    t_lo: float | None  # the range from the spread; None at an end: open beyond the measured grid
    t_hi: float | None
    a_wins_below: bool  # a is smaller (faster, lighter) below the crossing, or everywhere when t is None
    crossings: int  # sign changes of the central curves (more than one: noisy or non-monotone)

    def text(self, a: str = "RNN", b: str = "transformer", better: str = "faster") -> str:
        if self.t is None:
            winner = a if self.a_wins_below else b
            return f"no crossover below T={self.ts[-1]:g}: {winner} {better} at every measured T ({self.ts[0]:g}-{self.ts[-1]:g})"
        lo = f"<{self.ts[0]:g}" if self.t_lo is None else _t(self.t_lo)
        hi = f">{self.ts[-1]:g}" if self.t_hi is None else _t(self.t_hi)
        side = "below" if self.a_wins_below else "above"
        more = f"; the curves cross {self.crossings} times" if self.crossings > 1 else ""
        spread = "" if self.t_lo == self.t_hi == self.t else f" (range {lo}-{hi})"  # no spread: one measurement
        return f"T≈{_t(self.t)}{spread}: {a} {better} {side} it{more}"


def _t(v: float) -> str:
    """A sequence length read off a curve: whole positions from 10 up."""
    return f"{v:.0f}" if v >= 10 else f"{v:.2g}"


def _sign_changes(ts, d) -> list[float]:
    """T where d (a log ratio at each of ts) changes sign, interpolated in log T."""
    found = []
    for i in range(len(ts) - 1):
        if d[i] == 0:
            found.append(float(ts[i]))
        elif d[i] * d[i + 1] < 0:
            x0, x1 = math.log(ts[i]), math.log(ts[i + 1])
            found.append(math.exp(x0 + (x1 - x0) * d[i] / (d[i] - d[i + 1])))
    if d and d[-1] == 0:
        found.append(float(ts[-1]))
    return found


def crossing(ts, a, b, a_spread=None, b_spread=None) -> Crossover:
    """The crossover of curves a and b measured at ``ts`` (ascending, positive values).

    ``a_spread``/``b_spread``: (low, high) per point, the repeats' interquartile range
    (default: the central values).
    """
    ts = [float(t) for t in ts]
    a_lo, a_hi = a_spread or (a, a)
    b_lo, b_hi = b_spread or (b, b)
    d = [math.log(x) - math.log(y) for x, y in zip(a, b)]
    found = _sign_changes(ts, d)
    if not found:
        return Crossover(tuple(ts), None, None, None, d[0] < 0, 0)
    a_wins_below = next(v for v in d if v != 0) < 0 if any(v != 0 for v in d) else True
    # a at its best against b at its worst, and the reverse: where those curves cross bounds the crossing
    bounds = []
    for lo_a, hi_b in ((a_lo, b_hi), (a_hi, b_lo)):
        shifted = _sign_changes(ts, [math.log(x) - math.log(y) for x, y in zip(lo_a, hi_b)])
        bounds.append(shifted[0] if shifted else None)
    # a better (lower) a moves the crossing towards the side where a loses
    favourable, unfavourable = bounds
    if a_wins_below:
        t_lo, t_hi = unfavourable, favourable
    else:
        t_lo, t_hi = favourable, unfavourable
    t = found[0]
    t_lo = None if t_lo is None else min(t_lo, t)
    t_hi = None if t_hi is None else max(t_hi, t)
    return Crossover(tuple(ts), t, t_lo, t_hi, a_wins_below, len(found))


def curves(df):
    """One row per (group, backend, T, quantity): the central value and its spread.

    time per token (the rows ``results.speed_rows`` keeps: not contended): the median of the rows'
    medians, the spread the quartiles of every kept sample, each over the tokens a call carries;
    memory (every finished row: a busy neighbour does not change it): the median over rows, the
    spread their extremes.
    """
    import numpy as np
    import pandas as pd

    finished = results.timed_rows(df)
    finished = finished[finished["mode"].isin(MODES)]
    timed = set(results.speed_rows(finished).index)
    rows = []
    for key, sub in finished.groupby([*GROUP, "backend", "backend_kind", "seq_len"], sort=True, dropna=False):
        base = dict(zip([*GROUP, "backend", "backend_kind", "seq_len"], key))
        speed = sub[sub.index.isin(timed) & sub["tokens_per_s"].notna()]
        if len(speed):
            tokens = (speed["median_s"] * speed["tokens_per_s"]).median()  # per call: B for decode, B*T else
            samples = np.concatenate([np.asarray(results.samples_of(r), dtype=float) for _, r in speed.iterrows()])
            per_token = speed["median_s"].median() / tokens
            q1, q3 = np.percentile(samples / tokens, [25, 75])
            rows.append({**base, "quantity": "time per token", "value": per_token, "low": min(q1, per_token),
                         "high": max(q3, per_token)})
        field = MEMORY_FIELD[base["mode"]]
        memory = sub[field].dropna().astype(float) if field in sub else pd.Series(dtype=float)
        memory = memory[memory > 0]
        if len(memory):
            rows.append({**base, "quantity": "memory", "value": float(memory.median()), "low": float(memory.min()),
                         "high": float(memory.max())})
    return pd.DataFrame(rows, columns=[*GROUP, "backend", "backend_kind", "seq_len", "quantity", "value", "low",
                                       "high"])


def crossover_table(df):
    """Per shape, mode, quantity and pair (RNN backend, baseline): the crossover, as a frame with a
    ``Crossover`` in column ``crossover`` and its sentence in ``verdict`` (empty when no pair was
    measured at two or more common T)."""
    import pandas as pd

    c = curves(df)
    rows = []
    for key, sub in c.groupby([*GROUP, "quantity"], sort=True, dropna=False):
        rnns = sorted(sub.loc[sub["backend_kind"] == "rnn", "backend"].unique())
        bases = sorted(sub.loc[sub["backend_kind"] == "baseline", "backend"].unique())
        for rnn in rnns:
            a = sub[sub["backend"] == rnn].set_index("seq_len")
            for base in bases:
                b = sub[sub["backend"] == base].set_index("seq_len")
                ts = sorted(set(a.index) & set(b.index))
                if len(ts) < 2:
                    continue
                x = crossing(ts, a.loc[ts, "value"].tolist(), b.loc[ts, "value"].tolist(),
                             (a.loc[ts, "low"].tolist(), a.loc[ts, "high"].tolist()),
                             (b.loc[ts, "low"].tolist(), b.loc[ts, "high"].tolist()))
                better = "faster" if key[-1] == "time per token" else "smaller"
                rows.append({**dict(zip([*GROUP, "quantity"], key)), "rnn": rnn, "baseline": base, "crossover": x,
                             "T": x.t, "verdict": x.text(rnn, base, better)})
    return pd.DataFrame(rows, columns=[*GROUP, "quantity", "rnn", "baseline", "crossover", "T", "verdict"])


def near(table, seq_len: int, factor: float = 2.0):
    """The rows of ``crossover_table`` whose crossing (or its range) lies within ``factor`` of seq_len."""
    def close(x) -> bool:
        if x.t is None:
            return False
        lo = x.ts[0] if x.t_lo is None else x.t_lo
        hi = x.ts[-1] if x.t_hi is None else x.t_hi
        return lo / factor <= seq_len <= hi * factor

    return table[[close(x) for x in table["crossover"]]] if len(table) else table


SURFACE = ("device", "dtype", "cell", "layers", "batch", "mode")  # one map each: H against T


def surface(df):
    """Per map (``SURFACE``) and pair (RNN backend, baseline), one row per (H, T) both measured at:
    ``ratio`` = the baseline's time per token over the RNN's (above 1: the RNN is faster), the central
    values of ``curves`` (medians; I = H on the surface, so the width is the shape)."""
    import pandas as pd

    c = curves(df)
    c = c[c["quantity"] == "time per token"]
    rows = []
    for key, sub in c.groupby(list(SURFACE), sort=True, dropna=False):
        at = sub.set_index(["backend", "hidden", "input_size", "seq_len"])["value"]
        for rnn in sorted(sub.loc[sub["backend_kind"] == "rnn", "backend"].unique()):
            for base in sorted(sub.loc[sub["backend_kind"] == "baseline", "backend"].unique()):
                both = at.loc[rnn].index.intersection(at.loc[base].index)
                for h, i, t in both:
                    rows.append({**dict(zip(SURFACE, key)), "rnn": rnn, "baseline": base, "hidden": h,
                                 "input_size": i, "seq_len": t, "ratio": at[(base, h, i, t)] / at[(rnn, h, i, t)]})
    return pd.DataFrame(rows, columns=[*SURFACE, "rnn", "baseline", "hidden", "input_size", "seq_len", "ratio"])


def _span(values) -> str:
    values = sorted(set(values))
    return f"{values[0]:g}" if len(values) == 1 else f"{values[0]:g}-{values[-1]:g}"


def verdicts(surf) -> list[str]:
    """One sentence per map and pair, naming the grid it holds on (widths, T range, dtype, B) and where
    each side wins, with the largest ratio either way."""
    out = []
    for key, sub in surf.groupby([*SURFACE, "rnn", "baseline"], sort=True, dropna=False):
        k = dict(zip([*SURFACE, "rnn", "baseline"], key))
        grid = (f"{k['cell'].upper()} {k['mode']}, {k['dtype']}, B={k['batch']}, {k['device']}, H (= I) "
                f"{', '.join(f'{h:g}' for h in sorted(sub['hidden'].unique()))}, T {_span(sub['seq_len'])}")
        rnn_wins, base_wins = sub[sub["ratio"] > 1], sub[sub["ratio"] < 1]
        if base_wins.empty:
            verdict = (f"{k['rnn']} is faster per token than {k['baseline']} at all {len(sub)} points "
                       f"(x{sub['ratio'].min():.2f} to x{sub['ratio'].max():.2f})")
        elif rnn_wins.empty:
            verdict = (f"{k['baseline']} is faster per token than {k['rnn']} at all {len(sub)} points "
                       f"(x{1 / sub['ratio'].max():.2f} to x{1 / sub['ratio'].min():.2f})")
        else:
            where = "; ".join(f"H={h:g}: T {_span(g['seq_len'])}" for h, g in base_wins.groupby("hidden"))
            verdict = (f"{k['rnn']} is faster per token at {len(rnn_wins)} of {len(sub)} points (up to "
                       f"x{rnn_wins['ratio'].max():.2f}); {k['baseline']} at {len(base_wins)} ({where}; up to "
                       f"x{1 / base_wins['ratio'].min():.2f})")
        out.append(f"{grid}: {verdict}.")
    return out


def collapsed(table):
    """``crossover_table`` with the rows that cross nowhere and say the same (same pair, quantity, map,
    winner over the same T range) merged into one row listing their widths."""
    import pandas as pd

    if table.empty:
        return table.drop(columns=["crossover", "T"])
    keys = [k for k in (*SURFACE, "quantity", "rnn", "baseline", "verdict")]
    rows = []
    crossing_rows = table[table["T"].notna()]
    for _, r in crossing_rows.iterrows():
        rows.append({**{k: r[k] for k in keys}, "hidden": f"{r['hidden']:g}"})
    flat = table[table["T"].isna()]
    for key, sub in flat.groupby(keys, sort=True, dropna=False):
        rows.append({**dict(zip(keys, key)), "hidden": ", ".join(f"{h:g}" for h in sorted(sub["hidden"].unique()))})
    return pd.DataFrame(rows, columns=[*keys[:-1], "hidden", "verdict"]).sort_values(
        ["quantity", "mode", "dtype", "batch", "rnn", "baseline"], kind="stable").reset_index(drop=True)

"""The backend to use for one recurrent configuration, from recorded results.

It answers only from measurements: the finished timings of RNN backends at the
query's cell, mode, dtype and device type, at the measured shapes nearest to the
query (distance: doublings between the query's and the measurement's batch, T,
hidden, input size and layers, summed; axes the query leaves open are ignored).
It says "not enough data" when nothing was measured near enough, when only one
backend was, when the nearest shapes disagree on the winner, or when the winner
and the runner-up are within noise (two-sided Mann-Whitney U on every kept
sample, the test ``rnnbench report`` uses).  Triton under its interpreter is
never a candidate.

``rnnbench.recommend(...)`` is this module called as a function (see the end).
"""
from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass, field

from .config import MODES, ConfigError
from .suites import SETTINGS

AXES = ("batch", "seq_len", "input_size", "hidden", "layers")
AXIS_NAMES = {"batch": "B", "seq_len": "T", "input_size": "I", "hidden": "H", "layers": "layers"}


@dataclass
class Recommendation:
    query: dict
    backend: str | None  # None: not enough data
    reason: str = ""  # why no backend was chosen
    machine: str | None = None
    distance: float | None = None  # of the configurations relied on, in doublings
    measured: list = field(default_factory=list)  # the chosen backend's figures, one dict per configuration
    runner_up: str | None = None
    margin: float | None = None  # runner-up's time / the chosen backend's (geometric mean over configurations)
    p_value: float | None = None  # the largest over the configurations relied on
    relied_on: list = field(default_factory=list)  # configurations used: shape, how it differs, each backend's ms
    notes: list = field(default_factory=list)

    @property
    def decided(self) -> bool:
        return self.backend is not None

    def __str__(self) -> str:

        q = self.query
        shape = " ".join(f"{AXIS_NAMES[k]}={q[k] if q[k] is not None else 'any'}" for k in AXES)
        lines = [f"query: {q['cell']} {q['mode']} {shape} {q['dtype']} on {q['device']}"]
        if self.machine:
            lines.append(f"results of machine {self.machine}")
        if self.decided:
            lines.append(f"use: {self.backend}")
            for m in self.measured:
                lines.append(f"  at {_shape(m)} ({m['impl_label']}): {m['median_s'] * 1e3:.4g} ms median "
                             f"(IQR {m['iqr_s'] * 1e3:.3g} ms), {m['tokens_per_s']:.4g} tokens/s{_peak(m)}")
                if _headroom(m):
                    lines.append(f"    {_headroom(m)}")
            lines.append(f"margin: {self.margin:.3g}x faster than the runner-up {self.runner_up} "
                         f"(Mann-Whitney U p <= {self.p_value:.2g} < {SETTINGS.p_threshold} at each configuration)")
        else:
            lines.append(f"not enough data: {self.reason}")
        if self.relied_on:
            import pandas as pd

            lines.append(("measured configurations relied on" if self.decided else "nearest measured configurations")
                         + (" (exact match):" if self.distance == 0 else
                            f" ({self.distance:.3g} doublings from the query):"))
            table = pd.DataFrame(self.relied_on).rename(columns=AXIS_NAMES)
            lines += ["  " + line for line in table.to_string(index=False, float_format=lambda v: f"{v:.4g}",
                                                               na_rep="-").splitlines()]
            lines.append("  (columns named after backends: median ms)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _peak(row) -> str:
    import pandas as pd

    return f", peak {row['peak_bytes'] / 1e6:.3g} MB" if pd.notna(row.get("peak_bytes")) else ""


def _headroom(row) -> str:
    """How far the chosen backend is from the machine's measured ceilings (rnnbench.cost)."""
    import pandas as pd

    peak, step = row.get("fraction_of_peak"), row.get("fraction_of_step_bound")
    if not pd.notna(peak) or peak <= 0:
        return ""
    text = (f"headroom: {peak:.1%} of this machine's large-matmul FLOP/s; the FLOP floor is "
            f"{row['median_s'] * peak * 1e3:.3g} ms, {1 / peak:.3g}x below this time")
    if pd.notna(step):
        text += f"; {step:.3g}x the rate of its recurrent-shaped matmul (the step bound)"
    return text


def _shape(row) -> str:
    return " ".join(f"{AXIS_NAMES[k]}={int(row[k])}" for k in AXES)


def _check_query(q: dict) -> None:
    from impls.spec import CELLS, DTYPES, SpecError, check_device

    for label, value, valid in (("cell", q["cell"], CELLS), ("mode", q["mode"], MODES), ("dtype", q["dtype"], DTYPES)):
        if value not in valid:
            raise ConfigError(f"unknown {label} {value!r}; valid: {', '.join(valid)}")
    try:
        check_device(q["device"])
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    for k in AXES:
        v = q[k]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"{k.replace('_', '-')} must be a positive integer, got {v!r}")
    for k in ("batch", "seq_len"):
        if q[k] is None:
            raise ConfigError(f"{k.replace('_', '-')} is required")


def recommend(cell: str, batch: int, seq_len: int, mode: str, device: str, *, input_size: int | None = None,
              hidden: int | None = None, layers: int = 1, dtype: str = "float32",
              results=("results",)) -> Recommendation:
    """The fastest RNN backend for this configuration, from the run folders under ``results``."""
    import numpy as np

    from .results import compare_samples, load_inputs, samples_of, speed_rows

    q = dict(cell=cell, mode=mode, dtype=dtype, device=device, batch=batch, seq_len=seq_len, input_size=input_size,
             hidden=hidden, layers=layers)
    _check_query(q)
    results = [results] if isinstance(results, str) else list(results)
    df = load_inputs(results)
    family = device.split(":")[0]
    same_kind = ((df["cell"] == cell) & (df["mode"] == mode) & (df["dtype"] == dtype)
                 & (df["device"].astype(str).str.split(":").str[0] == family))
    rows = speed_rows(df[same_kind])
    if rows.empty:
        return Recommendation(q, None, f"no finished timing of {cell} {mode} {dtype} on {family} in "
                                       f"{', '.join(map(str, results))}")
    machines = rows["machine"].value_counts()
    notes = []
    if len(machines) > 1:
        notes.append(f"results from {len(machines)} machines ({', '.join(map(str, machines.index))}); used "
                     f"{machines.index[0]}, which has the most; pass --results with one machine's folder to choose")
    rows = rows[rows["machine"] == machines.index[0]]
    rows = rows.sort_values("run_id").drop_duplicates(["backend", *AXES], keep="last")  # the latest run wins

    dist = sum(np.abs(np.log2(rows[k].astype(float) / q[k])) for k in AXES if q[k] is not None)
    rows = rows.assign(distance=dist)
    rnn = rows[rows["backend_kind"] == "rnn"]
    rec = Recommendation(q, None, machine=str(machines.index[0]), notes=notes)
    if rnn.empty:
        rec.reason = "no RNN backend was timed in this regime"
        return rec
    # the nearest shapes at which two or more backends can be compared
    comparable = rnn.groupby(list(AXES))["backend"].transform("nunique") >= 2
    pool = rnn[comparable] if comparable.any() else rnn
    rec.distance = float(pool["distance"].min())
    near = pool[pool["distance"] <= rec.distance + 1e-9]
    times = near.pivot_table(index=list(AXES), columns="backend", values="median_s")  # [config, backend]
    rec.relied_on = [{**dict(zip(AXES, idx)), "differs": _differs(idx, q),
                      **{b: v * 1e3 for b, v in row.items() if v == v}} for idx, row in times.iterrows()]
    _add_context(rec, df[same_kind], rows, times.index)
    if rec.distance > SETTINGS.max_distance:
        rec.reason = (f"the nearest measured configuration is {rec.distance:.3g} doublings from the query "
                      f"(limit {SETTINGS.max_distance:g}); measure it: rnnbench run --cells {cell} --mode {mode} "
                      f"--batch {batch} --seq-len {seq_len}" + (f" --hidden {hidden}" if hidden else ""))
        return rec
    if not comparable.any():
        rec.reason = f"only {', '.join(sorted(rnn['backend'].unique()))} measured here; nothing to compare with"
        return rec
    winners = times.idxmin(axis=1)
    if winners.nunique() > 1:
        rec.reason = "the nearest measured configurations disagree: " + "; ".join(
            f"{w} fastest at {_shape(dict(zip(AXES, idx)))}" for idx, w in winners.items())
        return rec
    best = winners.iloc[0]
    ratios = times.drop(columns=best).div(times[best], axis=0)  # others' time / best's time
    runner_up = np.log(ratios).mean().idxmin()
    by_key = near.set_index(list(AXES) + ["backend"])
    changes = [compare_samples(samples_of(by_key.loc[(*idx, best)]), samples_of(by_key.loc[(*idx, runner_up)]))
               for idx in times.index if times.loc[idx, runner_up] == times.loc[idx, runner_up]]
    if any(c.p is None for c in changes):
        rec.reason = f"too few repeats to tell {best} from {runner_up} apart (a rank test needs 5 or more a side)"
        return rec
    p = max(c.p for c in changes)

    if p >= SETTINGS.p_threshold:
        rec.reason = (f"{best} and {runner_up} are within noise of each other (median ratio "
                      f"{math.exp(np.log(ratios[runner_up]).mean()):.3g}, Mann-Whitney U p = {p:.2g})")
        return rec
    rec.backend, rec.runner_up, rec.p_value = best, runner_up, p
    rec.margin = float(np.exp(np.log(ratios[runner_up]).mean()))
    rec.measured = [{**dict(zip(AXES, idx)), **by_key.loc[(*idx, best)][
        ["impl_label", "median_s", "iqr_s", "tokens_per_s", "peak_bytes", "fraction_of_peak",
         "fraction_of_step_bound"]].to_dict()} for idx in times.index]
    return rec


def _differs(idx, q) -> str:
    """How a measured configuration differs from the query, e.g. ``T 64 (x0.5)``."""
    parts = [f"{AXIS_NAMES[k]} {v:g} (x{v / q[k]:.3g})" for k, v in zip(AXES, idx) if q[k] is not None and v != q[k]]
    return ", ".join(parts) or "exact"


def _add_context(rec: Recommendation, same_kind, rows, configs) -> None:
    """Notes on the relied-on shapes: transformer baselines measured there, and backends that failed there."""
    for _, b in rows[rows["backend_kind"] == "baseline"].iterrows():
        key = tuple(b[k] for k in AXES)
        if key in configs:
            rec.notes.append(f"transformer baseline {b['backend']} at {_shape(b)}: {b['median_s'] * 1e3:.4g} ms"
                             f"{_peak(b)}")
    failed = same_kind[(same_kind["status"] != "ok") & (same_kind["kind"] == "timing")]
    for _, f in failed.iterrows():
        if tuple(f[k] for k in AXES) in configs:
            rec.notes.append(f"{f['backend']} at {_shape(f)}: {f['status']} ({str(f['message'])[:120]})")


class _CallableModule(types.ModuleType):
    """``rnnbench.recommend(...)`` calls ``recommend``: importing a submodule binds its name on the
    package, so the package attribute is this module whichever import came first; calling it is
    the function."""

    def __call__(self, *args, **kwargs) -> Recommendation:
        return recommend(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

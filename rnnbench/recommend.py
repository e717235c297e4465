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

from . import ragged
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
    against: str = ""  # --against-transformer: the baseline at the query's shape (against_transformer_line)

    @property
    def decided(self) -> bool:
        return self.backend is not None

    def __str__(self) -> str:

        q = self.query
        shape = " ".join(f"{AXIS_NAMES[k]}={q[k] if q[k] is not None else 'any'}" for k in AXES)
        lines = [f"query: {q['cell']} {q['mode']} {shape} {q['dtype']}{_model(q)} on {q['device']}"]
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
                         f"(signed-rank p <= {self.p_value:.2g} < {SETTINGS.p_threshold} over paired rounds at each configuration)")
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
        if self.against:
            lines.append(f"against the transformer: {self.against}")
        lines += [f"note: {n}" for n in dict.fromkeys(self.notes)]  # each once
        return "\n".join(lines)


def _peak(row) -> str:
    import pandas as pd

    return f", peak {row['peak_bytes'] / 1e6:.3g} MB" if pd.notna(row.get("peak_bytes")) else ""


def _headroom(row) -> str:
    """How far the chosen backend is from the machine's measured ceilings (rnnbench.cost)."""
    import pandas as pd

    peak, bound = row.get("fraction_of_peak"), row.get("fraction_of_recurrent_roofline")
    if not pd.notna(peak) or peak <= 0:
        return ""
    text = (f"headroom: {peak:.1%} of this machine's large-matmul FLOP/s; the FLOP floor is "
            f"{row['median_s'] * peak * 1e3:.3g} ms, {1 / peak:.3g}x below this time")
    if pd.notna(bound):
        text += (f"; {bound:.1%} of its recurrent roofline (the least time of the FLOPs and bytes at the "
                 "machine's ceilings or of the chain of step matmuls, whichever is faster)")
    return text


def _shape(row) -> str:
    return " ".join(f"{AXIS_NAMES[k]}={int(row[k])}" for k in AXES)


def _model(q: dict) -> str:
    """The query's model and batch where they are not the defaults: `` bidirectional, lengths zipf:1.2``."""
    parts = (["bidirectional"] if q["bidirectional"] else []) + (
        [f"lengths {q['lengths']}"] if q["lengths"] != ragged.FULL else [])
    return (" " + ", ".join(parts)) if parts else ""


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
    if not isinstance(q["bidirectional"], bool):
        raise ConfigError(f"bidirectional must be true or false, got {q['bidirectional']!r}")
    ragged.parse(q["lengths"])


def recommend(cell: str, batch: int, seq_len: int, mode: str, device: str, *, input_size: int | None = None,
              hidden: int | None = None, layers: int = 1, dtype: str = "float32", bidirectional: bool = False,
              lengths: str = "full", results=("results",), against_transformer: bool = False,
              threads: int = 0) -> Recommendation:
    """The fastest RNN backend for this configuration, from the run folders under ``results``; only
    timings of the same model (``bidirectional``), length distribution (``lengths``) and thread limit
    (``threads``, 0: each framework's default; ``rnnbench run --threads``) count.
    ``against_transformer``: also the parameter-matched baseline's time per token at the query's shape
    and its ratio to the RNN's (``against_transformer_line``)."""
    from .results import load_inputs

    q = dict(cell=cell, mode=mode, dtype=dtype, device=device, batch=batch, seq_len=seq_len, input_size=input_size,
             hidden=hidden, layers=layers, bidirectional=bidirectional, lengths=lengths, threads=threads)
    _check_query(q)
    results = [results] if isinstance(results, str) else list(results)
    df = load_inputs(results)
    family = device.split(":")[0]
    same_kind = df[(df["cell"] == cell) & (df["mode"] == mode) & (df["dtype"] == dtype)
                   & (df["device"].astype(str).str.split(":").str[0] == family)
                   & (df["bidirectional"] == bidirectional) & (df["lengths"] == lengths)
                   & (df["thread_limit"] == threads)]
    rec = _choose(q, same_kind, results)
    if against_transformer:
        rec.against = against_transformer_line(same_kind, q, rec.backend)
    return rec


def _choose(q: dict, same_kind, results) -> Recommendation:
    """The recommendation from the timings of the query's kind (cell, mode, dtype, device type, model)."""
    import numpy as np

    from .results import compare_paired_rounds, contended_rows, speed_rows

    cell, mode, dtype, batch, seq_len, hidden = (q[k] for k in ("cell", "mode", "dtype", "batch", "seq_len", "hidden"))
    bidirectional, lengths, family = q["bidirectional"], q["lengths"], q["device"].split(":")[0]
    rows = speed_rows(same_kind)
    contended = contended_rows(same_kind)
    if rows.empty:
        return Recommendation(q, None, f"no finished timing of {cell} {mode} {dtype}{_model(q)} on {family} in "
                                       f"{', '.join(map(str, results))}")
    machines = rows["machine"].value_counts()
    notes = []
    if len(machines) > 1:
        notes.append(f"results from {len(machines)} machines ({', '.join(map(str, machines.index))}); used "
                     f"{machines.index[0]}, which has the most; pass --results with one machine's folder to choose")
    rows = rows[rows["machine"] == machines.index[0]]
    if len(contended):
        notes.append(f"{len(contended)} contended timing record(s) left out (others used more than "
                     f"{SETTINGS.contention_threshold:g} of a core while they were timed)"
                     + ("" if q.get("threads") == 1 else "; on a machine others use, measure and ask with --threads 1"))
    # the latest run of each backend and shape, every round of it
    rows = rows[rows["run_id"] == rows.groupby(["backend", *AXES])["run_id"].transform("max")]

    dist = sum(np.abs(np.log2(rows[k].astype(float) / q[k])) for k in AXES if q[k] is not None)
    rows = rows.assign(distance=dist)
    rnn = rows[rows["backend_kind"] == "rnn"]
    rec = Recommendation(q, None, machine=str(machines.index[0]), notes=notes)
    notes += _crossovers_near(rows, q)
    if rnn.empty:
        rec.reason = "no RNN backend was timed in this regime"
        return rec
    # the shapes at which two or more backends can be compared, bracketing the query on every axis
    comparable = rnn.groupby(list(AXES))["backend"].transform("nunique") >= 2
    pool = rnn[comparable] if comparable.any() else rnn
    near, one_sided = _bracketing(pool, q)
    if near is None:
        near = pool[pool["distance"] <= pool["distance"].min() + 1e-9]
    rec.distance = float(near["distance"].max())
    summary = _summary(near)  # [(config..., backend)] -> median over rounds, rounds, ...
    times = summary["median_s"].unstack("backend")  # [config, backend]
    rec.relied_on = [{**dict(zip(AXES, idx)), "differs": _differs(idx, q),
                      **{b: v * 1e3 for b, v in row.items() if v == v}} for idx, row in times.iterrows()]
    _add_context(rec, same_kind, rows, times.index)
    measure_it = (f"for an exact answer, measure it: rnnbench recommend --measure --cell {cell} --mode {mode} "
                  f"--batch {batch} --seq-len {seq_len}" + (f" --hidden {hidden}" if hidden else ""))
    if _model(q):  # --measure times unidirectional full-length batches: rounds of a recorded sweep instead
        measure_it = (f"for an exact answer, measure it in 8 rounds: rnnbench run --rounds 8 --cells {cell} "
                      f"--mode {mode} --batch {batch} --seq-len {seq_len}" + (f" --hidden {hidden}" if hidden else "")
                      + f" --bidirectional {str(bidirectional).lower()} --lengths {lengths}")
    if one_sided:
        rec.reason = f"{one_sided}; {measure_it}"
        return rec
    if rec.distance > SETTINGS.max_distance:
        rec.reason = (f"the nearest measured configuration is {rec.distance:.3g} doublings from the query "
                      f"(limit {SETTINGS.max_distance:g}); {measure_it}")
        return rec
    if not comparable.any():
        rec.reason = f"only {', '.join(sorted(rnn['backend'].unique()))} measured here; nothing to compare with"
        return rec
    winners = times.idxmin(axis=1)
    if winners.nunique() > 1:
        rec.reason = ("the nearest measured configurations disagree, so the answer at the query lies between: "
                      + "; ".join(_neighbour(times.loc[idx], idx, w) for idx, w in winners.items())
                      + f"; {measure_it}")
        return rec
    best = winners.iloc[0]
    ratios = times.drop(columns=best).div(times[best], axis=0)  # others' time / best's time
    runner_up = np.log(ratios).mean().idxmin()
    rounds = summary["rounds"]
    changes = [compare_paired_rounds(rounds[(*idx, best)], rounds[(*idx, runner_up)])
               for idx in times.index if times.loc[idx, runner_up] == times.loc[idx, runner_up]]
    if any(c.p is None for c in changes):
        have = min(len(set(rounds[(*idx, best)]) & set(rounds[(*idx, runner_up)])) for idx in times.index
                   if (*idx, runner_up) in rounds)
        rec.reason = (f"too few rounds to tell {best} from {runner_up} apart (a paired signed-rank test on round "
                      f"medians needs 8 or more rounds of both; {have} here); {measure_it}")
        return rec
    p = max(c.p for c in changes)

    if p >= SETTINGS.p_threshold:
        rec.reason = (f"{best} and {runner_up} are within noise of each other (median ratio "
                      f"{math.exp(np.log(ratios[runner_up]).mean()):.3g}, signed-rank p = {p:.2g} over rounds)")
        return rec
    rec.backend, rec.runner_up, rec.p_value = best, runner_up, p
    rec.margin = float(np.exp(np.log(ratios[runner_up]).mean()))
    rec.measured = [{**dict(zip(AXES, idx)), **summary.loc[(*idx, best)][
        ["impl_label", "median_s", "iqr_s", "tokens_per_s", "peak_bytes", "fraction_of_peak",
         "fraction_of_recurrent_roofline", "n_rounds"]].to_dict()} for idx in times.index]
    return rec


def _between(values, v) -> list | None:
    """The measured values around v: [v] where measured, else the nearest below and above (None when one
    side is missing: never extrapolated)."""
    values = sorted(set(values))
    if v in values:
        return [v]
    below, above = [x for x in values if x < v], [x for x in values if x > v]
    return [below[-1], above[0]] if below and above else None


def against_transformer_line(same_kind, q: dict, chosen: str | None) -> str:
    """The parameter-matched transformer baseline's time per token at the query's shape and its ratio to
    the RNN's (the chosen backend, else the reference one, else any measured): measured there, or
    interpolated log-log (bilinear in H and T, I fixed or I = H as on the crossover surface) between
    measured points around it; outside the measured grid, "not measured" and the command to measure it."""
    import math

    from .crossover import curves

    hidden, width = q["hidden"], q["input_size"] or q["hidden"]
    command = (f"rnnbench run --backends {SETTINGS.reference_backend},transformer_sdpa --cells {q['cell']} "
               f"--mode {q['mode']} --batch {q['batch']} --seq-len {q['seq_len']} --hidden {hidden or 'H'} "
               f"--input-size {width or 'I'} --dtype {q['dtype']} --device {q['device']}")
    c = curves(same_kind) if len(same_kind) else None
    if hidden is None or c is None or c.empty:
        return f"not measured ({'the query names no --hidden' if hidden is None else 'no timing here'}): run {command}"
    c = c[(c["quantity"] == "time per token") & (c["batch"] == q["batch"]) & (c["layers"] == q["layers"])]
    c = c[c["input_size"] == (c["hidden"] if width == hidden else width)]
    hs, ts = _between(c["hidden"], hidden), _between(c["seq_len"], q["seq_len"])
    if hs is None or ts is None:
        return (f"not measured: the query (H={hidden}, T={q['seq_len']}) lies outside the measured grid of "
                f"{q['cell']} {q['mode']} B={q['batch']} {q['dtype']} (H {sorted(set(c['hidden']))}, T "
                f"{sorted(set(c['seq_len']))}); run {command}")
    at = c.set_index(["backend", "hidden", "seq_len"])["value"]

    def weights(points, v):  # linear in log v between the (one or two) measured points
        if len(points) == 1:
            return [1.0]
        w = (math.log(v) - math.log(points[0])) / (math.log(points[1]) - math.log(points[0]))
        return [1 - w, w]

    corners = [(h, t, wh * wt) for h, wh in zip(hs, weights(hs, hidden)) for t, wt in zip(ts, weights(ts, q["seq_len"]))]

    def per_token(backend):
        if not all((backend, h, t) in at.index for h, t, _ in corners):
            return None
        return math.exp(sum(w * math.log(at[(backend, h, t)]) for h, t, w in corners))

    kinds = c.drop_duplicates("backend").set_index("backend")["backend_kind"]
    rnn = next((b for b in (chosen, SETTINGS.reference_backend, *sorted(kinds[kinds == "rnn"].index))
                if b in kinds.index and per_token(b) is not None), None)
    baselines = [b for b in sorted(kinds[kinds == "baseline"].index) if per_token(b) is not None]
    if rnn is None or not baselines:
        return (f"not measured: no RNN and transformer baseline timed at every point around H={hidden}, "
                f"T={q['seq_len']}; run {command}")
    how = ("measured at this shape" if len(corners) == 1 else
           f"interpolated log-log between H {'-'.join(map(str, hs))} and T {'-'.join(map(str, ts))} of the measured grid")
    r = per_token(rnn)
    parts = []
    for base in baselines:
        b = per_token(base)
        side = f"the RNN is x{b / r:.2f} faster" if b >= r else f"the transformer is x{r / b:.2f} faster"
        parts.append(f"{base} {b * 1e6:.3g} us/token, {rnn} {r * 1e6:.3g} us/token: {side}")
    return f"({how}, parameter-matched) " + "; ".join(parts)


def _bracketing(pool, q):
    """(rows, "") of the measured shapes nearest the query on each axis from both sides (the query's
    own value where measured), or (None, why) when an axis has measurements on one side only:
    a backend's lead can change between shapes, so an answer is never extrapolated."""
    for k in AXES:
        if q[k] is None:
            continue
        values = sorted(pool[k].unique())
        if q[k] in values:
            pool = pool[pool[k] == q[k]]
            continue
        below, above = [v for v in values if v < q[k]], [v for v in values if v > q[k]]
        if not below or not above:
            side = "below" if not below else "above"
            return None, (f"no {AXIS_NAMES[k]} {side} the query's {AXIS_NAMES[k]}={q[k]} was measured (measured: "
                          f"{', '.join(str(int(v)) for v in values)}): an answer from one side would be a guess")
        pool = pool[pool[k].isin([below[-1], above[0]])]
    return pool, ""


def _summary(rows):
    """Per configuration and backend: the median over round medians, the rounds ({round: median}), and
    the fields shown for the chosen backend (the first round's where a field is measured once)."""
    import numpy as np
    import pandas as pd

    from .results import round_medians

    out = {}
    for key, sub in rows.groupby([*AXES, "backend"]):
        rounds = round_medians(sub)
        median = float(np.median(list(rounds.values())))
        first = sub.sort_values("round").iloc[0] if "round" in sub else sub.iloc[0]
        out[key] = {"median_s": median, "rounds": rounds, "n_rounds": len(rounds), "impl_label": first["impl_label"],
                    "iqr_s": float(sub["iqr_s"].median()), "tokens_per_s": first["tokens_per_s"] * first["median_s"] / median,
                    "peak_bytes": sub["peak_bytes"].dropna().iloc[0] if sub["peak_bytes"].notna().any() else None,
                    "fraction_of_peak": sub["fraction_of_peak"].median(),
                    "fraction_of_recurrent_roofline": sub["fraction_of_recurrent_roofline"].median()}
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=[*AXES, "backend"])
    return frame


def _neighbour(times_row, idx, winner) -> str:
    """``torch_cudnn fastest at B=16 T=64 ... (x2.22 over torch_eager)``: one neighbour's answer."""
    others = times_row.drop(winner).dropna()
    runner_up = others.idxmin()
    return f"{winner} fastest at {_shape(dict(zip(AXES, idx)))} (x{others.min() / times_row[winner]:.3g} over {runner_up})"


def _crossovers_near(rows, q) -> list[str]:
    """Where an RNN backend and a transformer baseline cross (rnnbench.crossover) within
    ``SETTINGS.crossover_near`` of the query's T, at the query's shape where it names one."""
    from .crossover import crossover_table, near

    table = near(crossover_table(rows), q["seq_len"], SETTINGS.crossover_near)
    for k in ("batch", "input_size", "hidden", "layers"):
        if q[k] is not None and len(table):
            table = table[table[k] == q[k]]
    return [f"T={q['seq_len']} is near an RNN/transformer crossover ({r['quantity']}, {r['mode']}, B={r['batch']} "
            f"H={r['hidden']}): {r['rnn']} vs {r['baseline']}: {r['verdict']}" for _, r in table.iterrows()]


def _differs(idx, q) -> str:
    """How a measured configuration differs from the query, e.g. ``T 64 (x0.5)``."""
    parts = [f"{AXIS_NAMES[k]} {v:g} (x{v / q[k]:.3g})" for k, v in zip(AXES, idx) if q[k] is not None and v != q[k]]
    return ", ".join(parts) or "exact"


def _add_context(rec: Recommendation, same_kind, rows, configs) -> None:
    """Notes on the relied-on shapes: transformer baselines measured there, and backends that failed there."""
    baselines = rows[rows["backend_kind"] == "baseline"]
    for _, group in baselines.groupby(["backend", *AXES], sort=False, dropna=False):  # one note over its rounds
        b = group.iloc[0]
        if tuple(b[k] for k in AXES) in configs:
            rounds = f" (median of {len(group)} rounds)" if len(group) > 1 else ""
            rec.notes.append(f"transformer baseline {b['backend']} at {_shape(b)}: "
                             f"{group['median_s'].median() * 1e3:.4g} ms{rounds}{_peak(b)}")
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

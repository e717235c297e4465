"""The report's "Parallel-in-time cells" section (the ``parallel`` suite): minGRU / minLSTM run step by
step or as a parallel scan over T, beside the LSTM of ``SETTINGS.reference_backend`` at the same width
and the transformer baselines (each matched in parameters to the cell its records name).

Each comparison is a pair of time-per-token curves against T, crossed with ``crossover.crossing``:
parallel against sequential within one framework (the records' ``scan_form``), and each minGRU/minLSTM
backend against the LSTM and against each baseline at the same shape and mode."""
from __future__ import annotations

from .. import cost, crossover, results
from ..suites import SETTINGS
from .crossover import gradient_reach
from .figures import Figures, groups, log_axes, suptitle
from .sections import Section

SHAPE = ("device", "dtype", "layers", "input_size", "hidden", "batch", "mode")  # crossover.GROUP without the cell


def _time_curves(df):
    """crossover.curves' time per token, with each row's framework and scan form."""
    c = crossover.curves(df)
    c = c[c["quantity"] == "time per token"]
    labels = df.drop_duplicates(["backend", "cell"]).set_index(["backend", "cell"])
    form = labels["scan_form"] if "scan_form" in labels else None
    keys = list(zip(c["backend"], c["cell"]))
    return c.assign(framework=[labels["framework"].get(k) for k in keys],
                    scan_form=[form.get(k) if form is not None else None for k in keys])


def _cross(a, b, label_a: str, label_b: str):
    """The crossing of curve a with curve b (frames indexed by seq_len) over their common T, or None."""
    ts = sorted(set(a.index) & set(b.index))
    if len(ts) < 2:
        return None
    x = crossover.crossing(ts, a.loc[ts, "value"].tolist(), b.loc[ts, "value"].tolist(),
                           (a.loc[ts, "low"].tolist(), a.loc[ts, "high"].tolist()),
                           (b.loc[ts, "low"].tolist(), b.loc[ts, "high"].tolist()))
    return {"T": x.t, "verdict": x.text(label_a, label_b)}


def comparisons(df):
    """One row per comparison: (shape, mode, cell, a, b, kind of comparison, T, verdict)."""
    import pandas as pd

    c = _time_curves(df)
    rows = []
    for key, sub in c.groupby(list(SHAPE), sort=True, dropna=False):
        shape = dict(zip(SHAPE, key))
        ours = sub[sub["cell"].isin(cost.PARALLEL) & (sub["backend_kind"] == "rnn")]
        curve = {k: g.set_index("seq_len") for k, g in sub.groupby(["backend", "cell"])}
        lstm = [k for k in curve if k == (SETTINGS.reference_backend, "lstm")]
        baselines = sorted(k for k in curve if sub.loc[sub["backend"] == k[0], "backend_kind"].iloc[0] == "baseline")
        for (cell, framework), fam in ours.groupby(["cell", "framework"]):
            parallel = sorted(set(fam.loc[fam["scan_form"] == "parallel", "backend"]))
            sequential = sorted(set(fam.loc[fam["scan_form"] == "sequential", "backend"]))
            for p in parallel:
                for s in sequential:
                    found = _cross(curve[(p, cell)], curve[(s, cell)], p, s)
                    if found:
                        rows.append({**shape, "cell": cell, "a": p, "b": s, "comparison": "parallel vs sequential",
                                     **found})
        for backend, cell in sorted(set(zip(ours["backend"], ours["cell"]))):
            me = f"{backend} ({cell})"
            for other in lstm + baselines:
                what = ("equal width (H)" if other in lstm else
                        f"transformer with the parameters of the {other[1]}")
                found = _cross(curve[(backend, cell)], curve[other], me, f"{other[0]} ({other[1]})")
                if found:
                    rows.append({**shape, "cell": cell, "a": backend, "b": f"{other[0]} ({other[1]})",
                                 "comparison": what, **found})
    return pd.DataFrame(rows, columns=[*SHAPE, "cell", "a", "b", "comparison", "T", "verdict"])


def _figure(figs: Figures, data, title: str, name: str):
    import seaborn as sns

    g = sns.relplot(data=data, kind="line", x="seq_len", y="time per token", hue="backend", style="cell",
                    markers=True, col="mode", estimator="median", errorbar=None, palette=figs.palette,
                    hue_order=figs.order(data), height=2.8, aspect=1.2, facet_kws={"sharey": False})
    log_axes(g, data["seq_len"].unique())
    g.set_axis_labels("sequence length T (decode: context)", "time per token (s)")
    g.set_titles("{col_name}")
    suptitle(g, title)
    return figs.save(g.figure, name)


def parallel_section(df, figs: Figures, label_run: bool) -> Section | None:
    """None where no record is of minGRU/minLSTM (a report of the classic cells only has no such section)."""
    if df.empty or not df["cell"].isin(cost.PARALLEL).any():
        return None
    s = Section("Parallel-in-time cells (minGRU, minLSTM)")
    s.text("minGRU and minLSTM (Feng et al. 2024) gate on x_t alone, so a layer is the linear recurrence "
           "h_t = a_t h_(t-1) + b_t: run step by step (scan form 'sequential') or as a scan over T that is "
           "parallel in t (scan form 'parallel': torch_scan in log space with cumsum and logcumsumexp, "
           "jax_minscan_assoc with lax.associative_scan). Beside them the LSTM on "
           f"{SETTINGS.reference_backend} at the same width H and the transformer baselines, each matched in "
           "parameters to the cell its records name. Crossovers as in 'RNN vs transformer' (time per token, "
           "log-log interpolation between measured T, range from the repeats' interquartile range).")
    params = df[(df["kind"] == "timing") & (df["status"] == "ok")]
    if "param_count" in params:
        counts = params.dropna(subset=["param_count"]).groupby(["backend", "cell", "input_size", "hidden"],
                                                              as_index=False)["param_count"].max()
        s.text("Parameters of each model measured (minGRU 2H(I+1), minLSTM 3H(I+1), LSTM 4H(I+H+2); a "
               "transformer within 10% of the cell it is matched to).")
        s.table(counts.astype({"param_count": int}))
    table = comparisons(df)
    if table.empty:
        s.text("No comparison: no pair of curves measured at two or more common T in the same shape and mode.")
    else:
        s.text("From which T the parallel form beats the sequential one, and where each minGRU/minLSTM backend "
               "crosses the LSTM and the transformers.")
        shown = table.drop(columns=["T"])
        constant = [c for c in SHAPE if shown[c].nunique(dropna=False) == 1 and c != "mode"]
        if constant:
            s.text("Every row: " + ", ".join(f"{results.SHAPE_NAMES.get(c, c)}={shown[c].iloc[0]}"
                                              for c in constant) + ".")
        s.table(shown.drop(columns=constant).sort_values(["comparison", "mode", "cell", "a", "b"]))
    speed = results.speed_rows(df)
    speed = speed[speed["mode"].isin(crossover.MODES)].copy()
    speed = speed[speed["cell"].isin(cost.PARALLEL) | (speed["backend_kind"] == "baseline")
                  | ((speed["backend"] == SETTINGS.reference_backend) & (speed["cell"] == "lstm"))]
    speed["time per token"] = 1.0 / speed["tokens_per_s"].astype(float)
    if speed["seq_len"].nunique() >= 2:
        for title, slug, sub in groups(speed, ("device", "dtype", "hidden", "batch"), label_run):
            s.figure(_figure(figs, sub, f"minGRU/minLSTM vs LSTM and transformer · {title}", f"parallel_{slug}"),
                     f"Time per token against T, {title}")
    reach = gradient_reach(df)
    reach = reach[reach["cell"].isin(cost.PARALLEL)] if not reach.empty else reach
    if reach.empty:
        s.text("Gradient reach of the new cells: no gradient-profile (stability) records of minGRU/minLSTM.")
    else:
        s.text("How far back a gradient reaches in the new cells at the longest T measured (as in 'RNN vs "
               "transformer'): their h_t is linear in h_(t-1) with factor a_t in (0, 1), so ||dL/dx_t|| decays by "
               "the product of the a's, with no tanh' in the chain.")
        s.table(reach)
    s.summary = f"parallel-in-time cells: {len(table)} comparison(s), {int(table['T'].notna().sum())} crossover(s)"
    return s

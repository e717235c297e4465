"""The report's "RNN vs transformer" section: decode time per token against the context, training
throughput and memory against T, each with the crossovers of ``rnnbench.crossover`` marked, the
table of crossover points, and how far back a gradient reaches at the longest T measured."""
from __future__ import annotations

from .. import crossover, results
from ..suites import SETTINGS
from .figures import Figures, groups, log_axes, suptitle
from .sections import Section, why_absent

FIGURE_KEYS = ("device", "dtype", "cell", "layers", "input_size")


def _mark(g, table, facet_keys, palette) -> None:
    """A dotted vertical line in the RNN's colour at each crossover T of ``table`` in its facet."""
    for facet, ax in g.axes_dict.items():
        facet = facet if isinstance(facet, tuple) else (facet,)
        here = table
        for k, v in zip(facet_keys, facet):
            here = here[here[k] == v]
        for _, r in here[here["T"].notna()].iterrows():
            ax.axvline(r["T"], ls=":", lw=1.2, color=palette.get(r["rnn"], "0.3"))
            ax.annotate(f"{r['T']:.0f}", (r["T"], 1.0), xycoords=("data", "axes fraction"), fontsize=6,
                        ha="center", va="bottom", color=palette.get(r["rnn"], "0.3"))


def _lines(figs: Figures, data, y: str, ylabel: str, row: str, table, title: str, name: str):
    import seaborn as sns

    g = sns.relplot(data=data, kind="line", x="seq_len", y=y, hue="backend", style="backend_kind",
                    dashes={"rnn": "", "baseline": (4, 2)}, markers={"rnn": "o", "baseline": "X"}, row=row,
                    col="hidden", estimator="median", errorbar=None, palette=figs.palette,
                    hue_order=figs.order(data), height=2.6, aspect=1.25, facet_kws={"sharey": False})
    _mark(g, table, (row, "hidden"), figs.palette)
    log_axes(g, data["seq_len"].unique())
    g.set_axis_labels("context / sequence length T", ylabel)
    g.set_titles("{row_var}={row_name} · H={col_name}")
    suptitle(g, title)
    return figs.save(g.figure, name)


def gradient_reach(df):
    """Per backend at the longest T with a gradient profile: how many steps back ||dL/dx_t|| stays
    above ``SETTINGS.gradient_reach_ratio`` of its value at t = T-1, what is left of it at t = 0, and
    the decay per step.  A profile holds at most 64 points, so a reach shorter than their spacing
    reads "< spacing", never 0."""
    import numpy as np
    import pandas as pd

    stab = df[(df["kind"] == "stability") & (df["status"] == "ok")]
    stab = stab[stab["grad_profile"].apply(lambda p: isinstance(p, (list, tuple)) and len(p) > 1)]
    if stab.empty:
        return stab
    keys = ["device", "dtype", "cell", "hidden"]
    stab = stab[stab["seq_len"] == stab.groupby(keys)["seq_len"].transform("max")]
    rows = []
    for _, r in stab.iterrows():
        g = np.asarray(r["grad_profile"], dtype=float)  # at most 64 points spread over t = 0..T-1
        t = np.linspace(0, r["seq_len"] - 1, len(g))
        above = g >= SETTINGS.gradient_reach_ratio * g[-1]
        reach = r["seq_len"] - 1 - t[np.argmax(above[:-1])] if above[:-1].any() else 0.0  # earliest t still above
        rows.append({**{k: r[k] for k in keys}, "T": r["seq_len"], "backend": r["backend"],
                     "kind": r["backend_kind"], "reach": reach, "spacing": t[-1] - t[-2],
                     "left at t=0": g[0] / g[-1] if g[-1] > 0 else np.nan,
                     "whole sequence": bool(above[0]), "decay per step": r["grad_decay_per_step"]})
    out = pd.DataFrame(rows).groupby([*keys, "T", "backend", "kind"], as_index=False).agg(
        {"reach": "median", "spacing": "max", "left at t=0": "median", "whole sequence": "all",
         "decay per step": "median"})
    out.insert(out.columns.get_loc("reach"), "reach (steps back)",
               [f"{r:.0f}" if r > 0 else f"< {s:.0f}" for r, s in zip(out["reach"], out["spacing"])])
    out["left at t=0"] = [f"{v:.1e}" if v > 0 else "0 (underflow)" for v in out["left at t=0"]]
    return out.drop(columns=["reach", "spacing"])


def crossover_section(df, figs: Figures, label_run: bool) -> Section:
    s = Section("RNN vs transformer")
    table = crossover.crossover_table(df)
    if table.empty:
        s.no_data(why_absent(df, "no RNN backend and transformer baseline timed at two or more common T in the "
                             "same shape and mode (decode, forward or train); rnnbench run --suite crossover "
                             "measures them"))
        return s
    s.text("Where the curves of an RNN backend and a parameter-matched transformer baseline cross against T "
           "(log-log interpolation between measured points; the range moves each point to the ends of its "
           "repeats' interquartile range; open ends lie beyond the measured grid). Time per token is 1 / tokens/s: "
           "in decode one step after a context of T tokens (the RNN carries h, c; the transformer a KV cache of T "
           "positions), in forward and train one call over T tokens divided by B*T. Memory: in decode the state "
           "carried (state_bytes), in forward and train the peak rise of one call. Dotted lines mark the "
           "crossovers, in the RNN backend's colour.")
    curves = crossover.curves(df)
    time_rows = table[table["quantity"] == "time per token"]
    panels = (("decode", "time per token", "time per token (s)", "batch", "decode time per token vs context"),
              ("train", "tokens_per_s", "train tokens / s", "batch", "train throughput vs T"))
    speed = results.speed_rows(df)
    for mode, y, ylabel, row, what in panels:
        data = speed[speed["mode"] == mode].copy()
        if data["seq_len"].nunique() < 2:
            s.text(f"Figure {what}: not drawn (mode {mode} has uncontended timings at fewer than two T).")
            continue
        if y == "time per token":
            data[y] = 1.0 / data["tokens_per_s"].astype(float)
        for title, slug, sub in groups(data, FIGURE_KEYS, label_run):
            marks = time_rows[time_rows["mode"] == mode]
            for k in FIGURE_KEYS:
                marks = marks[marks[k] == sub[k].iloc[0]]
            s.figure(_lines(figs, sub, y, ylabel, row, marks, f"{what} · {title}", f"crossover_{mode}_{slug}"),
                     f"{what[0].upper()}{what[1:]}, {title}")
    memory = curves[(curves["quantity"] == "memory") & curves["mode"].isin(["decode", "train"])].copy()
    if memory["seq_len"].nunique() >= 2:
        memory["MB"] = memory["value"] / 1e6
        memory["measured"] = memory["mode"].map({"decode": "decode: state carried", "train": "train: peak rise"})
        mem_rows = table[(table["quantity"] == "memory") & table["mode"].isin(["decode", "train"])].assign(
            measured=lambda t: t["mode"].map({"decode": "decode: state carried", "train": "train: peak rise"}))
        for title, slug, sub in groups(memory[memory["batch"] == memory["batch"].max()], FIGURE_KEYS, label_run):
            marks = mem_rows[mem_rows["batch"] == sub["batch"].iloc[0]]
            for k in FIGURE_KEYS:
                marks = marks[marks[k] == sub[k].iloc[0]]
            path = _lines(figs, sub, "MB", "memory (MB)", "measured", marks, f"memory vs T · B={sub['batch'].iloc[0]} · "
                          f"{title}", f"crossover_memory_{slug}")
            s.figure(path, f"Memory vs T, {title}")
    else:
        s.text("Figure memory vs T: not drawn (no memory measured at two or more T).")
    s.text("Crossover points, per pair, shape and mode (T≈: where the curves cross; 'no crossover below T=...': "
           "one side wins at every measured T).")
    shown = table.drop(columns=["crossover", "T"])
    constant = [c for c in crossover.GROUP if shown[c].nunique(dropna=False) == 1 and c != "mode"]
    if constant:
        s.text("Every row: " + ", ".join(f"{results.SHAPE_NAMES.get(c, c)}={shown[c].iloc[0]}" for c in constant) + ".")
    s.table(shown.drop(columns=constant).sort_values(["quantity", "mode", *[c for c in ("hidden", "batch")
                                                                           if c not in constant]]))
    found = table[table["T"].notna()]
    s.summary = f"RNN vs transformer: {len(found)} crossover(s) in {len(table)} comparisons"
    reach = gradient_reach(df)
    if reach.empty:
        s.text("Gradient reach: no gradient-profile (stability) records; mode train records them.")
    else:
        s.text(f"How far back a gradient reaches, at the longest T measured: the steps back from t = T-1 over which "
               f"||dL/dx_t|| stays above {SETTINGS.gradient_reach_ratio:g} of its value at T-1 (L = <y_(T-1), u>; "
               "'< n': already below at the profile's first point back, n steps away), what is left of it at t = 0 "
               "(||dL/dx_0|| / ||dL/dx_(T-1)||: an RNN's shrinks geometrically with T, attention's about as 1/T), "
               "and the decay per step (log10, over the whole profile; negative: vanishing). Profiles are drawn in "
               "'Gradient flow through time'.")
        s.table(reach)
    return s

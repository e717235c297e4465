"""The report's "RNN vs transformer" section: decode time per token against the context, training
throughput and memory against T, each with the crossovers of ``rnnbench.crossover`` marked, the
table of crossover points, and how far back a gradient reaches at the longest T measured."""
from __future__ import annotations

import math

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


def _maps(figs: Figures, surf, extent: float, title: str, name: str):
    """One map a pair: H against T, each cell the baseline's time per token over the RNN's, on a log
    colour scale centred on 1 (blue: the RNN faster) shared by every map of the report (``extent``: the
    largest ratio either way), values printed, the crossover (ratio 1) drawn as a contour."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    pairs = sorted(set(zip(surf["rnn"], surf["baseline"])))
    fig, axes = plt.subplots(1, len(pairs), figsize=(0.9 + 3.3 * len(pairs), 0.9 + 0.45 * surf["hidden"].nunique()),
                             squeeze=False)
    norm = LogNorm(1 / extent, extent)
    for ax, (rnn, base) in zip(axes[0], pairs):
        grid = surf[(surf["rnn"] == rnn) & (surf["baseline"] == base)].pivot_table(
            index="hidden", columns="seq_len", values="ratio")  # [H, T]
        ratio = np.ma.masked_invalid(grid.to_numpy(dtype=float))
        image = ax.pcolormesh(ratio, cmap="RdBu", norm=norm)
        for (i, j), v in np.ndenumerate(ratio.filled(np.nan)):
            if np.isfinite(v):
                dark = abs(math.log(v)) > 0.6 * math.log(extent)  # the scale's deep ends: white text
                ax.text(j + 0.5, i + 0.5, f"{v:.2g}", ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
        log_ratio = np.log(ratio)
        if min(ratio.shape) >= 2 and log_ratio.min() < 0 < log_ratio.max():
            ax.contour(np.arange(ratio.shape[1]) + 0.5, np.arange(ratio.shape[0]) + 0.5, log_ratio, levels=[0],
                       colors="k", linewidths=1.5)
        ax.set_xticks(np.arange(ratio.shape[1]) + 0.5, [f"{t:g}" for t in grid.columns])
        ax.set_yticks(np.arange(ratio.shape[0]) + 0.5, [f"{h:g}" for h in grid.index])
        ax.set_xlabel("T")
        ax.set_ylabel("H (= I)")
        ax.set_title(f"{base} / {rnn}", fontsize=8)
    fig.colorbar(image, ax=axes[0].tolist(), label="transformer / RNN (>1: RNN faster)")
    fig.suptitle(title, fontsize=9, y=1.04)
    return figs.save(fig, name)


def surface_blocks(s: Section, df, figs: Figures) -> None:
    """The surface (docs/design.md "RNN or transformer"): a map per mode, dtype and batch, and the verdicts.
    Its curves pool every run's records (as ``crossover.curves`` does), so a map is not per run."""
    import numpy as np

    surf = crossover.surface(df)
    if surf.empty:
        s.text("Maps of the surface: not drawn (no RNN and baseline timed at a common shape).")
        return
    s.text("The surface: per mode, dtype and batch, a map of width H (= input size) against T; each cell is the "
           "transformer baseline's median time per token over the RNN backend's (above 1, blue: the RNN is "
           "faster; below 1, red: the transformer), on one log colour scale for every map; the black line is "
           "the crossover (ratio 1), drawn where the map has two or more H and T and both signs.")
    extent = float(max(2.0, np.exp(np.abs(np.log(surf["ratio"])).max())))
    for title, slug, sub in groups(surf, crossover.SURFACE, False):
        s.figure(_maps(figs, sub, extent, f"transformer / RNN time per token · {title}", f"surface_{slug}"),
                 f"Transformer over RNN time per token, {title}")
    s.text("What the surface says, each on the grid it was measured on: " + " ".join(crossover.verdicts(surf)))


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
    surface_blocks(s, df, figs)
    s.text("Crossover points, per pair, shape and mode (T≈: where the curves cross; 'no crossover below T=...': "
           "one side wins at every measured T; such rows that say the same at several widths H are one row).")
    shown = crossover.collapsed(table)
    constant = [c for c in shown.columns if c != "verdict" and shown[c].nunique(dropna=False) == 1 and c != "mode"]
    if constant:
        s.text("Every row: " + ", ".join(f"{results.SHAPE_NAMES.get(c, c)}={shown[c].iloc[0]}" for c in constant) + ".")
    s.table(shown.drop(columns=constant))
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

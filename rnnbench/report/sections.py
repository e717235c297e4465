"""The report's sections: one function per section, each from the long-form frame; each keeps its
place when its data is absent, as one line saying why (``why_absent``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import results
from ..results import SHAPE_NAMES
from ..suites import SETTINGS
from .figures import Figures, finish_lines, groups, suptitle


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)  # ("text", str) | ("table", DataFrame) | ("figure", Path, caption)
    summary: str = ""  # one line for the terminal
    absent: str = ""  # why the section has nothing to show: rendered as its one line, without a heading

    def text(self, s: str):
        self.blocks.append(("text", s))

    def no_data(self, why: str):
        self.absent = why

    def table(self, df):
        self.blocks.append(("table", display(df)))

    def figure(self, path: Path, caption: str):
        self.blocks.append(("figure", path, caption))


def why_absent(df, what: str, kind: str = "timing") -> str:
    """Why a section has nothing to show, the most telling reason first: its records were all
    unsupported or failed, or contended; else what it needs was not measured (``what``)."""
    records = df[df["kind"] == kind]
    if records.empty:
        return f"not measured: these runs hold no {kind} records ({what})"
    finished = records[records["status"] == "ok"]
    if finished.empty:
        counts = records["status"].value_counts()
        if set(counts.index) == {"unsupported"}:
            return f"unsupported: every {kind} record is unsupported here (reasons under 'Failures and exclusions')"
        return (f"no {kind} record finished ({', '.join(f'{n} {status}' for status, n in counts.items())}; "
                "see 'Failures and exclusions')")
    contended = len(results.contended_rows(df)) if kind == "timing" else 0
    if contended and results.speed_rows(df).empty:
        return (f"contended: every finished timing ({contended}) was measured while others used the CPU; "
                "measure again on a quieter machine")
    return f"not measured: {what}" + (f" ({contended} contended timing records left out)" if contended else "")


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return " ".join(str(v).split())  # one line: a table cell


def display(df):
    """Readable column names and 4 significant digits, as strings (both renderers print these)."""
    return df.rename(columns=SHAPE_NAMES).astype(object).apply(lambda col: col.map(_fmt))


def header_section(df) -> Section:
    s = Section("Runs")
    if df.empty:
        s.text("No records in the inputs.")
        return s
    import pandas as pd

    rows = []
    for run_id, sub in df.groupby("run_id", sort=False):
        first = sub.iloc[0]
        commit = first["commit"]
        rows.append({
            "run": run_id, "machine": first["machine"],
            "devices": ", ".join(sorted(map(str, sub["device"].dropna().unique()))),
            "CPU": first["cpu_model"], "GPU": first["gpu"],
            **{name: first.get(f"version_{name}") for name in ("torch", "triton", "jax", "cudnn", "python")},
            "commit": (str(commit)[:10] + (" +dirty" if pd.notna(first["dirty"]) and first["dirty"] else ""))
            if commit else None,
            "records": len(sub), "source": first["run_dir"],
        })
    s.table(pd.DataFrame(rows))
    note = results.contention_note(df)
    if note:
        s.text(note[0].upper() + note[1:] + ".")
    return s


def regime_section(df) -> Section:
    """The fastest RNN backend per device, dtype, cell, mode and short/long T."""
    s = Section("Fastest backend per regime")
    table, reason = results.regime_table(df)
    if table is None:
        s.no_data(why_absent(df, reason))
        return s
    if df["run_id"].nunique() == 1:
        table = table.drop(columns="run")
    table = table.drop(columns=[c for c in ("model", "lengths") if table[c].nunique() == 1])
    s.table(table)
    s.text("Per regime (batch, hidden and T within it), fastest: of the backends fastest in at least one measured "
           "configuration, the one whose time is closest to the fastest's (geometric mean over the configurations "
           "of its time over the fastest time); fastest in: the configurations it was fastest in; runner-up: the "
           "next closest; margin: the runner-up's time over the fastest's. Ratios: " + results.RATIO_RULE +
           " (as in the speedup heatmaps). RNN backends only; Triton under its interpreter excluded.")
    return s


def throughput_section(df, figs: Figures, label_run: bool) -> Section:
    s = Section("Throughput vs sequence length")
    speed = results.speed_rows(df)
    speed = speed[speed["tokens_per_s"].notna()]
    if speed.empty or speed["seq_len"].nunique() < 2:
        s.no_data(why_absent(df, "no finished timings at two or more sequence lengths"))
        return s
    import seaborn as sns

    s.text("Tokens per second (valid tokens per call: B*T, or the sum of the lengths of a ragged batch) against T, "
           "log axes. The line is the median of the repeats; "
           "the band spans their 20th to 80th percentile. Rows: mode; columns: cell; line style: batch.")
    keys = ("device", "dtype", "layers", "input_size", "hidden", "model", "lengths")
    for title, slug, sub in groups(speed, keys, label_run):
        long = sub.assign(tokens=sub["tokens_per_s"] * sub["median_s"],
                          sample_s=sub.apply(results.samples_of, axis=1)).explode("sample_s")
        long["tokens_per_s"] = long["tokens"] / long["sample_s"].astype(float)
        g = sns.relplot(data=long, kind="line", x="seq_len", y="tokens_per_s", hue="backend", style="batch",
                        row="mode", col="cell", estimator="median", errorbar=("pi", 60), markers=True,
                        palette=figs.palette, hue_order=figs.order(sub), height=2.6, aspect=1.25)
        path = finish_lines(figs, g, sub["seq_len"].unique(), "tokens / s", title, f"throughput_{slug}")
        s.figure(path, f"Throughput vs T, {title}")
    return s


def memory_section(df, figs: Figures, label_run: bool) -> Section:
    s = Section("Peak memory vs sequence length")
    mem = results.speed_rows(df)
    mem = mem[mem["peak_bytes"].notna()].copy()
    if mem.empty or mem["seq_len"].nunique() < 2:
        s.no_data(why_absent(df, "no peak-memory measurements at two or more sequence lengths"))
        return s
    import seaborn as sns

    mem["peak_MB"] = mem["peak_bytes"].astype(float).clip(lower=1) / 1e6
    baselines = sorted(mem.loc[mem["backend_kind"] == "baseline", "backend"].unique())
    s.text("Rise of peak memory during one call over what the built model holds, against T, log axes; "
           + (f"transformer baselines ({', '.join(baselines)}) dashed. " if baselines else
              "no transformer baseline was measured in these runs. ")
           + "Methods: " + ", ".join(sorted(mem["peak_method"].dropna().unique())) + ".")
    keys = ("device", "dtype", "layers", "input_size", "hidden", "model", "lengths")
    for title, slug, sub in groups(mem, keys, label_run):
        g = sns.relplot(data=sub, kind="line", x="seq_len", y="peak_MB", hue="backend", style="backend_kind",
                        size="batch", sizes=(1, 2.5), dashes={"rnn": "", "baseline": (4, 2)},
                        markers={"rnn": "o", "baseline": "X"}, row="mode", col="cell",
                        estimator="median", errorbar=None, palette=figs.palette, hue_order=figs.order(sub),
                        height=2.6, aspect=1.25)
        path = finish_lines(figs, g, sub["seq_len"].unique(), "peak rise (MB)", title, f"memory_{slug}")
        s.figure(path, f"Peak memory vs T, {title}")
    return s


def speedup_section(df, figs: Figures, label_run: bool) -> Section:
    s = Section(f"Speedup over {SETTINGS.reference_backend}")
    reference = SETTINGS.reference_backend
    times = results.config_times(results.speed_rows(df))  # [configuration, backend]
    if reference not in times or times.drop(columns=reference).notna().sum().sum() == 0:
        s.no_data(why_absent(df, f"no timing of {reference} beside another backend at the same configuration"))
        return s
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns
    from matplotlib.colors import Normalize

    # log2 of the reference's time over each backend's, at each configuration both ran
    pairs = np.log2(times.drop(columns=reference).rdiv(times[reference], axis=0)).stack().rename("log2_speedup")
    pairs = pairs.reset_index()
    pairs["model"] = pairs["bidirectional"].map(results.DIRECTIONS)
    grids = {}
    for title, slug, sub in groups(pairs, ("device", "dtype", "model", "lengths"), label_run):
        # one heatmap: rows (backend, hidden), columns (cell, mode, batch); the mean of log2 is the geometric mean
        grids[title, slug] = sub.groupby(["backend", "hidden", "cell", "mode", "batch"])["log2_speedup"].mean(
            ).unstack(["cell", "mode", "batch"]).sort_index(axis=1)
    # one colour scale for every heatmap of the report, so that a colour means one speedup across runs
    lim = max(1.0, max(float(np.nanmax(np.abs(g.to_numpy()))) for g in grids.values()))
    s.text(f"Time of {reference} divided by the backend's time: rows are backend and hidden size, columns cell, "
           f"mode and batch; each entry is over the measured sequence lengths (T). Ratios: {results.RATIO_RULE} "
           f"(as in the table of the fastest backend per regime). Above 1 (red): faster than {reference}. One "
           f"colour scale for every heatmap of this report: 1/{results.fmt_ratio(2 ** lim)} to "
           f"{results.fmt_ratio(2 ** lim)}.")
    for (title, slug), grid in grids.items():
        labels = np.vectorize(lambda v: "" if np.isnan(v) else results.fmt_ratio(2 ** v))(grid.to_numpy())
        fig, ax = plt.subplots(figsize=(2.5 + 0.5 * grid.shape[1], 1.0 + 0.3 * grid.shape[0]))
        sns.heatmap(grid, ax=ax, cmap="RdBu_r", norm=Normalize(-lim, lim), annot=labels, fmt="",
                    annot_kws={"size": 7}, linewidths=0.5, linecolor="white",
                    cbar_kws={"label": f"speedup over {reference}", "shrink": 0.8})
        step = max(1, math.ceil(math.floor(lim) / 3))  # at most 7 ticks, at powers of two, 1x among them
        ticks = step * np.arange(-(math.floor(lim) // step), math.floor(lim) // step + 1)
        ax.collections[0].colorbar.set_ticks(ticks, labels=[f"{2 ** t}x" if t >= 0 else f"1/{2 ** -t}x"
                                                            for t in ticks.astype(int)])
        ax.set_yticks(np.arange(grid.shape[0]) + 0.5, [f"{b} · H={h}" for b, h in grid.index], rotation=0)
        ax.set_xticks(np.arange(grid.shape[1]) + 0.5, [f"{c} · {m} · B={b}" for c, m, b in grid.columns],
                      rotation=90)
        ax.set(xlabel="", ylabel="")
        for i in range(1, grid.shape[0]):  # rules between backends, and between cells or modes
            if grid.index[i][0] != grid.index[i - 1][0]:
                ax.axhline(i, color="0.2", lw=1.5)
        for j in range(1, grid.shape[1]):
            if grid.columns[j][:2] != grid.columns[j - 1][:2]:
                ax.axvline(j, color="0.2", lw=1.5)
        ax.set_title(title)
        s.figure(figs.save(fig, f"speedup_{slug}"), f"Speedup over {reference}, {title}")
    return s


def gradient_section(df, figs: Figures, label_run: bool) -> Section:
    import numpy as np

    s = Section("Gradient flow through time")
    stab = df[(df["kind"] == "stability") & (df["status"] == "ok")]
    stab = stab[stab["grad_profile"].apply(lambda p: isinstance(p, (list, tuple)) and len(p) > 1)]
    if stab.empty:
        s.no_data(why_absent(df, "no gradient profiles; mode train records them", kind="stability"))
        return s
    import seaborn as sns

    import pandas as pd

    longest = stab.groupby(["run_id", "device", "dtype", "cell", "hidden", "model"])["seq_len"].transform("max")
    stab = stab[stab["seq_len"] == longest]
    reverse = stab[stab["grad_profile_reverse"].apply(lambda p: isinstance(p, (list, tuple)) and len(p) > 1)]
    long = pd.concat([stab.assign(direction="forward", g=stab["grad_profile"]),
                      reverse.assign(direction="reverse", g=reverse["grad_profile_reverse"])], ignore_index=True)
    # the stored profile is at most 64 points spread evenly over t = 0..T-1
    long["t"] = [np.linspace(0, T - 1, len(p)) for T, p in zip(long["seq_len"], long["g"])]
    long = long.explode(["g", "t"]).astype({"g": float, "t": float})
    long = long[long["g"] > 0]
    kinds = sorted(stab["backend_kind"].unique())
    s.text("||dL/dx_t|| against t for L = <y_{T-1}, u> (u a fixed unit vector), at the longest T measured; "
           "log scale; median over batch sizes. Gradients vanish going left when the curve falls; backends that "
           "agree draw one curve (dashes tell them apart). A bidirectional model has two profiles: forward (L at "
           "y_{T-1}, its forward half) and reverse (L = <y_0, u> over its reverse half: gradients flow from t = 0 "
           "toward T-1, so that curve falls going right when they vanish), told apart by line style. "
           + ("Attention (transformer baselines) drawn beside the RNNs." if "baseline" in kinds
              else "No transformer baseline has a profile in these runs."))
    for title, slug, sub in groups(long, ("device", "dtype", "model"), label_run):
        style = "direction" if sub["direction"].nunique() > 1 else "backend"
        g = sns.relplot(data=sub, kind="line", x="t", y="g", hue="backend", style=style, col="cell",
                        row="hidden", estimator="median", errorbar=None, palette=figs.palette,
                        hue_order=figs.order(sub), height=2.6, aspect=1.3, facet_kws={"sharex": False, "sharey": False})
        g.set(yscale="log")
        g.set_axis_labels("timestep t", "||dL/dx_t||")
        g.set_titles("{col_name} · H={row_name}")
        suptitle(g, title)
        s.figure(figs.save(g.figure, f"gradient_{slug}"), f"Gradient flow, {title}")
    stab = stab.assign(decay_reverse=pd.to_numeric(stab["grad_decay_per_step_reverse"], errors="coerce"))
    summary = stab.groupby(["device", "dtype", "model", "backend", "cell", "seq_len"], as_index=False).agg(
        decay_per_step=("grad_decay_per_step", "median"), decay_reverse=("decay_reverse", "median"),
        nan=("nan_count", "sum"), inf=("inf_count", "sum"))
    if summary["decay_reverse"].isna().all():
        summary = summary.drop(columns="decay_reverse")
    s.text("grad_decay_per_step = (log10 g_0 - log10 g_{T-1}) / (T - 1), median over shapes (negative: vanishing); "
           "decay_reverse, of a bidirectional model's reverse profile, = (log10 g_{T-1} - log10 g_0) / (T - 1).")
    s.table(summary)
    return s


def training_section(df, figs: Figures, label_run: bool) -> Section:
    s = Section("Training curves")
    train = df[(df["kind"] == "training") & df["step"].notna()]
    if train.empty:
        s.no_data(why_absent(df, "rnnbench run --suite tasks, or rnnbench train, records training",
                             kind="training"))
        return s
    import pandas as pd
    import seaborn as sns


    loss = train[train["loss"].notna()].assign(quantity="training loss", value=train["loss"])
    metric = train[train["metric"].notna()].assign(quantity="validation metric", value=train["metric"])
    long = pd.concat([loss, metric], ignore_index=True).astype({"value": float, "step": float})
    s.text("Per task: the training loss at every step, and the task's metric on its fixed validation set at each "
           "evaluation, with the task's naive baseline dashed (what a model that learned nothing scores).")
    for title, slug, sub in groups(long, ("device",), label_run):
        g = sns.relplot(data=sub, kind="line", x="step", y="value", hue="backend", style="cell", row="task",
                        col="quantity", col_order=["training loss", "validation metric"], errorbar=None,
                        palette=figs.palette, hue_order=figs.order(sub), height=2.3, aspect=1.6,
                        facet_kws={"sharex": False, "sharey": False})
        for (task, quantity), ax in g.axes_dict.items():
            of_task = sub[sub["task"] == task]
            name = of_task["metric_name"].dropna()
            ax.set_title(f"{task} · " + (quantity if quantity == "training loss" or name.empty else name.iloc[0]))
            base = of_task["baseline_metric"].dropna()
            if quantity == "validation metric" and len(base):
                ax.axhline(float(base.median()), ls="--", color="0.3", lw=1)
        g.set_ylabels("")
        suptitle(g, title)
        s.figure(figs.save(g.figure, f"training_{slug}"), f"Training curves, {title}")
    s.table(results.training_summary(train.to_dict("records")))
    failed = train[train["status"] != "ok"]
    if len(failed):
        s.text(f"{len(failed)} training run(s) stopped early; see the failures table.")
    return s


def efficiency_section(df, figs: Figures, label_run: bool) -> Section:
    s = Section("Efficiency")
    speed = results.speed_rows(df)
    have = [f for f in results.EFFICIENCY_FIELDS if speed[f].notna().any()]
    if not have:
        s.no_data(why_absent(df, "these runs' records carry no cost fields (flops, achieved_flops_per_s, "
                                 "fraction_of_peak, fraction_of_recurrent_roofline)"))
        return s
    import seaborn as sns

    eff = speed[speed[have].notna().any(axis=1)].copy()
    for f in have:
        eff[f] = eff[f].astype(float)
    rates = [f for f in have if f != "flops"] or have
    summary = eff.groupby(["device", "dtype", "backend", "cell", "mode"], as_index=False)[rates].median()
    s.text("Median over shapes. fraction_of_peak: achieved FLOP/s (analytical FLOPs over the median time) over the "
           "FLOP/s of a large matmul measured on the machine; fraction_of_recurrent_roofline: a lower bound on the "
           "time over the median time (at most 1): the faster of the FLOP/byte roofline at the machine's ceilings "
           "and the chain of recurrent-shaped matmuls ([B, H] x [H, G*H], T steps; in training also dh back) at the "
           "rate measured for that shape.")
    s.table(summary)
    if "fraction_of_peak" in have and eff["seq_len"].nunique() >= 2:
        keys = ("device", "dtype", "hidden", "model", "lengths")
        for title, slug, sub in groups(eff[eff["fraction_of_peak"] > 0], keys, label_run):
            g = sns.relplot(data=sub, kind="line", x="seq_len", y="fraction_of_peak", hue="backend", style="batch",
                            row="mode", col="cell", estimator="median", errorbar=None, markers=True,
                            palette=figs.palette, hue_order=figs.order(sub), height=2.6, aspect=1.25)
            path = finish_lines(figs, g, sub["seq_len"].unique(), "fraction of peak FLOP/s", title,
                                f"efficiency_{slug}")
            s.figure(path, f"Fraction of peak, {title}")
    else:
        s.text("Figure: not drawn (fraction_of_peak needs two or more sequence lengths).")
    return s


def comparison_section(df) -> Section | None:
    """Ratio table of run B against run A when exactly two runs are shown."""
    import pandas as pd

    import numpy as np

    runs = list(pd.unique(df["run_id"]))
    if len(runs) != 2:
        return None
    s = Section("Comparison of two runs")
    speed = results.speed_rows(df)
    key = ["backend", *results.CONFIG_KEY]
    a = {k: results.round_medians(g) for k, g in speed[speed["run_id"] == runs[0]].groupby(key)}
    b = {k: results.round_medians(g) for k, g in speed[speed["run_id"] == runs[1]].groupby(key)}
    both = [k for k in a if k in b]
    calibration = results.calibration_rows(df)
    drift = results.machine_drift(calibration[calibration["run_id"] == runs[0]],
                                  calibration[calibration["run_id"] == runs[1]])
    factor = SETTINGS.change_factor * (drift.factor if drift else 1.0)  # beyond the factor, past the drift
    s.text(f"A = {runs[0]}, B = {runs[1]}. Ratio = B's median time / A's (medians over rounds). A change is flagged "
           f"only when the ratio is beyond {factor:.3g}x either way (the change factor {SETTINGS.change_factor} "
           f"times the machine's drift between the runs) and a two-sided Mann-Whitney U test "
           f"on the per-round medians (one value per round, each round of a backend a process of its own: the spread "
           f"between processes, which the samples of one round do not show) gives p < {SETTINGS.p_threshold}; "
           "unflagged rows are within noise. 'too few rounds': the test cannot reach that p with fewer than 5 rounds "
           "a side (rnnbench run --rounds).")
    s.text(drift.describe() if drift else "machine drift: not known (a run without calibration records, measured "
           "before they existed or in one process); only the change factor applies")
    removed = results.contended_rows(df)
    if len(removed):
        s.text(results.contention_note(df))
    if not both:
        s.no_data("not comparable: the two runs share no finished timing configuration"
                  + (" that contention left (see above)" if len(removed) else ""))
        s.summary = "no configuration to compare" + (f"; {results.contention_note(df)}" if len(removed) else "")
        return s
    rows = []
    for k in both:
        ra, rb = list(a[k].values()), list(b[k].values())
        change = results.compare_rounds(ra, rb, factor=factor)
        rows.append({**dict(zip(key, k)), "A ms": float(np.median(ra)) * 1e3, "B ms": float(np.median(rb)) * 1e3,
                     "rounds A/B": f"{len(ra)}/{len(rb)}", "ratio B/A": change.ratio, "p": change.p,
                     "change": change.verdict, "_flag": change.significant})
    table = pd.DataFrame(rows).sort_values(["_flag", "ratio B/A"], ascending=[False, False])
    flagged = table[table["_flag"]]
    counts = (f"{len(table)} configurations in both runs: {int((flagged['ratio B/A'] > 1).sum())} significantly "
              f"slower in B, {int((flagged['ratio B/A'] < 1).sum())} significantly faster.")
    s.text(counts)
    # the terminal's lines: the drift used (flagged beyond which factor), then the counts
    s.summary = (f"flagged beyond x{factor:.3g}; " + (drift.describe() if drift else "machine drift not known (no "
                 "calibration records)") + "\n" + counts)
    constant = [c for c in results.CONFIG_KEY if table[c].nunique(dropna=False) == 1]
    named = [c for c in constant if results.AXIS_DEFAULTS.get(c, object()) != table[c].iloc[0]]  # not the usual
    if named:
        s.text("Every row: " + ", ".join(f"{SHAPE_NAMES.get(c, c)}={table[c].iloc[0]}" for c in named) + ".")
    s.table(table.drop(columns=["_flag", *constant]))
    return s


def failures_section(df) -> Section:
    s = Section("Failures and exclusions")
    bad = df[df["status"].notna() & (df["status"] != "ok")]
    interpreted = df[(df["kind"] == "timing") & (df["impl_label"] == "interpreted")]
    if len(interpreted):
        s.text(f"{len(interpreted)} timing record(s) of Triton under its interpreter "
               f"({', '.join(sorted(interpreted['backend'].unique()))}) are exactness checks: left out of speed "
               "figures and rankings.")
    contended = results.contended_rows(df)
    if len(contended):
        s.text(f"{len(contended)} timing record(s) are contended: others used more than "
               f"{SETTINGS.contention_threshold:g} of a core while they were timed, after "
               f"{SETTINGS.contention_retries} re-measures. They are left out of speed figures, comparisons and "
               "rankings; measure again on a quieter machine.")
    if bad.empty:
        s.text("Every record finished (status ok).")
        return s
    table = results.failure_reasons(bad).sort_values(list(results.FAILURE_KEYS))
    table["message"] = table["message"].str.slice(0, 160)
    s.text(f"{len(bad)} record(s) did not finish, for {len(table)} reason(s); they are not plotted. One row per "
           "reason, with the shapes it covers (B, T, H) and the number of records.")
    s.table(table[["run_id", "backend", "kind", "cell", "mode", "B", "T", "H", "dtype", "device", "status", "records",
                   "message"]])
    return s


# -- rendering --------------------------------------------------------------------------------

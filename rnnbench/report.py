"""Run folders (and pytest-benchmark JSON) -> report.md and a self-contained report.html.

Everything is drawn from one long-form table (``store.load``: one row per
record, joined with its run's environment) with seaborn.  Each section of the
report stays when its data is absent and says what is missing.  Records of
Triton under its interpreter are exactness checks, not speed: they are left
out of every speed figure and ranking.  Records that did not finish (status
other than ok) go to a table of failures and are never plotted.

Two runs (two commits, two machines) get ratio tables in which a change is
flagged only when it is both beyond ``CHANGE_FACTOR`` and significant under a
two-sided Mann-Whitney U test on the kept samples (as ``asv compare`` does).
"""
from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import store
from .config import ConfigError

CHANGE_FACTOR = 1.1  # asv compare's default factor
P_THRESHOLD = 0.01  # reachable with 5 repeats a side (the smallest two-sided p is then 0.008)
SHORT_T_MAX = 128  # "short" sequences in the regime table: T <= this
REFERENCE_BACKEND = "torch_cudnn"
DPI = 100
CONFIG_KEY = ("device", "dtype", "cell", "layers", "batch", "seq_len", "input_size", "hidden", "mode")
SHAPE_NAMES = {"batch": "B", "seq_len": "T", "input_size": "I", "hidden": "H"}
EFFICIENCY_FIELDS = ("flops", "achieved_flops_per_s", "fraction_of_peak", "fraction_of_step_bound")
ENV_FIELDS = ("machine", "commit", "dirty", "cpu_model", "gpu", "run_dir")


# -- loading ----------------------------------------------------------------------------------


def load_inputs(paths):
    """Run folders, folders of runs and pytest-benchmark JSON files -> one long-form DataFrame.

    Rows keep the order of ``paths`` (the first input is "A" in a comparison).
    """
    import pandas as pd

    frames = []
    for p in map(Path, paths):
        if p.is_file() and p.suffix == ".json":
            frames.append(load_pytest_benchmark(p))
        elif p.is_dir() and store.find_runs([p]):
            frames.append(store.load([p]))
        else:
            raise ConfigError(f"{p} is not a run folder (with {store.RUN_JSON}), a folder of runs, "
                              f"or a pytest-benchmark .json file")
    df = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) \
        else pd.DataFrame()
    for col in (*store.COMMON_FIELDS, *store.TIMING_FIELDS, *store.STABILITY_FIELDS, *store.TRAINING_FIELDS,
                *EFFICIENCY_FIELDS, *ENV_FIELDS):
        if col not in df:
            df[col] = None
    return df


def load_pytest_benchmark(path: Path):
    """A ``pytest --benchmark-json`` file -> timing rows of the record schema.

    The benchmarks' ``extra_info`` carries the configuration (backend, device, dtype,
    cell, batch, seq_len, hidden, mode; optionally input_size, layers, impl_label,
    backend_kind, framework); benchmarks without a backend there are not rnnbench's
    and are skipped.  ``stats.data`` (``--benchmark-save-data``) gives the samples.
    """
    import pandas as pd

    try:
        data = json.loads(Path(path).read_text())
        benchmarks, machine = data["benchmarks"], data.get("machine_info", {})
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a pytest-benchmark JSON file ({exc}); "
                          f"make one with pytest --benchmark-json=FILE") from None
    commit = data.get("commit_info") or {}
    env = {"run_id": f"pytest-benchmark:{Path(path).stem}", "machine": machine.get("node"),
           "commit": commit.get("id"), "dirty": commit.get("dirty"),
           "cpu_model": (machine.get("cpu") or {}).get("brand_raw"), "gpu": None,
           "version_python": machine.get("python_version"), "run_dir": str(path)}
    rows = []
    for bench in benchmarks:
        info, stats = bench.get("extra_info") or {}, bench["stats"]
        if "backend" not in info:
            continue
        row = {"kind": "timing", "status": "ok", "message": bench.get("fullname", ""), "layers": 1,
               "backend_kind": "rnn", "impl_label": None, **env, **info}
        row.setdefault("input_size", row.get("hidden"))
        tokens = row["batch"] * (1 if row.get("mode") == "step" else row["seq_len"])
        row.update(median_s=stats["median"], iqr_s=stats["iqr"], samples_s=stats.get("data"),
                   tokens_per_s=tokens / stats["median"] if stats["median"] > 0 else None)
        rows.append(row)
    return pd.DataFrame(rows)


def speed_rows(df):
    """Finished timing records that measure speed (not Triton under its interpreter)."""
    return df[(df["kind"] == "timing") & (df["status"] == "ok") & (df["impl_label"] != "interpreted")
              & df["median_s"].notna()]


# -- significance -----------------------------------------------------------------------------


@dataclass
class Change:
    ratio: float  # median of b / median of a
    p: float | None  # two-sided Mann-Whitney U on the samples; None when too few to reach P_THRESHOLD
    significant: bool  # p < P_THRESHOLD and the ratio beyond CHANGE_FACTOR either way

    @property
    def verdict(self) -> str:
        if self.p is None:
            return "too few samples"
        if not self.significant:
            return ""
        return f"slower x{self.ratio:.2f}" if self.ratio > 1 else f"faster x{1 / self.ratio:.2f}"


def compare_samples(a, b, factor: float = CHANGE_FACTOR) -> Change:
    """Is b's time different from a's?  A rank test on every kept sample plus a factor, as asv does."""
    import numpy as np
    from scipy.special import comb
    from scipy.stats import mannwhitneyu

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ratio = float(np.median(b) / np.median(a))
    if 2 / comb(len(a) + len(b), min(len(a), len(b))) >= P_THRESHOLD:  # the test could never pass
        return Change(ratio, None, False)
    p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return Change(ratio, p, p < P_THRESHOLD and (ratio > factor or ratio < 1 / factor))


def samples_of(row) -> list:
    """Every kept sample of a timing row (its median alone when samples were not recorded)."""
    s = row["samples_s"]
    return list(s) if isinstance(s, (list, tuple)) and len(s) else [row["median_s"]]


# -- report structure -------------------------------------------------------------------------


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)  # ("text", str) | ("table", DataFrame) | ("figure", Path, caption)
    summary: str = ""  # one line for the terminal

    def text(self, s: str):
        self.blocks.append(("text", s))

    def table(self, df):
        self.blocks.append(("table", display(df)))

    def figure(self, path: Path, caption: str):
        self.blocks.append(("figure", path, caption))


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return " ".join(str(v).split())  # one line: a table cell


def display(df):
    """Readable column names and 4 significant digits, as strings (both renderers print these)."""
    return df.rename(columns=SHAPE_NAMES).astype(object).apply(lambda col: col.map(_fmt))


def _slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(str(p) for p in parts)).strip("_")


class Figures:
    """Saves figures under out/figures with one backend -> colour mapping for the whole report."""

    def __init__(self, out_dir: Path, backends):
        import matplotlib

        matplotlib.use("Agg")
        import seaborn as sns

        sns.set_theme(style="whitegrid", context="paper")
        self.dir = out_dir / "figures"
        self.dir.mkdir(parents=True, exist_ok=True)
        backends = sorted(set(backends))
        colours = sns.color_palette("tab10" if len(backends) <= 10 else "husl", max(len(backends), 1))
        self.palette = dict(zip(backends, colours))

    def order(self, df) -> list:
        """The backends of ``df`` in the report's one order (legends list them alike)."""
        present = set(df["backend"])
        return [b for b in self.palette if b in present]

    def save(self, fig, name: str) -> Path:
        import matplotlib.pyplot as plt

        path = self.dir / f"{name}.png"
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        plt.close(fig)
        return path


def _groups(df, keys, label_run: bool):
    """(title, slug, frame) for each distinct value of ``keys`` (plus the run when several are shown)."""
    keys = (["run_id"] if label_run else []) + list(keys)
    for values, sub in df.groupby(keys, sort=True, dropna=False):
        parts = [f"{SHAPE_NAMES.get(k, k)}={v}" if k in SHAPE_NAMES or k == "layers" else str(v)
                 for k, v in zip(keys, values)]
        yield " · ".join(parts), _slug(*values), sub


def _log_axes(g, xs):
    """Log axes with the measured sequence lengths as plain tick labels."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax in g.axes.flat:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted(xs))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())


# -- sections ---------------------------------------------------------------------------------


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
    return s


def regime_section(df) -> Section:
    """The fastest RNN backend per device, dtype, cell, mode and short/long T."""
    import numpy as np
    import pandas as pd

    s = Section("Fastest backend per regime")
    rnn = speed_rows(df)
    rnn = rnn[rnn["backend_kind"] == "rnn"].copy()
    if rnn["backend"].nunique() < 2:
        s.text("No data: the fastest backend needs timings of at least two RNN backends.")
        return s
    rnn["T range"] = np.where(rnn["seq_len"] <= SHORT_T_MAX, f"short (T<={SHORT_T_MAX})", f"long (T>{SHORT_T_MAX})")
    config = ["run_id", *CONFIG_KEY]
    rows = []
    for regime, sub in rnn.groupby(["run_id", "device", "dtype", "cell", "mode", "T range"], sort=True):
        times = sub.pivot_table(index=config, columns="backend", values="median_s", aggfunc="median")
        times = times[times.notna().sum(axis=1) >= 2]  # [configuration, backend]: where backends can be compared
        if times.empty:
            continue
        # each backend's time over the configuration's fastest, geometric mean over where it ran
        score = np.exp(np.log(times.div(times.min(axis=1), axis=0)).mean()).sort_values()
        best, runner_up = score.index[:2]
        both = times[[best, runner_up]].dropna()
        margin = float(np.exp(np.log(both[runner_up] / both[best]).mean()))
        wins = int((times.idxmin(axis=1) == best).sum())
        rows.append({**dict(zip(["run", "device", "dtype", "cell", "mode", "T range"], regime)),
                     "fastest (geo. mean)": best, "fastest in": f"{wins} of {len(times)}", "runner-up": runner_up,
                     "margin (geo. mean)": f"x{margin:.2f}"})
    if not rows:
        s.text("No data: no configuration was timed with two or more RNN backends.")
        return s
    table = pd.DataFrame(rows)
    if df["run_id"].nunique() == 1:
        table = table.drop(columns="run")
    s.text("Per regime, the backend whose time is closest to the fastest over the measured configurations (batch, "
           "hidden and T within the regime; geometric mean of time over the fastest), in how many configurations "
           "it was the fastest, and its margin over the runner-up (runner-up's time over its time, geometric mean). "
           "RNN backends only; Triton under its interpreter excluded.")
    s.table(table)
    return s


def throughput_section(df, figs: Figures, label_run: bool) -> Section:
    s = Section("Throughput vs sequence length")
    speed = speed_rows(df)
    speed = speed[speed["tokens_per_s"].notna()]
    if speed.empty or speed["seq_len"].nunique() < 2:
        s.text("No data: no finished timings at two or more sequence lengths.")
        return s
    import seaborn as sns

    s.text("Tokens per second (B*T per call) against T, log axes. The line is the median of the repeats; "
           "the band spans their 20th to 80th percentile. Rows: mode; columns: cell; line style: batch.")
    for title, slug, sub in _groups(speed, ("device", "dtype", "layers", "input_size", "hidden"), label_run):
        long = sub.assign(tokens=sub["tokens_per_s"] * sub["median_s"],
                          sample_s=sub.apply(samples_of, axis=1)).explode("sample_s")
        long["tokens_per_s"] = long["tokens"] / long["sample_s"].astype(float)
        g = sns.relplot(data=long, kind="line", x="seq_len", y="tokens_per_s", hue="backend", style="batch",
                        row="mode", col="cell", estimator="median", errorbar=("pi", 60), markers=True,
                        palette=figs.palette, hue_order=figs.order(sub), height=2.6, aspect=1.25)
        _log_axes(g, sub["seq_len"].unique())
        g.set_axis_labels("sequence length T", "tokens / s")
        g.set_titles("{row_name} · {col_name}")
        g.figure.suptitle(title, y=1.02)
        s.figure(figs.save(g.figure, f"throughput_{slug}"), f"Throughput vs T, {title}")
    return s


def memory_section(df, figs: Figures, label_run: bool) -> Section:
    s = Section("Peak memory vs sequence length")
    mem = speed_rows(df)
    mem = mem[mem["peak_bytes"].notna()].copy()
    if mem.empty or mem["seq_len"].nunique() < 2:
        s.text("No data: no peak-memory measurements at two or more sequence lengths.")
        return s
    import seaborn as sns

    mem["peak_MB"] = mem["peak_bytes"].astype(float).clip(lower=1) / 1e6
    baselines = sorted(mem.loc[mem["backend_kind"] == "baseline", "backend"].unique())
    s.text("Rise of peak memory during one call over what the built model holds, against T, log axes; "
           + (f"transformer baselines ({', '.join(baselines)}) dashed. " if baselines else
              "no transformer baseline was measured in these runs. ")
           + "Methods: " + ", ".join(sorted(mem["peak_method"].dropna().unique())) + ".")
    for title, slug, sub in _groups(mem, ("device", "dtype", "layers", "input_size", "hidden"), label_run):
        g = sns.relplot(data=sub, kind="line", x="seq_len", y="peak_MB", hue="backend", style="backend_kind",
                        size="batch", sizes=(1, 2.5), dashes={"rnn": "", "baseline": (4, 2)},
                        markers={"rnn": "o", "baseline": "X"}, row="mode", col="cell",
                        estimator="median", errorbar=None, palette=figs.palette, hue_order=figs.order(sub),
                        height=2.6, aspect=1.25)
        _log_axes(g, sub["seq_len"].unique())
        g.set_axis_labels("sequence length T", "peak rise (MB)")
        g.set_titles("{row_name} · {col_name}")
        g.figure.suptitle(title, y=1.02)
        s.figure(figs.save(g.figure, f"memory_{slug}"), f"Peak memory vs T, {title}")
    return s


def speedup_section(df, figs: Figures, label_run: bool) -> Section:
    s = Section(f"Speedup over {REFERENCE_BACKEND}")
    speed = speed_rows(df)
    key = ["run_id", *CONFIG_KEY]
    ref = speed[speed["backend"] == REFERENCE_BACKEND][key + ["median_s"]].rename(columns={"median_s": "ref_s"})
    pairs = speed[speed["backend"] != REFERENCE_BACKEND].merge(ref, on=key)
    if pairs.empty:
        s.text(f"No data: no timing of {REFERENCE_BACKEND} beside another backend at the same configuration.")
        return s
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns
    from matplotlib.colors import Normalize

    pairs["log2_speedup"] = np.log2(pairs["ref_s"] / pairs["median_s"])
    s.text(f"Time of {REFERENCE_BACKEND} divided by the backend's time, over batch x hidden: rows are backend and "
           "hidden size, columns cell, mode and batch; each entry is the geometric mean over the measured "
           f"sequence lengths (T). Above 1 (red): faster than {REFERENCE_BACKEND}.")
    for title, slug, sub in _groups(pairs, ("device", "dtype"), label_run):
        # one heatmap: rows (backend, hidden), columns (cell, mode, batch)
        grid = sub.groupby(["backend", "hidden", "cell", "mode", "batch"])["log2_speedup"].mean().unstack(
            ["cell", "mode", "batch"]).sort_index(axis=1)
        lim = max(1.0, float(np.nanmax(np.abs(grid.to_numpy()))))
        labels = np.vectorize(lambda v: "" if np.isnan(v) else f"{2 ** v:.2g}x")(grid.to_numpy())
        fig, ax = plt.subplots(figsize=(2.5 + 0.5 * grid.shape[1], 1.0 + 0.3 * grid.shape[0]))
        sns.heatmap(grid, ax=ax, cmap="RdBu_r", norm=Normalize(-lim, lim), annot=labels, fmt="",
                    annot_kws={"size": 7}, linewidths=0.5, linecolor="white",
                    cbar_kws={"label": f"speedup over {REFERENCE_BACKEND}", "shrink": 0.8})
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
        s.figure(figs.save(fig, f"speedup_{slug}"), f"Speedup over {REFERENCE_BACKEND}, {title}")
    return s


def gradient_section(df, figs: Figures, label_run: bool) -> Section:
    import numpy as np

    s = Section("Gradient flow through time")
    stab = df[(df["kind"] == "stability") & (df["status"] == "ok")]
    stab = stab[stab["grad_profile"].apply(lambda p: isinstance(p, (list, tuple)) and len(p) > 1)]
    if stab.empty:
        s.text("No data: no gradient-profile (stability) records; mode train records them.")
        return s
    import seaborn as sns

    longest = stab.groupby(["run_id", "device", "dtype", "cell", "hidden"])["seq_len"].transform("max")
    stab = stab[stab["seq_len"] == longest]
    # the stored profile is at most 64 points spread evenly over t = 0..T-1
    long = stab.assign(g=stab["grad_profile"],
                       t=[np.linspace(0, T - 1, len(p)) for T, p in zip(stab["seq_len"], stab["grad_profile"])])
    long = long.explode(["g", "t"]).astype({"g": float, "t": float})
    long = long[long["g"] > 0]
    kinds = sorted(stab["backend_kind"].unique())
    s.text("||dL/dx_t|| against t for L = <y_{T-1}, u> (u a fixed unit vector), at the longest T measured; "
           "log scale; median over batch sizes. Gradients vanish going left when the curve falls; backends that "
           "agree draw one curve (dashes tell them apart). "
           + ("Attention (transformer baselines) drawn beside the RNNs." if "baseline" in kinds
              else "No transformer baseline has a profile in these runs."))
    for title, slug, sub in _groups(long, ("device", "dtype"), label_run):
        g = sns.relplot(data=sub, kind="line", x="t", y="g", hue="backend", style="backend", col="cell",
                        row="hidden", estimator="median", errorbar=None, palette=figs.palette,
                        hue_order=figs.order(sub), height=2.6, aspect=1.3, facet_kws={"sharex": False, "sharey": False})
        g.set(yscale="log")
        g.set_axis_labels("timestep t", "||dL/dx_t||")
        g.set_titles("{col_name} · H={row_name}")
        g.figure.suptitle(title, y=1.02)
        s.figure(figs.save(g.figure, f"gradient_{slug}"), f"Gradient flow, {title}")
    summary = stab.groupby(["device", "dtype", "backend", "cell", "seq_len"], as_index=False).agg(
        decay_per_step=("grad_decay_per_step", "median"), nan=("nan_count", "sum"), inf=("inf_count", "sum"))
    s.text("grad_decay_per_step = (log10 g_0 - log10 g_{T-1}) / (T - 1), median over shapes (negative: vanishing).")
    s.table(summary)
    return s


def training_section(df, figs: Figures, label_run: bool) -> Section:
    s = Section("Training curves")
    train = df[(df["kind"] == "training") & df["step"].notna()]
    if train.empty:
        s.text("No data: no training records (rnnbench run --suite tasks, or rnnbench train).")
        return s
    import pandas as pd
    import seaborn as sns

    from .train import summary_frame

    loss = train[train["loss"].notna()].assign(quantity="training loss", value=train["loss"])
    metric = train[train["metric"].notna()].assign(quantity="validation metric", value=train["metric"])
    long = pd.concat([loss, metric], ignore_index=True).astype({"value": float, "step": float})
    s.text("Per task: the training loss at every step, and the task's metric on its fixed validation set at each "
           "evaluation, with the task's naive baseline dashed (what a model that learned nothing scores).")
    for title, slug, sub in _groups(long, ("device",), label_run):
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
        g.figure.suptitle(title, y=1.02)
        s.figure(figs.save(g.figure, f"training_{slug}"), f"Training curves, {title}")
    s.table(summary_frame(train.to_dict("records")))
    failed = train[train["status"] != "ok"]
    if len(failed):
        s.text(f"{len(failed)} training run(s) stopped early; see the failures table.")
    return s


def efficiency_section(df, figs: Figures, label_run: bool) -> Section:
    s = Section("Efficiency")
    speed = speed_rows(df)
    have = [f for f in EFFICIENCY_FIELDS if speed[f].notna().any()]
    if not have:
        s.text("Not recorded: these runs carry no cost fields (flops, achieved_flops_per_s, fraction_of_peak, "
               "fraction_of_step_bound).")
        return s
    import seaborn as sns

    eff = speed[speed[have].notna().any(axis=1)].copy()
    for f in have:
        eff[f] = eff[f].astype(float)
    rates = [f for f in have if f != "flops"] or have
    summary = eff.groupby(["device", "dtype", "backend", "cell", "mode"], as_index=False)[rates].median()
    s.text("Median over shapes. fraction_of_peak: achieved FLOP/s (analytical FLOPs over the median time) over the "
           "FLOP/s of a large matmul measured on the machine; fraction_of_step_bound: over the FLOP/s of one "
           "recurrent-shaped matmul ([B, H] x [H, G*H]), which a recurrence chains T times.")
    s.table(summary)
    if "fraction_of_peak" in have and eff["seq_len"].nunique() >= 2:
        for title, slug, sub in _groups(eff[eff["fraction_of_peak"] > 0], ("device", "dtype", "hidden"), label_run):
            g = sns.relplot(data=sub, kind="line", x="seq_len", y="fraction_of_peak", hue="backend", style="batch",
                            row="mode", col="cell", estimator="median", errorbar=None, markers=True,
                            palette=figs.palette, hue_order=figs.order(sub), height=2.6, aspect=1.25)
            _log_axes(g, sub["seq_len"].unique())
            g.set_axis_labels("sequence length T", "fraction of peak FLOP/s")
            g.set_titles("{row_name} · {col_name}")
            g.figure.suptitle(title, y=1.02)
            s.figure(figs.save(g.figure, f"efficiency_{slug}"), f"Fraction of peak, {title}")
    else:
        s.text("Figure: not drawn (fraction_of_peak needs two or more sequence lengths).")
    return s


def comparison_section(df) -> Section | None:
    """Ratio table of run B against run A when exactly two runs are shown."""
    import pandas as pd

    runs = list(pd.unique(df["run_id"]))
    if len(runs) != 2:
        return None
    s = Section("Comparison of two runs")
    speed = speed_rows(df)
    key = ["backend", *CONFIG_KEY]
    a = speed[speed["run_id"] == runs[0]].drop_duplicates(key, keep="last").set_index(key)
    b = speed[speed["run_id"] == runs[1]].drop_duplicates(key, keep="last").set_index(key)
    both = a.index.intersection(b.index)
    s.text(f"A = {runs[0]}, B = {runs[1]}. Ratio = B's median time / A's. A change is flagged only when the ratio "
           f"is beyond {CHANGE_FACTOR}x either way and a two-sided Mann-Whitney U test on every kept sample "
           f"gives p < {P_THRESHOLD} (asv compare's rule: a rank test and a factor); unflagged rows are within "
           "noise. 'too few samples': the test cannot reach that p with so few repeats.")
    if not len(both):
        s.text("No data: the two runs share no finished timing configuration.")
        return s
    rows = []
    unkept = 0
    for k in both:
        change = compare_samples(samples_of(a.loc[k]), samples_of(b.loc[k]))
        kept = all(isinstance(r["samples_s"], (list, tuple)) for r in (a.loc[k], b.loc[k]))
        unkept += not kept
        rows.append({**dict(zip(key, k)), "A ms": a.loc[k, "median_s"] * 1e3, "B ms": b.loc[k, "median_s"] * 1e3,
                     "ratio B/A": change.ratio, "p": change.p, "change": change.verdict if kept else "no samples kept",
                     "_flag": change.significant})
    table = pd.DataFrame(rows).sort_values(["_flag", "ratio B/A"], ascending=[False, False])
    flagged = table[table["_flag"]]
    s.summary = (f"{len(table)} configurations in both runs: {int((flagged['ratio B/A'] > 1).sum())} significantly "
                 f"slower in B, {int((flagged['ratio B/A'] < 1).sum())} significantly faster.")
    s.text(s.summary)
    if unkept:
        s.text(f"{unkept} configuration(s) have no samples to test (pytest-benchmark keeps them only with "
               "--benchmark-save-data): their ratios are shown, never flagged.")
    constant = [c for c in CONFIG_KEY if table[c].nunique(dropna=False) == 1]
    if constant:
        s.text("Every row: " + ", ".join(f"{SHAPE_NAMES.get(c, c)}={table[c].iloc[0]}" for c in constant) + ".")
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
    if bad.empty:
        s.text("Every record finished (status ok).")
        return s
    cols = ["run_id", "backend", "kind", "cell", "mode", "batch", "seq_len", "hidden", "dtype", "device", "status",
            "message"]
    table = bad[cols].copy()
    table["message"] = table["message"].fillna("").str.slice(0, 160)
    s.text(f"{len(bad)} record(s) did not finish; they are not plotted.")
    s.table(table)
    return s


# -- rendering --------------------------------------------------------------------------------


def render_markdown(title: str, sections, out_dir: Path) -> str:
    lines = [f"# {title}", ""]
    for sec in sections:
        lines += [f"## {sec.title}", ""]
        for block in sec.blocks:
            if block[0] == "text":
                lines += [block[1], ""]
            elif block[0] == "table":
                cells = block[1].apply(lambda col: col.str.replace("|", r"\|", regex=False))
                lines += [cells.to_markdown(index=False), ""]
            else:
                lines += [f"![{block[2]}]({block[1].relative_to(out_dir).as_posix()})", ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:2px 6px}
th{background:#f0f0f0;text-align:left}figure{margin:1em 0}img{max-width:100%}figcaption{color:#555;font-size:13px}"""


def render_html(title: str, sections) -> str:
    """One file: figures embedded as base64 PNG, tables as HTML."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        body.append(f"<h2>{html.escape(sec.title)}</h2>")
        for block in sec.blocks:
            if block[0] == "text":
                body.append(f"<p>{html.escape(block[1])}</p>")
            elif block[0] == "table":
                body.append(block[1].to_html(index=False, border=0))
            else:
                data = base64.b64encode(block[1].read_bytes()).decode()
                body.append(f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def build_report(df, out_dir) -> dict:
    """Write report.md, report.html and figures/*.png; returns their paths and the sections."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = Figures(out_dir, df["backend"].dropna().unique())
    for old in figs.dir.glob("*.png"):  # a rewritten report must not keep figures of older data
        old.unlink()
    label_run = df["run_id"].nunique() > 1
    comparison = comparison_section(df)
    sections = [header_section(df), *([comparison] if comparison else []), regime_section(df),
                throughput_section(df, figs, label_run), memory_section(df, figs, label_run),
                speedup_section(df, figs, label_run), gradient_section(df, figs, label_run),
                training_section(df, figs, label_run), efficiency_section(df, figs, label_run), failures_section(df)]
    title = "rnnbench report"
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(render_markdown(title, sections, out_dir))
    page.write_text(render_html(title, sections))
    return {"md": md, "html": page, "figures": sorted(figs.dir.glob("*.png")), "sections": sections,
            "comparison": comparison}


def write_report(inputs, out_dir) -> Path:
    """The report of run folders (what ``rnnbench run`` calls at its end); returns report.html's path."""
    return build_report(load_inputs(inputs), out_dir)["html"]


def main(args) -> int:
    inputs = [Path(p) for p in args.inputs]
    df = load_inputs(inputs)
    if args.out:
        out = Path(args.out)
    elif len(inputs) == 1 and inputs[0].is_dir() and (inputs[0] / store.RUN_JSON).is_file():
        out = inputs[0] / "report"
    else:
        out = Path("rnnbench-report")
    result = build_report(df, out)
    print(f"report: {result['html']}  (and {result['md'].name}, {len(result['figures'])} figures)")
    if result["comparison"] and result["comparison"].summary:
        print(result["comparison"].summary)
    return 0

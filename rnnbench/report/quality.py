"""The report's quality sections (the ``quality`` suite): time to quality per task and backend, with
the backends' first steps overlaid, and memory depth per model beside its gradient profile."""
from __future__ import annotations

from ..suites import SETTINGS
from .figures import Figures, groups, suptitle
from .sections import Section

FIRST_STEPS = 50  # the overlay of the backends' loss curves: float32 sums drift apart over thousands of steps
STEPS_AGREE = 0.10  # a seconds ratio is called speed only where the steps to the target agree within this


def verdicts(df):
    """One row per finished training run that carries a time-to-quality verdict (its last record)."""
    train = df[(df["kind"] == "training") & (df["status"] == "ok")]
    if "target_reached" not in train:
        return train.iloc[:0]
    return train[train["target_reached"].notna() & ~train["depth_walk"].fillna(False).astype(bool)]


def quality_table(runs):
    """Task x backend: steps and training seconds to the target, or "not reached" with the budget, and
    the seconds against the reference backend's, called speed only where the steps agree."""
    import pandas as pd

    rows = []
    keys = ["device", "dtype", "task", "seq_len", "cell"]
    for _, sub in runs[runs["seed"] == 0].groupby(keys, sort=False):
        ref = sub[sub["backend"] == SETTINGS.reference_backend]
        ref = ref.iloc[0] if len(ref) and bool(ref.iloc[0]["target_reached"]) else None
        for _, r in sub.iterrows():
            reached = bool(r["target_reached"])
            row = {**{k: r[k] for k in keys}, "backend": r["backend"], "target": r["target_metric"],
                   "steps": r["steps_to_target"] if reached else f"not reached in {r['step']:.0f}",
                   "seconds": r["time_to_target_s"] if reached else f"not reached in {r['train_s']:.3g}",
                   "compile_s": r["compile_s"], "budget": f"{r['steps']:.0f} steps or {r['budget_s']:.0f} s"}
            if ref is None or not reached or r["backend"] == SETTINGS.reference_backend:
                row["vs " + SETTINGS.reference_backend] = ""
            else:
                steps_gap = abs(r["steps_to_target"] / ref["steps_to_target"] - 1)
                row["vs " + SETTINGS.reference_backend] = (
                    f"{r['time_to_target_s'] / ref['time_to_target_s']:.2f}x the seconds" if steps_gap <= STEPS_AGREE
                    else f"steps differ by {steps_gap:.0%}: not a speed")
            rows.append(row)
    return pd.DataFrame(rows)


def quality_section(df, figs: Figures, label_run: bool) -> Section:
    s = Section("Time to quality")
    runs = verdicts(df)
    if runs.empty:
        s.no_data("not measured: no training run with a quality target (rnnbench run --suite quality)")
        return s
    s.text("Each task to its stated target on its held-out validation set (tasks' target_text; MLPerf Training's "
           "rule), evaluated every few steps; seconds are training steps on the device timer, the first step's "
           "compile and warm-up apart (compile_s), evaluations not counted. A run that misses the target within its "
           "budget (steps or seconds, whichever is larger) says so. Backends train the same model from the same "
           "weights on the same batches, but float32 sums drift apart over many steps, so a seconds ratio is "
           f"called a speed only where the steps agree within {STEPS_AGREE:.0%}. Seed 0.")
    s.table(quality_table(runs))
    _first_steps(s, df, runs, figs, label_run)
    return s


def _first_steps(s: Section, df, runs, figs: Figures, label_run: bool) -> None:
    """The loss over the first steps, every backend of the quality runs overlaid: one curve where they agree."""
    import seaborn as sns

    train = df[(df["kind"] == "training") & (df["step"] <= FIRST_STEPS) & df["loss"].notna()]
    train = train[train["stop_at_target"].fillna(False).astype(bool) & ~train["depth_walk"].fillna(False).astype(bool)
                  & (train["seed"] == 0)]
    train = train.merge(runs[["run_id", "task", "backend", "cell", "seq_len"]].drop_duplicates(),
                        on=["run_id", "task", "backend", "cell", "seq_len"])
    if train.empty:
        return
    for title, slug, sub in groups(train.astype({"step": float, "loss": float}), ("device", "cell"), label_run):
        g = sns.relplot(data=sub, kind="line", x="step", y="loss", hue="backend", style="backend_kind", col="task",
                        col_wrap=3, palette=figs.palette, hue_order=figs.order(sub), errorbar=None, height=2.2,
                        aspect=1.3, facet_kws={"sharey": False})
        suptitle(g, f"first {FIRST_STEPS} steps, {title}")
        s.figure(figs.save(g.figure, f"quality_first_steps_{slug}"),
                 f"Training loss over the first {FIRST_STEPS} steps per backend (RNN backends: one model; the "
                 f"transformer is its own), {title}")


def depth_table(depth):
    """Model x T: how many runs reached the target there ("1/1", "3/3"; blank: not tried), the boundary,
    and the model's gradient decay per step at the longest T tried (before training)."""
    import pandas as pd

    rows = []
    for _, r in depth.iterrows():
        row = {"device": r["device"], "task": r["task"], "cell": r["cell"], "backend": r["backend"]}
        for T in [int(t) for t in str(r["seq_lens"]).split(",")]:
            if T == r["boundary_seq_len"]:
                row[f"T={T}"] = f"{int(r['boundary_reached'])}/{int(r['boundary_runs'])}"
            elif T in r["reached_seq_lens"]:
                row[f"T={T}"] = "1/1"
            elif T in r["tried_seq_lens"]:
                row[f"T={T}"] = "0/1"
            else:
                row[f"T={T}"] = ""
        row["boundary T"] = r["boundary_seq_len"] if pd.notna(r["boundary_seq_len"]) else "none"
        row["grad decay/step"] = r["grad_decay_per_step"]
        rows.append(row)
    return pd.DataFrame(rows)


def depth_section(df, figs: Figures, label_run: bool) -> Section:
    s = Section("Memory depth")
    depth = df[(df["kind"] == "depth") & (df["status"] == "ok")] if "kind" in df else df.iloc[:0]
    if depth.empty:
        s.no_data("not measured: no memory-depth walk (rnnbench run --suite quality)")
        return s
    s.text("Each model trains seed 0 at each T in turn, each run to the task's target or its budget, and stops at the "
           "first T it misses; the other seeds then train at the longest T it reached (the boundary). A cell reads "
           "reached runs / runs; blank: not tried (a shorter T was missed). grad decay/step: log10 of ||dL/dx_t|| lost "
           "per step back in time, of the model as training starts, at the longest T tried (negative: vanishing). "
           "Does a slower decay predict a longer reach? Read the boundary against it.")
    s.table(depth_table(depth))
    _depth_figure(s, df, depth, figs, label_run)
    return s


def _depth_figure(s: Section, df, depth, figs: Figures, label_run: bool) -> None:
    """Per task: the fraction of runs that reached the target against T, beside the gradient profiles."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    stab = df[(df["kind"] == "stability") & (df["status"] == "ok")]
    for title, slug, sub in groups(depth, ("device", "task"), label_run):
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
        colours = sns.color_palette("tab10", len(sub))  # one per model (a cell on a backend)
        for colour, (_, r) in zip(colours, sub.iterrows()):
            label = f"{r['cell']} · {r['backend']}"
            lengths = [int(t) for t in str(r["seq_lens"]).split(",")]
            tried = [T for T in lengths if T in r["tried_seq_lens"]]
            share = [r["boundary_reached"] / r["boundary_runs"] if T == r["boundary_seq_len"]
                     else float(T in r["reached_seq_lens"]) for T in tried]
            left.plot(tried, share, marker="o", label=label, color=colour)
            prof = stab[(stab["backend"] == r["backend"]) & (stab["cell"] == r["cell"])
                        & (stab["seq_len"] == max(tried)) & (stab["run_id"] == r["run_id"])]
            if len(prof):
                g = np.asarray(prof.iloc[0]["grad_profile"], dtype=float)
                t = np.linspace(0, max(tried) - 1, len(g))
                right.plot(t[g > 0], g[g > 0], label=label, color=colour)
        left.set(xscale="log", xlabel="T", ylabel="runs that reached the target", ylim=(-0.05, 1.05))
        right.set(yscale="log", xlabel="timestep t (at the longest T tried)", ylabel="||dL/dx_t||, untrained")
        left.legend(fontsize=7)
        fig.suptitle(f"Memory depth, {title}")
        fig.tight_layout()
        s.figure(figs.save(fig, f"depth_{slug}"), f"Memory depth and gradient reach, {title}")

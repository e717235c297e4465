"""asv's results as one page a person can read offline: each benchmark against commit, with steps.

``asv publish`` writes a site that fetches its scripts from CDNs; this reads the same results
folder (``results/asv/<machine>/<commit>-<env>.json``) with asv's own loader and writes one HTML
file with the figures embedded (base64 PNG).  Commits are ordered by the commit graph
(``git rev-list --topo-order``; by commit date where git does not know them), and steps are found
by ``asv.step_detect``, weighted by each point's confidence interval as ``asv publish`` does.
"""
from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd

GENERATOR = "rnnbench history"  # marks a page this module wrote: only such a page is overwritten
EXIT_BAD_INPUT = 2
# asv's default regressions_thresholds: the fit also splits at smaller changes, which are noise here
THRESHOLD = 0.05


class HistoryError(ValueError):
    """The results folder or the output folder cannot be used; the message says why."""


def load_points(results_dir) -> pd.DataFrame:
    """One row per machine, environment, commit, benchmark and parameter set: the value asv kept
    (None where the point did not run), its weight, its interquartile range and the commit date."""
    from asv import _stats
    from asv.results import Results

    results_dir = Path(results_dir)
    rows = []
    for path in sorted(results_dir.glob("*/*.json")):
        if path.name == "machine.json":
            continue
        res = Results.load(str(path))
        for key in res.get_all_result_keys():
            param_lists = res.get_result_params(key)
            combos = list(itertools.product(*param_lists)) if param_lists else [()]
            values = res.get_result_value(key, param_lists)
            stats = res.get_result_stats(key, param_lists)
            for combo, value, stat in zip(combos, values, stats):
                ok = value is not None and not (isinstance(value, float) and math.isnan(value))
                rows.append({
                    "machine": path.parent.name, "env": res.env_name, "commit": res.commit_hash,
                    "date": pd.to_datetime(res.date, unit="ms", utc=True), "benchmark": key,
                    "params": ", ".join(str(p).strip("'") for p in combo),
                    "value": float(value) if ok else None,
                    "weight": _stats.get_weight(stat) if ok else None,
                    "q_25": (stat or {}).get("q_25") if ok else None,
                    "q_75": (stat or {}).get("q_75") if ok else None,
                })
    return pd.DataFrame(rows, columns=["machine", "env", "commit", "date", "benchmark", "params",
                                       "value", "weight", "q_25", "q_75"])


def commit_order(commits: pd.DataFrame, repo) -> list[str]:
    """The commits (columns commit, date) oldest first along the commit graph; commits git does
    not know (results copied from another clone) are placed by their commit date."""
    by_date = commits.sort_values("date")["commit"].tolist()
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-list", "--topo-order", "--reverse", "--ignore-missing",
                              *by_date], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return by_date
    wanted = set(by_date)
    graph = [h for h in out.stdout.split() if h in wanted] if out.returncode == 0 else []
    if not graph:
        return by_date
    dates = dict(zip(commits["commit"], commits["date"]))
    order = list(graph)
    for h in by_date:  # unknown to git: after the last known commit that is not newer
        if h not in graph:
            later = [i for i, g in enumerate(order) if dates[g] > dates[h]]
            order.insert(later[0] if later else len(order), h)
    return order


def find_steps(series: pd.DataFrame, threshold: float = THRESHOLD) -> tuple[list[tuple], list[dict]]:
    """asv's step detection on one series (rows in commit order; columns commit, value, weight):
    the fitted levels (first position, end position, value) and the steps between them larger than
    ``threshold`` (the step's first commit and position, the levels before and after, their ratio)."""
    from asv.step_detect import detect_steps

    y = [None if pd.isna(v) else float(v) for v in series["value"]]
    w = [None if pd.isna(v) else float(v) for v in series["weight"]]
    if not any(v is not None for v in y):
        return [], []
    levels = [(left, right, value) for left, right, value, _, _ in detect_steps(y, w)]
    commits = series["commit"].tolist()
    steps = [{"commit": commits[b[0]], "position": b[0], "before": a[2], "after": b[2],
              "ratio": b[2] / a[2] if a[2] else math.inf}
             for a, b in zip(levels, levels[1:]) if not a[2] or abs(b[2] / a[2] - 1) >= threshold]
    return levels, steps


def _label(commit: str, date) -> str:
    return f"{commit[:8]}\n{date:%m-%d %H:%M}"


def _figure(bench: str, unit: str, data: pd.DataFrame, order: list[str], labels: dict, steps: dict) -> str:
    """One benchmark: a panel per parameter set, value (median, interquartile bar) against commit,
    asv's step levels drawn across and each step's ratio written at its commit.  Base64 PNG.
    ``steps``: parameter set -> (levels, steps) of ``find_steps``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sets = sorted(data["params"].unique())
    cols = min(3, len(sets))
    rows = math.ceil(len(sets) / cols)
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
    position = {c: i for i, c in enumerate(order)}
    for ax, params in zip(axes.flat, sets):
        s = data[data["params"] == params].assign(x=lambda d: d["commit"].map(position)).sort_values("x")
        ran = s.dropna(subset=["value"])
        ax.set_title(params or bench, fontsize=9)
        if ran.empty:
            ax.text(0.5, 0.5, "did not run on this machine", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.lineplot(data=ran, x="x", y="value", marker="o", ax=ax, color="C0")
            ax.errorbar(ran["x"], ran["value"], yerr=[(ran["value"] - ran["q_25"]).clip(lower=0),
                        (ran["q_75"] - ran["value"]).clip(lower=0)], fmt="none", ecolor="C0", alpha=0.5)
            levels, found = steps.get(params, ([], []))
            for left, right, level in levels:
                ax.hlines(level, left - 0.3, right - 0.7, colors="C3", linewidth=1.5)
            for st in found:
                ax.axvline(st["position"] - 0.5, color="C3", linestyle="--", linewidth=0.8)
                ax.annotate(f"x{st['ratio']:.2f}", (st["position"] - 0.5, st["after"]), color="C3", fontsize=8,
                            xytext=(3, 4), textcoords="offset points")
            for x in sorted(set(range(len(order))) - set(ran["x"])):
                ax.axvspan(x - 0.4, x + 0.4, color="0.9")  # this commit did not run this point
        ax.set_xticks(range(len(order)), [labels[c] for c in order], fontsize=6, rotation=30, ha="right")
        ax.set_xlim(-0.5, len(order) - 0.5)
        ax.set_xlabel("commit (oldest left)")
        ax.set_ylabel(unit)
    for ax in list(axes.flat)[len(sets):]:
        ax.set_visible(False)
    fig.suptitle(bench)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def time_beside_instructions(units: dict) -> list[tuple[str, str]]:
    """(time benchmark, instructions benchmark) pairs of one module (``gate.Gate.time_iteration`` and
    ``gate.Instructions.track_instructions``): the same calls timed and counted, drawn on one figure."""
    return [(t, i) for i, unit in sorted(units.items()) if unit == "instructions"
            for t, other in sorted(units.items()) if other == "seconds" and t.split(".")[0] == i.split(".")[0]]


def _paired_figure(time_bench: str, count_bench: str, data: pd.DataFrame, order: list[str], labels: dict) -> str:
    """Per parameter set both series against commit, each over its own median (1 = the series' median):
    wall time moves with the machine, the count with the code.  Base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    both = data.dropna(subset=["value"])
    sets = sorted(set(both.loc[both["benchmark"] == time_bench, "params"])
                  & set(both.loc[both["benchmark"] == count_bench, "params"]))
    if not sets:
        return ""
    cols = min(3, len(sets))
    rows = math.ceil(len(sets) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
    position = {c: i for i, c in enumerate(order)}
    for ax, params in zip(axes.flat, sets):
        for bench, label, color in ((time_bench, "wall time", "C0"), (count_bench, "instructions", "C1")):
            s = both[(both["benchmark"] == bench) & (both["params"] == params)]
            s = s.assign(x=s["commit"].map(position)).sort_values("x")
            ax.plot(s["x"], s["value"] / s["value"].median(), marker="o", color=color, label=label)
        ax.axhline(1.0, color="0.6", linewidth=0.8)
        ax.set_title(params, fontsize=9)
        ax.set_xticks(range(len(order)), [labels[c] for c in order], fontsize=6, rotation=30, ha="right")
        ax.set_xlim(-0.5, len(order) - 0.5)
        ax.set_xlabel("commit (oldest left)")
        ax.set_ylabel("value / the series' median")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(sets):]:
        ax.set_visible(False)
    fig.suptitle(f"{time_bench} beside {count_bench}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _units(results_dir: Path) -> dict:
    path = results_dir / "benchmarks.json"
    if not path.is_file():
        return {}
    return {name: b.get("unit", "") for name, b in json.loads(path.read_text()).items() if isinstance(b, dict)}


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:2px 6px}
th{background:#f0f0f0;text-align:left}img{max-width:100%}p.note{color:#555;font-size:13px}"""


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0) if not df.empty else "<p>none</p>"


def build_history(results_dir, out_dir, repo=".", top: int = 15) -> dict:
    """Write ``out_dir/index.html`` from an asv results folder; returns its path, the steps found
    (DataFrame: machine, benchmark, params, commit, before, after, ratio) and the commits that
    could not run.  HistoryError, before anything is written, when there is nothing to show or
    the page would overwrite a file this module did not write."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise HistoryError(f"{results_dir} is not a folder (expected asv's results_dir, e.g. results/asv)")
    page = out_dir / "index.html"
    if page.exists() and f'content="{GENERATOR}"' not in page.read_text(errors="replace")[:2000]:
        raise HistoryError(f"{page} exists and was not written by {GENERATOR}: choose another --out")
    points = load_points(results_dir)
    if points.empty:
        raise HistoryError(f"no asv results under {results_dir} (expected <machine>/<commit>-<env>.json)")
    units = _units(results_dir)
    body, all_steps, failed_rows = [], [], []
    for (machine, env), group in points.groupby(["machine", "env"], sort=True):
        commits = group[["commit", "date"]].drop_duplicates("commit")
        order = commit_order(commits, repo)
        dates = dict(zip(commits["commit"], commits["date"]))
        labels = {c: _label(c, dates[c]) for c in order}
        ran_any = group.dropna(subset=["value"])["commit"].unique()
        failed_rows += [{"machine": machine, "env": env, "commit": c[:8], "date": f"{dates[c]:%Y-%m-%d %H:%M}"}
                        for c in order if c not in ran_any]
        body.append(f"<h2>{html.escape(machine)} <small>({html.escape(env)})</small></h2>")
        body.append("<p>Commits, oldest first: " + ", ".join(
            f"<code>{c[:8]}</code> {dates[c]:%Y-%m-%d}" for c in order) + "</p>")
        for bench, data in group.groupby("benchmark", sort=True):
            steps = {}
            for params, series in data.groupby("params"):
                series = series.set_index("commit").reindex(order).reset_index()
                levels, found = find_steps(series)
                all_steps += [{"machine": machine, "benchmark": bench, "params": params, "commit": st["commit"],
                               "date": f"{dates[st['commit']]:%Y-%m-%d %H:%M}", "before": st["before"],
                               "after": st["after"], "ratio": st["ratio"]} for st in found]
                steps[params] = (levels, found)
            body.append(f"<h3>{html.escape(bench)}</h3>")
            png = _figure(bench, units.get(bench, ""), data, order, labels, steps)
            body.append(f'<img alt="{html.escape(bench)} against commit" src="data:image/png;base64,{png}">')
            missing = [(p, [c for c in order if c in set(s.loc[s["value"].isna(), "commit"])])
                       for p, s in data.groupby("params")]
            missing = [f"{p} at {', '.join(c[:8] for c in cs) if len(cs) < len(order) else 'every commit'}"
                       for p, cs in missing if cs]
            if missing:  # a backend this commit does not register, or this machine cannot run
                body.append(f'<p class="note">Did not run: {html.escape("; ".join(missing))}.</p>')
        for time_bench, count_bench in time_beside_instructions(units):
            png = _paired_figure(time_bench, count_bench, group, order, labels)
            if png:
                body.append(f"<h3>Wall time beside instructions: {html.escape(time_bench)}, "
                            f"{html.escape(count_bench)}</h3>")
                body.append('<p class="note">Each series over its own median: the count (callgrind, valgrind\'s '
                            "emulated CPU) moves only with the code; wall time moves with the machine too "
                            "(docs/instructions.md).</p>")
                body.append(f'<img alt="{html.escape(time_bench)} beside {html.escape(count_bench)}" '
                            f'src="data:image/png;base64,{png}">')
    steps_df = pd.DataFrame(all_steps, columns=["machine", "benchmark", "params", "commit", "date", "before",
                                                "after", "ratio"])
    largest = steps_df.assign(size=lambda d: d["ratio"].map(lambda r: abs(math.log(r)) if r > 0 else math.inf))
    largest = largest.sort_values("size", ascending=False).drop(columns="size").head(top)
    shown = largest.assign(commit=largest["commit"].str[:8], before=largest["before"].map("{:.4g}".format), after=largest["after"].map("{:.4g}".format),
                           ratio=largest["ratio"].map("x{:.2f}".format))
    failed = pd.DataFrame(failed_rows, columns=["machine", "env", "commit", "date"])
    head = [
        "<h1>rnnbench: benchmarks across commits</h1>",
        f'<p class="note">From asv results in <code>{html.escape(str(results_dir))}</code>. Each point is the '
        "median asv kept for that commit (bar: interquartile range of its samples); red lines are the levels "
        "asv.step_detect fits, a dashed line and xN mark a step of at least "
        f"{THRESHOLD:.0%} and its ratio (after / before). Grey: the "
        "commit did not run that point.</p>",
        "<h2>Largest steps</h2>", _table(shown),
        "<h2>Commits that could not run</h2>",
        '<p class="note">A commit whose results hold no value at all (build or import failed).</p>', _table(failed),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    page.write_text(
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="{GENERATOR}">'
        f"<title>rnnbench history</title><style>{CSS}</style></head><body>\n"
        + "\n".join(head + body) + "\n</body></html>\n")
    return {"html": page, "steps": steps_df, "failed": failed}


def history_command(results_dir, out_dir, repo=".") -> int:
    """``rnnbench history [RESULTS] --out DIR``: one line and exit status 2 on bad input."""
    try:
        out = build_history(results_dir, out_dir, repo=repo)
    except HistoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{out['html']}: {len(out['steps'])} steps, {len(out['failed'])} commits that could not run")
    return 0

"""Figures of the report: one backend -> colour mapping, file names, and the plotting boilerplate
(log axes at the measured T, labels, facet titles, suptitle, save) that the line figures share."""
from __future__ import annotations

import re
from pathlib import Path

from ..results import SHAPE_NAMES
from ..suites import SETTINGS


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
        # tab10, then tab20 (ten more distinct hues, not husl's neighbours that read as one), then husl
        palette = "tab10" if len(backends) <= 10 else "tab20" if len(backends) <= 20 else "husl"
        colours = sns.color_palette(palette, max(len(backends), 1))
        self.palette = dict(zip(backends, colours))

    def order(self, df) -> list:
        """The backends of ``df`` in the report's one order (legends list them alike)."""
        present = set(df["backend"])
        return [b for b in self.palette if b in present]

    def save(self, fig, name: str) -> Path:
        import matplotlib.pyplot as plt

        path = self.dir / f"{name}.png"
        fig.savefig(path, dpi=SETTINGS.dpi, bbox_inches="tight")
        plt.close(fig)
        return path


def groups(df, keys, label_run: bool):
    """(title, slug, frame) for each distinct value of ``keys`` (plus the run when several are shown)."""
    keys = (["run_id"] if label_run and "run_id" in df else []) + list(keys)  # a derived frame may have no run
    for values, sub in df.groupby(keys, sort=True, dropna=False):
        parts = [f"{SHAPE_NAMES.get(k, k)}={v}" if k in SHAPE_NAMES or k in ("layers", "lengths") else str(v)
                 for k, v in zip(keys, values)]
        yield " · ".join(parts), _slug(*values), sub


def log_axes(g, xs):
    """Log axes with the measured sequence lengths as plain tick labels."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax in g.axes.flat:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted(xs))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())




def finish_lines(figs: "Figures", g, xs, ylabel: str, title: str, name: str) -> Path:
    """Finish a seaborn FacetGrid of lines against T (rows mode, columns cell) and save it."""
    log_axes(g, xs)
    g.set_axis_labels("sequence length T", ylabel)
    g.set_titles("{row_name} · {col_name}")
    suptitle(g, title)
    return figs.save(g.figure, name)


def suptitle(g, title: str) -> None:
    """The figure's title, above the axes and above the legend where a long legend (a dozen backends)
    rises above the axes: a title hung from y=1.02 ran into the legend's first entries."""
    fig = g.figure
    top = 1.0
    if g.legend is not None:
        fig.canvas.draw()  # the legend's extent is known once drawn
        top = max(top, g.legend.get_window_extent().transformed(fig.transFigure.inverted()).y1)
    fig.suptitle(title, y=top + 0.01, va="bottom")

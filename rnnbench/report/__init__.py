"""Run folders (and pytest-benchmark JSON) -> report.md and a self-contained report.html.

Everything is drawn from one long-form table (``store.load``: one row per
record, joined with its run's environment) with seaborn.  Each section of the
report keeps its place when its data is absent, as one line saying why
(``sections.why_absent``: contended, unsupported, failed or not measured).  Records of
Triton under its interpreter are exactness checks, not speed: they are left
out of every speed figure and ranking.  Records that did not finish (status
other than ok) go to a table of failures and are never plotted.

Two runs (two commits, two machines) get ratio tables in which a change is
flagged only when it is both beyond the change factor (``suites.SETTINGS``) and significant under a
two-sided Mann-Whitney U test on the kept samples (as ``asv compare`` does).

Layout: ``rnnbench.results`` (inputs: runs -> one frame), ``sections`` (one function
per section), ``figures`` (the shared plotting helpers), ``render`` (md, html),
``console`` (the end-of-run summary of ``rnnbench run``), ``integrity`` (the
manifest of what a report wrote, so it removes only its own files; duplicates).
"""
from __future__ import annotations

import sys
from pathlib import Path

from .. import results, store
from ..config import check_writable_dir
from . import integrity
from .integrity import MANIFEST
from .render import render_html, render_markdown
from .figures import Figures
from .crossover import crossover_section
from .parallel import parallel_section
from .ragged import ragged_section
from .quality import depth_section, quality_section
from .sections import (comparison_section, efficiency_section, failures_section, gradient_section, header_section,
                       memory_section, regime_section, speedup_section, throughput_section, training_section)


def build_report(df, out_dir) -> dict:
    """Write report.md, report.html and figures/*.png; returns their paths and the sections."""
    out_dir = Path(out_dir)
    ours = integrity.files_we_wrote(out_dir)  # ConfigError for someone else's folder, before any write
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = Figures(out_dir, df["backend"].dropna().unique())
    label_run = df["run_id"].nunique() > 1
    comparison = comparison_section(df)
    parallel = parallel_section(df, figs, label_run)
    sections = [header_section(df), *([comparison] if comparison else []), regime_section(df), crossover_section(df, figs, label_run),
                *([parallel] if parallel else []),
                throughput_section(df, figs, label_run), memory_section(df, figs, label_run),
                speedup_section(df, figs, label_run), ragged_section(df, figs, label_run), gradient_section(df, figs, label_run),
                training_section(df, figs, label_run), quality_section(df, figs, label_run),
                depth_section(df, figs, label_run), efficiency_section(df, figs, label_run),
                integrity.duplicates_section(df), failures_section(df)]
    title = "rnnbench report"
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(render_markdown(title, sections, out_dir))
    page.write_text(render_html(title, sections))
    figures = sorted({block[1] for sec in sections for block in sec.blocks if block[0] == "figure"})
    # figures of an older report that this one did not redraw go; files it did not write stay
    integrity.replace_files(out_dir, ours, [md, page, *figures])
    return {"md": md, "html": page, "figures": figures, "sections": sections, "comparison": comparison}


def write_report(inputs, out_dir) -> Path:
    """The report of run folders (what ``rnnbench run`` calls at its end); returns report.html's path."""
    return build_report(results.load_inputs(inputs), out_dir)["html"]


def report_command(inputs, out=None) -> int:
    """``rnnbench report``: the report of ``inputs`` in ``out`` (default: the run's report/ folder)."""
    inputs = [Path(p) for p in inputs]
    if out:
        out = Path(out)
    elif len(inputs) == 1 and inputs[0].is_dir() and (inputs[0] / store.RUN_JSON).is_file():
        out = inputs[0] / "report"
    else:
        out = Path("rnnbench-report")
    integrity.files_we_wrote(out)  # refused before anything is read or written
    df = results.load_inputs(inputs)
    check_writable_dir(out)
    result = build_report(df, out)
    note = results.contention_note(df)
    if note:  # first: it says why data below is missing
        print(f"note: {note}")
    print(f"report: {result['html']}  (and {result['md'].name}, {len(result['figures'])} figures)")
    for sec in result["sections"]:
        if sec.title == "Duplicate measurements" and sec.summary:
            print(sec.summary, file=sys.stderr)
    if result["comparison"] and result["comparison"].summary:
        print(result["comparison"].summary)
    return 0

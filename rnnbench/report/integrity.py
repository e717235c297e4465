"""What a report must never do (remove a file it did not write) and must always say (duplicates).

``report --out DIR`` writes ``manifest.json`` listing every file it wrote; a later
report into DIR removes only files listed there, and refuses a non-empty DIR that
has no manifest (someone else's folder).  A run holding two measurements of one
configuration (two writers at once, before the run lock) is named in a section.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import ConfigError
from .sections import Section

MANIFEST = "manifest.json"
# what identifies one measurement within a run; ``round`` (where recorded) tells rounds apart
MEASUREMENT_KEY = ("run_id", "kind", "backend", "device", "dtype", "cell", "layers", "batch", "seq_len",
                   "input_size", "hidden", "mode", "bidirectional", "lengths", "task", "step", "round", "thread_limit")


def files_we_wrote(out_dir: Path) -> set[str]:
    """The files (relative paths) a previous report listed in ``out_dir``'s manifest.

    ConfigError where ``out_dir`` is not a folder, or is a non-empty folder without our manifest.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"report --out {out_dir}: not a folder")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return set()
    try:
        listed = json.loads((out_dir / MANIFEST).read_text())["files"]
        if not all(isinstance(f, str) for f in listed):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"report --out {out_dir}: a non-empty folder that rnnbench report did not write (no valid "
                          f"{MANIFEST}); choose a new or empty folder") from None
    return {f for f in listed if _inside(out_dir, f)}


def _inside(out_dir: Path, name: str) -> bool:
    """A manifest entry names a file under out_dir (never an absolute path or one with ``..``)."""
    p = Path(name)
    return not p.is_absolute() and ".." not in p.parts


def replace_files(out_dir: Path, before: set[str], written) -> None:
    """Remove what the last report wrote and this one did not; list this one's files in the manifest."""
    out_dir = Path(out_dir)
    now = {Path(p).relative_to(out_dir).as_posix() for p in written}
    for name in sorted(before - now):
        (out_dir / name).unlink(missing_ok=True)
    tmp = out_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"written_by": "rnnbench report", "files": sorted(now)}, indent=1) + "\n")
    tmp.replace(out_dir / MANIFEST)


def duplicates(df):
    """Rows of configurations measured more than once within one run (finished records)."""
    if df.empty:
        return df
    key = [k for k in MEASUREMENT_KEY if k in df]
    done = df[(df["status"] == "ok") & (df["kind"] != "calibration")]  # a restarted process calibrates again
    counts = done.groupby(key, dropna=False, sort=False).size().rename("records").reset_index()
    return counts[counts["records"] > 1]


def duplicates_section(df) -> Section:
    s = Section("Duplicate measurements")
    dup = duplicates(df)
    if dup.empty:
        s.text("None: each configuration has one finished measurement per run (and round).")
        return s
    s.summary = (f"warning: {len(dup)} configuration(s) measured more than once in one run (two writers at once?); "
                 "see 'Duplicate measurements' in the report")
    s.text(f"{len(dup)} configuration(s) hold more than one finished measurement in one run, which happens when "
           "two processes wrote the run at once. Figures and tables use every record.")
    cols = [c for c in ("run_id", "backend", "kind", "cell", "mode", "batch", "seq_len", "hidden", "dtype", "device",
                        "task", "step", "records") if c in dup]
    s.table(dup[cols].dropna(axis=1, how="all"))
    return s

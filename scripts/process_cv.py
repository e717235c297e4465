"""Each backend's per-process coefficient of variation (issue 27, item 6).

With ``--rounds k`` each round of a backend is one process (rnnbench.sweep.batches), so the spread of a
configuration's round medians is the spread between processes: what moves a whole process (allocation,
JIT, layout).  Per run and backend: the median over its configurations of std/mean of the round
medians (ddof=1), the largest, the configurations, and the calibration workload's own CV over the
run's processes (what the machine alone moved).

    .venv/bin/python scripts/process_cv.py RUN_DIR [RUN_DIR ...]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(paths) -> None:
    import numpy as np
    import pandas as pd

    from rnnbench import results

    df = results.load_inputs(paths)
    speed = results.speed_rows(df)
    rows = []
    for (run, backend), sub in speed.groupby(["run_id", "backend"], sort=True):
        cvs = []
        for _, config in sub.groupby(list(results.CONFIG_KEY)):
            medians = np.array(list(results.round_medians(config).values()))  # [rounds]
            if len(medians) >= 2:
                cvs.append(float(np.std(medians, ddof=1) / np.mean(medians)))
        cal = results.calibration_rows(df[df["run_id"] == run])
        cal = cal[cal["backend"] == backend]
        rows.append({"run": run, "backend": backend, "configurations": len(cvs),
                     "rounds": int(sub["round"].nunique()),
                     "CV median": float(np.median(cvs)) if cvs else None, "CV max": max(cvs, default=None),
                     **{f"calibration {name} CV": (float(np.std(cal[c], ddof=1) / np.mean(cal[c]))
                                                   if len(cal) >= 2 else None)
                        for c, name in results.CALIBRATIONS.items()}})
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main(sys.argv[1:])

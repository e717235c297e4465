"""Many runs -> tidy frames, and what report and recommend both compute from them.

One long-form table (one row per record, joined with its run's environment) from
run folders or pytest-benchmark JSON; the identity columns of a configuration;
the significance tests on per-round medians (a rank test plus a factor between runs, as ``asv
compare``; a paired signed-rank test between backends measured in the same rounds); the regime
table (fastest RNN backend per regime); the per-run training summary.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import store
from .config import ConfigError
from .suites import SETTINGS

# what identifies a configuration across runs (with run_id within one) and the columns added on load
CONFIG_KEY = ("device", "dtype", "cell", "layers", "batch", "seq_len", "input_size", "hidden", "mode", "bidirectional",
              "lengths", "thread_limit")
# what a record written before an axis existed measured: a unidirectional model on full-length batches, each
# framework at its default thread count
AXIS_DEFAULTS = {"bidirectional": False, "lengths": "full", "thread_limit": 0}
DIRECTIONS = {False: "unidirectional", True: "bidirectional"}  # how tables and figures name the model
EFFICIENCY_FIELDS = ("flops", "achieved_flops_per_s", "fraction_of_peak", "fraction_of_recurrent_roofline")
SHAPE_NAMES = {"batch": "B", "seq_len": "T", "input_size": "I", "hidden": "H"}  # short column names
ENV_FIELDS = ("machine", "commit", "dirty", "cpu_model", "gpu", "run_dir")


# -- loading ----------------------------------------------------------------------------------


def check_run_folders(paths, alternative: str = "") -> None:
    """Each path is a run folder or a folder of runs; ConfigError naming the first that is not."""
    for p in map(Path, paths):
        if not (p.is_dir() and store.find_runs([p])):
            raise ConfigError(f"{p} is not a run folder (with {store.RUN_JSON}), a folder of runs"
                              + (f", {alternative}" if alternative else ""))


def load_inputs(paths):
    """Run folders, folders of runs and pytest-benchmark JSON files -> one long-form DataFrame.

    Rows keep the order of ``paths`` (the first input is "A" in a comparison).
    """
    import pandas as pd

    frames = []
    for p in map(Path, paths):
        if p.is_file() and p.suffix == ".json":
            frames.append(load_pytest_benchmark(p))
        else:
            check_run_folders([p], "or a pytest-benchmark .json file")
            frames.append(store.load([p]))
    df = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) \
        else pd.DataFrame()
    for col in (*store.COMMON_FIELDS, *store.TIMING_FIELDS, *store.STABILITY_FIELDS, *store.TRAINING_FIELDS,
                *store.RAGGED_FIELDS, *store.REVERSE_PROFILE_FIELDS, *EFFICIENCY_FIELDS, *ENV_FIELDS):
        if col not in df:
            df[col] = None
    return with_axis_defaults(df)


def with_axis_defaults(df):
    """``df`` with AXIS_DEFAULTS where a record has no value (identity columns must not be missing:
    group-bys drop missing keys), and ``model`` naming the direction(s) for tables and figures."""
    for col, default in AXIS_DEFAULTS.items():
        df[col] = df[col].where(df[col].notna(), default).astype(type(default)) if col in df else default
    df["model"] = df["bidirectional"].map(DIRECTIONS)
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


def timed_rows(df):
    """Finished timing records of a backend whose timings mean speed: ``ranked`` is the backend's
    declared ``timed`` (impls.runner), False for Triton under its interpreter and flashrnn's reference
    loop on a CPU; records older than that field say ``impl_label`` interpreted instead."""
    df = df.assign(**{c: None for c in ("ranked", "contended") if c not in df})  # a frame of raw records
    return df[(df["kind"] == "timing") & (df["status"] == "ok") & (df["impl_label"] != "interpreted")
              & (df["ranked"] != False)]  # noqa: E712 - None: an older record


def speed_rows(df):
    """``timed_rows`` with a time, not contended (``contended_rows``: the report and recommend say how
    many they left out)."""
    df = timed_rows(df)
    return df[df["median_s"].notna() & (df["contended"] != True)]  # noqa: E712 - None is not contended


# -- significance -----------------------------------------------------------------------------


@dataclass
class Change:
    ratio: float  # median of b / median of a
    p: float | None  # the test's two-sided p; None when too few rounds to reach the p threshold
    significant: bool  # p < SETTINGS.p_threshold (and, between runs, the ratio beyond the factor either way)

    @property
    def verdict(self) -> str:
        if self.p is None:
            return "too few rounds"
        if not self.significant:
            return ""
        return f"slower x{self.ratio:.2f}" if self.ratio > 1 else f"faster x{1 / self.ratio:.2f}"


def compare_rounds(a, b, factor: float = SETTINGS.change_factor) -> Change:
    """Is b's time different from a's?  A rank test on the per-round medians (one value per round:
    the spread between processes, which the samples within one round do not show) plus a factor,
    as asv does.  With fewer than 5 rounds a side p < 0.01 is out of reach: ``p`` is None."""
    import numpy as np
    from scipy.special import comb
    from scipy.stats import mannwhitneyu

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ratio = float(np.median(b) / np.median(a))
    if 2 / comb(len(a) + len(b), min(len(a), len(b))) >= SETTINGS.p_threshold:  # the test could never pass
        return Change(ratio, None, False)
    p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return Change(ratio, p, p < SETTINGS.p_threshold and (ratio > factor or ratio < 1 / factor))


def compare_paired_rounds(a: dict, b: dict) -> Change:
    """Is b's time different from a's, measured in the same rounds?  Wilcoxon signed-rank on the
    log ratio of the round medians of the rounds both have (``{round: median}``); fewer than 8
    pairs cannot reach p < 0.01 (the smallest two-sided p is 2 / 2**n): ``p`` is None."""
    import numpy as np
    from scipy.stats import wilcoxon

    common = sorted(set(a) & set(b))
    log_ratio = np.log([b[r] / a[r] for r in common])  # [rounds]
    ratio = float(np.exp(np.median(log_ratio))) if common else float("nan")
    if 2 / 2 ** len(common) >= SETTINGS.p_threshold:
        return Change(ratio, None, False)
    p = float(wilcoxon(log_ratio, alternative="two-sided").pvalue)
    return Change(ratio, p, p < SETTINGS.p_threshold)


def round_medians(rows) -> dict:
    """{round: median time} of one configuration's records (a record without a round is round 0)."""
    rounds = rows["round"].fillna(0).astype(int) if "round" in rows else 0
    return rows.assign(round=rounds).groupby("round")["median_s"].median().to_dict()


# -- the machine's drift between two runs ------------------------------------------------------

CALIBRATIONS = {"calibration_matmul_s": "matmul", "calibration_loop_s": "Python loop"}


@dataclass
class Drift:
    """How much faster or slower the machine itself ran B than A, from the calibration workload that every
    measuring process timed (``measure.calibration_record``): a change of a configuration no larger than
    this is not told apart from the machine's."""

    factor: float  # >= 1: the largest shift of a workload the test found (1.0: the calibrations agree); a
    # comparison flags a change only beyond its change factor times this
    parts: list  # (workload, A's median s, B's median s, p or None) per workload
    processes: tuple  # calibrations used (A, B)

    def describe(self) -> str:
        parts = "; ".join(f"{name} {a * 1e3:.3g} ms in A, {b * 1e3:.3g} ms in B (x{b / a:.3f}"
                          + (f", p = {p:.2g})" if p is not None else ", too few to test: counted)")
                          for name, a, b, p in self.parts)
        if self.factor == 1.0:
            return (f"machine drift: none (the calibrations of {self.processes[0]} and {self.processes[1]} processes "
                    f"agree: {parts})")
        return (f"machine drift: x{self.factor:.3f} ({parts}, over {self.processes[0]} and {self.processes[1]} "
                f"processes); a change is flagged only beyond the change factor times it")


def machine_drift(calibration_a, calibration_b) -> Drift | None:
    """The drift between two runs from their calibration records (frames); None where either has none.

    Per workload, a two-sided Mann-Whitney U test on the processes' times: a shift at p < p_threshold is
    drift of that size (the larger of the workloads' counts); agreement is none.  Where the test cannot
    reach the threshold (too few processes), any difference of the medians is counted, so as not to call
    the machine's drift a change of the code.  Contended calibrations are left out while others remain."""
    import numpy as np
    from scipy.special import comb
    from scipy.stats import mannwhitneyu

    def usable(cal):
        if cal is None or cal.empty:
            return None
        quiet = cal[cal["contended"] != True] if "contended" in cal else cal  # noqa: E712 - None is quiet
        return quiet if len(quiet) else cal

    a, b = usable(calibration_a), usable(calibration_b)
    if a is None or b is None:
        return None
    factor, parts = 1.0, []
    for column, name in CALIBRATIONS.items():
        ta, tb = a[column].dropna().astype(float).to_numpy(), b[column].dropna().astype(float).to_numpy()
        if not (len(ta) and len(tb)):
            continue
        shift = abs(float(np.log(np.median(tb) / np.median(ta))))
        testable = 2 / comb(len(ta) + len(tb), min(len(ta), len(tb))) < SETTINGS.p_threshold
        p = float(mannwhitneyu(ta, tb, alternative="two-sided").pvalue) if testable else None
        if p is None or p < SETTINGS.p_threshold:
            factor = max(factor, float(np.exp(shift)))
        parts.append((name, float(np.median(ta)), float(np.median(tb)), p))
    return Drift(factor, parts, (len(a), len(b))) if parts else None


def calibration_rows(df):
    """The calibration records of a frame (``kind`` calibration, finished)."""
    if "kind" not in df:
        return df.iloc[:0]
    return df[(df["kind"] == "calibration") & (df["status"] == "ok")]


def contention_note(df) -> str | None:
    """One line, for the top of a report or a console, when contention removed timing records: how many,
    in which runs, and what to do; None when none was removed."""
    removed = contended_rows(df)
    if removed.empty:
        return None
    timing = df[(df["kind"] == "timing") & (df["status"] == "ok")]
    per_run = removed.groupby("run_id", sort=False).size() if "run_id" in removed else {}
    runs = ", ".join(f"{run} ({n} of {int((timing['run_id'] == run).sum())})" for run, n in per_run.items()) \
        if len(per_run) else f"{len(removed)} of {len(timing)}"
    return (f"contention removed {len(removed)} of {len(timing)} timing records (others used more than "
            f"{SETTINGS.contention_threshold:g} of a core while they were timed, after {SETTINGS.contention_retries} "
            f"re-measures) from figures, comparisons and rankings: run {runs}; measure again on a quieter machine, "
            "or with --threads 1")


def contended_rows(df):
    """Finished timing records measured while others used more than the threshold of the CPU."""
    if "contended" not in df:
        return df.iloc[:0]
    return df[(df["kind"] == "timing") & (df["status"] == "ok") & (df["contended"] == True)]  # noqa: E712 - None too


def samples_of(row) -> list:
    """Every kept sample of a timing row (its median alone when samples were not recorded)."""
    s = row["samples_s"]
    return list(s) if isinstance(s, (list, tuple)) and len(s) else [row["median_s"]]


# -- regimes and training --------------------------------------------------------------------


# The one definition of every ratio of times the report and the end-of-run summary print.
RATIO_RULE = ("each configuration's time is the median of its records over rounds; a ratio of two backends is "
              "taken at each configuration both ran, and over several configurations it is the geometric mean "
              "of those ratios")


def config_times(speed):
    """[configuration, backend] -> seconds: each configuration's time, the median of its records over
    rounds (``RATIO_RULE``); NaN where a backend did not run it."""
    return with_axis_defaults(speed).pivot_table(index=["run_id", *CONFIG_KEY], columns="backend",
                                                 values="median_s", aggfunc="median")


def geometric_mean(ratios) -> float:
    import numpy as np

    return float(np.exp(np.log(np.asarray(ratios, dtype=float)).mean()))


def fmt_ratio(value: float) -> str:
    """``1.02x``, ``120x``, ``1332x``: three significant digits, never an exponent."""
    return f"{value:.3g}x" if value < 1000 else f"{value:.0f}x"


def regime_table(df):
    """(table, None), or (None, why not): per run, device, dtype, cell, mode and short/long T, the
    fastest RNN backend (of those fastest in at least one configuration, the lowest geometric mean
    of time over the fastest), its wins, the runner-up and the margin (``RATIO_RULE``)."""
    import numpy as np
    import pandas as pd

    rnn = speed_rows(df)
    rnn = with_axis_defaults(rnn[rnn["backend_kind"] == "rnn"].copy())
    if rnn["backend"].nunique() < 2:
        return None, "the fastest backend needs timings of at least two RNN backends"
    rnn["T range"] = np.where(rnn["seq_len"] <= SETTINGS.short_t_max, f"short (T<={SETTINGS.short_t_max})",
                              f"long (T>{SETTINGS.short_t_max})")
    rows = []
    regime_keys = ["run_id", "device", "dtype", "cell", "mode", "T range", "model", "lengths"]
    for regime, sub in rnn.groupby(regime_keys, sort=True):
        times = config_times(sub)
        times = times[times.notna().sum(axis=1) >= 2]  # [configuration, backend]: where backends can be compared
        if times.empty:
            continue
        # each backend's time over the configuration's fastest, geometric mean over where it ran
        score = np.exp(np.log(times.div(times.min(axis=1), axis=0)).mean()).sort_values()
        wins = times.idxmin(axis=1).value_counts()
        best = next(b for b in score.index if wins.get(b, 0) > 0)  # a backend that won nothing is no winner
        runner_up = next(b for b in score.index if b != best)
        both = times[[best, runner_up]].dropna()
        rows.append({**dict(zip(["run", *regime_keys[1:]], regime)),
                     "fastest": best, "fastest in": f"{int(wins[best])} of {len(times)}", "runner-up": runner_up,
                     "margin": fmt_ratio(geometric_mean(both[runner_up] / both[best]))})
    if not rows:
        return None, "no configuration was timed with two or more RNN backends"
    return pd.DataFrame(rows), None


FAILURE_KEYS = ("run_id", "backend", "kind", "cell", "mode", "dtype", "device", "status", "message")


def failure_reasons(records):
    """Records that did not finish, one row per reason (a backend that cannot run a cell fails alike at
    every shape and round): the FAILURE_KEYS, ``records`` (how many) and ``B``, ``T``, ``H`` (the
    distinct sizes it covers, "16/64")."""
    import pandas as pd

    bad = pd.DataFrame(records)
    keys = [k for k in FAILURE_KEYS if k in bad]
    bad = bad.assign(message=bad["message"].fillna("").astype(str)) if "message" in bad else bad

    def sizes(column):
        values = pd.to_numeric(column, errors="coerce").dropna()
        return "/".join(str(int(v)) for v in sorted(set(values)))

    return bad.groupby(keys, dropna=False, sort=False).agg(
        records=("status", "size"), B=("batch", sizes), T=("seq_len", sizes), H=("hidden", sizes)).reset_index()


def training_summary(records):
    """One row per run: task, setting, backend, steps, final metric, baseline, seconds, verdict, and the
    steps to the task's target where the run has a time-to-quality verdict."""
    import pandas as pd

    rows = []
    frame = pd.DataFrame([r for r in records if r.get("kind") == "training"])
    if frame.empty:
        return frame
    for _, run in frame.groupby(["task", "backend", "cell", "seq_len", "hidden", "seed"], sort=False, dropna=False):
        last = run.iloc[-1]
        evaluated = run[run["metric"].notna()] if "metric" in run else run.iloc[:0]
        final = evaluated.iloc[-1] if len(evaluated) else last
        rows.append({
            "task": last["task"], "setting": f"T={last['seq_len']} H={last['hidden']} B={last['batch']}",
            "backend": last["backend"], "steps": last.get("step"), "metric": last.get("metric_name"),
            "final": final.get("metric"), "baseline": last.get("baseline_metric"),
            "beats": final.get("beats_baseline"), "seconds": run["step_s"].sum() if "step_s" in run else None,
            # time to quality, where the run has a verdict: the step the target was met, or not reached
            "to target": (None if pd.isna(last.get("target_reached")) else last["steps_to_target"]
                          if last["target_reached"] else "not reached"),
            "status": last["status"],
        })
    return pd.DataFrame(rows)


# -- queries on recorded runs (recommend --measure asks them before it measures) ---------------------


def recorded_rows(results, backend: str, query: dict):
    """Finished timing records of this backend, cell, mode and dtype on this device type under ``results``."""
    paths = [p for p in results if Path(p).is_dir()]
    try:
        df = load_inputs(paths) if paths else None
    except ConfigError:
        df = None
    if df is None or df.empty:
        return None
    return df[(df["kind"] == "timing") & (df["status"] == "ok") & (df["backend"] == backend)
              & (df["cell"] == query["cell"]) & (df["mode"] == query["mode"]) & (df["dtype"] == query["dtype"])
              & (df["device"].astype(str).str.split(":").str[0] == query["device"].split(":")[0])]


def recorded_cost_s(rows, query: dict) -> tuple[float | None, str]:
    """(seconds, why) this candidate needs at least, as recorded: its largest compile_s, plus 10 calls
    (2 warm-ups, 8 rounds) at the median recorded at exactly this shape; (None, "") when nothing is."""
    if rows is None or rows.empty:
        return None, ""
    compile_values = rows["compile_s"].dropna()
    compile_s = float(compile_values.max()) if len(compile_values) else 0.0
    exact = rows[(rows["batch"] == query["batch"]) & (rows["seq_len"] == query["seq_len"])
                 & (rows["hidden"] == query["hidden"]) & (rows["input_size"] == query["input_size"])
                 & (rows["layers"] == query["layers"])]["median_s"].dropna()
    if not len(exact):
        return compile_s, f"its compile and warm-up took {compile_s:.3g} s"
    call_s = float(exact.median())
    return compile_s + 10 * call_s, (f"its compile and warm-up took {compile_s:.3g} s and one call "
                                     f"{call_s:.3g} s (10 calls are the fewest measured)")


def recorded_peak(rows, query: dict) -> tuple[int | None, str]:
    """(peak_bytes, how) recorded at exactly the query's shape, the latest run's."""
    if rows is None:
        return None, "not measured"
    exact = rows[(rows["batch"] == query["batch"]) & (rows["seq_len"] == query["seq_len"])
                 & (rows["hidden"] == query["hidden"]) & (rows["input_size"] == query["input_size"])
                 & (rows["layers"] == query["layers"]) & rows["peak_bytes"].notna()]
    if exact.empty:
        return None, "not measured"
    row = exact.sort_values("run_id").iloc[-1]
    return int(row["peak_bytes"]), f"{row['peak_method']}, recorded in run {row['run_id']}"

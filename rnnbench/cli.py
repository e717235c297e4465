"""rnnbench list | run | train | report | recommend.

Bad input gets one line naming the valid choices and exit status 2, before any
result folder is made.
"""
from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys

from .config import Config, ConfigError, MODES

EXIT_BAD_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(f"{self.prog}: {message}")


def _names(kind: str | None = None):
    import impls

    return impls.names(kind)


def comma_list(convert=str):
    def parse(text: str):
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        return [convert(s) for s in items]
    return parse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive (sizes must be >= 1)")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .sweep import suite_names

    p = OneLineParser(prog="rnnbench", description="Benchmark recurrent networks across backends.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    sub.add_parser("list", help="every backend and baseline, and whether it runs here")

    r = sub.add_parser("run", help="a sweep of configurations -> a run folder of records")
    r.add_argument("--backends", type=comma_list())
    r.add_argument("--cells", type=comma_list())
    r.add_argument("--batch", type=comma_list(positive_int))
    r.add_argument("--seq-len", type=comma_list(positive_int))
    r.add_argument("--input-size", type=comma_list(positive_int))
    r.add_argument("--hidden", type=comma_list(positive_int))
    r.add_argument("--layers", type=comma_list(positive_int))
    r.add_argument("--dtype", type=comma_list())
    r.add_argument("--mode", type=comma_list())
    r.add_argument("--device", type=comma_list())
    r.add_argument("--config", help="JSON or TOML file with the same axes as the flags")
    r.add_argument("--suite", default=None, help=f"one of {', '.join(suite_names())} (default quick)")
    r.add_argument("--executor", choices=["inline", "process", "ray"], default=None,
                   help="default inline; --resume keeps the run's own")
    r.add_argument("--isolate", action="store_true", help="same as --executor process")
    r.add_argument("--ray-address", default=None)
    r.add_argument("--machine", default=None, help="folder name for this machine (default: host name)")
    r.add_argument("--out", default="results/runs", help="results root (default results/runs)")
    r.add_argument("--resume", default=None, metavar="RUN_DIR")
    r.add_argument("--no-report", action="store_true", help="do not write the report after the run")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    t = sub.add_parser("train", help="a short training run of one backend on one task")
    t.add_argument("--task", required=True)
    t.add_argument("--backend", required=True)
    t.add_argument("--cell", default="lstm")
    t.add_argument("--hidden", type=positive_int, default=None)
    t.add_argument("--seq-len", type=positive_int, default=None)
    t.add_argument("--steps", type=positive_int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--machine", default=None)
    t.add_argument("--out", default="results/runs")

    rep = sub.add_parser("report", help="tables and figures from run folders or pytest-benchmark JSON")
    rep.add_argument("inputs", nargs="+", metavar="RUN_DIR_OR_JSON")
    rep.add_argument("--out", default=None)

    rec = sub.add_parser("recommend", help="the backend to use, from recorded results")
    rec.add_argument("--cell", required=True)
    rec.add_argument("--batch", type=positive_int, required=True)
    rec.add_argument("--seq-len", type=positive_int, required=True)
    rec.add_argument("--input-size", type=positive_int, default=None)
    rec.add_argument("--hidden", type=positive_int, default=None)
    rec.add_argument("--layers", type=positive_int, default=1)
    rec.add_argument("--dtype", default="float32")
    rec.add_argument("--mode", required=True)
    rec.add_argument("--device", required=True)
    rec.add_argument("--results", nargs="+", default=["results"])
    return p


# -- list ------------------------------------------------------------------------------------


def cmd_list(args) -> int:
    import impls

    rows = []
    for name in impls.names():
        for device in ("cpu", "cuda"):
            ok, reason = impls.available(name, device)
            rows.append((name, impls.kind_of(name), device, "yes" if ok else "no", reason))
    width = max(len(r[0]) for r in rows)
    print(f"{'backend':<{width}}  kind      device  available  reason")
    for name, kind, device, ok, reason in rows:
        print(f"{name:<{width}}  {kind:<8}  {device:<6}  {ok:<9}  {reason}")
    return 0


# -- run -------------------------------------------------------------------------------------


def _check_choices(label, values, valid):
    for v in values or []:
        if v not in valid:
            raise ConfigError(f"unknown {label} {v!r}; valid: {', '.join(valid)}")


def _check_devices(devices):
    from impls import runtime
    from impls.spec import SpecError, check_device

    for d in devices or []:
        try:
            check_device(d)
        except SpecError as exc:
            raise ConfigError(str(exc)) from None
        ok, reason = runtime.device_present(d)
        if not ok:
            raise ConfigError(f"device {d} is not available here ({reason}); valid here: cpu")


def _environment(devices) -> dict:
    import platform

    from impls import runtime

    return {
        "command": " ".join(shlex.quote(a) for a in ["rnnbench", *sys.argv[1:]]),
        "hostname": platform.node(),
        "cpu_model": runtime.cpu_model(),
        "cpu_count": __import__("os").cpu_count(),
        "gpu": next((runtime.gpu_info(d) for d in devices if d.startswith("cuda")), {}),
        "versions": runtime.versions(),
    }


def plan_jobs(args) -> tuple[list, list[str]]:
    """Validated jobs of ``rnnbench run`` and the devices they use; raises ConfigError."""
    from impls.spec import CELLS, DTYPES

    from .sweep import build_configs, load_config_file, suite_names

    axes = load_config_file(args.config) if args.config else {}
    suite = args.suite or axes.pop("suite", None) or "quick"
    axes.pop("suite", None)
    for key in ("backends", "cells", "batch", "seq_len", "input_size", "hidden", "layers", "dtype", "mode", "device"):
        if getattr(args, key) is not None:
            axes[key] = getattr(args, key)
    if suite not in suite_names():
        raise ConfigError(f"unknown suite {suite!r}; valid: {', '.join(suite_names())}")
    _check_choices("backend", axes.get("backends"), _names())
    _check_choices("cell", axes.get("cells"), CELLS)
    _check_choices("dtype", axes.get("dtype"), DTYPES)
    _check_choices("mode", axes.get("mode"), MODES)
    devices = axes.get("device") or (["cuda"] if suite == "kernels" else ["cpu"])
    _check_devices(devices)
    if suite == "tasks":
        from .train import suite_jobs

        return suite_jobs(axes), devices
    return build_configs(suite, axes), devices


def cmd_run(args) -> int:
    from .store import Run
    from .sweep import job_from_dict, job_to_dict, run_sweep

    executor = "process" if args.isolate else args.executor
    resumed = None
    if args.resume:
        try:
            resumed = Run.resume(args.resume)
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from None
        executor = executor or resumed.info.get("executor", "inline")  # a Ray run resumes on Ray
    executor = executor or "inline"
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.9')")
    if executor == "ray" and args.ray_address:  # a dead address fails here, before a run folder exists
        from .ray_executor import check_listening

        check_listening(args.ray_address)
    if resumed is not None:
        run = resumed
        jobs = [job_from_dict(d) for d in run.info["jobs"]]
    else:
        jobs, devices = plan_jobs(args)
        info = _environment(devices)
        info["executor"] = executor
        info["jobs"] = [job_to_dict(j) for j in jobs]
        run = Run.create(args.out, args.machine, info)
    print(f"run folder: {run.path}  ({len(jobs)} configurations, executor {executor})", file=sys.stderr)
    timing_jobs = [j for j in jobs if isinstance(j, Config)]
    if timing_jobs and "ceilings" not in run.info:  # once per run: what fraction_of_peak is measured against
        from .cost import measure_ceilings

        run.update_info(ceilings=measure_ceilings(timing_jobs))
    run_sweep(run, jobs, executor, args.ray_address, progress=not args.quiet)
    print_table(run.records())
    print(f"\nrecords: {run.path / 'records.jsonl'}")
    if not args.no_report and importlib.util.find_spec("rnnbench.report") is not None:
        from .report import write_report

        out = write_report([run.path], run.path / "report")
        print(f"report: {out}")
    return 0


def print_table(records) -> None:
    import pandas as pd

    timing = [r for r in records if r.get("kind") == "timing"]
    training = [r for r in records if r.get("kind") == "training"]
    if training:
        from .train import print_summary

        print_summary(training)
    if not timing:
        if not training:
            print("no timing records")
        return
    df = pd.DataFrame(timing)
    for col in ("median_s", "iqr_s", "tokens_per_s", "peak_bytes", "impl_label", "achieved_flops_per_s",
                "fraction_of_peak", "fraction_of_step_bound"):
        if col not in df:
            df[col] = None
    df["median_ms"] = df["median_s"] * 1e3
    df["iqr_ms"] = df["iqr_s"] * 1e3
    df["peak_MB"] = df["peak_bytes"] / 1e6
    df["GFLOP_s"] = df["achieved_flops_per_s"].astype(float) / 1e9
    df = df.rename(columns={"impl_label": "impl", "seq_len": "T", "batch": "B", "hidden": "H", "input_size": "I",
                            "fraction_of_peak": "of_peak", "fraction_of_step_bound": "of_step_bound"})
    cols = ["backend", "impl", "cell", "mode", "dtype", "B", "T", "I", "H", "median_ms", "iqr_ms", "tokens_per_s",
            "peak_MB", "GFLOP_s", "of_peak", "of_step_bound", "status"]
    df = df[cols].sort_values(["cell", "mode", "T", "median_ms"])
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_columns", 20):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
    bad = df[df["status"] != "ok"]
    if len(bad):
        print(f"\n{len(bad)} configuration(s) not ok:")
        for r in [t for t in timing if t.get("status") != "ok"]:
            print(f"  {r['backend']} {r['cell']} {r.get('mode')} T={r['seq_len']}: {r['status']}: {r.get('message', '')[:200]}")


def cmd_train(args) -> int:
    from .train import main as train_main

    return train_main(args)


def cmd_report(args) -> int:
    from .report import main as report_main

    return report_main(args)


def cmd_recommend(args) -> int:
    from .recommend import main as recommend_main

    return recommend_main(args)


COMMANDS = {"list": cmd_list, "run": cmd_run, "train": cmd_train, "report": cmd_report, "recommend": cmd_recommend}


def main(argv=None) -> int:
    from impls.runtime import prepare_process

    prepare_process()
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; rnnbench run --resume RUN_DIR completes a run", file=sys.stderr)
        return 130

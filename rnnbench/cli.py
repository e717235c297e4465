"""rnnbench list | run | train | report | recommend: argparse, validation, dispatch.

Bad input gets one line naming the valid choices and exit status 2, before any
result folder is made.  The work itself is done by the domain modules, called
with plain arguments; a new command is a parser function and one ``COMMANDS`` entry.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys

from .config import MODES, ConfigError, check_devices

EXIT_BAD_INPUT = 2
EXECUTORS = ("inline", "process", "ray")


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(f"{self.prog}: {message}")


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


def _choices() -> dict:
    """The valid names each option takes (read from the registries, so the help never goes stale)."""
    import impls
    from impls.spec import CELLS, DTYPES

    from . import suites, tasks

    return {"backends": impls.names(), "cells": list(CELLS), "dtypes": list(DTYPES), "modes": list(MODES),
            "tasks": tasks.names(), "suites": suites.suite_names(), "executors": list(EXECUTORS),
            "suite_help": "; ".join(f"{s.name}: {s.description}" for s in suites.SUITES.values())}


def _one_of(names) -> str:
    return "one of: " + ", ".join(names)


def _run_parser(sub, c) -> None:
    r = sub.add_parser("run", help="a sweep of configurations -> a run folder of records",
                       description="Measure a suite (a named preset) or a grid of your own; every axis flag "
                                   "takes a comma list and replaces that axis of the suite.")
    r.add_argument("--backends", type=comma_list(), help=f"backends to measure (default: every one available "
                   f"on the device); {_one_of(c['backends'])}")
    r.add_argument("--cells", type=comma_list(), help=f"recurrent cells (default: the suite's); {_one_of(c['cells'])}")
    for flag, what in (("--batch", "batch sizes B"), ("--seq-len", "sequence lengths T"),
                       ("--input-size", "input widths I (where the suite has none: H)"),
                       ("--hidden", "hidden sizes H"), ("--layers", "stacked layers")):
        r.add_argument(flag, type=comma_list(positive_int), help=f"{what}; positive integers (default: the suite's)")
    r.add_argument("--dtype", type=comma_list(), help=f"dtypes (default: the suite's); {_one_of(c['dtypes'])}")
    r.add_argument("--mode", type=comma_list(), help=f"what is timed (default: the suite's); forward: no graph; "
                   f"train: forward and backward; step: one timestep; {_one_of(c['modes'])}")
    r.add_argument("--device", type=comma_list(), help="devices: cpu, cuda or cuda:N (default: the suite's; "
                   "kernels: cuda, else cpu)")
    r.add_argument("--config", help="JSON or TOML file with the same axes as the flags (and 'suite'); flags win")
    r.add_argument("--suite", default=None, help=f"named preset (default quick); {_one_of(c['suites'])}. "
                   f"{c['suite_help']}")
    r.add_argument("--executor", choices=c["executors"], default=None, metavar="EXECUTOR",
                   help=f"where each configuration runs: inline (this process; memory probes in a fresh child), "
                        f"process (a fresh process each: a crash or hang becomes a record), ray (Ray tasks); "
                        f"{_one_of(c['executors'])} (default inline; --resume keeps the run's own)")
    r.add_argument("--isolate", action="store_true", help="same as --executor process")
    r.add_argument("--ray-address", default=None, help="address of a running Ray cluster (default: start one here)")
    r.add_argument("--machine", default=None, help="folder name for this machine (default: host name)")
    r.add_argument("--out", default="results/runs", help="results root; the run goes to ROOT/MACHINE/RUN_ID "
                   "(default results/runs)")
    r.add_argument("--resume", default=None, metavar="RUN_DIR", help="complete this run: measure only the jobs "
                   "it has no record of")
    r.add_argument("--table", choices=("summary", "full"), default="summary", help="what is printed at the end: "
                   "summary (per regime the fastest backend; default) or full (every timing row)")
    r.add_argument("--no-report", action="store_true", help="do not write the report after the run")
    r.add_argument("--quiet", action="store_true", help="no progress bar")


def _train_parser(sub, c) -> None:
    t = sub.add_parser("train", help="a short training run of one backend on one task",
                       description="Train one backend on one task from the shared seeded weights and batches.")
    t.add_argument("--task", required=True, help=f"the task; {_one_of(c['tasks'])}")
    t.add_argument("--backend", required=True, help=f"the backend; {_one_of(c['backends'])}")
    t.add_argument("--cell", default="lstm", help=f"recurrent cell (default lstm); {_one_of(c['cells'])}")
    t.add_argument("--hidden", type=positive_int, default=None, help="hidden size (default: the task's)")
    t.add_argument("--seq-len", type=positive_int, default=None, help="sequence length (default: the task's)")
    t.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (default: the task's)")
    t.add_argument("--seed", type=int, default=0, help="seed of weights and batches (default 0)")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    t.add_argument("--machine", default=None, help="folder name for this machine (default: host name)")
    t.add_argument("--out", default="results/runs", help="results root (default results/runs)")


def _report_parser(sub, c) -> None:
    rep = sub.add_parser("report", help="tables and figures from run folders or pytest-benchmark JSON",
                         description="report.md and report.html from one or more runs; two runs are compared.")
    rep.add_argument("inputs", nargs="+", metavar="RUN_DIR_OR_JSON", help="run folders, folders of runs, or "
                     "pytest-benchmark .json files")
    rep.add_argument("--out", default=None, help="output folder (default: RUN_DIR/report for one run, "
                     "else ./rnnbench-report)")


def _recommend_parser(sub, c) -> None:
    rec = sub.add_parser("recommend", help="the backend to use, from recorded results",
                         description="The fastest RNN backend near your shape, from recorded timings, or "
                                     "'not enough data' with the reason.")
    rec.add_argument("--cell", required=True, help=f"recurrent cell; {_one_of(c['cells'])}")
    rec.add_argument("--batch", type=positive_int, required=True, help="batch size B")
    rec.add_argument("--seq-len", type=positive_int, required=True, help="sequence length T")
    rec.add_argument("--input-size", type=positive_int, default=None, help="input width I (default: any)")
    rec.add_argument("--hidden", type=positive_int, default=None, help="hidden size H (default: any)")
    rec.add_argument("--layers", type=positive_int, default=1, help="stacked layers (default 1)")
    rec.add_argument("--dtype", default="float32", help=f"dtype (default float32); {_one_of(c['dtypes'])}")
    rec.add_argument("--mode", required=True, help=f"what you run; {_one_of(c['modes'])}")
    rec.add_argument("--device", required=True, help="cpu or cuda (cuda:N)")
    rec.add_argument("--results", nargs="+", default=["results"], help="folders of recorded runs (default results)")


PARSERS = [_run_parser, _train_parser, _report_parser, _recommend_parser]


def build_parser() -> argparse.ArgumentParser:
    c = _choices()
    p = OneLineParser(prog="rnnbench", description="Benchmark recurrent networks across backends.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    sub.add_parser("list", help="every backend and baseline, and whether it runs here")
    for add in PARSERS:
        add(sub, c)
    return p


# -- validation ------------------------------------------------------------------------------


def _executor(args, resumed_executor: str | None) -> str:
    executor = ("process" if args.isolate else args.executor) or resumed_executor or "inline"
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.9')")
    if executor == "ray" and args.ray_address:  # a dead address fails here, before a run folder exists
        from .ray_executor import check_listening

        check_listening(args.ray_address)
    return executor


# -- commands ---------------------------------------------------------------------------------


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


def cmd_run(args) -> int:
    from . import sweep
    from .report.console import print_end_of_run
    from .suites import SWEEP_AXES

    if args.resume:
        run, jobs, resumed_executor = sweep.resume_run(args.resume)
        executor = _executor(args, resumed_executor)  # a Ray run resumes on Ray
    else:
        executor = _executor(args, None)
        axes = {k: getattr(args, k) for k in SWEEP_AXES}
        jobs, devices = sweep.plan(args.suite, axes, args.config)  # validated, devices present
        run = sweep.create_run(jobs, devices, executor, args.out, args.machine)
    print(f"run folder: {run.path}  ({len(jobs)} configurations, executor {executor})", file=sys.stderr)
    sweep.run_sweep(run, jobs, executor, args.ray_address, progress=not args.quiet)
    print_end_of_run(run.records(), args.table)
    print(f"\nrecords: {run.path / 'records.jsonl'}")
    if not args.no_report:
        from .report import write_report

        print(f"report: {write_report([run.path], run.path / 'report')}")
    return 0


def cmd_train(args) -> int:
    from . import sweep
    from .jobs import TrainJob
    from .report.console import print_training

    job = TrainJob(args.task, args.backend, args.cell, hidden=args.hidden, seq_len=args.seq_len,
                   steps=args.steps, seed=args.seed, device=args.device)
    job.validate()
    check_devices([job.device])
    run = sweep.create_run([job], [job.device], "inline", args.out, args.machine)
    print(f"run folder: {run.path}", file=sys.stderr)
    records = [run.append(rec) for rec in job.run(fresh_process=False)]
    print_training(records)
    print(f"\nrecords: {run.path / 'records.jsonl'}")
    return 0 if all(r.get("status") == "ok" for r in records) else 1


def cmd_report(args) -> int:
    from .report import report_command

    return report_command(args.inputs, args.out)


def cmd_recommend(args) -> int:
    from .recommend import recommend

    print(recommend(args.cell, args.batch, args.seq_len, args.mode, args.device, input_size=args.input_size,
                    hidden=args.hidden, layers=args.layers, dtype=args.dtype, results=args.results))
    return 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "train": cmd_train, "report": cmd_report, "recommend": cmd_recommend}


def _history_parser(sub, c) -> None:
    h = sub.add_parser("history", help="asv results across commits -> one offline HTML page",
                       description="Each benchmark against commit, with asv's step detection (rnnbench.history).")
    h.add_argument("results", nargs="?", default="results/asv", help="asv's results_dir (default results/asv)")
    h.add_argument("--out", required=True, help="output folder for index.html")


def cmd_history(args) -> int:
    from .history import history_command

    return history_command(args.results, args.out)


PARSERS.append(_history_parser)
COMMANDS["history"] = cmd_history


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

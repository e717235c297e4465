"""rnnbench list | run | train | report | recommend: argparse, validation, dispatch.

Bad input gets one line naming the valid choices and exit status 2, before any
result folder is made.  The work itself is done by the domain modules, called
with plain arguments; a new command is a parser function and one ``COMMANDS`` entry.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import sys

from . import ragged
from .config import (METRICS, MODES, ConfigError, bounds, check_devices, check_fits, check_machine_name,
                     check_path_length, check_writable_dir, parse_bool)

EXIT_BAD_INPUT = 2
EXIT_FAULT = 1
EXIT_NO_ANSWER_UNDER_LOAD = 3  # recommend --measure: too few quiet rounds to decide (the first line says why)
DEFAULT_OUT = "results/runs"
EXECUTORS = ("inline", "process", "ray")


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(f"{self.prog}: {message}")


def comma_list(convert=str):
    """Comma-separated items, each converted; an empty item is refused by its position."""
    def parse(text: str):
        items = [s.strip() for s in text.split(",")]
        empty = [i for i, s in enumerate(items, 1) if not s]
        if empty:
            raise argparse.ArgumentTypeError(f"item {empty[0]} of {text!r} is empty; expected a comma-separated "
                                             "list with no empty items")
        return [convert(s) for s in items]
    parse.item = convert  # what each item is (tests/test_bad_input.py feeds each kind hostile values)
    return parse


def boolean(text: str) -> bool:
    try:
        return parse_bool(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() also takes '１２' and '1_0'
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")  # no nan, inf


def bounded(field: str, convert=int):
    """A number within ``config.bounds(field)``, written in ASCII digits; the one converter of every
    numeric option, so no option is left unbounded."""
    low, high = bounds(field)
    kind = "an integer" if convert is int else "a number"

    def parse(text: str):
        if not (INTEGER if convert is int else NUMBER).fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}: {kind} in [{low}, {high}]")
        value = convert(text)
        if not low <= value <= high:
            what = "not positive" if value < low == 1 else "out of range"
            raise argparse.ArgumentTypeError(f"{text.strip()} is {what}: {kind} in [{low}, {high}]")
        return value
    parse.bounds, parse.integer = (low, high), convert is int  # read by tests/test_bad_input.py
    return parse


def _choices() -> dict:
    """The valid names each option takes (read from the registries, so the help never goes stale)."""
    import impls
    from impls.spec import CELLS, DTYPES

    from . import suites, tasks

    return {"backends": impls.names(), "rnn_backends": impls.names(kind="rnn"), "cells": list(CELLS),
            "dtypes": list(DTYPES), "modes": list(MODES),
            "tasks": tasks.names(), "suites": suites.suite_names(), "executors": list(EXECUTORS),
            "suite_help": "; ".join(f"{s.name}: {s.description}" for s in suites.SUITES.values())}


def _one_of(names) -> str:
    return "one of: " + ", ".join(names)


def _range(field: str) -> str:
    return "[{}, {}]".format(*bounds(field))


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
        field = flag[2:].replace("-", "_")
        r.add_argument(flag, type=comma_list(bounded(field)), help=f"{what}; integers in {_range(field)} "
                       "(default: the suite's)")
    r.add_argument("--dtype", type=comma_list(), help=f"dtypes (default: the suite's); {_one_of(c['dtypes'])}")
    r.add_argument("--mode", type=comma_list(), help=f"what is timed (default: the suite's); forward: no graph; "
                   f"train: forward and backward; step: one timestep from an empty state; decode: one step after a "
                   f"context of T tokens (an RNN's h, c; a transformer's KV cache); {_one_of(c['modes'])}")
    r.add_argument("--device", type=comma_list(), help="devices: cpu, cuda or cuda:N (default: the suite's; "
                   "kernels: cuda, else cpu)")
    r.add_argument("--bidirectional", type=comma_list(boolean), help="models: false (unidirectional), true "
                   "(bidirectional), or false,true (default: the suite's, else false)")
    r.add_argument("--lengths", type=comma_list(), help=f"length distributions of the batch's rows (default: the "
                   f"suite's, else full); {_one_of(ragged.FORMS)} (full: every row T steps; uniform:MIN: uniform in "
                   "[MIN, T]; zipf:A: Zipf exponent A > 1, clipped to [1, T]); drawn from the configuration's seed, "
                   "the same for every backend")
    r.add_argument("--threads", type=comma_list(bounded("threads")), help="intra-op threads of every framework (torch, "
                   "XLA, ONNX Runtime, NumPy's BLAS), a sweep axis: e.g. 1,2; each value runs in processes of its own, "
                   "since XLA fixes its thread count when it starts (XLA takes 1 or every core). Default: each "
                   "framework's own (every core); on a machine others use, --threads 1")
    r.add_argument("--config", metavar="FILE", help="JSON or TOML file with the same axes as the flags (and "
                   "'suite'); flags win")
    r.add_argument("--suite", default=None, help=f"named preset (default quick); {_one_of(c['suites'])}. "
                   f"{c['suite_help']}")
    r.add_argument("--executor", choices=c["executors"], default=None, metavar="EXECUTOR",
                   help=f"where each configuration runs: inline (this process; memory probes in a fresh child; "
                        f"with --rounds above 1 or --threads, each round of each backend in one fresh process), "
                        f"process (a fresh process each: a crash or hang becomes a record), ray (Ray tasks); "
                        f"{_one_of(c['executors'])} (default inline; --resume keeps the run's own)")
    r.add_argument("--isolate", action="store_true", help="same as --executor process")
    r.add_argument("--metric", choices=METRICS, default=None, metavar="METRIC", help=f"what is measured: time "
                   f"(wall time, the primary figure) or instructions (instructions per call under valgrind's "
                   f"callgrind, every configuration in one single-threaded process: deterministic, for CI; CPU only; "
                   f"needs the valgrind package; see docs/instructions.md); {_one_of(METRICS)} (default time)")
    r.add_argument("--ray-address", default=None, help="with --executor ray: a running Ray cluster, HOST:PORT, "
                   "ray://HOST:PORT or auto (default: start one here)")
    r.add_argument("--machine", default=None, metavar="NAME", help="folder name for this machine: letters, "
                   "digits, '_', '.', '-' (default: host name)")
    r.add_argument("--out", default=None, metavar="DIR", help=f"results root, a writable folder; the run goes to "
                   f"ROOT/MACHINE/RUN_ID (default {DEFAULT_OUT})")
    r.add_argument("--rounds", type=bounded("rounds"), default=None, help=f"times the grid is visited, each visit "
                   f"shuffled, in {_range('rounds')}, each round of each backend in a fresh process of its own when "
                   "above 1 (default: the suite's); comparisons need 5 (two runs) or 8 (two backends)")
    r.add_argument("--resume", default=None, metavar="RUN_DIR", help="complete this run as planned: measure only "
                   "the jobs it has no record of (takes no sweep flags)")
    r.add_argument("--retry-failed", action="store_true", help="with --resume: also re-run the configurations "
                   "whose last record is error, timeout or oom")
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
    t.add_argument("--hidden", type=bounded("hidden"), default=None, help=f"hidden size in {_range('hidden')} "
                   "(default: the task's)")
    t.add_argument("--seq-len", type=bounded("seq_len"), default=None, help=f"sequence length in {_range('seq_len')} "
                   "(default: the task's)")
    t.add_argument("--steps", type=bounded("steps"), default=None, help=f"optimizer steps in {_range('steps')} "
                   "(default: the task's)")
    t.add_argument("--seed", type=bounded("seed"), default=0, help=f"seed of weights and batches in {_range('seed')} "
                   "(default 0)")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    t.add_argument("--machine", default=None, metavar="NAME", help="folder name for this machine (default: host name)")
    t.add_argument("--out", default=None, metavar="DIR", help=f"results root, a writable folder "
                   f"(default {DEFAULT_OUT})")


def _report_parser(sub, c) -> None:
    rep = sub.add_parser("report", help="tables and figures from run folders or pytest-benchmark JSON",
                         description="report.md and report.html from one or more runs; two runs are compared.")
    rep.add_argument("inputs", nargs="+", metavar="RUN_DIR_OR_JSON", help="run folders, folders of runs, or "
                     "pytest-benchmark .json files")
    rep.add_argument("--out", default=None, metavar="DIR", help="output folder (default: RUN_DIR/report for one run, "
                     "else ./rnnbench-report)")


def _recommend_parser(sub, c) -> None:
    rec = sub.add_parser("recommend", help="the backend to use: from recorded results, or measured now "
                         "(--measure, --from-state-dict)",
                         description="The fastest RNN backend near your shape, from recorded timings, or "
                                     "'not enough data' with the reason; with --measure (or --from-state-dict) "
                                     "every available backend is measured at exactly your configuration now.",
                         epilog=f"exit status: 0 an answer (or 'not enough data', 'not separable'); "
                                f"{EXIT_BAD_INPUT} bad input; {EXIT_NO_ANSWER_UNDER_LOAD} --measure gave no answer "
                                "because others used the cores: too few quiet rounds for the test (its first line "
                                "says 'no answer:' with the load measured and what to do)")
    rec.add_argument("--cell", default=None, help=f"recurrent cell (required, except with --from-state-dict, "
                     f"which gives it); {_one_of(c['cells'])}")
    rec.add_argument("--batch", type=bounded("batch"), required=True, help=f"batch size B in {_range('batch')}")
    rec.add_argument("--seq-len", type=bounded("seq_len"), required=True,
                     help=f"sequence length T in {_range('seq_len')}")
    rec.add_argument("--input-size", type=bounded("input_size"), default=None, help=f"input width I in "
                     f"{_range('input_size')} (default: any)")
    rec.add_argument("--hidden", type=bounded("hidden"), default=None, help=f"hidden size H in {_range('hidden')} "
                     "(default: any)")
    rec.add_argument("--layers", type=bounded("layers"), default=1,
                     help=f"stacked layers in {_range('layers')} (default 1)")
    rec.add_argument("--dtype", default="float32", help=f"dtype (default float32); {_one_of(c['dtypes'])}")
    rec.add_argument("--mode", required=True, help=f"what you run; {_one_of(c['modes'])}")
    rec.add_argument("--bidirectional", type=boolean, default=False, help="a bidirectional model: true or false "
                     "(default false)")
    rec.add_argument("--lengths", default=ragged.FULL, help=f"the length distribution of your batches' rows "
                     f"(default full); {_one_of(ragged.FORMS)}, as measured by rnnbench run --lengths")
    rec.add_argument("--device", default=None, help="cpu or cuda (cuda:N) (required, except with --from-state-dict: "
                     "default cpu)")
    rec.add_argument("--results", nargs="+", default=None, metavar="DIR", help="folders of recorded runs "
                     "(default results)")
    rec.add_argument("--against-transformer", action="store_true", help="also the parameter-matched transformer "
                     "baseline's time per token at this shape and its ratio to the RNN's: measured, or interpolated "
                     "inside the measured grid (rnnbench run --suite crossover), else 'not measured' and the command")
    rec.add_argument("--measure", action="store_true", help="measure every available backend at exactly this "
                     "configuration now (parity-checked, interleaved rounds, paired signed-rank test) instead of "
                     "answering from recorded results; needs --hidden (or --from-state-dict)")
    rec.add_argument("--budget-s", type=bounded("budget_s", float), default=60.0, help=f"--measure: seconds for "
                     f"everything, set-up and compiles included, in {_range('budget_s')} (default 60); when it runs "
                     "out the answer says what it could not separate")
    rec.add_argument("--from-state-dict", default=None, metavar="FILE", help="a torch.nn.LSTM/GRU/RNN state_dict "
                     "saved with torch.save: the cell, sizes, layers, directions and weights are read from it "
                     "(implies --measure; --device defaults to cpu)")
    rec.add_argument("--threads", type=bounded("threads"), default=None, help="intra-op threads of every framework "
                     f"(torch, XLA, ONNX Runtime) in {_range('threads')}: with --measure, what it times with; else, the "
                     "recorded runs measured with --threads N (default: each framework's own; on a machine others "
                     "use, 1)")
    rec.add_argument("--backends", type=comma_list(), default=None, help=f"--measure: the candidates (default: every "
                     f"RNN backend available); {_one_of(c['rnn_backends'])}")
    rec.add_argument("--out", default="results/runs", metavar="DIR", help="--measure: results root for the run "
                     "folder of its records (default results/runs)")
    rec.add_argument("--machine", default=None, metavar="NAME", help="--measure: folder name for this machine "
                     "(default: host name)")


def _check_parser(sub, c) -> None:
    ch = sub.add_parser("check", help="one backend against the float64 oracle: a table of error vs tolerance",
                        description="The conformance cases of one backend (outputs, final state, every gradient; "
                                    "lengths, bidirectional and decode where it declares them) against the float64 "
                                    "oracle; exit 0 when every tensor is within its dtype's tolerance, else 1.")
    ch.add_argument("name", metavar="NAME", help=f"the backend; {_one_of(c['backends'])}")
    ch.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    ch.add_argument("--dtype", type=comma_list(), default=["float64", "float32"], help=f"dtypes (default "
                    f"float64,float32; those the backend does not declare are listed, not run); {_one_of(c['dtypes'])}")
    ch.add_argument("--cells", type=comma_list(), default=None, help=f"cells (default: every cell it declares); "
                    f"{_one_of(c['cells'])}")


PARSERS = [_run_parser, _train_parser, _report_parser, _recommend_parser, _check_parser]


PLUGIN_HELP = ("a module (importable name, or a path to a .py file) whose import registers backends with "
               "impls.register; repeatable; every process the command starts loads it too (also: "
               "$RNNBENCH_PLUGINS=mod1,mod2, and installed packages' 'rnnbench.backends' entry points)")


def _plugin_option(parser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE", help=PLUGIN_HELP)


def build_parser() -> argparse.ArgumentParser:
    c = _choices()
    p = OneLineParser(prog="rnnbench", description="Benchmark recurrent networks across backends.")
    _plugin_option(p)
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _plugin_option(sub.add_parser("list", help="every backend and baseline, and whether it runs here",
                                  description="Every registered backend and transformer baseline, its kind, and per "
                                              "device (cpu, cuda) whether it runs on this machine, and why not."))
    for add in PARSERS:
        add(sub, c)
    for command in sub.choices.values():
        if not any(a.dest == "plugin" for a in command._actions):
            _plugin_option(command)
    return p


def load_plugins(argv) -> None:
    """The --plugin modules of ``argv``, imported before the parser lists the backends (its help and
    checks name them); ConfigError in one line when one cannot be imported."""
    import impls

    pre = argparse.ArgumentParser(add_help=False)
    _plugin_option(pre)
    known, _ = pre.parse_known_args(argv)
    try:
        impls.discover()
        for plugin in known.plugin:
            impls.load_plugin(plugin)
    except impls.PluginError as exc:
        raise ConfigError(str(exc)) from None


# -- validation ------------------------------------------------------------------------------

PATH_METAVARS = ("DIR", "FILE", "JSON")  # an option whose metavar ends so takes a path


def _check_text(parser, args) -> None:
    """Every text value given, of every option: not empty, no control character; a path's names within
    the file system's limits (a longer one fails later with a traceback, or after a folder exists)."""
    import unicodedata

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    for action in sub._actions:
        value = getattr(args, action.dest, None)
        flag = (action.option_strings or [action.metavar or action.dest])[-1]
        for text in value if isinstance(value, list) else [value]:
            if not isinstance(text, str):
                continue
            if not text.strip():
                raise ConfigError(f"{flag} is empty")
            if any(unicodedata.category(ch) == "Cc" for ch in text):
                raise ConfigError(f"{flag} {text[:40]!r} holds a control character")
            if (action.metavar or "").endswith(PATH_METAVARS):
                check_path_length(text, flag)



def _check_run_flags(args) -> None:
    """Flags that contradict each other are an error, never silently resolved."""
    from .suites import SWEEP_AXES

    if args.isolate and args.executor not in (None, "process"):
        raise ConfigError(f"--isolate means --executor process; it contradicts --executor {args.executor}")
    if args.retry_failed and not args.resume:
        raise ConfigError("--retry-failed goes with --resume RUN_DIR (it re-runs that run's failed configurations)")
    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in (*SWEEP_AXES, "rounds", "suite", "config", "machine", "out")
                 if getattr(args, k, None) is not None]
        given += ["--metric"] if args.metric else []
        if given:
            raise ConfigError(f"--resume RUN_DIR completes the run as it was planned; it takes no {', '.join(given)} "
                              "(start a new run for another grid)")


def _executor(args, resumed_executor: str | None) -> str:
    counting = args.metric == "instructions" or resumed_executor == "callgrind"
    if counting and (args.executor or args.isolate):
        raise ConfigError("--metric instructions counts every configuration in one process under valgrind; it takes "
                          "no --executor or --isolate")
    if counting:
        if resumed_executor:  # a new run's plan checks valgrind; the machine that resumes may be another
            from .callgrind import setup_problem

            problem = setup_problem()
            if problem:
                raise ConfigError(f"--metric instructions: {problem}")
        return "callgrind"
    executor = ("process" if args.isolate else args.executor) or resumed_executor or "inline"
    if args.ray_address and executor != "ray":
        raise ConfigError(f"--ray-address goes with --executor ray; this run's executor is {executor}")
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

    _check_run_flags(args)
    if args.resume:
        run, jobs, resumed_executor = sweep.resume_run(args.resume)  # locked: one writer per run
        try:
            executor = _executor(args, resumed_executor)  # a Ray run resumes on Ray
            sweep.check_portable(jobs, executor)
        except BaseException:
            run.release()
            raise
    else:
        check_machine_name(args.machine)
        executor = _executor(args, None)
        if executor == "ray" and args.threads:
            raise ConfigError("--threads sets each value in processes of its own (XLA fixes its count when it starts); "
                              "Ray's workers are started without it: use --executor inline or process")
        axes = {**{k: getattr(args, k) for k in SWEEP_AXES}, "rounds": args.rounds}
        # validated, devices present, a single configuration fits here
        jobs, devices = sweep.plan(args.suite, axes, args.config, check_memory=executor != "ray",
                                   metric=args.metric or "time")
        sweep.check_portable(jobs, executor)
        out = args.out or DEFAULT_OUT
        check_writable_dir(out)
        run = sweep.create_run(jobs, devices, executor, out, args.machine)
    try:
        return _sweep_and_report(args, run, jobs, executor)
    finally:
        run.release()


def _sweep_and_report(args, run, jobs, executor) -> int:
    from . import sweep
    from .report import integrity, write_report
    from .report.console import print_end_of_run

    pending = sweep.pending_jobs(run, jobs, args.retry_failed)
    print(f"run folder: {run.path}  ({len(jobs)} configurations, {len(pending)} to run, executor {executor})",
          file=sys.stderr)
    if args.resume and not pending:  # changes no file
        print(f"nothing to do: every configuration of {run.path} has a record"
              + ("" if args.retry_failed else " (--retry-failed re-runs the failed ones)"), file=sys.stderr)
        return 0
    report_dir, write = run.path / "report", not args.no_report and executor != "callgrind"  # reports are of time
    if write:
        try:
            integrity.files_we_wrote(report_dir)
        except ConfigError as exc:
            write = False
            print(f"note: no report at the end: {exc}", file=sys.stderr)
    try:
        sweep.run_sweep(run, jobs, executor, args.ray_address, progress=not args.quiet,
                        retry_failed=args.retry_failed)
    except KeyboardInterrupt:
        print(f"interrupted; every finished record is kept: rnnbench run --resume {run.path} completes this run",
              file=sys.stderr)
        return 130
    records = run.records()
    _warn_contended(records)  # first: it says why rows below are missing
    print_end_of_run(records, args.table)
    _advise_threads(records)
    print(f"\nrecords: {run.path / 'records.jsonl'}")
    if write:
        print(f"report: {write_report([run.path], report_dir)}")
    return 0


def _warn_contended(records) -> None:
    """One line when others used the CPU while we timed: how many records, and that rankings skip them."""
    import pandas as pd

    from .results import contention_note

    note = contention_note(pd.DataFrame(records)) if records else None
    if note:
        print(f"warning: {note}", file=sys.stderr)


def _advise_threads(records) -> None:
    """The advice to time with one thread, when others used the cores and a run used more than one."""
    from .suites import SETTINGS

    timing = [r for r in records if r.get("kind") == "timing" and r.get("status") == "ok"]
    loads = sorted(r["contention"] for r in timing if r.get("contention") is not None)
    many = [r for r in timing if (r.get("threads") or 1) > 1]
    if loads and many and loads[len(loads) // 2] > SETTINGS.contention_threshold:
        print(f"advice: others used {loads[len(loads) // 2]:.2g} cores (median over the timed windows) while "
              f"{len(many)} timing records ran on more than one thread; on a shared machine time with --threads 1 "
              "(one intra-op thread for torch, XLA and ONNX Runtime), or compare --threads 1,2", file=sys.stderr)


def cmd_train(args) -> int:
    from . import sweep
    from .jobs import TrainJob
    from .report.console import print_training

    job = TrainJob(args.task, args.backend, args.cell, hidden=args.hidden, seq_len=args.seq_len,
                   steps=args.steps, seed=args.seed, device=args.device)
    job.validate()
    check_machine_name(args.machine)
    check_devices([job.device])
    too_big = check_fits(job)
    if too_big:
        raise ConfigError(f"{too_big}; refused before anything is written")
    out = args.out or DEFAULT_OUT
    check_writable_dir(out)
    run = sweep.create_run([job], [job.device], "inline", out, args.machine)
    print(f"run folder: {run.path}", file=sys.stderr)
    try:
        records = [run.append(rec) for rec in job.run(fresh_process=False)]
    except KeyboardInterrupt:
        print(f"interrupted; the records so far are in {run.path}", file=sys.stderr)
        return 130
    finally:
        run.release()
    print_training(records)
    print(f"\nrecords: {run.path / 'records.jsonl'}")
    return 0 if all(r.get("status") == "ok" for r in records) else 1


def cmd_report(args) -> int:
    from .report import report_command

    return report_command(args.inputs, args.out)


def cmd_recommend(args) -> int:
    from .recommend import recommend

    required = ("--cell", "--device") if not args.from_state_dict else ()
    missing = [flag for flag in required if getattr(args, flag[2:]) is None]
    if missing:
        raise ConfigError(f"rnnbench recommend: the following arguments are required: {', '.join(missing)} "
                          "(or --from-state-dict FILE, which gives the cell; --device defaults to cpu there)")
    if args.measure or args.from_state_dict:
        from .recommend_measure import recommend_measured

        if args.bidirectional or args.lengths != ragged.FULL:
            raise ConfigError("--measure and --from-state-dict time unidirectional full-length batches; for "
                              "--bidirectional or --lengths answer from recorded runs (rnnbench run --suite ragged)")
        check_machine_name(args.machine)
        check_writable_dir(args.out)
        if args.results is not None:  # the recorded runs that predict each candidate's cost
            from .results import check_run_folders

            check_run_folders(args.results)

        answer = recommend_measured(args.cell, args.batch, args.seq_len, args.mode, args.device or "cpu",
                                    input_size=args.input_size, hidden=args.hidden, layers=args.layers,
                                    dtype=args.dtype, budget_s=args.budget_s, state_dict_file=args.from_state_dict,
                                    backends=args.backends, out=args.out, machine=args.machine,
                                    results=[*(args.results or ["results"]), args.out], threads=args.threads or 0)
        print(answer)
        return EXIT_NO_ANSWER_UNDER_LOAD if answer.under_load else 0
    print(recommend(args.cell, args.batch, args.seq_len, args.mode, args.device, input_size=args.input_size,
                    hidden=args.hidden, layers=args.layers, dtype=args.dtype, bidirectional=args.bidirectional,
                    lengths=args.lengths, results=args.results or ["results"],
                    against_transformer=args.against_transformer, threads=args.threads or 0))
    return 0


def cmd_check(args) -> int:
    import impls
    from impls.conformance import check, format_table

    from .config import check_common

    for cell in args.cells or ["lstm"]:
        for dtype in args.dtype:
            check_common(args.name, cell, dtype, args.device, {})
    check_devices([args.device])
    ok, reason = impls.available(args.name, args.device)
    if not ok:
        raise ConfigError(f"{args.name} is not available on {args.device}: {reason}")
    rows = check(args.name, args.device, tuple(args.dtype), args.cells)
    print(format_table(rows))
    failed = [r for r in rows if not r.ok]
    measured = [r for r in rows if r.error is not None]
    print(f"\n{args.name} on {args.device}: {len({r.case for r in measured})} cases, {len(measured)} tensors; "
          + (f"{len(failed)} over tolerance or failed" if failed else "every tensor within tolerance"))
    return 1 if failed else 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "train": cmd_train, "report": cmd_report, "recommend": cmd_recommend,
            "check": cmd_check}


def _history_parser(sub, c) -> None:
    h = sub.add_parser("history", help="asv results across commits -> one offline HTML page",
                       description="Each benchmark against commit, with asv's step detection (rnnbench.history).")
    h.add_argument("results", nargs="?", default="results/asv", metavar="RESULTS_DIR", help="asv's results_dir "
                   "(default results/asv)")
    h.add_argument("--out", required=True, metavar="DIR", help="output folder for index.html")


def cmd_history(args) -> int:
    from .history import history_command

    check_writable_dir(args.out)
    return history_command(args.results, args.out)


PARSERS.append(_history_parser)
COMMANDS["history"] = cmd_history


# Library loggers whose warnings say nothing about the user's run: a CUDA toolkit on a machine without
# a GPU ("No CUDA runtime is found"), JAX falling back to the CPU.  The CLI shows their errors only.
QUIET_LOGGERS = ("torch.utils.cpp_extension", "jax._src.xla_bridge")


def main(argv=None) -> int:
    import logging

    from impls.runtime import prepare_process

    from .store import StoreError

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    prepare_process()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        load_plugins(argv)
        parser = build_parser()
        args = parser.parse_args(argv)
        _check_text(parser, args)
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"error: {exc}".replace("\n", " "), file=sys.stderr)  # one line, whatever a library said
        return EXIT_BAD_INPUT
    except StoreError as exc:  # a fault (disk full), not bad input
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAULT
    except KeyboardInterrupt:  # before a run folder existed (cmd_run names the folder once there is one)
        print("interrupted", file=sys.stderr)
        return 130

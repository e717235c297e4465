"""rnnbench list | run | train | report | recommend: argparse, validation, dispatch.

Bad input gets one line naming the valid choices and exit status 2, before any
result folder is made.  The work itself is done by the domain modules, called
with plain arguments; a new command is a parser function and one ``COMMANDS`` entry.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys

from . import ragged
from .config import (MODES, ConfigError, check_devices, check_fits, check_machine_name, check_writable_dir,
                     parse_bool, size_limits)

EXIT_BAD_INPUT = 2
EXIT_FAULT = 1
DEFAULT_OUT = "results/runs"
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


def boolean(text: str) -> bool:
    try:
        return parse_bool(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive (sizes must be >= 1)")
    return value


def size(field: str):
    """A positive integer within the spec's limit for ``field``, where the spec has one."""
    upper = size_limits().get(field)

    def parse(text: str) -> int:
        value = positive_int(text)
        if upper is not None and value > upper:
            raise argparse.ArgumentTypeError(f"{value} is out of range: an integer in [1, {upper}] (the spec's limit)")
        return value
    return parse


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
    limits = size_limits()
    for flag, what in (("--batch", "batch sizes B"), ("--seq-len", "sequence lengths T"),
                       ("--input-size", "input widths I (where the suite has none: H)"),
                       ("--hidden", "hidden sizes H"), ("--layers", "stacked layers")):
        field = flag[2:].replace("-", "_")
        bound = f"integers in [1, {limits[field]}]" if field in limits else "positive integers"
        r.add_argument(flag, type=comma_list(size(field)), help=f"{what}; {bound} (default: the suite's)")
    r.add_argument("--dtype", type=comma_list(), help=f"dtypes (default: the suite's); {_one_of(c['dtypes'])}")
    r.add_argument("--mode", type=comma_list(), help=f"what is timed (default: the suite's); forward: no graph; "
                   f"train: forward and backward; step: one timestep from an empty state; decode: one step after a "
                   f"context of T tokens (an RNN's h, c; a transformer's KV cache); {_one_of(c['modes'])}")
    r.add_argument("--device", type=comma_list(), help="devices: cpu, cuda or cuda:N (default: the suite's; "
                   "kernels: cuda, else cpu)")
    r.add_argument("--bidirectional", type=comma_list(boolean), help="models: false (unidirectional), true "
                   "(bidirectional), or false,true (default: the suite's, else false)")
    r.add_argument("--lengths", type=comma_list(), help=f"length distributions of the batch's rows (default: the "
                   f"suite's, else full); {_one_of(ragged.FORMS)}: full (every row T steps), uniform:MIN (uniform in "
                   "[MIN, T]), zipf:A (Zipf exponent A > 1, clipped to [1, T]); drawn from the configuration's seed, "
                   "the same for every backend")
    r.add_argument("--config", help="JSON or TOML file with the same axes as the flags (and 'suite'); flags win")
    r.add_argument("--suite", default=None, help=f"named preset (default quick); {_one_of(c['suites'])}. "
                   f"{c['suite_help']}")
    r.add_argument("--executor", choices=c["executors"], default=None, metavar="EXECUTOR",
                   help=f"where each configuration runs: inline (this process; memory probes in a fresh child), "
                        f"process (a fresh process each: a crash or hang becomes a record), ray (Ray tasks); "
                        f"{_one_of(c['executors'])} (default inline; --resume keeps the run's own)")
    r.add_argument("--isolate", action="store_true", help="same as --executor process")
    r.add_argument("--ray-address", default=None, help="with --executor ray: a running Ray cluster, HOST:PORT, "
                   "ray://HOST:PORT or auto (default: start one here)")
    r.add_argument("--machine", default=None, help="folder name for this machine: letters, digits, '_', '.', '-' "
                   "(default: host name)")
    r.add_argument("--out", default=None, help=f"results root, a writable folder; the run goes to "
                   f"ROOT/MACHINE/RUN_ID (default {DEFAULT_OUT})")
    r.add_argument("--rounds", type=positive_int, default=None, help="times the grid is visited, each visit "
                   "shuffled (default: the suite's); comparisons need 5 (two runs) or 8 (two backends)")
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
    t.add_argument("--hidden", type=size("hidden"), default=None, help="hidden size (default: the task's)")
    t.add_argument("--seq-len", type=positive_int, default=None, help="sequence length (default: the task's)")
    t.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (default: the task's)")
    t.add_argument("--seed", type=int, default=0, help="seed of weights and batches (default 0)")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    t.add_argument("--machine", default=None, help="folder name for this machine (default: host name)")
    t.add_argument("--out", default=None, help=f"results root, a writable folder (default {DEFAULT_OUT})")


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
    rec.add_argument("--input-size", type=size("input_size"), default=None, help="input width I (default: any)")
    rec.add_argument("--hidden", type=size("hidden"), default=None, help="hidden size H (default: any)")
    rec.add_argument("--layers", type=size("layers"), default=1, help="stacked layers (default 1)")
    rec.add_argument("--dtype", default="float32", help=f"dtype (default float32); {_one_of(c['dtypes'])}")
    rec.add_argument("--mode", required=True, help=f"what you run; {_one_of(c['modes'])}")
    rec.add_argument("--bidirectional", type=boolean, default=False, help="a bidirectional model: true or false "
                     "(default false)")
    rec.add_argument("--lengths", default=ragged.FULL, help=f"the length distribution of your batches' rows "
                     f"(default full); {_one_of(ragged.FORMS)}, as measured by rnnbench run --lengths")
    rec.add_argument("--device", required=True, help="cpu or cuda (cuda:N)")
    rec.add_argument("--results", nargs="+", default=["results"], help="folders of recorded runs (default results)")
    rec.add_argument("--measure", action="store_true", help="measure every available backend at exactly this "
                     "configuration now (parity-checked, interleaved rounds, paired signed-rank test) instead of "
                     "answering from recorded results; needs --hidden (or --from-state-dict)")
    rec.add_argument("--budget-s", type=float, default=60.0, help="--measure: seconds for everything, set-up and "
                     "compiles included (default 60); when it runs out the answer says what it could not separate")
    rec.add_argument("--from-state-dict", default=None, metavar="FILE", help="a torch.nn.LSTM/GRU/RNN state_dict "
                     "saved with torch.save: sizes, layers, directions and weights are read from it (implies --measure)")
    rec.add_argument("--backends", type=comma_list(), default=None, help=f"--measure: the candidates (default: every "
                     f"RNN backend available); {_one_of(c['backends'])}")
    rec.add_argument("--out", default="results/runs", help="--measure: results root for the run folder of its "
                     "records (default results/runs)")
    rec.add_argument("--machine", default=None, help="--measure: folder name for this machine (default: host name)")


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
    _plugin_option(sub.add_parser("list", help="every backend and baseline, and whether it runs here"))
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
        if given:
            raise ConfigError(f"--resume RUN_DIR completes the run as it was planned; it takes no {', '.join(given)} "
                              "(start a new run for another grid)")


def _executor(args, resumed_executor: str | None) -> str:
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
        axes = {**{k: getattr(args, k) for k in SWEEP_AXES}, "rounds": args.rounds}
        # validated, devices present, a single configuration fits here
        jobs, devices = sweep.plan(args.suite, axes, args.config, check_memory=executor != "ray")
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
    report_dir, write = run.path / "report", not args.no_report
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
    print_end_of_run(run.records(), args.table)
    _warn_contended(run.records())
    print(f"\nrecords: {run.path / 'records.jsonl'}")
    if write:
        print(f"report: {write_report([run.path], report_dir)}")
    return 0


def _warn_contended(records) -> None:
    """One line when others used the CPU while we timed: how many records, and that rankings skip them."""
    from .suites import SETTINGS

    timing = [r for r in records if r.get("kind") == "timing" and r.get("status") == "ok"]
    contended = sum(bool(r.get("contended")) for r in timing)
    if contended:
        print(f"warning: {contended} of {len(timing)} timing records are contended (others used more than "
              f"{SETTINGS.contention_threshold:g} of a core while they were timed, after "
              f"{SETTINGS.contention_retries} re-measures); reports and recommend leave them out; "
              "measure again on a quieter machine", file=sys.stderr)


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

    if args.measure or args.from_state_dict:
        from .recommend_measure import recommend_measured

        if args.bidirectional or args.lengths != ragged.FULL:
            raise ConfigError("--measure and --from-state-dict time unidirectional full-length batches; for "
                              "--bidirectional or --lengths answer from recorded runs (rnnbench run --suite ragged)")
        check_machine_name(args.machine)
        check_writable_dir(args.out)

        print(recommend_measured(args.cell, args.batch, args.seq_len, args.mode, args.device,
                                 input_size=args.input_size, hidden=args.hidden, layers=args.layers, dtype=args.dtype,
                                 budget_s=args.budget_s, state_dict_file=args.from_state_dict,
                                 backends=args.backends, out=args.out, machine=args.machine,
                                 results=[*args.results, args.out]))
        return 0
    print(recommend(args.cell, args.batch, args.seq_len, args.mode, args.device, input_size=args.input_size,
                    hidden=args.hidden, layers=args.layers, dtype=args.dtype, bidirectional=args.bidirectional,
                    lengths=args.lengths, results=args.results))
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
    h.add_argument("results", nargs="?", default="results/asv", help="asv's results_dir (default results/asv)")
    h.add_argument("--out", required=True, help="output folder for index.html")


def cmd_history(args) -> int:
    from .history import history_command

    return history_command(args.results, args.out)


PARSERS.append(_history_parser)
COMMANDS["history"] = cmd_history


def main(argv=None) -> int:
    from impls.runtime import prepare_process

    from .store import StoreError

    prepare_process()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        load_plugins(argv)
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StoreError as exc:  # a fault (disk full), not bad input
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAULT
    except KeyboardInterrupt:  # before a run folder existed (cmd_run names the folder once there is one)
        print("interrupted", file=sys.stderr)
        return 130

"""Every bad input of every subcommand: one line naming the valid choices or range, exit status 2,
no traceback, and not one file written or changed (checked before anything is written)."""
import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rnnbench import cli, store, sweep

from .synthetic_results import make_run

RUN = "{run}"  # stands for a valid run folder made in the test's tmp dir
OUT = "{out}"  # the tmp --out root, which must stay empty


def _json(obj) -> str:
    return json.dumps(obj)


CASES = [
    # -- run: names ----------------------------------------------------------------------------
    (["run", "--backends", "nope"], "valid: torch_eager"),
    (["run", "--backends", ","], "comma-separated list"),
    (["run", "--backends", "torch_eager,,torch_cudnn"], "item 2 of 'torch_eager,,torch_cudnn' is empty"),
    (["run", "--batch", "99999999999999999999"], "an integer in [1, 1048576]"),
    (["run", "--seq-len", "１２"], "not an integer"),
    (["run", "--rounds", "1001"], "[1, 1000]"),
    (["train", "--task", "copy", "--backend", "torch_eager", "--seed", "-1"], "[0, 4294967295]"),
    (["recommend", "--cell", "lstm", "--batch", "8", "--seq-len", "8", "--mode", "train", "--device", "cpu",
      "--measure", "--hidden", "8", "--budget-s", "nan"], "not a number"),
    (["run", "--cells", "lstmx"], "valid: rnn_tanh, lstm, gru"),
    (["run", "--dtype", "float8"], "valid: float32, float64, bfloat16, float16"),
    (["run", "--mode", "backward"], "valid: forward, train, step"),
    (["run", "--mode", ","], "comma-separated list"),
    (["run", "--device", "tpu"], "cpu, cuda, cuda:N"),
    (["run", "--device", "cuda:x"], "cpu, cuda, cuda:N"),
    (["run", "--device", "cuda:99"], "not available here"),
    (["run", "--suite", "nope"], "valid: quick"),
    (["run", "--executor", "nope"], "invalid choice"),
    (["run", "--table", "nope"], "invalid choice"),
    (["run", "--frobnicate"], "unrecognized arguments"),
    # -- run: sizes: integers, positive, within the spec's limits, fitting the machine -------------
    (["run", "--batch", "0"], "not positive"),
    (["run", "--threads", "0"], "not positive"),
    (["run", "--threads", "two"], "not an integer"),
    (["run", "--threads", "1", "--executor", "ray"], "--threads"),
    (["recommend", "--cell", "lstm", "--batch", "4", "--seq-len", "8", "--mode", "train", "--device", "cpu",
      "--threads", "0"], "not positive"),
    (["run", "--batch", "-1"], "not positive"),
    (["run", "--batch", "abc"], "not an integer"),
    (["run", "--seq-len", "1.5"], "not an integer"),
    (["run", "--hidden", "70000"], "[1, 65536]"),
    (["run", "--input-size", "100000"], "[1, 65536]"),
    (["run", "--layers", "65"], "[1, 64]"),
    (["run", "--backends", "torch_eager", "--cells", "lstm", "--mode", "forward", "--seq-len", "100000", "--hidden",
      "60000"], "available"),
    (["run", "--backends", "torch_eager", "--cells", "gru", "--mode", "train", "--batch", "1000000", "--seq-len",
      "100000"], "available"),
    # -- run: contradictory flags ----------------------------------------------------------------
    (["run", "--isolate", "--executor", "inline"], "--isolate"),
    (["run", "--isolate", "--executor", "ray"], "--isolate"),
    (["run", "--ray-address", "127.0.0.1:6379"], "--ray-address"),
    (["run", "--retry-failed"], "--retry-failed"),
    (["run", "--resume", RUN, "--backends", "torch_eager"], "--backends"),
    (["run", "--resume", RUN, "--suite", "quick"], "--suite"),
    (["run", "--resume", RUN, "--hidden", "8"], "--hidden"),
    (["run", "--resume", RUN, "--config", "c.json"], "--config"),
    (["run", "--resume", RUN, "--machine", "box"], "--machine"),
    # -- run: Ray addresses -------------------------------------------------------------------
    (["run", "--executor", "ray", "--ray-address", "abc"], "HOST:PORT"),
    (["run", "--executor", "ray", "--ray-address", "127.0.0.1:notaport"], "HOST:PORT"),
    (["run", "--executor", "ray", "--ray-address", "127.0.0.1:70000"], "HOST:PORT"),
    (["run", "--executor", "ray", "--ray-address", "{silent}"], "not a Ray"),
    (["run", "--executor", "ray", "--ray-address", "{http}"], "not a Ray"),
    (["run", "--executor", "ray", "--ray-address", "{closed}"], "no Ray cluster answers"),
    # -- run: config files ---------------------------------------------------------------------
    (["run", "--config", "missing.json"], "does not exist"),
    (["run", "--config", ("c.json", "null")], "must hold an object"),
    (["run", "--config", ("c.json", "5")], "must hold an object"),
    (["run", "--config", ("c.json", "[1, 2]")], "must hold an object"),
    (["run", "--config", ("c.json", _json({"backends": []}))], "backends"),
    (["run", "--config", ("c.json", _json({"bogus": 1}))], "unknown keys"),
    (["run", "--config", ("c.json", "{not json")], "not valid json"),
    (["run", "--config", ("c.toml", "batch = [")], "not valid toml"),
    (["run", "--config", ("c.json", _json({"batch": [0]}))], "positive"),
    (["run", "--config", ("c.json", _json({"batch": "sixteen"}))], "batch"),
    (["run", "--config", ("c.json", _json({"hidden": [70000]}))], "[1, 65536]"),
    (["run", "--config", ("c.json", _json({"cells": [None]}))], "valid: rnn_tanh"),
    (["run", "--config", ("c.json", _json({"suite": 5}))], "suite"),
    (["run", "--config", ("c.json", _json({"device": ["cuda:99"]}))], "not available here"),
    # -- run: paths ---------------------------------------------------------------------------
    (["run", "--out", ("afile", "x")], "not a folder"),
    (["run", "--out", "/proc/rnnbench"], "cannot write"),
    (["run", "--out", ("afile", "x"), "--machine", "m"], "not a folder"),
    (["run", "--machine", "../../x"], "--machine"),
    (["run", "--machine", "a/b"], "--machine"),
    (["run", "--machine", ".."], "--machine"),
    (["run", "--machine", ""], "--machine"),
    # -- run --resume: runs that are not runs, or not this schema's ---------------------------------
    (["run", "--resume", "/nonexistent/run"], "not a run folder"),
    (["run", "--resume", OUT], "not a run folder"),
    (["run", "--resume", RUN, "{run.json}", "{}"], "run.json"),
    (["run", "--resume", RUN, "{run.json}", "not json"], "run.json"),
    (["run", "--resume", RUN, "{run.json}", "[]"], "run.json"),
    (["run", "--resume", RUN, "{schema}", 99], "schema 99"),
    (["run", "--resume", RUN, "{jobs}", [{"job": "nope"}]], "run.json"),
    (["run", "--resume", RUN, "{jobs}", [{"job": "timing", "backend": "nope"}]], "run.json"),
    (["run", "--resume", RUN, "{middle}", "garbage"], "records.jsonl:2"),
    # -- train --------------------------------------------------------------------------------
    (["train", "--task", "nope", "--backend", "torch_eager"], "valid: "),
    (["train", "--task", "copy", "--backend", "nope"], "valid: torch_eager"),
    (["train", "--task", "copy", "--backend", "torch_eager", "--cell", "x"], "valid: rnn_tanh"),
    (["train", "--task", "copy", "--backend", "torch_eager", "--hidden", "0"], "not positive"),
    (["train", "--task", "copy", "--backend", "torch_eager", "--hidden", "70000"], "[1, 65536]"),
    (["train", "--task", "copy", "--backend", "torch_eager", "--steps", "-3"], "not positive"),
    (["train", "--task", "copy", "--backend", "torch_eager", "--seed", "abc"], "not an integer"),
    (["train", "--task", "copy", "--backend", "torch_eager", "--device", "tpu"], "cpu, cuda, cuda:N"),
    (["train", "--task", "copy", "--backend", "torch_eager", "--machine", "../x"], "--machine"),
    (["train", "--task", "copy", "--backend", "torch_eager", "--out", ("afile", "x")], "not a folder"),
    (["train", "--backend", "torch_eager"], "required: --task"),
    # -- report -------------------------------------------------------------------------------
    (["report"], "required: RUN_DIR_OR_JSON"),
    (["report", "/nonexistent/run"], "not a run folder"),
    (["report", ("notes.txt", "hello")], "not a run folder"),
    (["report", ("bench.json", "{}")], "not a pytest-benchmark JSON file"),
    (["report", OUT], "not a run folder"),
    (["report", RUN, "--out", ("afile", "x")], "not a folder"),
    (["report", RUN, "--out", ("mine/keep.png", "user's figure")], "did not write"),
    (["report", RUN, "{schema}", 99], "schema 99"),
    (["report", RUN, "{run.json}", "{}"], "run.json"),
    # -- recommend ----------------------------------------------------------------------------
    (["recommend", "--cell", "x", "--batch", "8", "--seq-len", "8", "--mode", "train", "--device", "cpu"],
     "valid: rnn_tanh"),
    (["recommend", "--cell", "lstm", "--batch", "0", "--seq-len", "8", "--mode", "train", "--device", "cpu"],
     "not positive"),
    (["recommend", "--cell", "lstm", "--batch", "8", "--seq-len", "8", "--mode", "nope", "--device", "cpu"],
     "valid: forward"),
    (["recommend", "--cell", "lstm", "--batch", "8", "--seq-len", "8", "--mode", "train", "--device", "tpu"],
     "cpu, cuda"),
    (["recommend", "--cell", "lstm", "--batch", "8", "--seq-len", "8", "--mode", "train", "--device", "cpu",
      "--dtype", "nope"], "valid: float32"),
    (["recommend", "--cell", "lstm", "--batch", "8", "--seq-len", "8", "--mode", "train", "--device", "cpu",
      "--hidden", "70000"], "[1, 65536]"),
    (["recommend", "--cell", "lstm", "--batch", "8", "--seq-len", "8", "--mode", "train", "--device", "cpu",
      "--layers", "65"], "[1, 64]"),
    (["recommend", "--cell", "lstm", "--batch", "8", "--seq-len", "8", "--device", "cpu"], "required: --mode"),
    (["recommend", "--cell", "lstm", "--batch", "8", "--seq-len", "8", "--mode", "train", "--device", "cpu",
      "--measure", "--machine", "../x"], "one folder name"),
    (["recommend", "--cell", "lstm", "--batch", "8", "--seq-len", "8", "--mode", "train", "--device", "cpu",
      "--measure", "--out", "/proc/x"], "--out"),
    (["recommend", "--cell", "lstm", "--batch", "8", "--seq-len", "8", "--mode", "train", "--device", "cpu",
      "--results", "/nonexistent/results"], "not a run folder"),
    # -- list, history, the command itself ----------------------------------------------------------
    (["list", "--bogus"], "unrecognized arguments"),
    (["list", "extra"], "unrecognized arguments"),
    (["history", "/nonexistent/asv", "--out", "h"], "/nonexistent/asv"),
    (["history", "results/asv"], "required: --out"),
    ([], "required: command"),
    (["explode"], "invalid choice"),
]


class Listener:
    """A TCP server on 127.0.0.1 that is not Ray: silent, or answering as HTTP/1.1 does."""

    def __init__(self, reply: bytes | None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.reply, self.stop = reply, False
        self.conns = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            if self.reply:
                try:
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self):
        self.stop = True
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


def _closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{s.getsockname()[1]}"
    s.close()
    return address


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def no_work(monkeypatch):
    """Bad input must be answered before a run is created or measured."""
    def refuse(*a, **k):
        raise AssertionError("bad input got past validation")

    monkeypatch.setattr(sweep, "create_run", refuse)
    monkeypatch.setattr(sweep, "run_sweep", refuse)


def _materialise(argv, tmp: Path, servers) -> list[str]:
    """Fill in the placeholders: a valid run, files with given contents, live listeners."""
    out = []
    run_dir = None
    edit = None
    it = iter(argv)
    for a in it:
        if a == RUN:
            run_dir = make_run(tmp / "runs", machine="box", backends=("torch_eager", "torch_cudnn"),
                               extras=False, shapes=dict(cells=("lstm",), modes=("forward",), batch=(4,),
                                                         seq_len=(8,), hidden=(8,))).path
            info = json.loads((run_dir / store.RUN_JSON).read_text())
            info["jobs"] = [{"job": "timing", "backend": "torch_eager", "cell": "lstm", "batch": 4, "seq_len": 8,
                             "input_size": 8, "hidden": 8, "mode": "forward"}]
            store.write_json_atomic(run_dir / store.RUN_JSON, info)
            out.append(str(run_dir))
        elif a == OUT:
            out.append(str(tmp / "out"))
        elif a in ("{run.json}", "{schema}", "{jobs}", "{middle}"):
            edit = (a, next(it))
        elif a in ("{silent}", "{http}"):
            server = Listener(None if a == "{silent}" else b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            servers.append(server)
            out.append(server.address)
        elif a == "{closed}":
            out.append(_closed_port())
        elif isinstance(a, tuple):
            path = tmp / a[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(a[1])
            out.append(str(path.parent if "/" in a[0] else path))
        else:
            out.append(a)
    if edit:
        what, value = edit
        info_path = run_dir / store.RUN_JSON
        if what == "{run.json}":
            info_path.write_text(value)
        elif what in ("{schema}", "{jobs}"):
            info = json.loads(info_path.read_text())
            info[what.strip("{}")] = value
            info_path.write_text(json.dumps(info))
        else:
            lines = (run_dir / store.RECORDS).read_text().splitlines(keepends=True)
            lines.insert(1, value + "\n")
            (run_dir / store.RECORDS).write_text("".join(lines))
    return out


@pytest.mark.parametrize("argv, says", CASES, ids=[" ".join(map(str, a)) or "(none)" for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(argv, says, tmp_path, monkeypatch, capsys, no_work):
    monkeypatch.chdir(tmp_path)  # default outputs (results/runs, rnnbench-report) would land here
    (tmp_path / "out").mkdir()
    servers = []
    try:
        args = _materialise(argv, tmp_path, servers)
        if args and args[0] in ("run", "train") and "--out" not in args and "--resume" not in args:
            args += ["--out", str(tmp_path / "out")]
        before = _snapshot(tmp_path)
        start = time.monotonic()
        code = cli.main(args)
        took = time.monotonic() - start
    finally:
        for s in servers:
            s.close()
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1 and err.startswith(("error: ", "rnnbench")), err
    assert says in err, err
    assert "Traceback" not in captured.err + captured.out
    assert _snapshot(tmp_path) == before  # not one file made, removed or touched
    assert took < 15, f"answered after {took:.0f} s"


def test_there_are_at_least_60_bad_inputs_over_every_subcommand():
    assert len(CASES) >= 60
    commands = {a[0] for a, _ in CASES if a}
    assert {"run", "train", "report", "recommend", "list", "history"} <= commands


def test_a_bad_input_through_the_real_entry_point_is_one_line_and_no_traceback(tmp_path):
    """The same promise from a separate process (python -m rnnbench), as a user meets it."""
    proc = subprocess.run([sys.executable, "-m", "rnnbench", "run", "--hidden", "70000", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and not any(tmp_path.iterdir())


# -- every option of every command, fed hostile values ---------------------------------------------
# The options are read from the parser, so a new option is covered without an edit here.  Kinds:
# a number (its converter carries ``bounds``), a path (metavar ending DIR, FILE or JSON), a folder
# name (metavar NAME), a flag (takes no value: nothing to feed), else a name.  Each value below is wrong for its kind.

FILE = "{a regular file}"
BENEATH = "{a path beneath a regular file}"
HOSTILE = {
    "number": ["99999999999999999999", "1" + "0" * 400, "-1", "-99999999999999999999", "", " ", "１２", "٣",
               "nan", "inf", "-inf", "1e999", "0x10", "1_0", "8 8", "\x00"],
    "integer": ["1.5", "8.0", "1e3"],  # and every number above
    "path": ["", FILE, BENEATH, "/proc/rnnbench/x", "x" * 300, "x/" * 3000, "\x00"],
    "name": ["", " ", "nope", "ü", "名前", "x" * 5000, "\x00", "../../x"],
    "folder name": ["", " ", ".", "..", "ü", "名前", "x" * 300, "\x00", "../../x", "a/b"],  # --machine: any word

    "list": [",", "a,,b", "a,", ",a"],  # and, per item, every value of the item's kind
}
# Minimal valid command lines; the option under test is added (or replaces the base's own value).
BASE = {
    "run": ["run", "--backends", "torch_eager", "--cells", "lstm", "--mode", "forward", "--batch", "2",
            "--seq-len", "2", "--hidden", "4"],
    "train": ["train", "--task", "copy", "--backend", "torch_eager", "--hidden", "4", "--steps", "1"],
    "report": ["report", RUN],
    "recommend": ["recommend", "--cell", "lstm", "--batch", "8", "--seq-len", "8", "--hidden", "8", "--mode",
                  "forward", "--device", "cpu", "--measure", "--backends", "torch_eager", "--results", RUN],
    "history": ["history", "{asv results}", "--out", "h"],
    "list": ["list"],
    "check": ["check", "torch_eager", "--dtype", "float32", "--cells", "lstm"],
}


def _options():
    """(command, flag or None for a positional, kind, list?) for every option of every command."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, p in sub.choices.items():
        for action in p._actions:
            if action.nargs == 0 or isinstance(action, argparse._HelpAction):
                continue  # a flag: no value to feed
            convert = getattr(action.type, "item", action.type)
            if hasattr(convert, "bounds"):
                kind = "integer" if convert.integer else "number"
            else:  # names, choices, booleans: words it does not know
                kind = {"NAME": "folder name"}.get(action.metavar) or \
                    ("path" if (action.metavar or "").endswith(cli.PATH_METAVARS) else "name")
            yield command, (action.option_strings or [None])[-1], kind, hasattr(action.type, "item"), action.dest


def _hostile_cases():
    cases = []
    for command, flag, kind, is_list, dest in _options():
        values = list(HOSTILE[kind]) + (HOSTILE["number"] if kind == "integer" else [])
        if is_list:
            values += HOSTILE["list"] + [f"{v},{v}" for v in values[:3]]
        for value in values:
            cases.append(pytest.param(command, flag, value, id=f"{command} {flag or dest} {value[:12]!r}"))
    return cases


def test_the_hostile_cases_reach_every_option_of_every_command():
    options = {(c, f or d) for c, f, _, _, d in _options()}
    assert set(BASE) == set(cli.COMMANDS) and {c for c, _ in options} == set(cli.COMMANDS)  # list: --plugin
    for must in [("run", "--batch"), ("run", "--rounds"), ("train", "--steps"), ("train", "--seed"),
                 ("recommend", "--budget-s"), ("recommend", "--from-state-dict"), ("report", "inputs"),
                 ("history", "results"), ("run", "--resume")]:
        assert must in options, must
    kinds = {(c, f): k for c, f, k, _, _ in _options()}
    assert kinds[("run", "--rounds")] == "integer" and kinds[("recommend", "--budget-s")] == "number"
    assert kinds[("run", "--out")] == kinds[("report", None)] == kinds[("recommend", "--from-state-dict")] == "path"


def _command_line(command, flag, value, tmp: Path) -> list[str]:
    base = list(BASE[command])
    if flag is None:  # a positional: replace the base's (report's run, history's results)
        base = [command, value] + base[2:]
    elif flag in base:
        i = base.index(flag)
        base[i + 1] = value
    else:
        base += [flag, value]
    (tmp / "afile").write_text("not what any option wants\n")
    (tmp / "asv").mkdir(exist_ok=True)
    filled = [str(tmp / "afile") if a == FILE else str(tmp / "afile" / "below") if a == BENEATH else
              str(tmp / "asv") if a == "{asv results}" else a for a in base]
    return filled


@pytest.mark.parametrize("command, flag, value", _hostile_cases())
def test_every_option_refuses_hostile_values(command, flag, value, tmp_path, monkeypatch, capsys, no_work):
    """One line on stderr, exit 2, no traceback, nothing written (in the tmp dir, the default outputs' home)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    args = _materialise(_command_line(command, flag, value, tmp_path), tmp_path, [])
    before = _snapshot(tmp_path)
    code = cli.main(args)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, err, captured.out[-300:])
    assert len(err.splitlines()) == 1 and err.startswith(("error: ", "rnnbench")), err
    assert "Traceback" not in captured.err + captured.out and not captured.out, captured.out
    assert _snapshot(tmp_path) == before


def _offered_choices():
    """(command, flag, value) for every name an option's help offers ("one of: a, b, c")."""
    import re

    for command, flag, kind, _, _ in _options():
        if kind != "name" or flag is None:
            continue
        action = next(a for a in _subparser(command)._actions if flag in a.option_strings)
        for names in re.findall(r"one of: ([\w:\-, ]+)", action.help or ""):
            for value in names.split(","):
                yield pytest.param(command, flag, value.strip(), id=f"{command} {flag} {value.strip()}")


def _subparser(command):
    parser = cli.build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


@pytest.mark.parametrize("command, flag, value", list(_offered_choices()))
def test_every_choice_the_help_offers_is_accepted(command, flag, value, tmp_path, monkeypatch, capsys, no_work):
    """What --help offers passes validation (it reaches the work, which the test stops), or is refused for
    a reason other than its name (a device this machine lacks)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    value = {"uniform:MIN": "uniform:2", "zipf:A": "zipf:1.5"}.get(value, value)  # the forms, filled in
    args = _materialise(_command_line(command, flag, value, tmp_path), tmp_path, [])
    try:
        code = cli.main(args)
    except AssertionError as exc:  # no_work: validation passed
        assert "past validation" in str(exc)
        return
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "unknown" not in err and "invalid choice" not in err and "valid:" not in err, err

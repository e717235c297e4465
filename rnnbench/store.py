"""Run folders, the environment of a run, the record schema (checked at append), loading runs.

A run is ``ROOT/<machine>/<run-id>/`` holding ``run.json`` (the environment,
once, written then renamed) and ``records.jsonl`` (one measurement a line,
appended whole).  A run cut short keeps every record it finished; ``resume``
repairs a torn last line and tells the sweep what is still missing.

Files we wrote are read defensively: ``run.json`` carries a ``schema`` version
and is validated; readers skip a garbage line with one warning naming file and
line, while ``resume`` refuses a run whose middle is corrupt; an append checks
the bytes written and truncates back to the last whole line on a short write.
One process writes a run: an exclusive ``fcntl.flock`` on ``RUN/.lock`` (which
holds the writer's pid) from create or resume to ``release``.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import numbers
import os
import platform
import shlex
import sys
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

from .config import ConfigError

RECORDS = "records.jsonl"
RUN_JSON = "run.json"
LOCK = ".lock"
# run.json's layout; a run of another version is refused, never reinterpreted (no field: written before
# the field existed, the same layout as 1)
RUN_SCHEMA = 1
STATUSES = ("ok", "unsupported", "oom", "error", "timeout")
COMMON_FIELDS = (
    "run_id", "kind", "backend", "backend_kind", "framework", "impl_label", "device", "dtype", "cell",
    "layers", "batch", "seq_len", "input_size", "hidden", "status", "message", "threads", "matmul_precision",
)
TIMING_FIELDS = (
    "mode", "median_s", "iqr_s", "samples_s", "compile_s", "tokens_per_s", "peak_bytes", "peak_method",
    "max_rel_err", "sdpa_kernel", "flops", "bytes", "achieved_flops_per_s", "fraction_of_peak",
    "fraction_of_recurrent_roofline", "round", "repeats", "contention", "contended", "remeasured", "state_bytes",
    "ranked", "thread_limit",
)
# a calibration record (rnnbench.measure.calibration_record): the fixed workload one measuring process timed
# before its configurations (``backend``, ``round`` and ``thread_limit`` name that process's batch), so a
# comparison of two runs can tell the machine's drift between them from a change of the code
CALIBRATION_FIELDS = ("calibration_matmul_s", "calibration_loop_s", "round", "thread_limit", "contention", "pid")
STABILITY_FIELDS = ("grad_profile", "grad_decay_per_step", "nan_count", "inf_count")
# the model and batch axes (issue 19) that every record of a timing job carries (measure writes them; a
# record written before they existed measured a unidirectional, full-length batch: results fills those
# in), and a bidirectional model's second gradient profile
RAGGED_FIELDS = ("bidirectional", "lengths", "length_mean", "length_min", "padded_tokens_per_s")
REVERSE_PROFILE_FIELDS = ("grad_profile_reverse", "grad_decay_per_step_reverse")
# an instructions record (``rnnbench run --metric instructions``): the figure it holds, instructions per call
# by difference of two windows, and those windows as [calls, instructions collected] pairs
INSTRUCTION_FIELDS = ("metric", "instructions", "instruction_windows")
TRAINING_FIELDS = (
    "task", "step", "loss", "grad_norm", "metric", "baseline_metric", "data_sha256", "step_s", "nan_count",
    "metric_name", "param_count", "beats_baseline", "elapsed_s", "steps", "seed", "target_metric", "budget_s",
    "stop_at_target", "depth_walk",
)
# a training run's verdict (rnnbench.train.time_to_quality), on its last record only
QUALITY_FIELDS = ("target_reached", "steps_to_target", "time_to_target_s", "compile_s", "train_s")

# -- the record schema: what every record holds, what a finished one adds, and each field's type --
_TEXT, _INT, _REAL, _LIST, _FLAG = (str,), (numbers.Integral,), (numbers.Real,), (list, tuple), (bool,)
FIELD_TYPES = {
    **dict.fromkeys(("run_id", "kind", "backend", "backend_kind", "framework", "impl_label", "device", "dtype",
                     "cell", "status", "message", "matmul_precision", "mode", "peak_method", "sdpa_kernel", "task",
                     "data_sha256", "metric_name"), _TEXT),
    **dict.fromkeys(("layers", "batch", "seq_len", "input_size", "hidden", "threads", "peak_bytes", "nan_count",
                     "inf_count", "step", "steps", "seed", "param_count", "round", "repeats", "remeasured",
                     "state_bytes", "steps_to_target", "thread_limit", "pid"), _INT),
    **dict.fromkeys(("flops", "bytes",  # counts, but large: a float is as good
                     "median_s", "iqr_s", "compile_s", "tokens_per_s", "max_rel_err", "achieved_flops_per_s",
                     "fraction_of_peak", "fraction_of_recurrent_roofline", "contention", "grad_decay_per_step",
                     "loss", "grad_norm",
                     "metric", "baseline_metric", "step_s", "elapsed_s", "target_metric", "budget_s",
                     "time_to_target_s", "train_s", "calibration_matmul_s", "calibration_loop_s"), _REAL),
    "samples_s": _LIST, "grad_profile": _LIST, "beats_baseline": _FLAG, "contended": _FLAG, "ranked": _FLAG,
    "bidirectional": _FLAG, "lengths": _TEXT, "length_mean": _REAL, "length_min": _INT, "padded_tokens_per_s": _REAL,
    "grad_profile_reverse": _LIST, "grad_decay_per_step_reverse": _REAL,
    "instructions": _REAL, "instruction_windows": _LIST,
    "target_reached": _FLAG, "stop_at_target": _FLAG, "depth_walk": _FLAG,
    "seq_lens": _TEXT, "seeds": _INT, "tried_seq_lens": _LIST, "reached_seq_lens": _LIST, "boundary_seq_len": _INT,
    "boundary_reached": _INT, "boundary_runs": _INT,
}
# a field whose type depends on the kind: a training record's ``metric`` is the task's figure (a number),
# an instructions record's names what it counts
FIELD_TYPES_BY_KIND = {"instructions": {"metric": _TEXT}}
# every record, finished or not (a failure record names its configuration, its status and why)
REQUIRED = ("run_id", "kind", "backend", "device", "dtype", "cell", "layers", "batch", "seq_len", "input_size",
            "hidden", "status", "message")
# kinds whose records measure no configuration: what every one of them holds instead of REQUIRED
REQUIRED_BY_KIND = {"calibration": ("run_id", "kind", "backend", "status", "message")}
# what a finished (status ok) record adds, per kind; None is allowed where a value can be unknown
REQUIRED_OK = {
    "timing": COMMON_FIELDS + ("mode", "median_s", "iqr_s", "samples_s", "compile_s", "tokens_per_s",
                               "peak_bytes", "peak_method", "flops", "bytes", "achieved_flops_per_s",
                               "fraction_of_peak", "fraction_of_recurrent_roofline", "round", "repeats",
                               "contention", "contended"),
    "stability": COMMON_FIELDS + STABILITY_FIELDS,
    "instructions": COMMON_FIELDS + ("mode", "round") + INSTRUCTION_FIELDS,
    "training": COMMON_FIELDS + ("task", "step", "loss", "grad_norm", "metric", "baseline_metric", "data_sha256",
                                 "step_s", "nan_count", "steps", "seed", "target_metric"),
    # a memory-depth walk's verdict (rnnbench.jobs.DepthJob); boundary_seq_len is None where no length was reached
    "depth": COMMON_FIELDS + ("task", "seq_lens", "seeds", "steps", "budget_s", "tried_seq_lens", "reached_seq_lens",
                              "boundary_seq_len", "boundary_reached", "boundary_runs", "grad_decay_per_step"),
    "calibration": CALIBRATION_FIELDS,
}
REQUIRED_BY_BACKEND_KIND = {("timing", "rnn"): ("max_rel_err",), ("timing", "baseline"): ("sdpa_kernel",)}
REQUIRED_BY_MODE = {("timing", "decode"): ("state_bytes",)}  # the state a decode step reads (h/c, or a KV cache)
# a field that brings others with it: a training run's verdict is whole (steps_to_target and
# time_to_target_s are None when the target was not reached)
REQUIRED_WITH = {("training", "target_reached"): QUALITY_FIELDS}
NOT_NULL = ("run_id", "kind", "backend", "status", "message")
KINDS = tuple(REQUIRED_OK)


class RecordError(ValueError):
    """A record that breaks the schema: a bug in the code that made it, never bad user input."""


class StoreError(RuntimeError):
    """A run's files could not be written (disk full, a file size limit); what was whole is kept."""


def check_record(record: dict) -> None:
    """Raise RecordError naming every missing or mistyped field (extra fields are allowed)."""
    problems = []
    kind, status = record.get("kind"), record.get("status")
    if kind not in KINDS:
        problems.append(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if status not in STATUSES:
        problems.append(f"status {status!r} is not one of {', '.join(STATUSES)}")
    required = list(REQUIRED_BY_KIND.get(kind, REQUIRED))
    if status == "ok" and kind in REQUIRED_OK:
        required += REQUIRED_OK[kind] + REQUIRED_BY_BACKEND_KIND.get((kind, record.get("backend_kind")), ()) \
            + REQUIRED_BY_MODE.get((kind, record.get("mode")), ()) \
            + sum((fields for (k, present), fields in REQUIRED_WITH.items() if k == kind and present in record), ())
    missing = [f for f in dict.fromkeys(required) if f not in record]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    for name, value in record.items():
        types = FIELD_TYPES_BY_KIND.get(kind, {}).get(name) or FIELD_TYPES.get(name)
        if types is None or (value is None and name not in NOT_NULL):
            continue
        wrong_bool = isinstance(value, bool) and types is not _FLAG
        if wrong_bool or not isinstance(value, types):
            problems.append(f"{name}={value!r:.60} is a {type(value).__name__}, not {' or '.join(t.__name__ for t in types)}")
    if problems:
        raise RecordError(f"{kind} record of {record.get('backend')}: " + "; ".join(problems))


REPO_ROOT = Path(__file__).resolve().parent.parent


def default_machine() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", socket.gethostname()) or "machine"


def git_state() -> dict:
    """Commit and dirtiness of the source tree the code runs from (None outside a git checkout)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def environment(devices, argv=None) -> dict:
    """What run.json holds about the machine and the command (once per run)."""
    from impls import runtime

    argv = sys.argv[1:] if argv is None else argv
    return {
        "command": " ".join(shlex.quote(a) for a in ["rnnbench", *argv]),
        "hostname": platform.node(),
        "cpu_model": runtime.cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": next((runtime.gpu_info(d) for d in devices if d.startswith("cuda")), {}),
        "versions": runtime.versions(),
    }


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{path} could not be written ({exc.strerror or exc}); the previous version is kept") from None


def read_info(path: Path) -> dict:
    """A run's run.json, validated; ConfigError naming the file and what is wrong."""
    path = Path(path)
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path.parent} is not a run folder (no {RUN_JSON})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{path}: not an object (a run's {RUN_JSON} is a JSON object)")
    schema = info.get("schema", 1)
    if schema != RUN_SCHEMA:
        raise ConfigError(f"{path}: run.json schema {schema!r}, but this rnnbench reads schema {RUN_SCHEMA}; "
                          "open it with the rnnbench version that wrote it")
    problems = []
    if not isinstance(info.get("run_id"), str) or not info["run_id"]:
        problems.append("no run_id (a string)")
    if not isinstance(info.get("jobs", []), list) or not all(isinstance(j, dict) for j in info.get("jobs", [])):
        problems.append("jobs is not a list of objects")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return info


# -- one writer per run ------------------------------------------------------------------------

_HELD: dict[str, list] = {}  # run folder -> [lock fd, holders in this process]


def lock_run(path) -> None:
    """Hold the run's lock (re-entrant within a process); ConfigError "run in use by pid N" otherwise."""
    key = os.path.realpath(path)
    if key in _HELD:
        _HELD[key][1] += 1
        return
    lock_path = Path(key) / LOCK
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"{path}: the run cannot be locked for writing ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(f"run in use by pid {pid}: {path} (one process writes a run at a time)") from None
        try:
            current = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # its holder removed that lock file as we opened it: take the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = [fd, 1]


def unlock_run(path) -> None:
    key = os.path.realpath(path)
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        del _HELD[key]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(key) / LOCK)
        os.close(held[0])


class Run:
    """One run folder; appends are whole lines, so readers never see half a record."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.info = read_info(self.path / RUN_JSON)
        self.run_id = self.info["run_id"]

    @classmethod
    def create(cls, root, machine: str | None, info: dict) -> "Run":
        machine = machine or default_machine()
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        path = Path(root) / machine / run_id
        path.mkdir(parents=True, exist_ok=False)
        lock_run(path)
        info = {"schema": RUN_SCHEMA, "run_id": run_id, "machine": machine,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **git_state(), **info}
        write_json_atomic(path / RUN_JSON, info)
        (path / RECORDS).touch()
        return cls(path)

    @classmethod
    def resume(cls, path) -> "Run":
        """Open an existing run to write it (locked): a torn last line left by a crash mid-write is cut
        off; a line in the middle that is not a whole record is refused (ConfigError naming file:line)."""
        path = Path(path)
        if not (path / RUN_JSON).is_file():
            raise ConfigError(f"{path} is not a run folder (no {RUN_JSON})")
        lock_run(path)
        try:
            run = cls(path)
            records = path / RECORDS
            data = records.read_bytes() if records.exists() else b""
            whole = data.rfind(b"\n") + 1
            for n, raw in enumerate(data[:whole].split(b"\n")[:-1], 1):
                if _parse(raw) is None:
                    raise ConfigError(f"{records}:{n}: not a whole JSON record, in the middle of the run: not resumed "
                                      "(only a torn last line is repaired); move the line out or start a new run")
            if whole < len(data):
                with open(records, "r+b") as f:
                    f.truncate(whole)
        except BaseException:
            unlock_run(path)
            raise
        return run

    def release(self) -> None:
        """Give up this process's hold on the run's lock (create and resume take it)."""
        unlock_run(self.path)

    def update_info(self, **fields) -> None:
        self.info.update(fields)
        write_json_atomic(self.path / RUN_JSON, self.info)

    def append(self, record: dict) -> dict:
        record = {"run_id": self.run_id, **record}
        text = json.dumps(record, default=_json_default)
        check_record(json.loads(text))  # as a reader will see it (NumPy values become JSON numbers)
        line = (text + "\n").encode()
        path = self.path / RECORDS
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.fstat(fd).st_size
            try:
                written, why = os.write(fd, line), ""  # one write of the whole line on an O_APPEND descriptor
            except OSError as exc:
                written, why = 0, f", {exc.strerror or exc}"
            if written != len(line):
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)  # back to the last whole line
                raise StoreError(f"{path}: short write ({written} of {len(line)} bytes{why}): the disk is full or "
                                 f"a file size limit was reached; every whole record is kept, and "
                                 f"rnnbench run --resume {self.path} completes the run")
        finally:
            os.close(fd)
        return record

    def records(self) -> list[dict]:
        return read_records(self.path / RECORDS)


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def _parse(raw: bytes) -> dict | None:
    try:
        record = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        return None
    return record if isinstance(record, dict) else None


def read_records(path: Path) -> list[dict]:
    """The whole records of a records.jsonl; a garbage line is skipped with one warning naming file:line."""
    out, bad = [], []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):  # a torn last line (a write cut short, or in progress) is not a record
                break
            record = _parse(raw)
            if record is None:
                bad.append(n)
            else:
                out.append(record)
    if bad:
        more = f" (lines {', '.join(map(str, bad[:10]))}{', ...' if len(bad) > 10 else ''})" if len(bad) > 1 else ""
        print(f"warning: {path}:{bad[0]}: skipped {len(bad)} line(s) that are not whole JSON records{more}",
              file=sys.stderr)
    return out


def find_runs(paths) -> list[Path]:
    """Run folders under the given paths (a run folder itself, or any folder above runs)."""
    found = []
    for p in map(Path, paths):
        if (p / RUN_JSON).is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(q.parent for q in p.rglob(RUN_JSON)))
        else:
            raise FileNotFoundError(f"{p} is neither a run folder nor a folder of runs")
    return found


def load(paths):
    """One or many runs -> one long-form DataFrame, each record joined with its run's environment."""
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = []
    for run_dir in find_runs(paths):
        info = read_info(run_dir / RUN_JSON)
        recs = read_records(run_dir / RECORDS) if (run_dir / RECORDS).exists() else []
        if not recs:
            continue
        df = pd.DataFrame(recs)
        env = {
            "machine": info.get("machine"), "commit": info.get("commit"), "dirty": info.get("dirty"),
            "cpu_model": info.get("cpu_model"), "gpu": (info.get("gpu") or {}).get("gpu"),
            **{f"version_{k}": v for k, v in (info.get("versions") or {}).items()},
            "run_dir": str(run_dir),
        }
        for key, value in env.items():
            if key not in df:
                df[key] = value
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=list(COMMON_FIELDS))
    return pd.concat(frames, ignore_index=True)

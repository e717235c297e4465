"""Run folders, the environment of a run, the record schema (checked at append), loading runs.

A run is ``ROOT/<machine>/<run-id>/`` holding ``run.json`` (the environment,
once, written then renamed) and ``records.jsonl`` (one measurement a line,
appended whole).  A run cut short keeps every record it finished; ``resume``
repairs a torn last line and tells the sweep what is still missing.
"""
from __future__ import annotations

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

RECORDS = "records.jsonl"
RUN_JSON = "run.json"
STATUSES = ("ok", "unsupported", "oom", "error", "timeout")
COMMON_FIELDS = (
    "run_id", "kind", "backend", "backend_kind", "framework", "impl_label", "device", "dtype", "cell",
    "layers", "batch", "seq_len", "input_size", "hidden", "status", "message", "threads", "matmul_precision",
)
TIMING_FIELDS = (
    "mode", "median_s", "iqr_s", "samples_s", "compile_s", "tokens_per_s", "peak_bytes", "peak_method",
    "max_rel_err", "sdpa_kernel", "flops", "bytes", "achieved_flops_per_s", "fraction_of_peak",
    "fraction_of_step_bound",
)
STABILITY_FIELDS = ("grad_profile", "grad_decay_per_step", "nan_count", "inf_count")
TRAINING_FIELDS = (
    "task", "step", "loss", "grad_norm", "metric", "baseline_metric", "data_sha256", "step_s", "nan_count",
    "metric_name", "param_count", "beats_baseline", "elapsed_s", "steps", "seed",
)

# -- the record schema: what every record holds, what a finished one adds, and each field's type --
_TEXT, _INT, _REAL, _LIST, _FLAG = (str,), (numbers.Integral,), (numbers.Real,), (list, tuple), (bool,)
FIELD_TYPES = {
    **dict.fromkeys(("run_id", "kind", "backend", "backend_kind", "framework", "impl_label", "device", "dtype",
                     "cell", "status", "message", "matmul_precision", "mode", "peak_method", "sdpa_kernel", "task",
                     "data_sha256", "metric_name"), _TEXT),
    **dict.fromkeys(("layers", "batch", "seq_len", "input_size", "hidden", "threads", "peak_bytes", "nan_count",
                     "inf_count", "step", "steps", "seed", "param_count"), _INT),
    **dict.fromkeys(("flops", "bytes",  # counts, but large: a float is as good
                     "median_s", "iqr_s", "compile_s", "tokens_per_s", "max_rel_err", "achieved_flops_per_s",
                     "fraction_of_peak", "fraction_of_step_bound", "grad_decay_per_step", "loss", "grad_norm",
                     "metric", "baseline_metric", "step_s", "elapsed_s"), _REAL),
    "samples_s": _LIST, "grad_profile": _LIST, "beats_baseline": _FLAG,
}
# every record, finished or not (a failure record names its configuration, its status and why)
REQUIRED = ("run_id", "kind", "backend", "device", "dtype", "cell", "layers", "batch", "seq_len", "input_size",
            "hidden", "status", "message")
# what a finished (status ok) record adds, per kind; None is allowed where a value can be unknown
REQUIRED_OK = {
    "timing": COMMON_FIELDS + ("mode", "median_s", "iqr_s", "samples_s", "compile_s", "tokens_per_s",
                               "peak_bytes", "peak_method", "flops", "bytes", "achieved_flops_per_s",
                               "fraction_of_peak", "fraction_of_step_bound"),
    "stability": COMMON_FIELDS + STABILITY_FIELDS,
    "training": COMMON_FIELDS + ("task", "step", "loss", "grad_norm", "metric", "baseline_metric", "data_sha256",
                                 "step_s", "nan_count", "steps", "seed"),
}
REQUIRED_BY_BACKEND_KIND = {("timing", "rnn"): ("max_rel_err",), ("timing", "baseline"): ("sdpa_kernel",)}
NOT_NULL = ("run_id", "kind", "backend", "status", "message")
KINDS = tuple(REQUIRED_OK)


class RecordError(ValueError):
    """A record that breaks the schema: a bug in the code that made it, never bad user input."""


def check_record(record: dict) -> None:
    """Raise RecordError naming every missing or mistyped field (extra fields are allowed)."""
    problems = []
    kind, status = record.get("kind"), record.get("status")
    if kind not in KINDS:
        problems.append(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if status not in STATUSES:
        problems.append(f"status {status!r} is not one of {', '.join(STATUSES)}")
    required = list(REQUIRED)
    if status == "ok" and kind in REQUIRED_OK:
        required += REQUIRED_OK[kind] + REQUIRED_BY_BACKEND_KIND.get((kind, record.get("backend_kind")), ())
    missing = [f for f in dict.fromkeys(required) if f not in record]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    for name, value in record.items():
        types = FIELD_TYPES.get(name)
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
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


class Run:
    """One run folder; appends are whole lines, so readers never see half a record."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.info = json.loads((self.path / RUN_JSON).read_text())
        self.run_id = self.info["run_id"]

    @classmethod
    def create(cls, root, machine: str | None, info: dict) -> "Run":
        machine = machine or default_machine()
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        path = Path(root) / machine / run_id
        path.mkdir(parents=True, exist_ok=False)
        info = {"run_id": run_id, "machine": machine, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **git_state(), **info}
        write_json_atomic(path / RUN_JSON, info)
        (path / RECORDS).touch()
        return cls(path)

    @classmethod
    def resume(cls, path) -> "Run":
        """Open an existing run, cutting off a torn last line left by a crash mid-write."""
        path = Path(path)
        if not (path / RUN_JSON).is_file():
            raise FileNotFoundError(f"{path} is not a run folder (no {RUN_JSON})")
        records = path / RECORDS
        data = records.read_bytes() if records.exists() else b""
        if data and not data.endswith(b"\n"):
            with open(records, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
        return cls(path)

    def update_info(self, **fields) -> None:
        self.info.update(fields)
        write_json_atomic(self.path / RUN_JSON, self.info)

    def append(self, record: dict) -> dict:
        record = {"run_id": self.run_id, **record}
        text = json.dumps(record, default=_json_default)
        check_record(json.loads(text))  # as a reader will see it (NumPy values become JSON numbers)
        line = (text + "\n").encode()
        fd = os.open(self.path / RECORDS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of the whole line on an O_APPEND descriptor
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


def read_records(path: Path) -> list[dict]:
    out = []
    with open(path) as f:
        for line in f:
            if line.endswith("\n"):  # a torn last line is not a record
                out.append(json.loads(line))
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
        info = json.loads((run_dir / RUN_JSON).read_text())
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

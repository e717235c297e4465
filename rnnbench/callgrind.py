"""Instruction counts under valgrind's callgrind: the client requests, the command line, the difference.

Standard library only, and no import of the rest of the harness, so that the asv gate
(benchmarks/gate.py) loads this very file by path and counts every old commit the same way.

A process runs under ``valgrind --tool=callgrind --instr-atstart=no``: nothing is instrumented
until a client request switches it on.  ``Collector.count(fn, calls)`` zeroes the counters,
switches instrumentation on, calls ``fn`` that many times, switches it off and dumps the counts
(``CALLGRIND_DUMP_STATS_AT``), all synchronously inside this process, then reads the dump's
``totals:`` line.  What the switching costs (and any constant work around the calls) is the same
in every window, so ``per_call`` takes the difference of two windows of fixed call counts and
divides by the difference of the counts; no loop ever depends on time.  ``callgrind_control``
is not used: it acts asynchronously, whenever the client next polls, which blurs the window.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

HEADER = Path("/usr/include/valgrind/callgrind.h")
PACKAGE = "valgrind"  # Debian's and Ubuntu's package of valgrind, which ships callgrind.h
# What the client requests do; a macro expands to a no-op sequence when not under valgrind.
C_SOURCE = """#include <valgrind/callgrind.h>
int rnnbench_on_valgrind(void) { return RUNNING_ON_VALGRIND; }
void rnnbench_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void rnnbench_stop(const char *label) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT(label); }
"""
# The two windows' call counts: enough calls that the per-call figure is a difference of counts
# far above the windows' constant part, few enough that a train step of the eager loop stays cheap.
CALLS = (1, 3)
# One thread everywhere: a thread pool's spinning is counted too and varies with scheduling.
# PYTHONHASHSEED fixes set and dict iteration orders, which otherwise change the work per process.
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}
OUT_DIR_ENV = "RNNBENCH_CALLGRIND_OUT"  # where the process under valgrind finds its dumps


def setup_problem() -> str | None:
    """Why instructions cannot be counted on this machine (one line naming what to install), or None."""
    if shutil.which("valgrind") is None:
        return f"valgrind is not installed: install the {PACKAGE} package (apt-get install {PACKAGE})"
    if not HEADER.is_file():
        return f"{HEADER} is missing: install the {PACKAGE} package (apt-get install {PACKAGE})"
    if shutil.which("cc") is None:
        return "no C compiler (cc) to build the callgrind client-request helper: install gcc"
    return None


def build_helper(cache_dir) -> Path:
    """The shared library of the client requests, compiled once per source and header into ``cache_dir``."""
    digest = hashlib.sha256(C_SOURCE.encode() + HEADER.read_bytes()).hexdigest()[:16]
    lib = Path(cache_dir) / f"callgrind-requests-{digest}.so"
    if lib.is_file():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    src = lib.with_suffix(f".{os.getpid()}.c")
    tmp = lib.with_suffix(f".{os.getpid()}.tmp")
    try:
        src.write_text(C_SOURCE)
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(tmp), str(src)], check=True,
                       capture_output=True, text=True, timeout=120)
        os.replace(tmp, lib)  # another process building the same helper meanwhile is harmless
    finally:
        src.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return lib


def command(out_dir, argv: list[str]) -> list[str]:
    """``argv`` under callgrind, instrumentation off until a client request, dumps into ``out_dir``."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no", "--dump-line=no",
            "--compress-strings=no", f"--callgrind-out-file={Path(out_dir) / 'callgrind.out.%p'}", *argv]


def environment(out_dir, base: dict | None = None) -> dict:
    """The environment of a counting process: one thread, fixed hashing, where its dumps go."""
    env = dict(os.environ if base is None else base)
    env.update(SINGLE_THREAD_ENV)
    env[OUT_DIR_ENV] = str(out_dir)
    return env


def per_call(windows: dict) -> float:
    """Instructions of one call from windows {calls: instructions collected}: the difference of the
    largest and smallest window over the difference of their calls (what every window shares cancels)."""
    if len(windows) < 2:
        raise ValueError(f"two windows of different call counts are needed, got {sorted(windows)}")
    low, high = min(windows), max(windows)
    return (windows[high] - windows[low]) / (high - low)


def read_totals(path) -> int:
    """The instructions (event Ir) collected in one callgrind dump: its ``totals:`` line."""
    for line in Path(path).read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise ValueError(f"{path}: no totals line (not a callgrind dump)")


class Collector:
    """The client requests of this process under callgrind: count fixed numbers of calls of a function."""

    def __init__(self, cache_dir):
        self.lib = ctypes.CDLL(str(build_helper(cache_dir)))
        self.lib.rnnbench_stop.argtypes = [ctypes.c_char_p]
        if not self.lib.rnnbench_on_valgrind():
            raise RuntimeError("not running under valgrind: start the process with callgrind.command()")
        self.out_dir = Path(os.environ[OUT_DIR_ENV])
        self.windows = 0

    def collect(self, fn, calls: int) -> int:
        """Instructions executed by ``calls`` calls of ``fn`` (and the constant work of one window)."""
        self.windows += 1
        label = f"rnnbench-window-{self.windows}"
        before = set(self.out_dir.glob(f"callgrind.out.{os.getpid()}.*"))
        self.lib.rnnbench_start()
        for _ in range(calls):
            fn()
        self.lib.rnnbench_stop(label.encode())
        (dump,) = set(self.out_dir.glob(f"callgrind.out.{os.getpid()}.*")) - before  # written before stop returns
        try:
            return read_totals(dump)
        finally:
            dump.unlink()

    def count(self, fn, calls=CALLS) -> tuple[float, dict]:
        """(instructions per call, {calls: instructions of that window}) by difference of the windows."""
        windows = {n: self.collect(fn, n) for n in calls}
        return per_call(windows), windows

"""Framework-side helpers the harness needs: process set-up, memory counters, versions, ceilings.

They live in ``impls`` because the harness (``rnnbench``) never imports torch,
triton or jax itself.  Every import here is lazy.
"""
from __future__ import annotations

import importlib
import os
import platform
import subprocess
import sys


# glibc's mallopt parameters (malloc.h) and the values its dynamic thresholds rise to on 64-bit Linux
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES = 32 << 20, 64 << 20


def fix_malloc_thresholds() -> bool:
    """Set glibc's mmap and trim thresholds once, at the values its dynamic rule raises them to.

    By default glibc raises its mmap threshold (up to 32 MiB) after the first large block is freed,
    so a process that has freed one (a ceiling matmul, an earlier configuration of a sweep) serves
    the next buffers from its heap and times an eager step ~8-10% faster than a fresh process does.
    Fixed, every configuration sees the allocator a long training loop settles into, first or last.
    False where the C library is not glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


# This process's intra-op thread limit (docs/design.md "Comparisons: rounds in processes, drift, threads"),
# as ``thread_env`` set it for the frameworks
THREADS_ENV = "RNNBENCH_THREADS"
# XLA takes its CPU thread count when its client starts: one thread is these flags, more is its default
XLA_ONE_THREAD = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")


def cores_available() -> int:
    """The cores this process may run on (its affinity mask)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def thread_env(threads: int, environ=None) -> dict:
    """The environment of a new process whose frameworks each use ``threads`` intra-op threads: torch and
    NumPy's BLAS through OpenMP's and MKL's variables, XLA through its flags (one thread, or its default:
    every core the process may use, since XLA has no other count), ONNX Runtime through ``intra_op_threads``
    at build.  ``environ``: the environment it extends (default this process's)."""
    env = dict(os.environ if environ is None else environ)
    kept = [f for f in env.get("XLA_FLAGS", "").split() if f.split("=")[0].lstrip("-") not in
            {x.split("=")[0].lstrip("-") for x in XLA_ONE_THREAD}]
    env["XLA_FLAGS"] = " ".join(kept + (list(XLA_ONE_THREAD) if threads == 1 else []))
    if not env["XLA_FLAGS"]:
        del env["XLA_FLAGS"]
    env.update({THREADS_ENV: str(threads), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return env


def thread_limit() -> int:
    """This process's intra-op thread limit (``thread_env``), 0 where none was set."""
    value = os.environ.get(THREADS_ENV, "")
    return int(value) if value.isdigit() else 0


def intra_op_threads() -> int:
    """The intra-op threads a framework that takes a count (ONNX Runtime) uses here: the limit, else every core."""
    return thread_limit() or cores_available()


def xla_threads() -> int:
    """XLA's CPU threads in this process: one under ``XLA_ONE_THREAD``, else every core it may use."""
    one = XLA_ONE_THREAD[0] in os.environ.get("XLA_FLAGS", "").split()
    return 1 if one else cores_available()


def limit_threads(threads: int) -> str:
    """Give every framework of this process ``threads`` intra-op threads from now on (``recommend --measure``,
    ``recommend_for``: they time in the caller's process); "" or what could not follow: XLA fixed its
    count when it started, so where jax was imported before, its count stays."""
    xla_before = xla_threads()
    os.environ.update(thread_env(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "jax" in sys.modules and xla_before != min(threads, cores_available()):
        return (f"XLA started with {xla_before} thread(s) before the limit was set and keeps them: for "
                f"{threads}, start a new process with {THREADS_ENV}={threads} set")
    return ""


def prepare_process() -> None:
    """Process-wide settings that must precede framework imports.

    Triton's interpreter must be chosen before triton is imported (only where no CUDA device is
    present); JAX must not grab the whole GPU when it shares the process with torch; the allocator's
    thresholds are fixed so that what ran before in the process does not move a timing; a thread
    limit (``thread_env``) reaches torch's pool too where torch was imported before it was read.
    """
    fix_malloc_thresholds()
    limit = thread_limit()
    if limit:  # the variables a parent may not have passed (a worker started by hand), before any import
        os.environ.update(thread_env(limit))
    if limit and "torch" in sys.modules:  # torch read OMP_NUM_THREADS before: its pool is set directly
        sys.modules["torch"].set_num_threads(limit)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if "TRITON_INTERPRET" not in os.environ:
        try:
            import torch
        except ImportError:
            return
        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"


def _version(module: str) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except Exception:  # missing or broken install: report as absent
        return None


def versions(frameworks=("torch", "triton", "jax", "jaxlib")) -> dict:
    """Library versions (None where missing), cuDNN's when torch has it, and Python's."""
    out = {name: _version(name) for name in frameworks}
    out["numpy"] = _version("numpy")
    out["python"] = platform.python_version()
    out["cudnn"] = None
    if out.get("torch"):
        import torch

        if torch.backends.cudnn.is_available():
            out["cudnn"] = str(torch.backends.cudnn.version())
        out["torch_cuda"] = torch.version.cuda
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info(device: str) -> dict:
    """GPU name and driver for a CUDA device; empty for the CPU."""
    if not device.startswith("cuda"):
        return {}
    import torch

    info = {"gpu": torch.cuda.get_device_name(device)}
    try:
        info["driver"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        ).stdout.split("\n")[0].strip()
    except (OSError, subprocess.TimeoutExpired):
        info["driver"] = None
    return info


def cuda_device_ok(device: str) -> tuple[bool, str]:
    """(ok, reason): torch sees ``device`` (always true of the CPU)."""
    if not device.startswith("cuda"):
        return True, ""
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA device visible to torch"
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        return False, f"{device} absent: torch sees {torch.cuda.device_count()} CUDA device(s)"
    return True, ""


def device_present(device: str) -> tuple[bool, str]:
    """Whether the device exists here (checked through torch, which every machine of ours has)."""
    if device == "cpu":
        return True, ""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed, so CUDA cannot be checked"
    return cuda_device_ok(device)


def available_memory(device: str) -> tuple[int | None, str]:
    """(bytes a new allocation can still get on the device, where that figure comes from); None: unknown.

    CPU: the kernel's MemAvailable, or less where this process's cgroup has a lower limit left.
    CUDA: the driver's free memory on the device.
    """
    if device.startswith("cuda"):  # the driver's free figure needs a context: only where one exists already
        try:
            import torch

            if torch.cuda.is_initialized():
                return int(torch.cuda.mem_get_info(torch.device(device))[0]), f"free on {device}"
            return int(torch.cuda.get_device_properties(torch.device(device)).total_memory), f"total on {device}"
        except Exception:  # noqa: BLE001 - an unknown figure refuses nothing
            return None, "unknown"
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None, "unknown"
    best = (avail, "MemAvailable")
    own = memory_cgroup()
    for limit, usage in (("memory.max", "memory.current"), ("memory.limit_in_bytes", "memory.usage_in_bytes")):
        try:
            left = int((own[0] / limit).read_text()) - int((own[0] / usage).read_text())
        except (OSError, ValueError, TypeError):  # "max", no such file, no cgroup
            continue
        if 0 <= left < best[0]:
            best = (left, f"left under the cgroup limit {own[0] / limit}")
    return best


def memory_cgroup(pid="self"):
    """(folder, version) of a process's memory cgroup (v1 memory controller, or v2 unified), or None."""
    from pathlib import Path

    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/"), 1
    for line in lines:
        if line.startswith("0::"):
            return Path("/sys/fs/cgroup") / line[3:].lstrip("/"), 2
    return None


def oom_kill_count(cgroup) -> int | None:
    """The kernel's count of OOM kills in a memory cgroup (``memory_cgroup()``), None where unreadable."""
    if cgroup is None:
        return None
    folder, version = cgroup
    try:
        text = (folder / ("memory.events" if version == 2 else "memory.oom_control")).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise OSError(f"{field} not in /proc/self/status")


def rss_rise(fn) -> int:
    """Rise of peak RSS over the current RSS during one call.

    Linux lets a process reset its RSS high-water mark (``clear_refs`` 5), so the
    imports' and the build's transient peaks do not hide the call's own.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_bytes("VmRSS")
    fn()
    return max(0, _status_bytes("VmHWM") - before)


def set_tf32(enabled: bool) -> None:
    """TF32 for torch matmuls and cuDNN; off unless a run asks for it (fair play)."""
    if "torch" in sys.modules or _version("torch"):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__}: {exc}"
    return "OutOfMemory" in text or "out of memory" in text.lower() or "RESOURCE_EXHAUSTED" in text

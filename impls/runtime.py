"""Framework-side helpers the harness needs: device timers, sync, memory counters, versions.

They live in ``impls`` because the harness (``rnnbench``) never imports torch,
triton or jax itself.  Every import here is lazy.
"""
from __future__ import annotations

import importlib
import os
import platform
import subprocess
import sys
import time


def prepare_process() -> None:
    """Process-wide settings that must precede framework imports.

    Triton's interpreter must be chosen before triton is imported (only where no CUDA device is
    present); JAX must not grab the whole GPU when it shares the process with torch.
    """
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


def device_present(device: str) -> tuple[bool, str]:
    """Whether the device exists here (checked through torch, which every machine of ours has)."""
    if device == "cpu":
        return True, ""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed, so CUDA cannot be checked"
    from .torch_common import cuda_device_ok

    return cuda_device_ok(device)


def threads(framework: str) -> int:
    if framework == "torch":
        import torch

        return torch.get_num_threads()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def set_tf32(enabled: bool) -> None:
    """TF32 for torch matmuls and cuDNN; off unless a run asks for it (fair play)."""
    if "torch" in sys.modules or _version("torch"):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def matmul_precision(framework: str, device: str) -> str:
    if not device.startswith("cuda"):
        return "ieee"
    if framework == "torch":
        import torch

        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    import jax

    return str(jax.config.jax_default_matmul_precision or "ieee")  # jax_scan traces float32 at full precision


class DeviceTimer:
    """Seconds of one call: CUDA events for torch on a GPU, else a host clock after a device sync."""

    def __init__(self, framework: str, device: str, sync):
        self.sync = sync
        self.events = framework == "torch" and device.startswith("cuda")
        if self.events:
            import torch

            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def time(self, fn) -> float:
        if self.events:
            self.sync()
            self._start.record()
            fn()
            self._end.record()
            self._end.synchronize()
            return self._start.elapsed_time(self._end) / 1e3
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0


def cuda_peak_reset(device: str) -> None:
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)


def cuda_peak_bytes(device: str) -> int:
    import torch

    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


def cuda_allocated_bytes(device: str) -> int:
    import torch

    return int(torch.cuda.memory_allocated(device))


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__}: {exc}"
    return "OutOfMemory" in text or "out of memory" in text.lower() or "RESOURCE_EXHAUSTED" in text


def xla_memory_stats(device: str) -> dict:
    """JAX's allocator counters for a GPU (bytes_in_use, peak_bytes_in_use)."""
    import jax

    index = int(device.split(":")[1]) if ":" in device else 0
    return jax.devices("gpu")[index].memory_stats() or {}


def measure_ceilings(device: str, dtypes, recurrent_shapes, seconds, tf32: bool = False) -> dict:
    """The device's measured ceilings, with torch as the instrument (any backend runs on the same chip).

    ``seconds(fn, sync) -> seconds`` is the harness's timer (rnnbench.measure.repeat), passed in
    so that there is one timing loop.  Measures a large square matmul's FLOP/s per dtype, a large
    copy's bytes/s (read + write), and for each ``(batch, hidden, gates, dtype)`` the FLOP/s of the
    recurrent matmul h [B, H] x W_hh^T [H, G*H] issued back to back, as a stepwise recurrence issues it.
    """
    import torch

    from .torch_common import TORCH_DTYPES, sync as device_sync

    set_tf32(tf32)
    cuda = device.startswith("cuda")
    sync = lambda: device_sync(device)  # noqa: E731
    gen = torch.Generator(device=device).manual_seed(0)
    n = 8192 if cuda else 2048  # large enough to reach the BLAS's plateau, quick enough to repeat

    def randn(*shape, dtype):
        return torch.randn(*shape, generator=gen, device=device).to(TORCH_DTYPES[dtype])

    matmul = {}
    for dtype in dtypes:
        a, b = randn(n, n, dtype=dtype), randn(n, n, dtype=dtype)  # [n, n]
        c = torch.empty_like(a)
        matmul[dtype] = 2 * n**3 / seconds(lambda: torch.mm(a, b, out=c), sync)
        del a, b, c
    copy_elements = (1 << 28) if cuda else (1 << 24)  # 1 GiB on a GPU, 64 MiB on a CPU (float32)
    src = randn(copy_elements, dtype="float32")
    dst = torch.empty_like(src)
    copy_bytes = 2 * src.numel() * src.element_size()  # each byte read once and written once
    copy_bytes_per_s = copy_bytes / seconds(lambda: dst.copy_(src), sync)
    del src, dst

    recurrent = []
    for batch, hidden, gates, dtype in recurrent_shapes:
        h, w_hh = randn(batch, hidden, dtype=dtype), randn(gates * hidden, hidden, dtype=dtype)  # [B, H], [G*H, H]
        out = torch.empty(batch, gates * hidden, dtype=h.dtype, device=device)  # [B, G*H]
        flops = 2 * batch * hidden * gates * hidden
        # back-to-back calls per sample: enough to hide a GPU's launch gaps behind its queue; on a CPU
        # few (tens of microseconds), so that a busy neighbour's time slice spoils few samples
        calls = max(1, min(200, int((1e9 if cuda else 2e6) // flops)))

        def chain():
            for _ in range(calls):
                torch.mm(h, w_hh.t(), out=out)

        recurrent.append({"batch": batch, "hidden": hidden, "gates": gates, "dtype": dtype,
                          "flops_per_s": flops * calls / seconds(chain, sync)})
    return {"matmul_size": n, "matmul_flops_per_s": matmul, "copy_bytes": copy_bytes,
            "copy_bytes_per_s": copy_bytes_per_s, "recurrent_matmul": recurrent,
            "matmul_precision": matmul_precision("torch", device), "threads": threads("torch"),
            "instrument": f"torch {torch.__version__}",
            # a busy machine lowers every ceiling (tiny matmuls most): the reader needs to know
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}

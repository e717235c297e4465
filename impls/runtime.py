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

    return str(jax.config.jax_default_matmul_precision or "default")


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

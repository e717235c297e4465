"""The runner contract written once for JAX backends (the twin of ``torch_common``).

jax is imported lazily, after setting ``XLA_PYTHON_CLIENT_PREALLOCATE=false``
so that JAX does not claim most of the GPU memory that torch shares with it in
one process.  ``JaxArrays`` is the boundary (NumPy in, NumPy out) and the JAX
answers to the Runner hooks (``impls.runner``).
"""
from __future__ import annotations

import os

import numpy as np

from .runner import MemoryProbe, RunnerDefaults
from .spec import check_lengths


def _jax():
    """Import jax (and jax.numpy) late, with preallocation off: torch shares the GPU."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    import jax.numpy as jnp

    return jax, jnp


def _jax_device(device: str):
    """The jax Device for ``cpu`` / ``cuda[:N]``; raises RuntimeError or IndexError when absent."""
    jax, _ = _jax()
    if device == "cpu":
        return jax.devices("cpu")[0]
    index = int(device.split(":")[1]) if ":" in device else 0
    return jax.devices("gpu")[index]


def jax_available(device: str) -> tuple[bool, str]:
    """(ok, reason): jax importable and a jax device for ``device``."""
    try:
        _jax()
    except ImportError as exc:
        return False, f"jax is not installed: {exc}"
    try:
        _jax_device(device)
    except (RuntimeError, IndexError) as exc:
        return False, f"jax sees no {device}: {exc}"
    return True, ""


class XlaPeakProbe(MemoryProbe):
    """JAX on a GPU: the allocator's peak, which cannot be reset, so read in a fresh process."""

    method = "xla_peak_rise_fresh_process"

    def __init__(self, sync, jax_device):
        super().__init__(sync)
        self.jax_device = jax_device

    def peak(self, fn, fn_one_step) -> int:
        before = (self.jax_device.memory_stats() or {}).get("bytes_in_use", 0)
        fn()
        self.sync()
        return (self.jax_device.memory_stats() or {}).get("peak_bytes_in_use", 0) - before


# dtypes the JAX backends (scan, Flax, transformer) run; float64 also needs jax_enable_x64
CPU_DTYPES = ("float32", "float64", "bfloat16")
CUDA_DTYPES = ("float32", "float64", "bfloat16")
X64_REASON = (
    "float64 in JAX needs jax_enable_x64, a process-wide flag that would change every other JAX "
    "computation in this process; run it in a process of its own started with JAX_ENABLE_X64=1"
)


def jax_dtypes(name: str, device: str) -> tuple[tuple, dict]:
    """(dtypes, reasons for the others) of a JAX backend called ``name``: the one dtype rule every JAX
    backend declares in its ``capabilities``; float64 only while jax_enable_x64 is on."""
    from .spec import DTYPES

    allowed = CUDA_DTYPES if device.startswith("cuda") else CPU_DTYPES
    reasons = {d: f"{name} on {device} supports dtypes {', '.join(allowed)}, not {d}" for d in DTYPES if d not in allowed}
    if not _jax()[0].config.jax_enable_x64:
        reasons["float64"] = X64_REASON
    return tuple(d for d in allowed if d not in reasons), reasons


class JaxArrays(RunnerDefaults):
    """Arrays at a JAX runner's boundary; a runner's ``__init__`` starts with ``_setup``."""

    def _setup(self, backend, spec, device: str, dtype: str) -> None:
        """What every JAX runner sets first: who it is, its device, its NumPy dtype, no call yet."""
        _, jnp = _jax()
        self.backend, self.spec, self.device, self.dtype = backend, spec, device, dtype
        self._jax_device = _jax_device(device)
        self._np_dtype = np.dtype(jnp.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
        self._last = None  # the last call's outputs, which sync waits for

    def sync(self) -> None:
        """Wait for the last call's results (JAX dispatches asynchronously)."""
        if self._last is not None:
            _jax()[0].block_until_ready(self._last)

    def put(self, a):
        jax, _ = _jax()
        if a is None or isinstance(a, jax.Array):
            return a
        if isinstance(a, (tuple, list)):
            return tuple(self.put(v) for v in a)
        return jax.device_put(np.asarray(a).astype(self._np_dtype), self._jax_device)

    def compile(self, x, state=None, dy=None) -> float:
        """Trace, compile and run once the forward, and forward_backward when dy is given; the seconds
        spent, so the harness reports them apart from the timed repeats."""
        import time

        t0 = time.perf_counter()
        self.forward(x, state)
        if dy is not None:
            self.forward_backward(x, state, dy)
        self.sync()
        return time.perf_counter() - t0

    def put_lengths(self, lengths, x):
        """None, or the checked lengths [B] of a ragged batch x [T, B, ...] as an int32 device array."""
        if lengths is None:
            return None
        jax, _ = _jax()
        return jax.device_put(check_lengths(np.asarray(lengths), x.shape[0], x.shape[1]).astype(np.int32),
                              self._jax_device)

    def get(self, a):
        """Array (or tuple of them) -> NumPy; bfloat16 comes back as float32 (as torch runners do)."""
        if isinstance(a, (tuple, list)):
            return type(a)(self.get(v) for v in a)
        a = np.asarray(a)
        return a.astype(np.float32) if a.dtype.name == "bfloat16" else a

    def _on_gpu(self) -> bool:
        return self._jax_device.platform in ("gpu", "cuda", "rocm")

    def memory_probe(self) -> MemoryProbe:
        return XlaPeakProbe(self.sync, self._jax_device) if self._on_gpu() else MemoryProbe(self.sync)

    def threads(self) -> int:
        """XLA's CPU threads, fixed when its client started (``runtime.thread_env``)."""
        from . import runtime

        return runtime.xla_threads()

    def matmul_precision(self) -> str:
        if not self._on_gpu():
            return "ieee"
        jax, _ = _jax()
        return str(jax.config.jax_default_matmul_precision or "ieee")  # float32 is traced at full precision

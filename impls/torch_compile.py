"""torch_eager's loop with its cell step compiled by ``torch.compile`` (inductor).

What is compiled is the cell step (recurrent matmul + gate math of one timestep),
not the unrolled loop: the graph is the same for every T, so compile time does
not grow with the sequence length (an unrolled loop of T steps compiles a graph
T times as long; users report minutes to an hour).  The loop, the hoisted input
projection, ``lengths`` masking and the reverse direction are torch_eager's own
(``EagerRNN``), so this backend inherits them.  Under autograd each compiled
step is one fused forward kernel and one fused backward kernel (AOTAutograd);
on a CPU inductor generates C++ (gcc), on CUDA Triton.

``compile_cache`` says whether inductor compiled (``cold``) or found every graph
in its on-disk cache (``warm``, a second process with the same cache directory).
"""
from __future__ import annotations

import functools
import time

import torch

from .spec import FEATURES
from .torch_common import TorchBackend
from .torch_eager import EagerRNN, EagerRunner, cell_step

# One compiled graph per (cell, dtype, shapes, grad mode, has c): above dynamo's default limit
# of 8 in one test process; hitting the limit must raise, never fall back silently to eager.
RECOMPILE_LIMIT = 64


@functools.cache
def compiled_step(cell: str, mode: str | None):
    """The compiled one-timestep function of ``cell`` (one per cell and mode, shared by runners)."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    step = functools.partial(cell_step, cell)
    return torch.compile(step, mode=mode, dynamic=False, fullgraph=True)


def _inductor_cache_counts() -> tuple[int, int]:
    """(hits, misses) of inductor's FX graph cache in this process so far."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"]


class CompiledStepRNN(EagerRNN):
    """EagerRNN whose ``cell_step`` is the compiled step of its cell."""

    def __init__(self, spec, mode: str | None):
        super().__init__(spec)
        self._step = compiled_step(spec.cell, mode)

    def cell_step(self, cell, gi_t, h, c, w_hh, b_hh):  # noqa: D102 (the compiled EagerRNN.cell_step)
        return self._step(gi_t, h, c, w_hh, b_hh)


class InductorCompileHooks:
    """The ``compile`` hook and ``compile_cache`` of a runner whose module calls compiled functions."""

    _compile_cache = None

    def compile(self, x, state=None, dy=None) -> float:
        """Compile for these shapes (forward, and backward when dy is given); seconds spent."""
        hits, misses = _inductor_cache_counts()
        t0 = time.perf_counter()
        if dy is None:
            self.forward(x, state)
        else:
            self.forward_backward(x, state, dy)
        seconds = time.perf_counter() - t0
        new_hits, new_misses = _inductor_cache_counts()
        if new_misses > misses:
            self._compile_cache = "cold"
        elif new_hits > hits:
            self._compile_cache = "warm"
        else:  # nothing reached inductor: dynamo had these graphs already in this process
            self._compile_cache = self._compile_cache or "in_process"
        return seconds

    def compile_cache(self) -> str | None:
        """``cold`` (inductor compiled), ``warm`` (all from its on-disk cache), ``in_process``
        (already compiled in this process), None before ``compile``."""
        return self._compile_cache


class CompiledRunner(InductorCompileHooks, EagerRunner):
    def make_module(self) -> torch.nn.Module:
        return CompiledStepRNN(self.spec, self.backend.mode)

    def impl_label(self) -> str:
        codegen = "triton" if self.device.startswith("cuda") else "cpp"
        return f"inductor-{codegen}" + (f"-{self.backend.mode}" if self.backend.mode else "")


class CompileBackend(TorchBackend):
    def __init__(self, name: str, mode: str | None):
        super().__init__(name, CompiledRunner, cpu_dtypes=("float32", "float64", "bfloat16"), features=FEATURES)
        self.mode = mode


def make_backend(name: str, mode: str | None = None) -> CompileBackend:
    return CompileBackend(name, mode)

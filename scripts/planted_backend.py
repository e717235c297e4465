"""A measurement-only backend: torch_cudnn with a planted slowdown, to check that comparisons see a real change.

Each forward and forward-backward call sleeps ``factor - 1`` times its own duration after it
returns, so its time is ``factor`` times torch_cudnn's with the same spread; the factor is
``$RNNBENCH_PLANTED_FACTOR`` when the backend is built (default 1.5), so that two runs can time the
same backend name with and without it.  Never registered in ``impls``: scripts/rounds_noise_bench.py
adds it with ``impls.register`` (as any plugin), in its own process.
"""
from __future__ import annotations

import os
import time

import impls
from impls.torch_cudnn import CudnnRunner
from impls.torch_common import TorchBackend


def _slowed(method, factor: float):
    def call(*args, **kwargs):
        t0 = time.perf_counter()
        out = method(*args, **kwargs)
        time.sleep((factor - 1.0) * (time.perf_counter() - t0))
        return out
    return call


def make_backend(name: str) -> TorchBackend:
    factor = float(os.environ.get("RNNBENCH_PLANTED_FACTOR", "1.5"))

    class SlowedRunner(CudnnRunner):
        forward = _slowed(CudnnRunner.forward, factor)
        forward_backward = _slowed(CudnnRunner.forward_backward, factor)

    return TorchBackend(name, SlowedRunner)


def register(name: str = "torch_cudnn_planted") -> str:
    """Add the planted backend to this process's registry."""
    impls.register(name, lambda: make_backend(name))
    return name

"""Test-only backends of known speed for ``recommend --measure`` (registered by a fixture, never in impls).

Each computes with torch_cudnn (so it passes or fails the parity check for real)
and takes a known time per call: ``seconds`` times a seeded per-call jitter
(lognormal, ``jitter`` its sigma).  It really sleeps that long, so budgets are
spent in wall time, and its ``timer`` hook reports that known duration, so the
machine's load (other engineers on these 2 cores) cannot decide a test of the
statistics.  ``error`` plants a relative error in every output and gradient.
"""
from __future__ import annotations

import time

import numpy as np


class Timed:
    """The runner's timer hook: runs the call, returns the duration the call was told to take."""

    def __init__(self, runner):
        self.runner = runner

    def time(self, fn) -> float:
        fn()
        return self.runner.last_s


class SyntheticRunner:
    def __init__(self, backend, spec, weights, device, dtype):
        import impls

        self.backend, self.spec = backend, spec
        self.inner = impls.get("torch_cudnn").build(spec, weights, device, dtype)
        self.put, self.get, self.sync = self.inner.put, self.inner.get, self.inner.sync
        self.rng = np.random.default_rng(backend.seed)
        self.last_s = 0.0

    def _wait(self):
        self.last_s = self.backend.seconds * float(np.exp(self.backend.jitter * self.rng.standard_normal()))
        time.sleep(self.last_s)

    def _planted(self, a):
        return a * (1 + self.backend.error) if self.backend.error else a

    def forward(self, x, state=None, lengths=None):
        self._wait()
        y, final = self.inner.forward(x, state)
        return self._planted(y), final

    def forward_backward(self, x, state, dy, lengths=None):
        self._wait()
        return {k: self._planted(v) for k, v in self.inner.forward_backward(x, state, dy).items()}

    def step(self, x_t, state=None):
        self._wait()
        return self.inner.step(x_t, state)

    def timer(self, sync=None):
        return Timed(self)

    def impl_label(self) -> str:
        return "synthetic"

    def module(self):
        return self.inner.module()


class SyntheticBackend:
    framework = "torch"
    kind = "rnn"

    def __init__(self, name, seconds, jitter=0.05, error=0.0, seed=0):
        self.name, self.seconds, self.jitter, self.error, self.seed = name, seconds, jitter, error, seed

    def available(self, device="cpu"):
        return (True, "") if device == "cpu" else (False, "synthetic backends run on the CPU only")

    def capabilities(self, device):
        from impls.runner import declare

        return declare(("float32",), reasons={d: f"{self.name} supports float32 only"
                                              for d in ("float64", "bfloat16", "float16")})

    def build(self, spec, weights, device="cpu", dtype="float32"):
        return SyntheticRunner(self, spec, weights, device, dtype)


def make_backend(name, **options):
    return SyntheticBackend(name, **options)

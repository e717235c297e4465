"""The contract the harness reads, written once: ``Backend`` and ``Runner`` (typing.Protocols), what a
backend runs (``capabilities``), and the runner's optional hooks with their defaults.

A backend's ``capabilities(device)`` says, per cell, the dtypes, modes and features it runs and whether
its timings mean speed (``Support.timed``: False under an interpreter or for a reference loop, with
the reason); the harness asks only ``capabilities``, ``supports`` and ``timed`` (written in ``spec``, below which
nothing in impls sits, so that every backend's ``build`` can check them).  A backend that
declares nothing gets what its ``build`` accepts at tiny shapes (``Unsupported`` means no), and no
feature (so it never silently ignores ``lengths`` or the reverse direction).

Required (docs/design.md "Runner"): ``put``, ``get``, ``forward``, ``forward_backward``,
``step``, ``sync``, ``impl_label``.  Optional hooks, which the harness asks
through ``hook(runner, name)`` and never by switching on a framework's name:

* ``compile(x, state, dy) -> seconds``: ahead-of-time compilation, reported apart.
* ``timer(sync=None) -> Timer``: times one call (``Timer.time(fn) -> seconds``), syncing with
  ``sync`` (default the runner's own: a trainer passes its step's).
* ``memory_probe() -> MemoryProbe``: how the peak memory of one iteration is read.
* ``threads() -> int`` and ``matmul_precision() -> str``: fair-play fields of a record.
* ``attention_kernel() -> str | None``: which attention kernel a baseline ran.
* ``output_size() -> int``: width of y (a baseline's d_model; else hidden, times 2 when bidirectional).
* ``decoder(x_prefix, state=None, capacity=None) -> Decoder``: decode mode's set-up, the state after
  the prefix x_prefix [S, B, I]; its ``step_after_prefix(x_t)`` is the timed call (``impls.decode``).

Framework runners get their hooks from their family's base (``torch_common``, ``jax_common``); a
new framework adds its own base and leaves the harness untouched.
"""
from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

from .spec import (MODES, Support, capabilities, declare, probed_capabilities, supports,  # noqa: F401
                   timed)  # the contract's queries, written in spec (below which nothing in impls sits)

HOOKS = ("step", "compile", "timer", "memory_probe", "threads", "matmul_precision", "attention_kernel",
         "output_size", "decoder")


@runtime_checkable
class Runner(Protocol):
    """A built model on one device (docs/design.md "Runner").  Required: the calls below.  Optional, with
    defaults in ``RunnerDefaults``: ``step``, ``module()`` (torch) or ``params``/``apply`` (JAX),
    ``dims`` (a baseline's sizes), and the hooks named in HOOKS."""

    def put(self, a) -> Any: ...  # NumPy -> a framework array on the device
    def get(self, a) -> Any: ...  # back to NumPy
    def forward(self, x, state=None, lengths=None) -> tuple: ...  # (y [T, B, D*H], final state), no graph
    def forward_backward(self, x, state, dy, lengths=None) -> dict: ...  # canonical weight names, x, h0 (c0)
    def sync(self) -> None: ...
    def impl_label(self) -> str: ...  # what really ran, detected at run time


@runtime_checkable
class Backend(Protocol):
    """A registered backend.  ``capabilities(device) -> {cell: Support}`` is optional (see above);
    ``kind`` is set by the registry."""

    name: str
    kind: str  # rnn | baseline
    framework: str  # torch | jax | onnxruntime | ...

    def available(self, device: str) -> tuple[bool, str]: ...
    def build(self, spec, weights, device: str, dtype: str) -> Runner: ...


class Timer(Protocol):
    def time(self, fn) -> float: ...


class HostTimer:
    """Seconds of one call on the host clock, between two device syncs."""

    def __init__(self, sync):
        self.sync = sync

    def time(self, fn) -> float:
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0


class MemoryProbe:
    """Peak memory of one iteration: the resident-set rise, read in a fresh process (the default).

    ``in_process`` probes run after warm-up in the timing process (a resettable device counter);
    the others need a process that has run nothing else, before any warm-up.
    """

    in_process = False
    method = "rss_rise_fresh_process"

    def __init__(self, sync):
        self.sync = sync

    def peak(self, fn, fn_one_step) -> int:
        from .runtime import rss_rise

        fn_one_step()  # warms the libraries' lazy state before the baseline
        self.sync()
        return rss_rise(lambda: (fn(), self.sync()))


class RunnerDefaults:
    """Default hooks; a runner base class inherits these and overrides what its framework does."""

    def compile(self, x, state=None, dy=None) -> float:
        return 0.0

    def step(self, x_t, state=None):
        """One timestep as ``forward`` with T=1 (docs/design.md's default): x_t [B, I] -> the new state;
        unidirectional models only."""
        from .spec import require_unidirectional

        if getattr(self, "spec", None) is not None:
            require_unidirectional(self.spec, "step")
        return self.forward(self.put(x_t)[None], state)[1]

    def timer(self, sync=None) -> Timer:
        return HostTimer(sync or self.sync)

    def memory_probe(self) -> MemoryProbe:
        return MemoryProbe(self.sync)

    def threads(self) -> int:
        from .runtime import intra_op_threads

        return intra_op_threads()

    def matmul_precision(self) -> str:
        return "ieee"

    def attention_kernel(self) -> str | None:
        return None

    def output_size(self) -> int:
        spec = self.spec
        return spec.hidden_size * (2 if getattr(spec, "bidirectional", False) else 1)

    def decoder(self, x_prefix, state=None, capacity=None):
        """A recurrent state after the prefix, stepped by ``step`` (``capacity``: a KV cache's; an
        RNN's state has a fixed size)."""
        from .decode import RecurrentDecoder

        return RecurrentDecoder(self, x_prefix, state, step=hook(self, "step"))


def hook(runner, name: str):
    """The runner's hook ``name`` as a callable: its own, or the default (runners that do not
    inherit ``RunnerDefaults`` still get every hook).  A plain attribute (``output_size = 64``)
    is returned as a callable giving that value."""
    if name not in HOOKS:
        raise ValueError(f"unknown runner hook {name!r}; valid: {', '.join(HOOKS)}")
    own = getattr(runner, name, None)
    if own is None:
        return getattr(RunnerDefaults, name).__get__(runner)
    return own if callable(own) else (lambda: own)

"""The Runner protocol: the calls every runner makes, and the optional hooks with their defaults.

Required (DESIGN.md "Runner"): ``put``, ``get``, ``forward``, ``forward_backward``,
``step``, ``sync``, ``impl_label``.  Optional hooks, which the harness asks
through ``hook(runner, name)`` and never by switching on a framework's name:

* ``compile(x, state, dy) -> seconds``: ahead-of-time compilation, reported apart.
* ``timer(sync=None) -> Timer``: times one call (``Timer.time(fn) -> seconds``), syncing with
  ``sync`` (default the runner's own: a trainer passes its step's).
* ``memory_probe() -> MemoryProbe``: how the peak memory of one iteration is read.
* ``threads() -> int`` and ``matmul_precision() -> str``: fair-play fields of a record.
* ``attention_kernel() -> str | None``: which attention kernel a baseline ran.
* ``ranked() -> (bool, reason)``: whether its times may enter a ranking (False for a reference loop that
  checks a mapping, as flashrnn's vanilla backend on a CPU): the record's ``ranked`` field.
* ``output_size() -> int``: width of y (a baseline's d_model; else hidden, times 2 when bidirectional).
* ``decoder(x_prefix, state=None, capacity=None) -> Decoder``: decode mode's set-up, the state after
  the prefix x_prefix [S, B, I]; its ``step_after_prefix(x_t)`` is the timed call (``impls.decode``).

A backend's optional hook is ``interpreted(device) -> bool`` (its kernels run
under an interpreter there: exactness only, never timed).  Framework runners
get their hooks from their family's base (``torch_common``, ``jax_common``); a
new framework adds its own base and leaves the harness untouched.
"""
from __future__ import annotations

import time
from typing import Protocol

HOOKS = ("compile", "timer", "memory_probe", "threads", "matmul_precision", "attention_kernel", "output_size",
         "decoder", "ranked")


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
        """One timestep as ``forward`` with T=1 (DESIGN.md's default): x_t [B, I] -> the new state;
        unidirectional models only."""
        from .spec import require_unidirectional

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

    def ranked(self) -> tuple[bool, str]:
        return True, ""

    def output_size(self) -> int:
        spec = self.spec
        return spec.hidden_size * (2 if getattr(spec, "bidirectional", False) else 1)

    def decoder(self, x_prefix, state=None, capacity=None):
        """A recurrent state after the prefix, stepped by ``step`` (``capacity``: a KV cache's; an
        RNN's state has a fixed size)."""
        from .decode import RecurrentDecoder

        return RecurrentDecoder(self, x_prefix, state)


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


def interpreted(backend, device: str) -> bool:
    """Whether the backend runs under an interpreter on ``device`` (exactness checks only)."""
    fn = getattr(backend, "interpreted", None) or getattr(backend, "interpreted_on", None)
    return bool(fn and fn(device))

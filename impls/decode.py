"""Decode mode (docs/design.md "Decode"): the state a prefix leaves, then one position at a time.

A ``Decoder`` is made by a runner's ``decoder(x_prefix, state=None, capacity=None)``
hook (``impls.runner``): its set-up runs the prefix once, outside any timing, and
keeps the state it leaves; ``step_after_prefix(x_t)`` is the call decode mode
times (one position of the batch at context ``prefix_len``, the same work every
repeat); ``step(x_t)`` carries on from the current state (generation).  The
default, ``RecurrentDecoder``, serves every RNN runner through its ``forward``
(the prefix) and ``step`` (each position): the state is h (and c), the same size
at any context.  Transformer baselines supply ``KVCacheDecoder``
(``impls.transformer``), whose state is a KV cache preallocated to its capacity
and written in place.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from .spec import require_unidirectional


def nbytes(state) -> int:
    """Bytes of a state: an array (torch, JAX or NumPy) or a tuple of them."""
    if isinstance(state, (tuple, list)):
        return sum(nbytes(part) for part in state)
    return int(state.nbytes)


class Decoder(ABC):
    """The state after a prefix of ``prefix_len`` positions, and the calls that step from it.

    ``state_bytes`` is the size of the state the timed step reads: the state after the
    prefix (h and c for an RNN; the filled part of a KV cache, ``prefix_len`` positions).
    Subclasses give ``_advance(x_t, state) -> new state`` and ``output()``.
    """

    def __init__(self, runner, prefix_state, prefix_len: int, state_bytes: int):
        self.runner = runner
        self.prefix_state = self.state = prefix_state
        self.prefix_len = self.length = prefix_len
        self.state_bytes = state_bytes

    def step(self, x_t) -> None:
        """One more position, x_t [B, I], after the current ones."""
        self.state = self._advance(x_t, self.state)
        self.length += 1

    def step_after_prefix(self, x_t) -> None:
        """The timed call of decode mode: one position, x_t [B, I], right after the prefix."""
        self.state = self._advance(x_t, self.prefix_state)
        self.length = self.prefix_len + 1

    @abstractmethod
    def _advance(self, x_t, state):
        """The state after one more position x_t [B, I]."""

    @abstractmethod
    def output(self):
        """y of the last position stepped, [B, output_size], as a framework array."""


class RecurrentDecoder(Decoder):
    """An RNN's decode: ``forward`` over the prefix for h (and c), then the runner's ``step``.

    The state is replaced at each step (a few [L, B, H] arrays); its size does not depend
    on the context.  Unidirectional models only.
    """

    def __init__(self, runner, x_prefix, state=None, step=None):
        """``step(x_t, state) -> state``: the runner's ``step`` hook (its own, or forward with T=1)."""
        require_unidirectional(runner.spec, "decode")
        self._step = step or runner.step
        _, prefix_state = runner.forward(runner.put(x_prefix), state)
        runner.sync()
        super().__init__(runner, prefix_state, len(x_prefix), nbytes(prefix_state))

    def _advance(self, x_t, state):
        return self._step(x_t, state)

    def output(self):
        h = self.state[0] if self.runner.spec.has_cell_state else self.state  # [L, B, H]
        return h[-1]  # the last layer's h is the model's y_t

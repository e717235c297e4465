"""Length distributions of ragged batches (``--lengths``): their names, checked, and the one draw
that every backend of a configuration sees.

``full``: every row has all T steps.  ``uniform:MIN``: lengths uniform over [MIN, T] (a MIN above
T gives T).  ``zipf:A``: Zipf's law with exponent A > 1, a long tail of short rows as in real
corpora, clipped to [1, T].  The draw depends only on the distribution, T, B and the
configuration's seed, never on the backend, so every backend runs the same batch.  Pure NumPy.
"""
from __future__ import annotations

import math

import numpy as np

from .config import ConfigError

FULL = "full"
FORMS = ("full", "uniform:MIN", "zipf:A")
_STREAM = 19  # the lengths' own random stream, apart from the weights' and the inputs'


def parse(name: str) -> tuple[str, float | None]:
    """``name`` -> (distribution, parameter); ConfigError naming the valid forms."""
    kind, _, arg = str(name).partition(":")
    if kind == FULL and not arg:
        return FULL, None
    try:
        value = float(arg)
    except ValueError:
        value = math.nan
    if kind == "uniform" and 1 <= value < math.inf and value == int(value):
        return kind, int(value)
    if kind == "zipf" and 1 < value < math.inf:
        return kind, value
    raise ConfigError(f"unknown lengths {name!r}; valid: full, uniform:MIN (an integer MIN >= 1), "
                      f"zipf:A (an exponent A > 1), e.g. uniform:16, zipf:1.2")


def draw(name: str, seq_len: int, batch: int, seed: int = 0) -> np.ndarray | None:
    """The lengths [B] (int64, each in [1, T]) of the configuration's batch; None for ``full``."""
    kind, arg = parse(name)
    if kind == FULL:
        return None
    rng = np.random.default_rng([seed, _STREAM])
    if kind == "uniform":
        return rng.integers(min(arg, seq_len), seq_len + 1, size=batch).astype(np.int64)  # [B]
    return np.minimum(rng.zipf(arg, size=batch), seq_len).astype(np.int64)  # [B]; Zipf draws are >= 1


def valid_tokens(lengths, seq_len: int, batch: int) -> int:
    """Tokens a call computes: the sum of the lengths (B*T for a full batch)."""
    return batch * seq_len if lengths is None else int(np.sum(lengths))


def summary(name: str, seq_len: int, batch: int, seed: int = 0) -> dict:
    """``length_mean`` and ``length_min`` of the configuration's batch (the records' fields)."""
    lengths = draw(name, seq_len, batch, seed)
    if lengths is None:
        return {"length_mean": float(seq_len), "length_min": int(seq_len)}
    return {"length_mean": float(lengths.mean()), "length_min": int(lengths.min())}

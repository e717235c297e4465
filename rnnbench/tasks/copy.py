"""Copy memory (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

Input: 10 symbols from an alphabet of 8, T-1 blanks, a marker, 10 blanks (T+20
steps).  Target: T+10 blanks, then the 10 symbols.  A memoryless model can only
predict blanks where they are certain and a uniform guess over the 8 symbols
for the last 10 steps: cross-entropy 10 ln 8 / (T + 20) per step.
"""
from __future__ import annotations

import math

import numpy as np

from .base import Setting, Task, mean_cross_entropy

BLANK, MARKER, SYMBOLS, COPIED = 0, 9, 8, 10  # ids 1..8 are the symbols


class Copy(Task):
    name = "copy"
    input_kind = "tokens"
    input_dim = 10  # blank, 8 symbols, marker
    output_size = 9  # blank and the 8 symbols (the marker is never a target)
    loss = "xent"
    targets = "all"
    metric_name = "xent_nats"
    default = Setting(seq_len=10, hidden=64, batch=64, steps=800, lr=5e-3, eval_every=100)
    margin_text = "cross-entropy at most 0.7 of the baseline"
    validation_size = 512

    @property
    def margin(self) -> float:
        return 0.3 * self.baseline()

    def generate(self, rng: np.random.Generator, batch: int):
        """x [T+20, B] ids, y [T+20, B] ids."""
        T = self.seq_len
        symbols = rng.integers(1, SYMBOLS + 1, size=(COPIED, batch))  # [10, B]
        x = np.full((T + 2 * COPIED, batch), BLANK, dtype=np.int64)  # [T+20, B]
        x[:COPIED] = symbols
        x[T + COPIED - 1] = MARKER
        y = np.full_like(x, BLANK)  # [T+20, B]
        y[T + COPIED:] = symbols
        return x, y

    def train_batch(self, rng, batch):
        return self.generate(rng, batch)

    def validation(self):
        return self.generate(np.random.default_rng([self.seed, 1]), self.validation_size)

    def metric(self, outputs, y):
        return mean_cross_entropy(outputs, y)

    def baseline(self) -> float:
        return COPIED * math.log(SYMBOLS) / (self.seq_len + 2 * COPIED)

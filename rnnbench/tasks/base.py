"""What every task shares: its input/output form, batches, metric and naive baseline.

Tasks are NumPy only (no framework), seeded, and read nothing from the network:
every data set ships inside an installed package.  A batch is time-major like the
runners: x ``[T, B]`` token ids or ``[T, B, F]`` features; y holds the targets of
the positions that carry a loss (every step, or the last one only).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax


@dataclass(frozen=True)
class Setting:
    """A task's default short setting: where an LSTM learns it on a laptop CPU in a few minutes."""

    seq_len: int
    hidden: int
    batch: int
    steps: int
    lr: float
    eval_every: int


class Task:
    """Base of every task; subclasses set the class attributes and the data methods."""

    name: str
    input_kind: str  # "tokens" (an embedding reads them) | "features" (a linear layer reads them)
    input_dim: int  # vocabulary size, or features per step
    output_size: int  # classes, or regression outputs per step
    loss: str  # "xent" | "mse"
    targets: str  # "all" (every step carries a loss) | "last" (only the final step)
    metric_name: str
    higher_is_better: bool = False
    default: Setting
    margin: float  # the final metric must beat the baseline by this much to count as learned
    margin_text: str
    # time to quality (MLPerf Training's rule): the metric value on the validation set that counts as
    # reached, set from measurement so that an LSTM reaches it at the task's shortest length (each task
    # says how); a property where it depends on the length or the data
    target: float
    target_text: str
    # the first evaluation (every 25 steps) at which that LSTM met the target, at the shortest length the
    # quality suite trains the task at: 3x this is a run's step budget there (rnnbench.sweep.quality_jobs)
    lstm_steps_to_target: int
    variable_length = True  # False where the data fixes T (seqdigits: 64 pixels)
    min_seq_len, max_seq_len = 1, 1 << 20

    def __init__(self, seq_len: int | None = None, seed: int = 0):
        self.seq_len = self.check_seq_len(seq_len or self.default.seq_len)
        self.seed = seed

    @classmethod
    def check_seq_len(cls, seq_len: int) -> int:
        """``seq_len`` if this task can be built with it, else ValueError saying what it takes."""
        if not cls.variable_length and seq_len != cls.default.seq_len:
            raise ValueError(f"{cls.name} has a fixed length of {cls.default.seq_len} steps, got seq_len={seq_len}")
        if not cls.min_seq_len <= seq_len <= cls.max_seq_len:
            raise ValueError(f"{cls.name} takes seq_len from {cls.min_seq_len} to {cls.max_seq_len}, got {seq_len}")
        return int(seq_len)

    # -- what a task supplies ---------------------------------------------------------------
    def train_batch(self, rng: np.random.Generator, batch: int):
        """(x, y) of one training batch drawn with ``rng``."""
        raise NotImplementedError

    def validation(self):
        """(x, y) of the fixed validation set the metric is computed on."""
        raise NotImplementedError

    def metric(self, outputs: np.ndarray, y: np.ndarray) -> float:
        """The task's metric from the model's outputs (logits or values) on ``validation()``."""
        raise NotImplementedError

    def baseline(self) -> float:
        """The naive baseline's value of the metric (the formula the task states)."""
        raise NotImplementedError

    def data_sha256(self) -> str:
        """Identity of the data: the shipped data set's bytes, or the generated validation set's."""
        x, y = self.validation()
        return sha256_of(x, y)

    # -- shared -----------------------------------------------------------------------------
    def io(self) -> dict:
        """The fields ``impls.models.ModelIO`` takes: how inputs are read and outputs scored."""
        return {"input_kind": self.input_kind, "input_dim": self.input_dim, "output_size": self.output_size,
                "loss": self.loss, "targets": self.targets}

    def reached(self, value: float) -> bool:
        """Whether ``value`` meets the task's quality target."""
        return value >= self.target if self.higher_is_better else value <= self.target

    def beats_baseline(self, value: float) -> bool:
        """Whether ``value`` beats the baseline by the stated margin."""
        if self.higher_is_better:
            return value >= self.baseline() + self.margin
        return value <= self.baseline() - self.margin


def sha256_of(*arrays_or_text) -> str:
    h = hashlib.sha256()
    for a in arrays_or_text:
        h.update(a.encode() if isinstance(a, str) else np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def mean_cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy in nats of integer targets y [...] under logits [..., C]."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    return float(-np.take_along_axis(logp, y[..., None], axis=-1).mean())


def mse(outputs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.asarray(outputs, dtype=np.float64) - y) ** 2))

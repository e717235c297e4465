"""Sequence tasks: NumPy batch generators, seeded and framework-free, each with its naive baseline.

``get(name, seq_len=None, seed=0)`` builds one; ``names()`` lists them.
Nothing here downloads: the data sets ship inside scikit-learn, statsmodels and
Python itself.
"""
from __future__ import annotations

from .adding import Adding
from .base import Setting, Task
from .charlm import CharLM
from .copy import Copy
from .forecast import Forecast
from .seqdigits import SeqDigits, SeqDigitsPermuted

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (Copy, Adding, SeqDigits, SeqDigitsPermuted, CharLM, Forecast)}


def names() -> list[str]:
    return list(TASKS)


def get(name: str, seq_len: int | None = None, seed: int = 0) -> Task:
    """A task at ``seq_len`` (None: its default short setting); ValueError names the valid choices."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name](seq_len, seed)


__all__ = ["Setting", "Task", "TASKS", "get", "names"]

"""What every asv benchmark here shares: the parameter grid and the skip rule.

The benchmarks are thin wrappers over ``rnnbench.measure``: a configuration is a
``rnnbench.jobs.TimingJob`` and every number comes from the harness's own code.
Backends are read from the registry, so a newly registered backend joins the
suite without an edit here.  A configuration this machine cannot run raises
``NotImplementedError`` in ``setup``, which asv records as skipped (n/a).
"""
from __future__ import annotations

import functools

import impls
try:
    from impls.runner import timed
except ImportError:  # a commit before the capabilities contract: its own word for "not timed"
    from impls.runner import interpreted

    def timed(backend, device: str, cell: str) -> tuple[bool, str]:
        return not interpreted(backend, device), "runs under an interpreter: exactness only, not timed"
from impls.spec import CELLS
from rnnbench.jobs import TimingJob

BACKENDS = impls.names(kind="rnn") + impls.names(kind="baseline")
SEQ_LENS = [64, 256]
MODES = ["forward", "train"]
# One fixed shape, the same on every machine, so that a benchmark's history means one thing.
SHAPE = {"batch": 16, "input_size": 64, "hidden": 128, "layers": 1, "dtype": "float32"}


@functools.cache
def device() -> str:
    """The GPU when this machine has one (the machine name says which), else the CPU."""
    from impls.runtime import device_present

    return "cuda" if device_present("cuda")[0] else "cpu"


def config(backend: str, cell: str, seq_len: int, mode: str = "train") -> TimingJob:
    """The configuration of one parameter combination; NotImplementedError if it cannot run here."""
    cfg = TimingJob(backend, cell, seq_len=seq_len, mode=mode, device=device(), **SHAPE)
    skip_unless_runnable(cfg.backend, cfg.device, cfg.cell)
    return cfg


def skip_unless_runnable(backend: str, device: str, cell: str) -> None:
    ok, reason = impls.available(backend, device)
    if not ok:
        raise NotImplementedError(reason)
    ok, reason = timed(impls.get(backend), device, cell)
    if not ok:
        raise NotImplementedError(f"{backend}: {reason}")


def prepare(cfg: TimingJob):
    """The harness's built runner, inputs and timed callable, warmed up (first calls compile)."""
    from impls.spec import Unsupported
    from rnnbench.measure import Prepared

    try:
        p = Prepared(cfg)
    except Unsupported as exc:
        raise NotImplementedError(str(exc)) from exc
    for _ in range(2):
        p.fn()
        p.runner.sync()
    return p


def checked(records: list[dict]) -> list[dict]:
    """The harness's records of one configuration: skipped when unsupported, an error when it failed."""
    for record in records:
        if record["status"] == "unsupported":
            raise NotImplementedError(record["message"])
        if record["status"] != "ok":
            raise RuntimeError(f"{record['kind']} {record['status']}: {record['message']}")
    return records

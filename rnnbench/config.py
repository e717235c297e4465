"""The validation every entry point shares, and the error bad input raises (no framework imported)."""
from __future__ import annotations

from impls.spec import MODES  # noqa: F401 - the modes a sweep takes are the contract's


class ConfigError(ValueError):
    """Bad user input; the CLI prints it as one line and exits with status 2."""


BOOLEAN_WORDS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def parse_bool(value) -> bool:
    """A boolean as it is, or one of BOOLEAN_WORDS (the CLI's, a config file's) -> bool; ConfigError otherwise."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in BOOLEAN_WORDS:
        raise ConfigError(f"bidirectional must be true or false, got {value!r}; valid: {', '.join(BOOLEAN_WORDS)}")
    return BOOLEAN_WORDS[word]


def check_common(backend: str, cell: str, dtype: str, device: str, sizes: dict) -> None:
    """The checks every job shares; raise ConfigError naming the valid choices (no framework imported)."""
    import impls
    from impls.spec import CELLS, DTYPES, SpecError, check_device

    if backend not in impls.names():
        raise ConfigError(f"unknown backend {backend!r}; valid: {', '.join(impls.names())}")
    if cell not in CELLS:
        raise ConfigError(f"unknown cell {cell!r}; valid: {', '.join(CELLS)}")
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    try:
        check_device(device)
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        upper = size_limits().get(name)
        if upper is not None and value > upper:
            raise ConfigError(f"{name.replace('_', '-')} must be an integer in [1, {upper}] (the spec's limit), "
                              f"got {value}")


def size_limits() -> dict:
    """The largest size the spec takes, per size field (the others are bounded by memory alone)."""
    from impls.spec import MAX_LAYERS, MAX_SIZE

    return {"hidden": MAX_SIZE, "input_size": MAX_SIZE, "layers": MAX_LAYERS}


def check_fits(job) -> str | None:
    """Why a configuration cannot fit this machine's free memory (estimate and what is free), or None."""
    from impls import runtime

    from .cost import footprint_bytes

    need = footprint_bytes(job.cell, job.layers, job.batch, job.seq_len, job.input_size, job.hidden,
                           getattr(job, "mode", "train"), job.dtype)
    free, where = runtime.available_memory(job.device)
    if free is None or need <= free:
        return None
    return (f"{job.describe()} needs at least {need / 2**30:.3g} GiB (estimated: weights, activations, inputs) "
            f"but {job.device} has {free / 2**30:.3g} GiB available ({where})")


MACHINE_NAME = r"[A-Za-z0-9_-][A-Za-z0-9_.-]*"


def check_machine_name(name: str | None) -> None:
    """--machine is one plain folder name, so the run stays inside --out."""
    import re

    if name is not None and not re.fullmatch(MACHINE_NAME, name):
        raise ConfigError(f"--machine must be one folder name of letters, digits, '_', '.' and '-' (not starting "
                          f"with '.'), got {name!r}")


def check_writable_dir(path, flag: str = "--out") -> None:
    """``path`` is a folder, or can be made, and a file can be written there; nothing is left behind."""
    import os
    import tempfile
    from pathlib import Path

    p = Path(path)
    existing = p
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".rnnbench-probe-", dir=existing))
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write in {existing} ({exc.strerror or exc})") from None


def backend_identity(name: str) -> dict:
    """backend_kind and framework of a backend, or nothing when it cannot even load (a failure record)."""
    import impls

    try:
        return {"backend_kind": impls.kind_of(name), "framework": impls.get(name).framework}
    except Exception:  # noqa: BLE001 - the record must be written even when the backend cannot load
        return {}


def check_devices(devices) -> None:
    """Each device is well formed and present here; ConfigError otherwise."""
    from impls import runtime
    from impls.spec import SpecError, check_device

    for d in devices or []:
        try:
            check_device(d)
        except SpecError as exc:
            raise ConfigError(str(exc)) from None
        ok, reason = runtime.device_present(d)
        if not ok:
            raise ConfigError(f"device {d} is not available here ({reason}); valid here: cpu")

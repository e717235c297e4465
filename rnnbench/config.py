"""The validation every entry point shares, and the error bad input raises (no framework imported)."""
from __future__ import annotations

from impls.spec import MODES  # noqa: F401 - the modes a sweep takes are the contract's
# what a run measures: wall time (the primary figure), or instructions per call under callgrind
METRICS = ("time", "instructions")


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
        low, upper = bounds(name)
        if value > upper:
            raise ConfigError(f"{name.replace('_', '-')} must be an integer in [{low}, {upper}], got {value}")


# The range of every numeric option and job field.  Sizes: the spec's limits (hidden, input, layers);
# batch and sequence length far above any run a machine holds, so that a typo is refused here and
# not by a child process running out of memory; the others far above any sensible run.
BOUNDS = {"batch": (1, 1 << 20), "seq_len": (1, 1 << 20), "rounds": (1, 1000), "steps": (1, 1_000_000),
          "eval_every": (1, 1_000_000), "seed": (0, 2**32 - 1), "budget_s": (1, 86_400), "threads": (1, 1024)}


def bounds(field: str) -> tuple:
    """(lowest, highest) value ``field`` takes."""
    from impls.spec import MAX_LAYERS, MAX_SIZE

    return {"hidden": (1, MAX_SIZE), "input_size": (1, MAX_SIZE), "layers": (1, MAX_LAYERS), **BOUNDS}[field]


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

    if name is not None and not (re.fullmatch(MACHINE_NAME, name) and len(name) <= 100):
        raise ConfigError(f"--machine must be one folder name of at most 100 letters, digits, '_', '.' and '-' "
                          f"(not starting with '.'), got {name[:40]!r}")


def check_writable_dir(path, flag: str = "--out") -> None:
    """``path`` is a folder, or can be made, and a file can be written there; nothing is left behind."""
    import os
    import tempfile
    from pathlib import Path

    if not str(path).strip():
        raise ConfigError(f"{flag} is empty; give a folder (it is made if missing)")
    p = Path(path)
    existing = p
    while not _exists(existing):
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is not a folder")
    check_path_length(path, flag)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".rnnbench-probe-", dir=existing))
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write in {existing} ({exc.strerror or exc})") from None


def check_path_length(path, flag: str) -> None:
    """Each name in ``path`` and the whole within what this file system takes (else OSError later)."""
    import os

    longest_name, longest_path = os.pathconf("/", "PC_NAME_MAX"), os.pathconf("/", "PC_PATH_MAX")
    if any(len(os.fsencode(part)) > longest_name for part in str(path).split(os.sep)):
        raise ConfigError(f"{flag} {str(path)[:40]}...: a name in it is longer than the {longest_name} bytes a "
                          "file system takes")
    if len(os.fsencode(os.path.abspath(path))) >= longest_path:
        raise ConfigError(f"{flag} {str(path)[:40]}...: longer than the {longest_path} bytes a path may have")


def _exists(path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the file system: it cannot exist
        return False


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

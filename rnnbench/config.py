"""One measurable configuration, and the validation every entry point shares."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

MODES = ("forward", "train", "step")


class ConfigError(ValueError):
    """Bad user input; the CLI prints it as one line and exits with status 2."""


class JobFields:
    """What timing and training jobs share: dict round trip and the record's configuration fields."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})  # unknown keys ("job") are ignored

    @property
    def record_fields(self) -> dict:
        return {"backend": self.backend, "device": self.device, "dtype": self.dtype, "cell": self.cell,
                "layers": self.layers, "batch": self.batch, "seq_len": self.seq_len,
                "input_size": self.input_size, "hidden": self.hidden}


@dataclass(frozen=True)
class Config(JobFields):
    backend: str
    cell: str = "lstm"
    layers: int = 1
    batch: int = 16
    seq_len: int = 64
    input_size: int = 32
    hidden: int = 64
    dtype: str = "float32"
    mode: str = "train"
    device: str = "cpu"
    seed: int = 0
    tf32: bool = False
    min_time_s: float = 0.3  # repeats go on until this much time and min_repeats have passed
    max_time_s: float = 2.0  # ... and stop at this much (GPU suites cap near 0.5 s)
    min_repeats: int = 5
    timeout_s: float = 300.0  # process/ray executors: a configuration running longer is a timeout

    def key(self) -> tuple:
        """Identity of the measurement (what --resume looks for); timing knobs excluded."""
        return (self.backend, self.cell, self.layers, self.batch, self.seq_len, self.input_size,
                self.hidden, self.dtype, self.mode, self.device)



def record_key(record: dict) -> tuple:
    return tuple(record.get(k) for k in ("backend", "cell", "layers", "batch", "seq_len", "input_size",
                                         "hidden", "dtype", "mode", "device"))


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


def validate(cfg: Config) -> None:
    check_common(cfg.backend, cfg.cell, cfg.dtype, cfg.device,
                 {n: getattr(cfg, n) for n in ("layers", "batch", "seq_len", "input_size", "hidden")})
    if cfg.mode not in MODES:
        raise ConfigError(f"unknown mode {cfg.mode!r}; valid: {', '.join(MODES)}")


def backend_identity(name: str) -> dict:
    """backend_kind and framework of a backend, or nothing when it cannot even load (a failure record)."""
    import impls

    try:
        return {"backend_kind": impls.kind_of(name), "framework": impls.get(name).framework}
    except Exception:  # noqa: BLE001 - the record must be written even when the backend cannot load
        return {}

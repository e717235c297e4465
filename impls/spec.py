"""Model specification and canonical weights shared by every backend.

Canonical weights are a dict of NumPy arrays named and laid out exactly as
``torch.nn.LSTM(...).state_dict()`` names them, in PyTorch gate order
(LSTM i, f, g, o; GRU r, z, n).  Every backend loads these, so "same cells,
same weights" holds by construction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CELLS = ("rnn_tanh", "lstm", "gru")
GATES = {"rnn_tanh": 1, "lstm": 4, "gru": 3}
DTYPES = ("float32", "float64", "bfloat16", "float16")
MAX_SIZE = 1 << 16


class SpecError(ValueError):
    """A specification value is out of range; the message names field and valid range."""


def _check_positive(field: str, value, upper: int = MAX_SIZE) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= upper:
        raise SpecError(f"{field} must be an integer in [1, {upper}], got {value!r}")


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise SpecError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


def check_device(device: str) -> str:
    if device == "cpu" or device == "cuda" or (
        isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit()
    ):
        return device
    raise SpecError(f"device must be one of cpu, cuda, cuda:N, got {device!r}")


@dataclass(frozen=True)
class RNNSpec:
    cell: str
    input_size: int
    hidden_size: int
    num_layers: int = 1

    def __post_init__(self):
        if self.cell not in CELLS:
            raise SpecError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        _check_positive("input_size", self.input_size)
        _check_positive("hidden_size", self.hidden_size)
        _check_positive("num_layers", self.num_layers, 64)

    @property
    def gates(self) -> int:
        """Number of gate blocks stacked in W_ih / W_hh (1, 4 or 3)."""
        return GATES[self.cell]

    @property
    def has_cell_state(self) -> bool:
        return self.cell == "lstm"

    def layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.hidden_size

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical names -> shapes, in ``state_dict`` order."""
        G, H = self.gates, self.hidden_size
        shapes = {}
        for k in range(self.num_layers):
            shapes[f"weight_ih_l{k}"] = (G * H, self.layer_input_size(k))
            shapes[f"weight_hh_l{k}"] = (G * H, H)
            shapes[f"bias_ih_l{k}"] = (G * H,)
            shapes[f"bias_hh_l{k}"] = (G * H,)
        return shapes

    def weight_names(self) -> list[str]:
        return list(self.weight_shapes())

    def state_names(self) -> list[str]:
        return ["h0", "c0"] if self.has_cell_state else ["h0"]

    def param_count(self) -> int:
        return int(sum(np.prod(s) for s in self.weight_shapes().values()))


def init_weights(spec: RNNSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch's default init, U(-1/sqrt(H), 1/sqrt(H)), from a seeded NumPy generator (float64)."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(spec.hidden_size)
    return {name: rng.uniform(-bound, bound, size=shape) for name, shape in spec.weight_shapes().items()}


def check_weights(spec: RNNSpec, weights: dict[str, np.ndarray]) -> None:
    expected = spec.weight_shapes()
    if set(weights) != set(expected):
        raise SpecError(f"weights must have exactly the names {sorted(expected)}, got {sorted(weights)}")
    for name, shape in expected.items():
        if tuple(np.shape(weights[name])) != shape:
            raise SpecError(f"weight {name} must have shape {shape}, got {tuple(np.shape(weights[name]))}")


def normalize_state(spec: RNNSpec, state, batch: int):
    """None | h0 | (h0, c0) -> list of float64 arrays [L, B, H] (zeros where absent)."""
    shape = (spec.num_layers, batch, spec.hidden_size)
    if state is None:
        parts = [None] * len(spec.state_names())
    elif spec.has_cell_state:
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise SpecError("an LSTM state must be None or (h0, c0)")
        parts = list(state)
    else:
        parts = [state[0] if isinstance(state, (tuple, list)) else state]
    out = []
    for name, part in zip(spec.state_names(), parts):
        arr = np.zeros(shape) if part is None else np.asarray(part, dtype=np.float64)
        if arr.shape != shape:
            raise SpecError(f"{name} must have shape {shape} [L, B, H], got {arr.shape}")
        out.append(arr)
    return out


def make_inputs(spec: RNNSpec, seq_len: int, batch: int, seed: int = 1, with_state: bool = False):
    """Seeded float64 inputs: x [T, B, I], state (None or h0 / (h0, c0)), dy [T, B, H]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((seq_len, batch, spec.input_size))  # [T, B, I]
    dy = rng.standard_normal((seq_len, batch, spec.hidden_size))  # [T, B, H]
    state = None
    if with_state:
        parts = [0.5 * rng.standard_normal((spec.num_layers, batch, spec.hidden_size)) for _ in spec.state_names()]
        state = tuple(parts) if spec.has_cell_state else parts[0]
    return x, state, dy


class Unsupported(RuntimeError):
    """This backend cannot run this configuration; the sweep records status ``unsupported``."""


def check_buildable(backend, spec: RNNSpec, weights, device: str, dtype: str) -> None:
    """What every backend's ``build`` checks first: valid arguments, then Unsupported with the reason."""
    check_device(device)
    check_dtype(dtype)
    check_weights(spec, weights)
    for ok, reason in (backend.available(device), backend.supports(device, dtype)):
        if not ok:
            raise Unsupported(reason)

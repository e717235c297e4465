"""Model specification and canonical weights shared by every backend.

Canonical weights are a dict of NumPy arrays named and laid out exactly as
``torch.nn.LSTM(...).state_dict()`` names them, in PyTorch gate order
(LSTM i, f, g, o; GRU r, z, n).  Every backend loads these, so "same cells,
same weights" holds by construction.  A bidirectional model adds the reverse
direction's weights with torch's ``_reverse`` suffix, and its state stacks
``L * D`` rows in torch's order (layer-major, forward then reverse).

The parallel-in-time cells (``mingru``, ``minlstm``; Feng et al. 2024) read only x_t in their
gates, so a layer has ``weight_ih_l{k}`` [G*H, I_k] and ``bias_ih_l{k}`` [G*H] and nothing
recurrent (docs/design.md "Parallel-in-time cells").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

CLASSIC_CELLS = ("rnn_tanh", "lstm", "gru")
# Gates from x_t only: h_t = a_t * h_{t-1} + b_t is linear in h, so it runs as a scan over T.
PARALLEL_CELLS = ("mingru", "minlstm")
CELLS = CLASSIC_CELLS + PARALLEL_CELLS
GATES = {"rnn_tanh": 1, "lstm": 4, "gru": 3, "mingru": 2, "minlstm": 3}
DTYPES = ("float32", "float64", "bfloat16", "float16")
MAX_SIZE = 1 << 16
MAX_LAYERS = 64
# What a backend may or may not implement, and the words a reason uses for it.
FEATURES = {"bidirectional": "bidirectional models", "lengths": "variable-length batches (lengths)"}
MODES = ("forward", "train", "step", "decode")  # what is timed (docs/design.md "Records": mode)


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
    bidirectional: bool = False

    def __post_init__(self):
        if self.cell not in CELLS:
            raise SpecError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        _check_positive("input_size", self.input_size)
        _check_positive("hidden_size", self.hidden_size)
        _check_positive("num_layers", self.num_layers, MAX_LAYERS)
        if not isinstance(self.bidirectional, (bool, np.bool_)):
            raise SpecError(f"bidirectional must be true or false, got {self.bidirectional!r}")

    @property
    def gates(self) -> int:
        """Number of gate blocks stacked in W_ih / W_hh (1, 4, 3; minGRU 2, minLSTM 3)."""
        return GATES[self.cell]

    @property
    def recurrent_weights(self) -> bool:
        """Whether the cell has W_hh and b_hh (False for the parallel-in-time cells)."""
        return self.cell not in PARALLEL_CELLS

    @property
    def has_cell_state(self) -> bool:
        return self.cell == "lstm"

    @property
    def directions(self) -> int:
        """D: 2 when bidirectional, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Width of y: D * H (both directions concatenated, forward first)."""
        return self.directions * self.hidden_size

    def suffixes(self) -> tuple[str, ...]:
        """Name suffix of each direction's weights, in torch's order."""
        return ("", "_reverse")[: self.directions]

    def layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.output_size

    def state_shape(self, batch: int) -> tuple[int, int, int]:
        """[L * D, B, H]: h0 / c0 rows in torch's order (layer-major, forward then reverse)."""
        return (self.num_layers * self.directions, batch, self.hidden_size)

    def layer_weight_names(self, layer: int, suffix: str = "") -> list[str]:
        """W_ih, W_hh, b_ih, b_hh of one layer and direction (W_ih, b_ih for a parallel-in-time cell)."""
        parts = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if self.recurrent_weights else ("weight_ih", "bias_ih")
        return [f"{p}_l{layer}{suffix}" for p in parts]

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical names -> shapes, in ``state_dict`` order."""
        G, H = self.gates, self.hidden_size
        shapes = {}
        for k in range(self.num_layers):
            for suffix in self.suffixes():
                columns = {"weight_ih": self.layer_input_size(k), "weight_hh": H}
                for name in self.layer_weight_names(k, suffix):
                    part = name.split("_l")[0]
                    shapes[name] = (G * H, columns[part]) if part in columns else (G * H,)
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
    """None | h0 | (h0, c0) -> list of float64 arrays [L*D, B, H] (zeros where absent)."""
    shape = spec.state_shape(batch)
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
            raise SpecError(f"{name} must have shape {shape} [L*D, B, H], got {arr.shape}")
        out.append(arr)
    return out


def check_lengths(lengths, seq_len: int, batch: int):
    """None (every row has all T steps) | ints [B] each in [1, T] -> None or an int64 array [B]."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.shape != (batch,) or not np.issubdtype(arr.dtype, np.integer):
        raise SpecError(f"lengths must be None or an integer array of shape ({batch},) [B], got {arr.dtype} {arr.shape}")
    if arr.min() < 1 or arr.max() > seq_len:
        raise SpecError(f"lengths must lie in [1, {seq_len}] (T), got min {arr.min()} max {arr.max()}")
    return arr.astype(np.int64)


def make_inputs(spec: RNNSpec, seq_len: int, batch: int, seed: int = 1, with_state: bool = False):
    """Seeded float64 inputs: x [T, B, I], state (None or h0 / (h0, c0), [L*D, B, H]), dy [T, B, D*H]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((seq_len, batch, spec.input_size))  # [T, B, I]
    dy = rng.standard_normal((seq_len, batch, spec.output_size))  # [T, B, D*H]
    state = None
    if with_state:
        parts = [0.5 * rng.standard_normal(spec.state_shape(batch)) for _ in spec.state_names()]
        state = tuple(parts) if spec.has_cell_state else parts[0]
    return x, state, dy


def split_state(state, has_cell_state: bool, zeros):
    """None | h0 | (h0, c0) -> (h0, c0), ``zeros`` [L*D, B, H] where absent; c0 None without a cell state."""
    if has_cell_state:
        return state if state is not None else (zeros, zeros)
    return (state if state is not None else zeros), None


class Unsupported(RuntimeError):
    """This backend cannot run this configuration; the sweep records status ``unsupported``."""


@dataclass(frozen=True)
class Support:
    """What a backend runs of one cell on one device."""

    dtypes: tuple[str, ...]
    modes: tuple[str, ...] = MODES
    features: tuple[str, ...] = ()  # of spec.FEATURES: bidirectional, lengths
    timed: bool = True  # False: its timings do not mean speed (never ranked); the reason under "timed"
    # why not: a dtype, mode or feature; "timed"; "cell" (why the cells it does not list are not run)
    reasons: Mapping[str, str] = field(default_factory=dict)


def declare(dtypes, cells=CLASSIC_CELLS, modes=MODES, features=(), reasons=None, timed=True, untimed_reason=""):
    """The same ``Support`` for every cell in ``cells`` (default the classic three: a backend written
    before the parallel-in-time cells refuses them with a reason): a backend's ``capabilities``."""
    reasons = {**(reasons or {}), **({"timed": untimed_reason} if not timed else {})}
    support = Support(tuple(dtypes), tuple(modes), tuple(features), timed, reasons)
    return {cell: support for cell in cells}


def capabilities(backend, device: str) -> dict:
    """``{cell: Support}``: the backend's own declaration, else what its ``build`` accepts (cached)."""
    own = getattr(backend, "capabilities", None)
    if own is not None:
        return own(device)
    key = (backend.name, id(backend), device)
    if key not in _PROBED:
        _PROBED[key] = probed_capabilities(backend, device)
    return _PROBED[key]


_PROBED: dict = {}


def probed_capabilities(backend, device: str) -> dict:
    """What ``build`` accepts at tiny shapes, per cell and dtype (``Unsupported``: no); bidirectional
    where it builds one; never lengths, which ``build`` cannot show."""
    def builds(spec, dtype) -> bool:
        try:
            backend.build(spec, init_weights(spec) if getattr(backend, "kind", "rnn") == "rnn" else None, device, dtype)
        except Unsupported:
            return False
        return True

    if not backend.available(device)[0]:
        return {}
    caps = {}
    for cell in CELLS:
        dtypes = tuple(d for d in DTYPES if builds(RNNSpec(cell, 3, 4), d))
        if dtypes:
            bidirectional = builds(RNNSpec(cell, 3, 4, bidirectional=True), dtypes[0])
            caps[cell] = Support(dtypes, features=("bidirectional",) if bidirectional else ())
    return caps


def supports(backend, device: str, cell: str, dtype: str | None = None, mode: str | None = None,
             features=()) -> tuple[bool, str]:
    """(ok, reason) from the declaration: the cell, then the dtype, mode and each feature asked."""
    caps = capabilities(backend, device)
    if cell not in caps:
        own = next((s.reasons["cell"] for s in caps.values() if "cell" in s.reasons), None)
        return False, own or f"{backend.name} on {device} runs {', '.join(caps) or 'no'} cells, not {cell}"
    s = caps[cell]
    if dtype is not None and dtype not in s.dtypes:
        return False, s.reasons.get(dtype) or f"{backend.name} on {device} supports dtypes {', '.join(s.dtypes)}, not {dtype}"
    if mode is not None and mode not in s.modes:
        return False, s.reasons.get(mode) or f"{backend.name} runs {', '.join(s.modes)} only, not {mode}"
    for feature in features:
        if feature not in FEATURES:
            raise ValueError(f"feature must be one of {', '.join(FEATURES)}, got {feature!r}")
        if feature not in s.features:
            return False, s.reasons.get(feature) or f"{backend.name} does not implement {FEATURES[feature]}"
    return True, ""


def timed(backend, device: str, cell: str) -> tuple[bool, str]:
    """(True, "") when its timings of ``cell`` on ``device`` mean speed; else False and why (the
    record's ``ranked``; suites give it one tiny shape, rankings leave it out)."""
    s = capabilities(backend, device).get(cell)
    if s is None or s.timed:
        return True, ""
    return False, s.reasons.get("timed") or f"{backend.name} on {device}: exactness only, not timed as speed"



def require_unidirectional(spec: RNNSpec, call: str) -> None:
    """``step`` and ``decode`` have no meaning for a bidirectional model (it has no next token)."""
    if spec.bidirectional:
        raise Unsupported(f"{call} is unidirectional only: a bidirectional model has no next step")


def check_buildable(backend, spec: RNNSpec, weights, device: str, dtype: str) -> None:
    """What every backend's ``build`` checks first: valid arguments, then Unsupported with the reason."""
    check_device(device)
    check_dtype(dtype)
    check_weights(spec, weights)
    ok, reason = backend.available(device)
    if ok:
        ok, reason = supports(backend, device, spec.cell, dtype=dtype,
                              features=("bidirectional",) if spec.bidirectional else ())
    if not ok:
        raise Unsupported(reason)


def require_feature(runner, feature: str) -> None:
    """Unsupported with the backend's reason unless it declares ``feature`` for the runner's cell."""
    ok, reason = supports(runner.backend, str(runner.device), runner.spec.cell, features=(feature,))
    if not ok:
        raise Unsupported(reason)

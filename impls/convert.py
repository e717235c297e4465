"""A user's torch.nn.LSTM / GRU / RNN (or its saved ``state_dict``) -> RNNSpec and canonical weights.

The canonical weights are named as torch's ``state_dict`` names them, so the
conversion reads the sizes off the module (or off the tensors' shapes) and copies
the arrays as float64.  What the suite's backends cannot reproduce is refused
with a message naming the attribute: ``proj_size`` (an LSTM with projections:
``weight_hr_l{k}``), ``nonlinearity="relu"`` (only the tanh RNN is implemented)
and ``bias=False`` (every backend adds both bias vectors).  ``batch_first`` only
changes how the module takes x; the weights are the same, so it is accepted
(our runners take x time-major, [T, B, I]).

``usage_snippet`` is how to build a backend with those weights: the lines
differ by what the built runner offers (``module()`` for torch, ``params`` and
``apply`` for JAX, ``forward`` otherwise), never by a framework's name.
"""
from __future__ import annotations

import pickle
import re

import numpy as np

from .spec import CLASSIC_CELLS, GATES, RNNSpec

# 4 -> lstm, 3 -> gru, 1 -> rnn_tanh: torch.nn has no minGRU/minLSTM module to convert from
CELL_OF_GATES = {GATES[cell]: cell for cell in CLASSIC_CELLS}


class Unconvertible(ValueError):
    """The module or state dict describes a model the suite cannot reproduce; the message says which attribute."""


def _cell_of_module(model) -> str:
    import torch

    if isinstance(model, torch.nn.LSTM):
        return "lstm"
    if isinstance(model, torch.nn.GRU):
        return "gru"
    if isinstance(model, torch.nn.RNN):
        if model.nonlinearity != "tanh":
            raise Unconvertible(f"nonlinearity={model.nonlinearity!r} is not supported: the suite implements the "
                                f"tanh RNN only (nonlinearity='tanh')")
        return "rnn_tanh"
    raise Unconvertible(f"expected a torch.nn.LSTM, GRU or RNN, got {type(model).__name__}")


def dtype_name(tensor_dtype) -> str:
    """torch.float32 -> 'float32' (the suite's dtype strings)."""
    return str(tensor_dtype).rpartition(".")[2]


def from_torch_module(model) -> tuple[RNNSpec, dict[str, np.ndarray], str]:
    """(spec, canonical float64 weights, the module's dtype) of a torch.nn.LSTM / GRU / RNN."""
    cell = _cell_of_module(model)
    if getattr(model, "proj_size", 0):
        raise Unconvertible(f"proj_size={model.proj_size} is not supported: no backend implements LSTM "
                            f"projections (proj_size=0)")
    if not model.bias:
        raise Unconvertible("bias=False is not supported: every backend adds bias_ih and bias_hh (bias=True)")
    spec = RNNSpec(cell, model.input_size, model.hidden_size, model.num_layers, bool(model.bidirectional))
    state = model.state_dict()
    weights = {name: state[name].detach().cpu().double().numpy() for name in spec.weight_names()}
    return spec, weights, dtype_name(next(iter(state.values())).dtype)


def from_state_dict(state: dict, cell: str | None = None) -> tuple[RNNSpec, dict[str, np.ndarray]]:
    """(spec, canonical float64 weights) of a saved ``state_dict`` of torch.nn.LSTM / GRU / RNN.

    Sizes come from the tensors' shapes, the cell from the gate count (4 LSTM, 3 GRU, 1 RNN);
    ``cell``, when given, must agree.  A state dict cannot tell a tanh RNN from a relu one:
    the caller vouches for tanh by choosing ``rnn_tanh``.
    """
    names = [str(k) for k in state]
    if any(re.fullmatch(r"weight_hr_l\d+(_reverse)?", n) for n in names):
        raise Unconvertible("the state dict has weight_hr_l* (an LSTM with proj_size > 0): proj_size is not "
                            "supported")
    if "weight_ih_l0" not in state or "weight_hh_l0" not in state:
        raise Unconvertible(f"not a torch.nn.LSTM/GRU/RNN state dict: no weight_ih_l0 / weight_hh_l0 "
                            f"(keys: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''})")
    if "bias_ih_l0" not in state:
        raise Unconvertible("the state dict has no bias_ih_l0 (a module built with bias=False): bias=False is "
                            "not supported")
    hidden = int(state["weight_hh_l0"].shape[1])
    gates = int(state["weight_ih_l0"].shape[0]) // hidden
    if gates not in CELL_OF_GATES:
        raise Unconvertible(f"weight_ih_l0 has {state['weight_ih_l0'].shape[0]} rows for hidden {hidden}: "
                            f"not 4H (LSTM), 3H (GRU) or H (RNN)")
    found = CELL_OF_GATES[gates]
    if cell is not None and cell != found:
        raise Unconvertible(f"the state dict is a {found} ({gates} gate blocks of W_ih), not a {cell}")
    layers = 1 + max(int(m.group(1)) for m in (re.fullmatch(r"weight_ih_l(\d+)(_reverse)?", n) for n in names) if m)
    spec = RNNSpec(found, int(state["weight_ih_l0"].shape[1]), hidden, layers,
                   bidirectional="weight_ih_l0_reverse" in state)
    expected = spec.weight_shapes()
    weights = {}
    for name, shape in expected.items():
        if name not in state:
            raise Unconvertible(f"the state dict lacks {name} (a {spec.cell} of {layers} layers needs "
                                f"{', '.join(expected)})")
        arr = _as_float64(state[name])
        if arr.shape != shape:
            raise Unconvertible(f"{name} has shape {arr.shape}, expected {shape}")
        weights[name] = arr
    extra = sorted(set(names) - set(expected))
    if extra:
        raise Unconvertible(f"the state dict has keys this {spec.cell} does not use: {', '.join(extra[:8])}")
    return spec, weights


def _as_float64(t) -> np.ndarray:
    if hasattr(t, "detach"):  # a torch tensor (bfloat16 has no NumPy type: widen first)
        return t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def load_state_dict(path) -> dict:
    """A ``state_dict`` saved with ``torch.save`` (tensors only: loaded with weights_only=True)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, ValueError, RuntimeError) as exc:  # not a torch.save file
        raise Unconvertible(f"{path} is not a file torch.save wrote ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120]})") from None
    if not isinstance(state, dict):
        raise Unconvertible(f"{path} holds a {type(state).__name__}, not a state_dict (save model.state_dict())")
    return state


def usage_snippet(backend: str, runner, spec: RNNSpec, device: str, dtype: str, source: str = "model",
                  batch: int = 1, seq_len: int = 1, batch_first: bool = False) -> str:
    """The lines that build ``backend`` with the user's weights and run it on a batch, by what
    ``runner`` offers; they run as printed (``model``: the user's module, the one free name).

    ``source``: ``model`` (a torch module in the user's hands) or a state-dict file path.  The batch
    they make stands for the user's: ``batch_first`` as the user's model takes it; every runner is
    time-major, so such a batch is transposed on the way in and y on the way out.
    """
    if source == "model":
        load = ["from impls.convert import from_torch_module",
                "spec, weights, _ = from_torch_module(model)  # model: your torch.nn module"]
    else:
        load = ["from impls.convert import from_state_dict, load_state_dict",
                f"spec, weights = from_state_dict(load_state_dict({source!r}))"]
    dims = (batch, seq_len) if batch_first else (seq_len, batch)
    layout = "[B, T, I], batch_first" if batch_first else "[T, B, I], time-major"
    lines = ["import numpy as np", "import impls", *load,
             f"runner = impls.get({backend!r}).build(spec, weights, device={device!r}, dtype={dtype!r})",
             f"x = np.random.default_rng(0).standard_normal(({dims[0]}, {dims[1]}, spec.input_size))"
             f"  # stands for your batch: {layout}",
             "x = runner.put(x.swapaxes(0, 1))  # [T, B, I]: every runner is time-major" if batch_first else
             "x = runner.put(x)  # [T, B, I] on the runner's device and dtype"]
    if hasattr(runner, "module"):
        lines += ["rnn = runner.module()  # torch.nn.Module, trainable by autograd",
                  "y, final_state = rnn(x, None)  # state: None, h0 or (h0, c0), each [layers*D, B, H]"]
    elif hasattr(runner, "apply") and hasattr(runner, "params"):
        lines += ["params, apply = runner.params, runner.apply  # pure function: differentiate with jax.grad",
                  "y, final_state = apply(params, x, None)  # state: None, h0 or (h0, c0), each [layers*D, B, H]"]
    else:
        lines += ["y, final_state = runner.forward(x, None)  # inference only; state: None, h0 or (h0, c0)"]
    lines.append("y = y.swapaxes(0, 1)  # [B, T, D*H], batch_first as your model" if batch_first else
                 "# y [T, B, D*H]")
    return "\n".join(lines)

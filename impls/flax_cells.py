"""Flax's own cells: ``nn.RNN`` over ``OptimizedLSTMCell`` / ``GRUCell`` / ``SimpleCell``.

The JAX ecosystem's stock answer, beside jax_scan's hand-written BPTT: what a
Flax user gets by writing ``nn.RNN(nn.OptimizedLSTMCell(H))``; gradients by
``jax.vjp`` through the whole thing.  The canonical weights are the parameters;
``flax_variables`` maps them onto Flax's per-gate kernels and biases inside the
traced function, so the map is differentiated too and the gradients come back
in the canonical layout.  The map is exact (no cell is approximated):

* LSTM (carry ``(c, h)``): kernels ``i{i,f,g,o}`` = W_i*^T (no bias) and
  ``h{i,f,g,o}`` = W_h*^T with bias b_i* + b_h*: Flax adds the two projections
  before the gate, so one bias is torch's two summed.
* GRU: ``ir``/``iz`` carry b_ir + b_hr / b_iz + b_hz, ``in`` carries b_in and
  ``hn`` carries b_hn inside ``r * (W_hn h + b_hn)``: torch's equations.
* tanh RNN (``SimpleCell``): kernel ``i`` with bias b_ih + b_hh, ``h`` without.

Variable length uses ``nn.RNN``'s ``seq_lengths`` (the carry stops at each row's
last step; the reverse direction flips each row within its length); y is then
set to 0 at padded steps, which also makes the gradient at padded x exactly 0.
"""
from __future__ import annotations

import functools

import numpy as np

from .jax_common import JaxArrays, _jax, jax_available, jax_dtypes
from .spec import (FEATURES, RNNSpec, Unsupported, check_buildable, check_device, declare, require_feature,
                   split_state)

_GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "rnn_tanh": ("",)}


def _cell_module(cell: str, hidden: int, dtype):
    import flax.linen as nn

    cls = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn_tanh": nn.SimpleCell}[cell]
    return cls(features=hidden, dtype=dtype, param_dtype=dtype)


def flax_variables(cell: str, params: dict, layer: int, suffix: str) -> dict:
    """Flax's parameter tree of one layer and direction from the canonical weights (traceable)."""
    H = params[f"weight_hh_l{layer}{suffix}"].shape[1]
    w_ih, w_hh, b_ih, b_hh = (params[f"{p}_l{layer}{suffix}"] for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    block = lambda a, k: a[k * H:(k + 1) * H]  # noqa: E731  gate k's rows
    if cell == "rnn_tanh":
        return {"i": {"kernel": w_ih.T, "bias": b_ih + b_hh}, "h": {"kernel": w_hh.T}}
    tree = {}
    if cell == "lstm":
        for k, gate in enumerate(_GATES["lstm"]):
            tree[f"i{gate}"] = {"kernel": block(w_ih, k).T}
            tree[f"h{gate}"] = {"kernel": block(w_hh, k).T, "bias": block(b_ih, k) + block(b_hh, k)}
        return tree
    for k, gate in enumerate(_GATES["gru"]):
        bias = block(b_ih, k) if gate == "n" else block(b_ih, k) + block(b_hh, k)
        tree[f"i{gate}"] = {"kernel": block(w_ih, k).T, "bias": bias}
        tree[f"h{gate}"] = {"kernel": block(w_hh, k).T}
    tree["hn"]["bias"] = block(b_hh, 2)
    return tree


def apply(spec: RNNSpec, dtype, params: dict, x, state=None, lengths=None):
    """The pure sequence function: params (canonical names), x [T, B, I], state, lengths [B] or
    None -> (y [T, B, D*H], final state [L*D, B, H]); differentiable by ``jax.vjp``."""
    import flax.linen as nn

    _, jnp = _jax()
    T, B = x.shape[0], x.shape[1]
    zeros = jnp.zeros(spec.state_shape(B), x.dtype)  # [L*D, B, H]
    h0, c0 = split_state(state, spec.has_cell_state, zeros)
    valid = None if lengths is None else (jnp.arange(T)[:, None] < lengths)[..., None]  # [T, B, 1]
    cell = _cell_module(spec.cell, spec.hidden_size, dtype)
    h_n, c_n, layer_in = [], [], x
    for k in range(spec.num_layers):
        outs = []
        for d, suffix in enumerate(spec.suffixes()):
            row = k * spec.directions + d
            carry0 = (c0[row], h0[row]) if spec.has_cell_state else h0[row]
            rnn = nn.RNN(cell, time_major=True, return_carry=True, reverse=d == 1, keep_order=True)
            carry, y = rnn.apply({"params": {"cell": flax_variables(spec.cell, params, k, suffix)}}, layer_in,
                                 initial_carry=carry0, seq_lengths=lengths)  # y [T, B, H]
            if valid is not None:
                y = jnp.where(valid, y, 0)
            outs.append(y)
            if spec.has_cell_state:
                c_n.append(carry[0])
                h_n.append(carry[1])
            else:
                h_n.append(carry)
        layer_in = jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]  # [T, B, D*H]
    final = (jnp.stack(h_n), jnp.stack(c_n)) if spec.has_cell_state else jnp.stack(h_n)
    return layer_in, final


@functools.cache
def _jitted(spec: RNNSpec, dtype_name: str):
    """jit-wrapped forward and forward+backward of one spec and dtype (shared by runners)."""
    jax, jnp = _jax()
    dtype = jnp.dtype(dtype_name)

    def run(params, x, state, lengths):
        # float32 at full precision (TF32 off on a GPU, as for torch); half types keep their default
        precision = "highest" if dtype_name in ("float32", "float64") else None
        with jax.default_matmul_precision(precision):
            return apply(spec, dtype, params, x, state, lengths)

    def forward_backward(params, x, state, dy, lengths):
        (y, final), vjp = jax.vjp(lambda p, xx, s: run(p, xx, s, lengths), params, x, state)
        d_params, dx, d_state = vjp((dy, jax.tree.map(jnp.zeros_like, final)))
        d_state = d_state if spec.has_cell_state else (d_state,)
        return {**d_params, "x": dx, **dict(zip(spec.state_names(), d_state))}

    return jax.jit(run), jax.jit(forward_backward)


class FlaxRunner(JaxArrays):
    """Runner contract of docs/design.md; ``params`` and ``apply`` are the trainable form."""

    def __init__(self, backend, spec: RNNSpec, weights, device: str, dtype: str):
        self._setup(backend, spec, device, dtype)
        self.params = {name: self.put(weights[name]) for name in spec.weight_names()}
        self._forward, self._forward_backward = _jitted(spec, "bfloat16" if dtype == "bfloat16" else dtype)

    def apply(self, params: dict, x, state=None):
        """Pure: (y [T, B, D*H], final state) from params with the canonical names."""
        _, jnp = _jax()
        return apply(self.spec, jnp.dtype(self._np_dtype), params, x, state)

    def impl_label(self) -> str:
        import flax

        platform = "gpu" if self._on_gpu() else "cpu"
        return f"flax-{flax.__version__}-nn.RNN-xla-{platform}"

    def _state(self, state, batch: int):
        if state is not None:
            return self.put(state)
        zeros = self.put(np.zeros(self.spec.state_shape(batch)))  # [L*D, B, H]
        return (zeros, zeros) if self.spec.has_cell_state else zeros

    def _lengths(self, lengths, x):
        if lengths is not None:
            require_feature(self, "lengths")
        return self.put_lengths(lengths, x)

    def forward(self, x, state=None, lengths=None):
        x = self.put(x)
        self._last = self._forward(self.params, x, self._state(state, x.shape[1]), self._lengths(lengths, x))
        return self._last

    def forward_backward(self, x, state, dy, lengths=None) -> dict:
        """Gradients of L = sum(y * dy): every canonical weight, ``x``, ``h0`` (and ``c0``)."""
        x = self.put(x)
        args = (self.params, x, self._state(state, x.shape[1]), self.put(dy), self._lengths(lengths, x))
        self._last = self._forward_backward(*args)
        return self._last


class FlaxBackend:
    """One registered Flax cell (``flax_lstm`` runs LSTM specs only, and so on)."""

    framework = "jax"
    kind = "rnn"
    def __init__(self, name: str, cell: str):
        self.name, self.cell = name, cell

    def available(self, device: str = "cpu") -> tuple[bool, str]:
        check_device(device)
        try:
            import flax  # noqa: F401
        except ImportError as exc:
            return False, f"flax is not installed: {exc}"
        return jax_available(device)

    def capabilities(self, device: str) -> dict:
        dtypes, reasons = jax_dtypes(self.name, device)
        return declare(dtypes, cells=(self.cell,), features=FEATURES, reasons={
            **reasons, "cell": f"{self.name} runs {self.cell} cells only (Flax has one cell class per cell)"})

    def build(self, spec: RNNSpec, weights, device: str = "cpu", dtype: str = "float32") -> FlaxRunner:
        if spec.cell != self.cell:  # before the dtype: the cell is what this name means
            raise Unsupported(f"{self.name} runs {self.cell} cells only (Flax has one cell class per cell), not {spec.cell}")
        check_buildable(self, spec, weights, device, dtype)
        return FlaxRunner(self, spec, weights, device, dtype)


def make_backend(name: str, cell: str) -> FlaxBackend:
    return FlaxBackend(name, cell)

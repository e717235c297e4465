"""JAX: each layer a loop under ``jax.jit`` (``lax.scan`` / ``fori_loop``), gradients by ``jax.vjp``.

The canonical weights are the parameters as they are (``params`` maps the
``state_dict`` names to arrays of the same shapes), so the gradients that
``jax.vjp`` returns are already in the canonical layout.  Each layer's input
projection for all timesteps is one matmul before its loop, which then holds
only the recurrent matmul and the gate math (layout ``[T, B, G*H]``).

Two ways to get the gradient, chosen by the registered name:

* ``bptt="custom"`` (``jax_scan``, ``jax_scan_unroll8``): each layer is a
  ``jax.custom_vjp`` with a hand-written backpropagation through time, laid out
  for XLA on a CPU, where each loop step runs on one core and every kernel in it
  costs a few microseconds.  The forward loop adds the biases inside (where they
  fuse with the gate math), and for training stores each step's local
  derivatives in place of that step's input projection; the reverse loop then
  holds only a few products and ``dG @ W_hh``, writing dG over those derivatives
  in place.  After it, the weight and bias gradients of all T*B rows are one
  matmul (``[x, h_prev, 1]^T dG``) and ``dx = dG @ W_ih`` another, as cuDNN and
  oneDNN do.
* ``bptt="autodiff"`` (``jax_scan_autodiff``): ``lax.scan`` transposed by JAX,
  what a user gets by writing the cell; its reverse loop accumulates ``dW_hh``
  one outer product per step.  Also the check of the custom backward in the tests.

A ragged batch (``lengths`` [B]) is masked inside the loop: a padded step keeps
the state and writes 0 to y, and the hand-written backward passes dh (dc)
through it with a zero gate gradient.  The reverse direction is the same
forward loop over each row's valid prefix reversed in time (padding stays in
place), its output reversed back the same way.

``float64`` needs ``jax_enable_x64``, which is process-wide: it is never turned
on here.  A build for float64 is ``Unsupported`` unless the flag is already on
(a test's ``jax.enable_x64`` context, or a process started with
``JAX_ENABLE_X64=1``).  jax itself is imported lazily, after setting
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so that JAX does not claim most of the
GPU memory that torch shares with it in one process.
"""
from __future__ import annotations

import contextlib
import functools
import time

import numpy as np

from .jax_common import JaxArrays, _jax, jax_available, jax_dtypes
from .spec import FEATURES, RNNSpec, check_buildable, check_device, declare, require_unidirectional, split_state



# -- the cell math ----------------------------------------------------------------------------


def _matmul_precision(dtype):
    """Context for tracing the matmuls: the precision the config names, else full float32 (on a
    GPU, TF32 stays off unless a run asks for it, as for torch); half types keep their default."""
    jax, jnp = _jax()
    configured = jax.config.jax_default_matmul_precision
    if configured is None and jnp.dtype(dtype) in (jnp.float32, jnp.float64):
        return jax.default_matmul_precision("highest")
    return contextlib.nullcontext()


def _sigmoid(a):
    _, jnp = _jax()
    return 0.5 + 0.5 * jnp.tanh(0.5 * a)  # one tanh: cheaper on XLA CPU than exp and a division


def _cell(cell: str, gi_t, gh, h, c):
    """Gate math of one step; gi_t = x_t W_ih^T + its biases, gh = h W_hh^T (+ b_hh for GRU), [B, G*H].

    Returns (h_new, c_new, local, aux): the local derivatives that the hand-written backward
    reads, so that its loop is a few products (XLA drops them where nothing reads them).
    LSTM: local = d(h, c)/d(gate pre-activations) factors [B, 4H] = [g i(1-i), c f(1-f), i(1-g^2),
    tanh(c') o(1-o)], aux = [o (1 - tanh(c')^2), f] [B, 2H].  GRU: local = [B, 3H] with
    dgi = dh * local, aux = [r, z] [B, 2H].  rnn_tanh: both None (its backward needs h_new only).
    """
    _, jnp = _jax()
    H = h.shape[-1]
    if cell == "rnn_tanh":
        return jnp.tanh(gi_t + gh), None, None, None
    if cell == "lstm":
        is_g = jnp.arange(4 * H) // H == 2  # [4H]: the g block takes tanh, i, f and o a sigmoid
        scale = jnp.where(is_g, 1.0, 0.5).astype(gh.dtype)
        acts = scale * jnp.tanh(scale * (gi_t + gh)) + (0.5 - 0.5 * is_g).astype(gh.dtype)  # [B, 4H], one tanh each
        i, f, g, o = (acts[:, k * H:(k + 1) * H] for k in range(4))
        c_new = f * c + i * g
        tc = jnp.tanh(c_new)
        local = jnp.concatenate([g * i * (1 - i), c * f * (1 - f), i * (1 - g * g), tc * o * (1 - o)], axis=-1)
        return o * tc, c_new, local, jnp.concatenate([o * (1 - tc * tc), f], axis=-1)
    rz = _sigmoid(gi_t[:, :2 * H] + gh[:, :2 * H])  # [B, 2H]
    r, z = rz[:, :H], rz[:, H:]
    hn = gh[:, 2 * H:]
    n = jnp.tanh(gi_t[:, 2 * H:] + r * hn)
    dn = (1 - z) * (1 - n * n)  # dh_new/d(n pre-activation)
    local = jnp.concatenate([dn * hn * r * (1 - r), (h - n) * z * (1 - z), dn], axis=-1)
    return n + z * (h - n), None, local, rz


def _index(buf, t):
    jax, _ = _jax()
    return jax.lax.dynamic_index_in_dim(buf, t, 0, keepdims=False)


def _update(buf, value, t):
    jax, _ = _jax()
    return jax.lax.dynamic_update_index_in_dim(buf, value, t, 0)


# -- bptt="autodiff": what a user writes, lax.scan transposed by JAX ------------------------------


def _layer_autodiff(cell, unroll, x, h0, c0, w_ih, w_hh, b_ih, b_hh, valid=None):
    """One layer: the input projection with its biases for all timesteps, then lax.scan;
    valid [T, B, 1] (bool) or None marks the steps a ragged batch computes."""
    jax, jnp = _jax()
    gi = x @ w_ih.T + (b_ih if cell == "gru" else b_ih + b_hh)  # [T, B, G*H]
    w_t = w_hh.T  # [H, G*H]

    def step(carry, xs):
        h, c = carry
        gi_t, m = xs
        gh = h @ w_t  # [B, G*H]
        h_new, c_new, _, _ = _cell(cell, gi_t, gh + b_hh if cell == "gru" else gh, h, c)
        if m is None:
            return (h_new, c_new), h_new
        c = None if c is None else jnp.where(m, c_new, c)
        return (jnp.where(m, h_new, h), c), jnp.where(m, h_new, 0)  # a padded step keeps the state

    (h_n, c_n), y = jax.lax.scan(step, (h0, c0), (gi, valid), unroll=unroll)
    return y, h_n, c_n


# -- bptt="custom": in-place loops and the hand-written backward ---------------------------------


def _forward_loop(cell, unroll, gi, h0, c0, w_hh, b_ih, b_hh, valid, train):
    """Forward loop of one layer over gi = x W_ih^T [T, B, G*H]; the biases are added inside,
    where they fuse with the gate math instead of costing a pass over gi.

    With ``train`` it keeps what the backward reads, in place: step t's local derivatives
    overwrite gi's step t (read just before, same shape), and aux [T, B, 2H] takes the rest
    (see ``_cell``).  ``valid`` [T, B, 1] (bool) or None: a padded step keeps the state and
    writes 0 to y.  Returns (y [T, B, H], h_n, c_n, kept = (local, aux) or None).
    """
    jax, jnp = _jax()
    T, B, H = gi.shape[0], gi.shape[1], h0.shape[-1]
    w_t = w_hh.T  # [H, G*H]
    b_i = b_ih if cell == "gru" else b_ih + b_hh
    keep = train and cell != "rnn_tanh"

    def body(t, carry):
        h, c, y, kept = carry
        gh = h @ w_t  # [B, G*H]
        gi_t = _index(kept[0] if keep else gi, t) + b_i
        h_new, c_new, local, aux = _cell(cell, gi_t, gh + b_hh if cell == "gru" else gh, h, c)
        if keep:
            kept = (_update(kept[0], local, t), _update(kept[1], aux, t))
        if valid is None:
            return h_new, c_new, _update(y, h_new, t), kept
        m = _index(valid, t)  # [B, 1]
        c = None if c is None else jnp.where(m, c_new, c)
        return jnp.where(m, h_new, h), c, _update(y, jnp.where(m, h_new, 0), t), kept

    y = jnp.zeros((T, B, H), gi.dtype)  # [T, B, H]
    kept = (gi, jnp.zeros((T, B, 2 * H), gi.dtype)) if keep else None
    h_n, c_n, y, kept = jax.lax.fori_loop(0, T, body, (h0, c0, y, kept), unroll=unroll)
    return y, h_n, c_n, kept


def _backward_loop(cell, unroll, w_hh, y, kept, valid, dy, dh_n, dc_n):
    """Reverse loop of the hand-written BPTT: a few products and ``@ w_hh`` per step; a padded
    step (``valid`` False) has a zero gate gradient and passes dh (dc) through unchanged.

    Returns (dgi [T, B, G*H], dh0, dc0): dgi is the gradient at gi, and at gh too except in
    GRU's n block, which reaches W_hn h + b_hn through r.
    """
    jax, jnp = _jax()
    T, H = dy.shape[0], dy.shape[-1]
    # LSTM writes dgi over the local derivatives, in place: one fusion reads step t before the
    # write.  GRU reads them in several fusions, which would make XLA copy the whole buffer
    # every step, so it (and rnn_tanh, which keeps nothing) writes into a new buffer.
    in_place = cell == "lstm"

    def step(t, dh, dc, dgi):
        """(d [B, G*H], dh_prev, dc_prev) of step t, dh already holding dy_t."""
        if cell == "rnn_tanh":
            y_t = _index(y, t)
            d = dh * (1 - y_t * y_t)  # [B, H]
            return d, d @ w_hh, None
        local, aux = _index(dgi if in_place else kept[0], t), _index(kept[1], t)
        if cell == "lstm":
            dct = dc + dh * aux[:, :H]  # dL/dc_t
            d = local * jnp.concatenate([dct, dct, dct, dh], axis=-1)  # [B, 4H]
            return d, d @ w_hh, dct * aux[:, H:]
        d = local * jnp.concatenate([dh, dh, dh], axis=-1)  # [B, 3H]
        dgh = jnp.concatenate([d[:, :2 * H], d[:, 2 * H:] * aux[:, :H]], axis=-1)
        return d, dgh @ w_hh + dh * aux[:, H:], None

    def body(j, carry):
        t = T - 1 - j
        dh, dc, dgi = carry
        d, dh_prev, dc_prev = step(t, dh + _index(dy, t), dc, dgi)
        if valid is not None:  # a padded step: no gate gradient, dh and dc pass through
            m = _index(valid, t)  # [B, 1]
            d = jnp.where(m, d, 0)
            dh_prev = jnp.where(m, dh_prev, dh)
            dc_prev = None if dc is None else jnp.where(m, dc_prev, dc)
            # (the GRU's masked d is zero, so the gh-side product in the weight gradients is too)
        return dh_prev, dc_prev, _update(dgi, d, t)

    dgi = kept[0] if in_place else jnp.zeros(dy.shape[:2] + (w_hh.shape[0],), dy.dtype)  # [T, B, G*H]
    dh0, dc0, dgi = jax.lax.fori_loop(0, T, body, (dh_n, dc_n, dgi), unroll=unroll)
    return dgi, dh0, dc0


def _weight_grads(inputs, d):
    """Weight [G*H, K] and bias [G*H] gradients of all T*B rows in one matmul, [inputs | 1]^T d:
    the ones column gives the bias gradient without another pass over d."""
    _, jnp = _jax()
    T, B, K = inputs.shape
    lhs = jnp.concatenate([inputs, jnp.ones((T, B, 1), d.dtype)], axis=-1).reshape(T * B, K + 1)  # [T*B, K+1]
    g = lhs.T @ d.reshape(T * B, -1)  # [K+1, G*H]
    return g[:K].T, g[K]


@functools.cache
def _layer_custom():
    """One layer as a ``jax.custom_vjp`` with the hand-written BPTT backward (made once, lazily)."""
    jax, jnp = _jax()

    def primal(cell, unroll, x, h0, c0, w_ih, w_hh, b_ih, b_hh, valid=None):
        y, h_n, c_n, _ = _forward_loop(cell, unroll, x @ w_ih.T, h0, c0, w_hh, b_ih, b_hh, valid, train=False)
        return y, h_n, c_n

    def fwd(cell, unroll, x, h0, c0, w_ih, w_hh, b_ih, b_hh, valid=None):
        y, h_n, c_n, kept = _forward_loop(cell, unroll, x @ w_ih.T, h0, c0, w_hh, b_ih, b_hh, valid, train=True)
        return (y, h_n, c_n), (x, h0, c0, w_ih, w_hh, y, kept, valid)

    def bwd(cell, unroll, res, cts):
        # h_prev below is y shifted by one; at a padded step y is 0, but its gate gradient is 0 too
        x, h0, c0, w_ih, w_hh, y, kept, valid = res
        with _matmul_precision(x.dtype):  # traced after apply's context has closed
            dgi, dh0, dc0 = _backward_loop(cell, unroll, w_hh, y, kept, valid, *cts)
            h_prev = jnp.concatenate([h0[None], y[:-1]], axis=0)  # [T, B, H]
            if cell == "gru":
                H = h0.shape[-1]
                dgh = jnp.concatenate([dgi[..., :2 * H], dgi[..., 2 * H:] * kept[1][..., :H]], axis=-1)  # n block * r
                (dw_ih, db_ih), (dw_hh, db_hh) = _weight_grads(x, dgi), _weight_grads(h_prev, dgh)
            else:  # dgh = dgi: both weights in one matmul
                dw, db_ih = _weight_grads(jnp.concatenate([x, h_prev], axis=-1), dgi)
                dw_ih, dw_hh, db_hh = dw[:, :x.shape[-1]], dw[:, x.shape[-1]:], db_ih
            return dgi @ w_ih, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, None  # valid: no cotangent

    layer = jax.custom_vjp(primal, nondiff_argnums=(0, 1))
    layer.defvjp(fwd, bwd)
    return layer


def _time_reversal(x, lengths):
    """The reverse direction's view of a sequence [T, B, K]: each row's valid prefix reversed in
    time, its padding left in place (its own inverse); all of T reversed when lengths is None."""
    _, jnp = _jax()
    if lengths is None:
        return x[::-1]
    t = jnp.arange(x.shape[0])[:, None]  # [T, 1]
    index = jnp.where(t < lengths, lengths - 1 - t, t)  # [T, B]
    return jnp.take_along_axis(x, index[..., None], axis=0)


def apply(cell: str, unroll: int, bptt: str, params: dict, x, state=None, lengths=None):
    """The pure sequence function: params (canonical names), x [T, B, I], state -> (y, final).

    state is None (zeros), h0 or (h0, c0), each [L*D, B, H]; final likewise (h_n or (h_n, c_n));
    y [T, B, D*H], D = 2 when params hold ``_reverse`` weights.  lengths None or int [B]: row b
    computes t < lengths[b] only (y is 0 past it).  Differentiable by ``jax.grad`` / ``jax.vjp``
    in both ``bptt`` modes.
    """
    _, jnp = _jax()
    suffixes = ("", "_reverse") if "weight_ih_l0_reverse" in params else ("",)
    layers = sum(1 for name in params if name.startswith("weight_ih_l") and not name.endswith("_reverse"))
    T, B, H = x.shape[0], x.shape[1], params["weight_hh_l0"].shape[1]
    zeros = jnp.zeros((layers * len(suffixes), B, H), x.dtype)  # [L*D, B, H]
    h0, c0 = split_state(state, cell == "lstm", zeros)
    valid = None if lengths is None else (jnp.arange(T)[:, None] < lengths)[..., None]  # [T, B, 1]
    layer = _layer_custom() if bptt == "custom" else _layer_autodiff
    h_n, c_n = [], []
    with _matmul_precision(x.dtype):
        for k in range(layers):
            outs = []
            for d, suffix in enumerate(suffixes):
                w = [params[f"{p}_l{k}{suffix}"] for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                row = k * len(suffixes) + d
                x_d = x if d == 0 else _time_reversal(x, lengths)
                y, h, c = layer(cell, unroll, x_d, h0[row], None if c0 is None else c0[row], *w, valid)
                outs.append(y if d == 0 else _time_reversal(y, lengths))
                h_n.append(h)
                c_n.append(c)
            x = jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]  # [T, B, D*H]
    final = (jnp.stack(h_n), jnp.stack(c_n)) if cell == "lstm" else jnp.stack(h_n)
    return x, final


_EXECUTABLES: dict = {}  # compiled once per configuration and argument signature, shared by runners


@functools.cache
def _jitted(cell: str, unroll: int, bptt: str):
    """jit-wrapped forward and forward+backward of one configuration."""
    jax, jnp = _jax()
    def forward(params, x, state, lengths):
        return apply(cell, unroll, bptt, params, x, state, lengths)

    def forward_backward(params, x, state, dy, lengths):
        run = functools.partial(apply, cell, unroll, bptt, lengths=lengths)
        (y, final), vjp = jax.vjp(run, params, x, state)
        d_final = jax.tree.map(jnp.zeros_like, final)
        d_params, dx, d_state = vjp((dy, d_final))
        d_state = d_state if cell == "lstm" else (d_state,)
        return {**d_params, "x": dx, **dict(zip(("h0", "c0"), d_state))}

    def step(params, x_t, state):  # x_t [B, I] gains its time axis inside the jit: no eager reshape per step
        return apply(cell, unroll, bptt, params, x_t[None], state)[1]

    return jax.jit(forward), jax.jit(forward_backward), jax.jit(step)


class JaxScanRunner(JaxArrays):
    """Runner contract of docs/design.md; ``params`` and ``apply`` are the trainable form."""

    def __init__(self, backend, spec: RNNSpec, weights, device: str, dtype: str):
        self._setup(backend, spec, device, dtype)
        self.params = {name: self.put(weights[name]) for name in spec.weight_names()}
        self._fns = dict(zip(("forward", "forward_backward", "step"), _jitted(spec.cell, backend.unroll, backend.bptt)))
        self._zeros = {}

    def apply(self, params: dict, x, state=None, lengths=None):
        """Pure: (y [T, B, D*H], final state) from params with the canonical names; see ``apply``."""
        return apply(self.spec.cell, self.backend.unroll, self.backend.bptt, params, x, state, lengths)

    def impl_label(self) -> str:
        return "xla-gpu" if self._jax_device.platform in ("gpu", "cuda", "rocm") else "xla-cpu"


    def _state(self, state, batch: int):
        """None | h0 | (h0, c0) -> device arrays; zeros [L*D, B, H] made once per batch size, so that
        a zero state and a given one share one executable and dL/dh0 (dL/dc0) still comes back."""
        if state is not None:
            return self.put(state)
        if batch not in self._zeros:
            zeros = self.put(np.zeros(self.spec.state_shape(batch)))  # [L*D, B, H]
            self._zeros[batch] = (zeros, zeros) if self.spec.has_cell_state else zeros
        return self._zeros[batch]

    def _executable(self, kind: str, *args):
        """The compiled executable for these arguments' shapes, dtypes and device: compiled ahead
        (``lower(...).compile()``) on first sight, then reused by every runner of this variant."""
        jax, _ = _jax()
        leaves, tree = jax.tree.flatten(args)
        key = (kind, self.spec.cell, self.backend.unroll, self.backend.bptt, jax.config.jax_enable_x64,
               jax.config.jax_default_matmul_precision, tree, tuple((a.shape, a.dtype, a.sharding) for a in leaves))
        if key not in _EXECUTABLES:
            _EXECUTABLES[key] = self._fns[kind].lower(*args).compile()
        return _EXECUTABLES[key]

    def compile(self, x, state=None, dy=None, lengths=None) -> float:
        """Compile ahead (``jit(...).lower(...).compile()``) the forward, and forward_backward when
        dy is given, for these shapes; returns the seconds spent.  The harness calls this before
        timing so that compile time is reported apart and never falls inside a timed repeat."""
        t0 = time.perf_counter()
        x = self.put(x)
        state, lengths = self._state(state, x.shape[1]), self.put_lengths(lengths, x)
        self._executable("forward", self.params, x, state, lengths)
        if dy is not None:
            self._executable("forward_backward", self.params, x, state, self.put(dy), lengths)
        return time.perf_counter() - t0

    def forward(self, x, state=None, lengths=None):
        """(y [T, B, D*H], final state); with ``lengths`` [B], row b computes t < lengths[b] only."""
        x = self.put(x)
        args = (self.params, x, self._state(state, x.shape[1]), self.put_lengths(lengths, x))
        self._last = self._executable("forward", *args)(*args)
        return self._last

    def forward_backward(self, x, state, dy, lengths=None) -> dict:
        """Gradients of L = sum(y * dy): every canonical weight, ``x``, ``h0`` (and ``c0``)."""
        x = self.put(x)
        args = (self.params, x, self._state(state, x.shape[1]), self.put(dy), self.put_lengths(lengths, x))
        self._last = self._executable("forward_backward", *args)(*args)
        return self._last

    def step(self, x_t, state=None):
        """One timestep: x_t [B, I] -> the new state (unidirectional models only)."""
        require_unidirectional(self.spec, "step")
        x_t = self.put(x_t)
        args = (self.params, x_t, self._state(state, x_t.shape[0]))
        self._last = self._executable("step", *args)(*args)
        return self._last


class JaxScanBackend:
    """A registered JAX variant: ``unroll`` of its loops and the ``bptt`` mode (custom | autodiff)."""

    framework = "jax"
    kind = "rnn"

    def __init__(self, name: str, unroll: int = 1, bptt: str = "custom"):
        if bptt not in ("custom", "autodiff"):
            raise ValueError(f"bptt must be custom or autodiff, got {bptt!r}")
        self.name, self.unroll, self.bptt = name, unroll, bptt

    def available(self, device: str = "cpu") -> tuple[bool, str]:
        check_device(device)
        return jax_available(device)

    def capabilities(self, device: str) -> dict:
        """Every cell; bidirectional and lengths in both bptt modes."""
        dtypes, reasons = jax_dtypes(self.name, device)
        return declare(dtypes, features=FEATURES, reasons=reasons)

    def build(self, spec: RNNSpec, weights, device: str = "cpu", dtype: str = "float32") -> JaxScanRunner:
        check_buildable(self, spec, weights, device, dtype)
        return JaxScanRunner(self, spec, weights, device, dtype)


def make_backend(name: str, unroll: int = 1, bptt: str = "custom") -> JaxScanBackend:
    return JaxScanBackend(name, unroll, bptt)

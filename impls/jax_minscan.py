"""JAX minGRU / minLSTM under ``jit``: sequential (``lax.scan``) or parallel (``lax.associative_scan``).

A layer is h_t = a_t h_{t-1} + b_t, a_t and b_t from x_t alone (docs/design.md "Parallel-in-time
cells").  ``jax_minscan`` runs it step by step in ``lax.scan``; ``jax_minscan_assoc`` runs
``lax.associative_scan`` over T with the composition (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2),
log2(T) levels of work instead of T dependent steps, and adds the h0 term apart: h_t = A_t h0 +
B_t, exact for an h0 of any sign.  The scan is in linear space: a is in (0, 1), so products only
underflow towards 0, which is their value, and no log or exp is rounded (torch_scan's log space
loses eps * |log A_t|).  Gradients by ``jax.vjp`` through either scan.  bfloat16 / float16 project
in their own type and scan in float32, as torch_scan does.

Lengths and the reverse direction as in ``jax_scan``: a padded step's projection is zeroed, its
output is 0, the final state is h at len-1, and the reverse direction scans each row's valid
prefix reversed in time.  The runner is ``jax_scan``'s (put/get, ahead-of-time executables, the
hooks); only the sequence function differs.
"""
from __future__ import annotations

import functools

from .jax_common import _jax, jax_available, jax_dtypes
from .jax_scan import JaxScanRunner, _matmul_precision, _sigmoid, _time_reversal
from .spec import FEATURES, GATES, PARALLEL_CELLS, RNNSpec, check_buildable, check_device, declare

FORMS = ("sequential", "associative")


def _candidate(v):
    """g(v): v + 1/2 for v >= 0, sigmoid(v) below."""
    _, jnp = _jax()
    return jnp.where(v >= 0, v + 0.5, _sigmoid(v))


def linear_coefficients(cell: str, gi):
    """(a, b), each [T, B, H], of minGRU (z, h~) or minLSTM (f, i, h~) from gi [T, B, G*H]."""
    _, jnp = _jax()
    if cell == "mingru":
        a_z, a_h = jnp.split(gi, 2, axis=-1)
        z = _sigmoid(a_z)
        return 1 - z, z * _candidate(a_h)
    a_f, a_i, a_h = jnp.split(gi, 3, axis=-1)
    f, i = _sigmoid(a_f), _sigmoid(a_i)
    total = f + i
    return f / total, i / total * _candidate(a_h)


def _sequential(a, b, h0):
    """h [T, B, H], one step after another."""
    jax, _ = _jax()

    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    return jax.lax.scan(step, h0, (a, b))[1]


def _associative(a, b, h0):
    """h [T, B, H] = A_t h0 + B_t, (A, B) the associative scan of the steps' (a, b)."""
    jax, _ = _jax()

    def compose(first, second):
        return first[0] * second[0], second[0] * first[1] + second[1]

    A, B = jax.lax.associative_scan(compose, (a, b), axis=0)
    return A * h0 + B


def layer(form: str, cell: str, gi, h0):
    """One layer and direction: gi [T, B, G*H], h0 [B, H] -> h [T, B, H], scanned in float32 or wider."""
    _, jnp = _jax()
    work = jnp.promote_types(gi.dtype, jnp.float32)
    a, b = linear_coefficients(cell, gi.astype(work))
    return (_sequential if form == "sequential" else _associative)(a, b, h0.astype(work)).astype(gi.dtype)


def apply(form: str, cell: str, params: dict, x, state=None, lengths=None):
    """The pure sequence function: params (canonical names), x [T, B, I], h0 [L*D, B, H] or None,
    lengths None or int [B] -> (y [T, B, D*H], h_n [L*D, B, H]).  Differentiable by ``jax.vjp``."""
    _, jnp = _jax()
    suffixes = ("", "_reverse") if "weight_ih_l0_reverse" in params else ("",)
    layers = sum(1 for name in params if name.startswith("weight_ih_l") and not name.endswith("_reverse"))
    T, B = x.shape[:2]
    H = params["bias_ih_l0"].shape[0] // GATES[cell]
    h0 = state if state is not None else jnp.zeros((layers * len(suffixes), B, H), x.dtype)  # [L*D, B, H]
    valid = None if lengths is None else (jnp.arange(T)[:, None] < lengths)[..., None]  # [T, B, 1]
    h_n = []
    with _matmul_precision(x.dtype):
        for k in range(layers):
            outs = []
            for d, suffix in enumerate(suffixes):
                gi = x @ params[f"weight_ih_l{k}{suffix}"].T + params[f"bias_ih_l{k}{suffix}"]  # [T, B, G*H]
                if d == 1:
                    gi = _time_reversal(gi, lengths)
                if valid is not None:
                    gi = jnp.where(valid, gi, 0)
                h = layer(form, cell, gi, h0[k * len(suffixes) + d])  # [T, B, H]
                h_n.append(h[-1] if lengths is None else h[lengths - 1, jnp.arange(B)])
                if d == 1:
                    h = _time_reversal(h, lengths)
                outs.append(h if valid is None else jnp.where(valid, h, 0))
            x = jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]  # [T, B, D*H]
    return x, jnp.stack(h_n)


@functools.cache
def _jitted(form: str, cell: str):
    """jit-wrapped forward, forward+backward and step of one form and cell."""
    jax, jnp = _jax()

    def forward(params, x, state, lengths):
        return apply(form, cell, params, x, state, lengths)

    def forward_backward(params, x, state, dy, lengths):
        (y, final), vjp = jax.vjp(functools.partial(apply, form, cell, lengths=lengths), params, x, state)
        d_params, dx, dh0 = vjp((dy, jnp.zeros_like(final)))
        return {**d_params, "x": dx, "h0": dh0}

    def step(params, x_t, state):
        return apply(form, cell, params, x_t[None], state)[1]

    return jax.jit(forward), jax.jit(forward_backward), jax.jit(step)


class MinScanRunner(JaxScanRunner):
    """``jax_scan``'s runner around this module's sequence function."""

    def __init__(self, backend, spec: RNNSpec, weights, device: str, dtype: str):
        super().__init__(backend, spec, weights, device, dtype)
        self._fns = dict(zip(("forward", "forward_backward", "step"), _jitted(backend.form, spec.cell)))

    def apply(self, params: dict, x, state=None, lengths=None):
        """Pure: (y [T, B, D*H], h_n) from params with the canonical names; see ``apply``."""
        return apply(self.backend.form, self.spec.cell, params, x, state, lengths)

    def impl_label(self) -> str:
        scan = "lax.scan" if self.backend.form == "sequential" else "associative_scan"
        return f"{scan}-{super().impl_label()}"


class MinScanBackend:
    framework = "jax"
    kind = "rnn"
    unroll = 1  # the executables' cache key of jax_scan's runner; ``bptt`` below names the form there

    def __init__(self, name: str, form: str):
        if form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
        self.name, self.form, self.bptt = name, form, form
        self.scan_form = "parallel" if form == "associative" else "sequential"  # the records' scan_form

    def available(self, device: str = "cpu") -> tuple[bool, str]:
        check_device(device)
        return jax_available(device)

    def capabilities(self, device: str) -> dict:
        """minGRU and minLSTM; bidirectional and lengths, in JAX's dtypes."""
        dtypes, reasons = jax_dtypes(self.name, device)
        return declare(dtypes, cells=PARALLEL_CELLS, features=FEATURES, reasons=reasons)

    def build(self, spec: RNNSpec, weights, device: str = "cpu", dtype: str = "float32") -> MinScanRunner:
        check_buildable(self, spec, weights, device, dtype)
        return MinScanRunner(self, spec, weights, device, dtype)


def make_backend(name: str, form: str) -> MinScanBackend:
    return MinScanBackend(name, form)

"""Float64 NumPy oracle: forward and full backpropagation through time.

Every backend is checked against this.  It is written for clarity, not speed:
one loop over layers, one over timesteps, the gate math spelled out as in
PyTorch's documentation (LSTM i, f, g, o; GRU r, z, n with
n = tanh(W_in x + b_in + r * (W_hn h + b_hn))).
"""
from __future__ import annotations

import numpy as np

from .spec import RNNSpec, check_weights, normalize_state


def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _cell_forward(cell, gi, h, c, w_hh, b_hh):
    """One step from the input projection gi [B, G*H]; returns h, c and what the backward needs."""
    gh = h @ w_hh.T + b_hh  # [B, G*H]
    if cell == "rnn_tanh":
        h_new = np.tanh(gi + gh)
        return h_new, None, (h_new,)
    if cell == "lstm":
        i, f, g, o = np.split(gi + gh, 4, axis=1)
        i, f, g, o = _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)
        c_new = f * c + i * g
        tc = np.tanh(c_new)
        return o * tc, c_new, (i, f, g, o, tc)
    ir, iz, in_ = np.split(gi, 3, axis=1)
    hr, hz, hn = np.split(gh, 3, axis=1)
    r, z = _sigmoid(ir + hr), _sigmoid(iz + hz)
    n = np.tanh(in_ + r * hn)
    return (1 - z) * n + z * h, None, (r, z, n, hn)


def _cell_backward(cell, saved, h_prev, c_prev, dh, dc):
    """Gate gradients of one step: (d gi [B, G*H], d gh [B, G*H], dc_prev)."""
    if cell == "rnn_tanh":
        (h_new,) = saved
        d = dh * (1 - h_new**2)
        return d, d, None
    if cell == "lstm":
        i, f, g, o, tc = saved
        dc_total = dc + dh * o * (1 - tc**2)
        d = np.concatenate(
            [dc_total * g * i * (1 - i), dc_total * c_prev * f * (1 - f), dc_total * i * (1 - g**2), dh * tc * o * (1 - o)],
            axis=1,
        )
        return d, d, dc_total * f
    r, z, n, hn = saved
    dn = dh * (1 - z) * (1 - n**2)
    dz = dh * (h_prev - n) * z * (1 - z)
    dr = dn * hn * r * (1 - r)
    return np.concatenate([dr, dz, dn], axis=1), np.concatenate([dr, dz, dn * r], axis=1), None


def _direct_dh(cell, saved, dh):
    """The part of dh_prev that does not go through W_hh (GRU's z * h term)."""
    if cell == "gru":
        return dh * saved[1]
    return 0.0


def _prepare(spec: RNNSpec, weights, x, state):
    check_weights(spec, weights)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != spec.input_size:
        raise ValueError(f"x must have shape [T, B, {spec.input_size}], got {x.shape}")
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    return w, x, normalize_state(spec, state, x.shape[1])


def _run(spec: RNNSpec, w, x, states):
    """Forward over all layers; returns y, final states and the per-layer tape."""
    T = x.shape[0]
    h0, c0 = states[0], (states[1] if spec.has_cell_state else None)
    tape, h_n, c_n = [], [], []
    layer_in = x
    for k in range(spec.num_layers):
        w_ih, w_hh = w[f"weight_ih_l{k}"], w[f"weight_hh_l{k}"]
        gi_all = layer_in @ w_ih.T + w[f"bias_ih_l{k}"]  # [T, B, G*H], hoisted input projection
        h, c = h0[k], (c0[k] if c0 is not None else None)
        hs, cs, saved = [h], [c], []
        for t in range(T):
            h, c, s = _cell_forward(spec.cell, gi_all[t], h, c, w_hh, w[f"bias_hh_l{k}"])
            hs.append(h)
            cs.append(c)
            saved.append(s)
        out = np.stack(hs[1:])  # [T, B, H]
        tape.append((layer_in, hs, cs, saved))
        h_n.append(h)
        c_n.append(c)
        layer_in = out
    final = (np.stack(h_n), np.stack(c_n)) if spec.has_cell_state else np.stack(h_n)
    return layer_in, final, tape


def forward(spec: RNNSpec, weights, x, state=None):
    """y [T, B, H] and final state (h_n [L, B, H], or (h_n, c_n) for LSTM), in float64."""
    w, x, states = _prepare(spec, weights, x, state)
    y, final, _ = _run(spec, w, x, states)
    return y, final


def forward_backward(spec: RNNSpec, weights, x, state, dy, dh_n=None, dc_n=None):
    """Gradients of L = sum(y * dy) (+ sum(h_n * dh_n) + sum(c_n * dc_n)).

    Returns a dict with every canonical weight name, ``x``, ``h0`` (and ``c0``).
    """
    w, x, states = _prepare(spec, weights, x, state)
    y, _, tape = _run(spec, w, x, states)
    L, B, H = spec.num_layers, x.shape[1], spec.hidden_size
    grads = {}
    d_out = np.asarray(dy, dtype=np.float64)  # [T, B, H] gradient arriving at the layer's output
    if d_out.shape != y.shape:
        raise ValueError(f"dy must have shape {y.shape}, got {d_out.shape}")
    dh0 = np.zeros((L, B, H))
    dc0 = np.zeros((L, B, H))
    for k in reversed(range(L)):
        layer_in, hs, cs, saved = tape[k]
        w_hh = w[f"weight_hh_l{k}"]
        T = layer_in.shape[0]
        dgi_all = np.zeros((T, B, spec.gates * H))
        dW_hh = np.zeros_like(w_hh)
        db_hh = np.zeros(spec.gates * H)
        dh = np.zeros((B, H)) if dh_n is None else np.asarray(dh_n[k], dtype=np.float64)
        dc = np.zeros((B, H)) if dc_n is None else np.asarray(dc_n[k], dtype=np.float64)
        for t in reversed(range(T)):
            dh = dh + d_out[t]
            dgi, dgh, dc = _cell_backward(spec.cell, saved[t], hs[t], cs[t], dh, dc)
            dgi_all[t] = dgi
            dW_hh += dgh.T @ hs[t]
            db_hh += dgh.sum(0)
            dh = dgh @ w_hh + _direct_dh(spec.cell, saved[t], dh)
        dh0[k] = dh
        if spec.has_cell_state:
            dc0[k] = dc
        flat_dgi = dgi_all.reshape(T * B, -1)
        grads[f"weight_ih_l{k}"] = flat_dgi.T @ layer_in.reshape(T * B, -1)
        grads[f"weight_hh_l{k}"] = dW_hh
        grads[f"bias_ih_l{k}"] = flat_dgi.sum(0)
        grads[f"bias_hh_l{k}"] = db_hh
        d_out = dgi_all @ w[f"weight_ih_l{k}"]  # [T, B, I_k]
    grads["x"] = d_out
    grads["h0"] = dh0
    if spec.has_cell_state:
        grads["c0"] = dc0
    return {name: grads[name] for name in spec.weight_names() + ["x"] + spec.state_names()}

"""Float64 NumPy oracle: forward and full backpropagation through time.

Every backend is checked against this.  It is written for clarity, not speed:
one loop over layers, one over timesteps, the gate math spelled out as in
PyTorch's documentation (LSTM i, f, g, o; GRU r, z, n with
n = tanh(W_in x + b_in + r * (W_hn h + b_hn))).

Bidirectional models and ``lengths`` follow torch's packed sequences: row b
computes only t < lengths[b]; the forward direction runs t = 0..len-1, the
reverse direction starts from its h0 at t = len-1 and runs down to t = 0; y is
exactly 0 at t >= len.  A padded step is spelled out as "the state passes
through unchanged, the output is 0", so the backward gives exactly 0 there.

minGRU and minLSTM (docs/design.md "Parallel-in-time cells") run here as the sequential
recurrence h_t = a_t h_{t-1} + b_t, a_t and b_t from x_t alone: the oracle of every
parallel (scan) form, which is the same sum reassociated.
"""
from __future__ import annotations

import numpy as np

from .spec import PARALLEL_CELLS, RNNSpec, check_lengths, check_weights, normalize_state


def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _g(v):
    """minGRU/minLSTM's candidate activation: v + 1/2 for v >= 0, sigmoid(v) below (positive, continuous)."""
    return np.where(v >= 0, v + 0.5, _sigmoid(v))


def _g_prime(v):
    s = _sigmoid(v)
    return np.where(v >= 0, 1.0, s * (1 - s))


def _linear_forward(cell, gi, h):
    """h_new = a * h + b of a parallel-in-time cell, a and b from gi [B, G*H] alone."""
    if cell == "mingru":
        az, ah = np.split(gi, 2, axis=1)
        z, cand = _sigmoid(az), _g(ah)
        a, b = 1 - z, z * cand
        return a * h + b, (ah, z, cand, a)
    af, ai, ah = np.split(gi, 3, axis=1)
    f, i, cand = _sigmoid(af), _sigmoid(ai), _g(ah)
    total = f + i
    a, b = f / total, i / total * cand
    return a * h + b, (ah, f, i, total, cand, a)


def _linear_backward(cell, saved, h_prev, dh):
    """d gi [B, G*H] of one step of a parallel-in-time cell (dh_prev = dh * a is ``_direct_dh``)."""
    da, db = dh * h_prev, dh
    if cell == "mingru":
        ah, z, cand, _ = saved
        dz = db * cand - da
        return np.concatenate([dz * z * (1 - z), db * z * _g_prime(ah)], axis=1)
    ah, f, i, total, cand, _ = saved
    d_input_gate = db * cand  # dL/d(i / (f + i))
    df = (da - d_input_gate) * i / total**2
    di = (d_input_gate - da) * f / total**2
    return np.concatenate([df * f * (1 - f), di * i * (1 - i), db * i / total * _g_prime(ah)], axis=1)


def _cell_forward(cell, gi, h, c, w_hh, b_hh):
    """One step from the input projection gi [B, G*H]; returns h, c and what the backward needs."""
    if w_hh is None:
        h_new, saved = _linear_forward(cell, gi, h)
        return h_new, None, saved
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
    """Gate gradients of one step: (d gi [B, G*H], d gh [B, G*H] (None without W_hh), dc_prev)."""
    if cell in PARALLEL_CELLS:
        return _linear_backward(cell, saved, h_prev, dh), None, None
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
    """The part of dh_prev that does not go through W_hh (GRU's z * h term, a parallel cell's a * h)."""
    if cell == "gru":
        return dh * saved[1]
    if cell in PARALLEL_CELLS:
        return dh * saved[-1]
    return 0.0


def _layer_weights(spec: RNNSpec, w, layer: int, suffix: str):
    """(W_ih, W_hh, b_ih, b_hh) of one layer and direction; W_hh and b_hh None for a parallel cell."""
    named = dict(zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), [None] * 4))
    for name in spec.layer_weight_names(layer, suffix):
        named[name.split("_l")[0]] = w[name]
    return tuple(named.values())


def _prepare(spec: RNNSpec, weights, x, state, lengths):
    check_weights(spec, weights)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != spec.input_size:
        raise ValueError(f"x must have shape [T, B, {spec.input_size}], got {x.shape}")
    T, B = x.shape[:2]
    lengths = check_lengths(lengths, T, B)
    valid = np.ones((T, B, 1), bool) if lengths is None else (np.arange(T)[:, None] < lengths)[..., None]  # [T, B, 1]
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    return w, x, normalize_state(spec, state, B), valid


def _directions(spec: RNNSpec, T: int):
    """(state row offset, weight suffix, time order) of each direction of a layer."""
    orders = (list(range(T)), list(reversed(range(T))))
    return list(zip(range(spec.directions), spec.suffixes(), orders))


def _run(spec: RNNSpec, w, x, states, valid):
    """Forward over all layers and directions; returns y, final states and the tape."""
    T = x.shape[0]
    D, H = spec.directions, spec.hidden_size
    h0, c0 = states[0], (states[1] if spec.has_cell_state else None)
    tape, h_n, c_n = [], [], []
    layer_in = x
    for k in range(spec.num_layers):
        out = np.zeros(x.shape[:2] + (D * H,))  # [T, B, D*H]
        for d, suffix, order in _directions(spec, T):
            w_ih, w_hh, b_ih, b_hh = _layer_weights(spec, w, k, suffix)
            gi_all = layer_in @ w_ih.T + b_ih  # [T, B, G*H], hoisted input projection
            row = k * D + d
            h, c = h0[row], (c0[row] if c0 is not None else None)
            hs, cs, saved = {}, {}, {}  # by t: the state before step t, and step t's saved values
            for t in order:
                hs[t], cs[t] = h, c
                h_new, c_new, saved[t] = _cell_forward(spec.cell, gi_all[t], h, c, w_hh, b_hh)
                h = np.where(valid[t], h_new, h)  # a padded step passes the state through
                c = np.where(valid[t], c_new, c) if c is not None else None
                out[t, :, d * H:(d + 1) * H] = np.where(valid[t], h_new, 0.0)
            tape.append((layer_in, order, hs, cs, saved))
            h_n.append(h)
            c_n.append(c)
        layer_in = out
    final = (np.stack(h_n), np.stack(c_n)) if spec.has_cell_state else np.stack(h_n)
    return layer_in, final, tape


def forward(spec: RNNSpec, weights, x, state=None, lengths=None):
    """y [T, B, D*H] and final state (h_n [L*D, B, H], or (h_n, c_n) for LSTM), in float64."""
    w, x, states, valid = _prepare(spec, weights, x, state, lengths)
    y, final, _ = _run(spec, w, x, states, valid)
    return y, final


def forward_backward(spec: RNNSpec, weights, x, state, dy, dh_n=None, dc_n=None, lengths=None):
    """Gradients of L = sum(y * dy) (+ sum(h_n * dh_n) + sum(c_n * dc_n)).

    Returns a dict with every canonical weight name, ``x``, ``h0`` (and ``c0``).
    """
    w, x, states, valid = _prepare(spec, weights, x, state, lengths)
    y, _, tape = _run(spec, w, x, states, valid)
    T, B = x.shape[:2]
    D, H = spec.directions, spec.hidden_size
    grads = {}
    d_out = np.asarray(dy, dtype=np.float64)  # [T, B, D*H] gradient arriving at the layer's output
    if d_out.shape != y.shape:
        raise ValueError(f"dy must have shape {y.shape}, got {d_out.shape}")
    dh0 = np.zeros(spec.state_shape(B))
    dc0 = np.zeros(spec.state_shape(B))
    for k in reversed(range(spec.num_layers)):
        d_in = 0.0
        for d, suffix, _ in _directions(spec, T):
            layer_in, order, hs, cs, saved = tape[k * D + d]
            w_ih, w_hh, _, _ = _layer_weights(spec, w, k, suffix)
            row = k * D + d
            dgi_all = np.zeros((T, B, spec.gates * H))
            dW_hh = np.zeros((spec.gates * H, H))
            db_hh = np.zeros(spec.gates * H)
            dh = np.zeros((B, H)) if dh_n is None else np.asarray(dh_n[row], dtype=np.float64)
            dc = np.zeros((B, H)) if dc_n is None else np.asarray(dc_n[row], dtype=np.float64)
            for t in reversed(order):
                m = valid[t]
                dh_step = dh + d_out[t, :, d * H:(d + 1) * H]  # dL/dh_new where the step is valid
                dgi, dgh, dc_prev = _cell_backward(spec.cell, saved[t], hs[t], cs[t], dh_step, dc)
                dgi = np.where(m, dgi, 0.0)
                dgi_all[t] = dgi
                through_w_hh = 0.0
                if w_hh is not None:
                    dgh = np.where(m, dgh, 0.0)
                    dW_hh += dgh.T @ hs[t]
                    db_hh += dgh.sum(0)
                    through_w_hh = dgh @ w_hh
                dh = np.where(m, through_w_hh + _direct_dh(spec.cell, saved[t], dh_step), dh)
                dc = np.where(m, dc_prev, dc) if spec.has_cell_state else dc
            dh0[row] = dh
            if spec.has_cell_state:
                dc0[row] = dc
            flat_dgi = dgi_all.reshape(T * B, -1)
            layer_grads = {"weight_ih": flat_dgi.T @ layer_in.reshape(T * B, -1), "weight_hh": dW_hh,
                           "bias_ih": flat_dgi.sum(0), "bias_hh": db_hh}
            for name in spec.layer_weight_names(k, suffix):
                grads[name] = layer_grads[name.split("_l")[0]]
            d_in = d_in + dgi_all @ w_ih  # [T, B, I_k]
        d_out = d_in
    grads["x"] = d_out
    grads["h0"] = dh0
    if spec.has_cell_state:
        grads["c0"] = dc0
    return {name: grads[name] for name in spec.weight_names() + ["x"] + spec.state_names()}

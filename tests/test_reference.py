"""The oracle's BPTT against central finite differences, and against torch.nn (packed sequences)."""
import numpy as np
import pytest

from impls import reference
from impls.spec import RNNSpec, init_weights, make_inputs


RAGGED = np.array([5, 1, 3])  # [B]: a full row, a single step, one in between


def _loss(spec, w, x, state, dy, lengths=None, d_final=None):
    y, final = reference.forward(spec, w, x, state, lengths=lengths)
    loss = float(np.sum(y * dy))
    if d_final is not None:  # a cotangent on the final state too: dh0 flows through both directions' ends
        finals = final if spec.has_cell_state else (final,)
        loss += sum(float(np.sum(f * d)) for f, d in zip(finals, d_final))
    return loss


GRADIENT_CASES = [  # (bidirectional, lengths, with a final-state cotangent)
    (False, None, False),
    (True, None, False),
    (False, RAGGED, True),
    (True, RAGGED, True),
]


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru", "mingru", "minlstm"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("case", GRADIENT_CASES, ids=lambda c: f"{'bi' if c[0] else 'uni'}-{'ragged' if c[1] is not None else 'full'}")
def test_gradients_match_finite_differences(cell, layers, case):
    bidirectional, lengths, with_final = case
    spec = RNNSpec(cell, input_size=3, hidden_size=4, num_layers=layers, bidirectional=bidirectional)
    w = init_weights(spec, seed=3)
    x, state, dy = make_inputs(spec, seq_len=5, batch=3, with_state=True)
    rng = np.random.default_rng(5)
    d_final = [rng.standard_normal(spec.state_shape(3)) for _ in spec.state_names()] if with_final else None
    kwargs = dict(zip(("dh_n", "dc_n"), d_final)) if with_final else {}
    grads = reference.forward_backward(spec, w, x, state, dy, lengths=lengths, **kwargs)
    assert set(grads) == set(spec.weight_names() + ["x"] + spec.state_names())
    if lengths is not None:
        padded = np.arange(5)[:, None] >= lengths  # [T, B]
        assert np.all(grads["x"][padded] == 0)
    eps = 1e-6
    names = list(spec.state_names())
    leaves = dict(w, x=x, **dict(zip(names, state if spec.has_cell_state else (state,))))
    rng = np.random.default_rng(0)
    for name, value in leaves.items():
        # a handful of random entries of each tensor
        for flat in rng.choice(value.size, size=min(6, value.size), replace=False):
            idx = np.unravel_index(flat, value.shape)
            plus, minus = value.copy(), value.copy()
            plus[idx] += eps
            minus[idx] -= eps

            def with_(v):
                lv = dict(leaves, **{name: v})
                st = tuple(lv[n] for n in names) if spec.has_cell_state else lv["h0"]
                return _loss(spec, {k: lv[k] for k in w}, lv["x"], st, dy, lengths, d_final)

            numeric = (with_(plus) - with_(minus)) / (2 * eps)
            assert abs(grads[name][idx] - numeric) <= 1e-6 * max(1.0, abs(numeric)), (name, idx)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_matches_torch_packed_sequences_in_float64(cell, layers, bidirectional):
    """The oracle's semantics are torch's: pack_padded_sequence(enforce_sorted=False) through
    nn.LSTM / GRU / RNN in float64, outputs, final state and every gradient."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    spec = RNNSpec(cell, 3, 4, layers, bidirectional)
    w = init_weights(spec, seed=2)
    T, lengths = 5, RAGGED
    x, state, dy = make_inputs(spec, T, len(lengths), with_state=True)
    module = {"rnn_tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        3, 4, layers, bidirectional=bidirectional).double()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in w.items()})
    xt = torch.from_numpy(x).requires_grad_(True)
    states = [torch.from_numpy(s).requires_grad_(True) for s in (state if spec.has_cell_state else (state,))]
    packed = pack_padded_sequence(xt, torch.from_numpy(lengths), enforce_sorted=False)
    out, final = module(packed, tuple(states) if spec.has_cell_state else states[0])
    y, _ = pad_packed_sequence(out, total_length=T)
    y_ref, final_ref = reference.forward(spec, w, x, state, lengths=lengths)
    np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=0, atol=1e-12)
    for a, b in zip(final if spec.has_cell_state else (final,), final_ref if spec.has_cell_state else (final_ref,)):
        np.testing.assert_allclose(a.detach().numpy(), b, rtol=0, atol=1e-12)
    params = dict(module.named_parameters())
    leaves = [params[n] for n in spec.weight_names()] + [xt] + states
    torch_grads = torch.autograd.grad(y, leaves, torch.from_numpy(dy))
    grads = reference.forward_backward(spec, w, x, state, dy, lengths=lengths)
    for name, g in zip(spec.weight_names() + ["x"] + spec.state_names(), torch_grads):
        np.testing.assert_allclose(grads[name], g.numpy(), rtol=0, atol=1e-12, err_msg=name)


def test_lengths_all_t_equal_none_and_reverse_is_flipped_forward():
    """lengths = T everywhere is the full batch; a reversed row of length n is the forward
    direction run over that row's first n steps flipped in time."""
    spec = RNNSpec("gru", 3, 4, 1, bidirectional=True)
    w = init_weights(spec, seed=4)
    x, state, _ = make_inputs(spec, 6, 3, with_state=True)
    y_full, h_full = reference.forward(spec, w, x, state)
    y_t, h_t = reference.forward(spec, w, x, state, lengths=np.full(3, 6))
    np.testing.assert_array_equal(y_full, y_t)
    np.testing.assert_array_equal(h_full, h_t)
    lengths = np.array([6, 1, 4])
    y, h_n = reference.forward(spec, w, x, state, lengths=lengths)
    uni = RNNSpec("gru", 3, 4, 1)
    w_rev = {k: w[k + "_reverse"] for k in uni.weight_names()}
    for b, n in enumerate(lengths):
        y_b, h_b = reference.forward(uni, w_rev, x[:n, b:b + 1][::-1], state[1:2, b:b + 1])
        np.testing.assert_allclose(y[:n, b, 4:], y_b[::-1, 0], rtol=0, atol=1e-14)
        np.testing.assert_allclose(h_n[1, b], h_b[0, 0], rtol=0, atol=1e-14)
        assert np.all(y[n:, b] == 0)


def test_bad_lengths_are_named():
    spec = RNNSpec("lstm", 3, 4)
    w = init_weights(spec)
    x = np.zeros((4, 2, 3))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\]"):
        reference.forward(spec, w, x, lengths=np.array([0, 4]))
    with pytest.raises(ValueError, match=r"lengths must be None or an integer array of shape \(2,\)"):
        reference.forward(spec, w, x, lengths=np.array([4, 4, 4]))


def test_state_none_equals_zeros():
    spec = RNNSpec("lstm", 3, 4)
    w = init_weights(spec)
    x, _, _ = make_inputs(spec, 4, 2)
    zeros = np.zeros((1, 2, 4))
    y0, _ = reference.forward(spec, w, x, None)
    y1, _ = reference.forward(spec, w, x, (zeros, zeros))
    np.testing.assert_array_equal(y0, y1)


def test_bad_shapes_are_named():
    spec = RNNSpec("gru", 3, 4)
    w = init_weights(spec)
    with pytest.raises(ValueError, match=r"x must have shape \[T, B, 3\]"):
        reference.forward(spec, w, np.zeros((2, 2, 5)))
    with pytest.raises(ValueError, match="h0 must have shape"):
        reference.forward(spec, w, np.zeros((2, 2, 3)), np.zeros((1, 3, 4)))


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_parallel_cells_are_the_closed_form_of_the_paper(cell):
    """The oracle's minGRU/minLSTM against h_t = A_t h0 + sum_k (prod_{j>k} a_j) b_k written out
    from Feng et al.'s gates (g(v) = v + 1/2 for v >= 0, sigmoid below), h0 of both signs."""
    spec = RNNSpec(cell, 3, 4)
    w = init_weights(spec, seed=6)
    w["bias_ih_l0"] = w["bias_ih_l0"] + 0.6  # pre-activations on both sides of g's joint at 0
    x, h0, _ = make_inputs(spec, 6, 2, with_state=True)
    assert (h0 < 0).any() and (h0 > 0).any()
    pre = x @ w["weight_ih_l0"].T + w["bias_ih_l0"]  # [T, B, G*H]
    H = 4
    cand = np.where(pre[..., -H:] >= 0, pre[..., -H:] + 0.5, _sigmoid(pre[..., -H:]))
    assert (pre[..., -H:] >= 0).any() and (pre[..., -H:] < 0).any()
    if cell == "mingru":
        z = _sigmoid(pre[..., :H])
        a, b = 1 - z, z * cand
    else:
        f, i = _sigmoid(pre[..., :H]), _sigmoid(pre[..., H:2 * H])
        a, b = f / (f + i), i / (f + i) * cand
    y_ref, h_n = reference.forward(spec, w, x, h0)
    for t in range(6):
        expected = np.prod(a[:t + 1], axis=0) * h0[0] + sum(np.prod(a[k + 1:t + 1], axis=0) * b[k] for k in range(t + 1))
        np.testing.assert_allclose(y_ref[t], expected, rtol=1e-13, atol=0)
    np.testing.assert_array_equal(h_n[0], y_ref[-1])


def test_parallel_cells_have_no_recurrent_weights():
    spec = RNNSpec("minlstm", 3, 4, 2, bidirectional=True)
    assert spec.weight_shapes() == {"weight_ih_l0": (12, 3), "bias_ih_l0": (12,), "weight_ih_l0_reverse": (12, 3),
                                    "bias_ih_l0_reverse": (12,), "weight_ih_l1": (12, 8), "bias_ih_l1": (12,),
                                    "weight_ih_l1_reverse": (12, 8), "bias_ih_l1_reverse": (12,)}
    assert RNNSpec("mingru", 5, 7).param_count() == 2 * 7 * (5 + 1)  # minGRU: 2H(I + 1)

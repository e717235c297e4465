"""The oracle's BPTT against central finite differences, and its forward against torch's cells."""
import numpy as np
import pytest

from impls import reference
from impls.spec import RNNSpec, init_weights, make_inputs


def _loss(spec, w, x, state, dy):
    y, _ = reference.forward(spec, w, x, state)
    return float(np.sum(y * dy))


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_gradients_match_finite_differences(cell, layers):
    spec = RNNSpec(cell, input_size=3, hidden_size=4, num_layers=layers)
    w = init_weights(spec, seed=3)
    x, state, dy = make_inputs(spec, seq_len=5, batch=2, with_state=True)
    grads = reference.forward_backward(spec, w, x, state, dy)
    assert set(grads) == set(spec.weight_names() + ["x"] + spec.state_names())
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
                return _loss(spec, {k: lv[k] for k in w}, lv["x"], st, dy)

            numeric = (with_(plus) - with_(minus)) / (2 * eps)
            assert abs(grads[name][idx] - numeric) <= 1e-6 * max(1.0, abs(numeric)), (name, idx)


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

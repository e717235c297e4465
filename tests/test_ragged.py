"""Ragged and bidirectional batches in the harness (issue 19): the transformer baselines' key-padding
mask and encoder."""
import numpy as np
import pytest

import impls
from impls.spec import RNNSpec, Unsupported

LENGTHS = np.array([10, 4, 1])  # [B]: the whole row, part of it, one step
BASELINE_DTYPES = {"transformer_sdpa": "float64", "transformer_jax": "float32"}  # JAX float64 needs its own process
TOL = {"float64": 1e-12, "float32": 1e-5}


def _baseline(name: str, bidirectional: bool):
    spec = RNNSpec("lstm", 8, 16, 1, bidirectional=bidirectional)
    return impls.get(name).build(spec, None, "cpu", BASELINE_DTYPES[name])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "encoder"])
@pytest.mark.parametrize("name", list(BASELINE_DTYPES))
def test_masked_positions_do_not_affect_valid_outputs(name, bidirectional):
    """Padding of any value changes no valid output, y is 0 in the padding, the padding gets no
    gradient, and a ragged row is exactly that row run alone at its own length."""
    runner = _baseline(name, bidirectional)
    tol = TOL[BASELINE_DTYPES[name]]
    rng = np.random.default_rng(0)
    T, B = 10, len(LENGTHS)
    x = rng.standard_normal((T, B, 8))  # [T, B, I]
    valid = np.arange(T)[:, None] < LENGTHS  # [T, B]
    noisy = np.where(valid[..., None], x, 50 * rng.standard_normal(x.shape))  # other padding, same valid part
    y = runner.get(runner.forward(x, None, lengths=LENGTHS)[0])  # [T, B, d_model]
    y_noisy = runner.get(runner.forward(noisy, None, lengths=LENGTHS)[0])
    assert np.array_equal(y[valid], y_noisy[valid])
    assert not np.any(y[~valid])
    for b, length in enumerate(LENGTHS):
        alone = runner.get(runner.forward(x[:length, b:b + 1], None)[0])  # [len, 1, d_model]
        assert np.abs(alone[:, 0] - y[:length, b]).max() <= tol * np.abs(alone).max()
    dy = rng.standard_normal(y.shape)
    dx = runner.get(runner.forward_backward(x, None, dy, lengths=LENGTHS)["x"])  # [T, B, I]
    assert not np.any(dx[~valid]) and np.abs(dx[valid]).max() > 0


@pytest.mark.parametrize("name", list(BASELINE_DTYPES))
def test_bidirectional_baseline_is_a_non_causal_encoder(name):
    """Causal: y_0 ignores x_5; the encoder's y_0 depends on it.  Neither has a next step."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 2, 8))
    later = x.copy()
    later[5] += 1.0
    for bidirectional, depends in ((False, False), (True, True)):
        runner = _baseline(name, bidirectional)
        y0 = [runner.get(runner.forward(a, None)[0])[0] for a in (x, later)]
        assert (np.abs(y0[0] - y0[1]).max() > 1e-3) == depends
    with pytest.raises(Unsupported, match="unidirectional"):
        _baseline(name, True).step(x[0])

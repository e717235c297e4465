"""Decode mode's structure (docs/design.md "Decode"), never its clock: what the state costs against the
context, that the KV cache is written where it lies, and that a decode step computes what a full
forward computes at that position.  Every call goes through the ``decoder`` hook, as the harness's."""
import numpy as np
import pytest

import impls
from impls.runner import hook
from impls.spec import RNNSpec, Unsupported, init_weights

from .conftest import rel_err

SPEC = RNNSpec("lstm", 5, 16, 2)  # the baselines sized from it: d_model 16, 2 blocks
B = 3
BASELINES = ("transformer_sdpa", "transformer_jax")


def build(name, spec=SPEC, dtype="float32"):
    ok, reason = impls.available(name, "cpu")
    if not ok:
        pytest.skip(reason)
    weights = init_weights(spec, seed=3) if impls.kind_of(name) == "rnn" else None
    try:
        return impls.get(name).build(spec, weights, "cpu", dtype)
    except Unsupported as exc:
        pytest.skip(str(exc))


def tokens(T, spec=SPEC, seed=5):
    return np.random.default_rng(seed).standard_normal((T, B, spec.input_size))  # [T, B, I]


def buffer_addresses(decoder):
    """Where each block's k and v lie: torch's data_ptr, JAX's buffer pointer."""
    arrays = [a for kv in decoder.state.buffers for a in kv]
    if decoder.runner.backend.framework == "torch":
        return [a.data_ptr() for a in arrays]
    return [a.unsafe_buffer_pointer() for a in arrays]


@pytest.mark.parametrize("name", BASELINES)
def test_kv_cache_state_bytes_grow_linearly_with_the_context(name):
    runner = build(name)
    d = runner.dims
    decoders = {S: hook(runner, "decoder")(tokens(S), capacity=12) for S in (4, 8)}
    per_position = 2 * d.layers * B * d.d_model * 4  # k and v of every block, float32
    assert {S: dec.state_bytes for S, dec in decoders.items()} == {4: 4 * per_position, 8: 8 * per_position}
    # the filled part is counted, not the capacity preallocated
    assert decoders[4].state.nbytes(decoders[4].state.capacity) == 12 * per_position


@pytest.mark.parametrize("cell", ("lstm", "gru"))
def test_rnn_state_bytes_do_not_depend_on_the_context(cell):
    spec = RNNSpec(cell, 5, 16, 2)
    runner = build("torch_cudnn", spec)
    sizes = {S: hook(runner, "decoder")(tokens(S, spec)).state_bytes for S in (4, 16, 64)}
    h_bytes = spec.num_layers * B * spec.hidden_size * 4  # [L, B, H] float32
    assert set(sizes.values()) == {h_bytes * (2 if cell == "lstm" else 1)}


@pytest.mark.parametrize("name", BASELINES)
def test_kv_cache_is_preallocated_and_written_in_place(name):
    runner = build(name)
    decoder = hook(runner, "decoder")(tokens(6), capacity=10)
    assert decoder.state.capacity == 10 and decoder.prefix_len == decoder.state.length == 6
    before = buffer_addresses(decoder)
    x = tokens(4, seed=6)
    for t in range(4):  # generation: positions 6..9
        decoder.step(x[t])
        assert buffer_addresses(decoder) == before, t
    assert decoder.length == decoder.state.length == 10
    for _ in range(3):  # the timed call: position 6 again each time
        decoder.step_after_prefix(x[0])
        assert buffer_addresses(decoder) == before
    assert decoder.length == decoder.state.length == 7
    for t in range(3):  # positions 7, 8, 9: the cache is full
        decoder.step(x[t])
    with pytest.raises(ValueError, match="KV cache full"):  # never grown
        decoder.step(x[3])
    assert buffer_addresses(decoder) == before


def check_decode_matches_forward(runner, spec=SPEC, S=6):
    """Steps after the prefix equal the positions of one forward over prefix + tokens; so does the
    timed call, repeated."""
    x = tokens(S + 2, spec)
    y_full = runner.get(runner.forward(x)[0])  # [S+2, B, out]
    decoder = hook(runner, "decoder")(x[:S], capacity=S + 2)
    for t in (S, S + 1):
        decoder.step(runner.put(x[t]))
        assert rel_err(runner.get(decoder.output()), y_full[t]) <= 1e-5, t
    for _ in range(2):
        decoder.step_after_prefix(runner.put(x[S]))
        assert rel_err(runner.get(decoder.output()), y_full[S]) <= 1e-5


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_decode_step_equals_full_forward(name):
    check_decode_matches_forward(build(name))


@pytest.mark.parametrize("name", impls.names("rnn"))
def test_rnn_decode_step_equals_full_forward(name):
    check_decode_matches_forward(build(name))


def test_gru_decode_uses_h_alone():
    spec = RNNSpec("gru", 5, 16, 1)
    check_decode_matches_forward(build("torch_eager", spec), spec)


def test_bidirectional_has_no_decode():
    spec = RNNSpec("lstm", 5, 16, 1, bidirectional=True)
    runner = build("torch_cudnn", spec)
    with pytest.raises(Unsupported, match="unidirectional"):
        hook(runner, "decoder")(tokens(4, spec))

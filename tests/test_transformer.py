"""The transformer baselines' gate (docs/design.md): the torch SDPA model against float64 plain-math
attention, the JAX model against the torch one with the same weights, and the size rule."""
import itertools
import math

import numpy as np
import pytest
from scipy.special import erf, softmax

import impls
from impls.spec import CELLS, RNNSpec, Unsupported
from impls.transformer import TOLERANCE, TransformerDims, dims_for, init_params
from rnnbench.jobs import TimingJob
from rnnbench.measure import measure

from .conftest import rel_err
from .test_conformance import TOLERANCE as CONFORMANCE_TOLERANCE

SPEC = RNNSpec("lstm", 32, 64)  # -> d_model 32, 4 heads of 8, 2 blocks


def layer_norm(h, w, b, eps=1e-5):
    return (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + eps) * w + b


def reference_forward(dims, p, x):
    """float64 NumPy: softmax(Q K^T / sqrt(d)) with the causal mask, times V, in the pre-LN model."""
    T, B, _ = x.shape
    d, heads = dims.d_model, dims.heads
    pos = np.arange(T)[:, None] / 10000.0 ** (np.arange(0, d, 2)[None, :] / d)
    pe = np.zeros((T, d))
    pe[:, 0::2], pe[:, 1::2] = np.sin(pos), np.cos(pos)
    h = (x @ p["input.weight"].T + p["input.bias"] + pe[:, None, :]).transpose(1, 0, 2)  # [B, T, d]
    future = np.triu(np.ones((T, T), dtype=bool), 1)
    for k in range(dims.layers):
        q = lambda name: p[f"blocks.{k}.{name}"]  # noqa: E731
        a = layer_norm(h, q("norm1.weight"), q("norm1.bias"))
        qkv = (a @ q("qkv.weight").T + q("qkv.bias")).reshape(B, T, 3, heads, d // heads).transpose(2, 0, 3, 1, 4)
        scores = qkv[0] @ qkv[1].swapaxes(-1, -2) / math.sqrt(d // heads)  # [B, heads, T, T]
        scores[..., future] = -np.inf
        att = (softmax(scores, axis=-1) @ qkv[2]).transpose(0, 2, 1, 3).reshape(B, T, d)
        h = h + att @ q("out.weight").T + q("out.bias")
        a = layer_norm(h, q("norm2.weight"), q("norm2.bias")) @ q("ffn1.weight").T + q("ffn1.bias")
        h = h + (0.5 * a * (1 + erf(a / math.sqrt(2)))) @ q("ffn2.weight").T + q("ffn2.bias")
    return layer_norm(h, p["norm.weight"], p["norm.bias"]).transpose(1, 0, 2)  # [T, B, d]


def inputs(T=12, B=3, seed=1):
    return np.random.default_rng(seed).standard_normal((T, B, SPEC.input_size))  # [T, B, I]


def test_registered_as_baselines():
    assert {"transformer_sdpa", "transformer_jax"} <= set(impls.names("baseline"))
    assert not {"transformer_sdpa", "transformer_jax"} & set(impls.names("rnn"))
    assert impls.get("transformer_sdpa").framework == "torch" and impls.get("transformer_jax").framework == "jax"


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_sdpa_model_matches_plain_math_attention(dtype, tol):
    runner = impls.get("transformer_sdpa").build(SPEC, None, "cpu", dtype)
    x = inputs()
    y_ref = reference_forward(runner.dims, init_params(runner.dims), x)
    y, cache = runner.forward(x)
    assert runner.output_size == runner.dims.d_model == y.shape[-1]
    assert rel_err(runner.get(y), y_ref) <= tol
    # one position at a time into a preallocated KV cache gives the same outputs (a chunk of two too)
    state = runner.empty_cache(x.shape[1], x.shape[0])
    for t in (0, 1, 3, 4, *range(5, x.shape[0])):
        stop = 3 if t == 1 else t + 1
        y_t, state = runner.forward(x[t:stop], state)
        assert rel_err(runner.get(y_t), y_ref[t:stop]) <= tol
    with pytest.raises(ValueError, match="KV cache full"):
        runner.step(x[0], state)
    assert runner.sdpa_kernel() in ("cpu-flash", "math")


def test_jax_model_matches_torch_model_with_the_same_weights():
    ok, reason = impls.available("transformer_jax", "cpu")
    if not ok:
        pytest.skip(reason)
    weights = init_params(dims_for(SPEC), seed=4)
    torch_runner = impls.get("transformer_sdpa").build(SPEC, weights, "cpu", "float32")
    jax_runner = impls.get("transformer_jax").build(SPEC, weights, "cpu", "float32")
    x = inputs()
    dy = np.random.default_rng(2).standard_normal((x.shape[0], x.shape[1], torch_runner.output_size))
    y_t, y_j = torch_runner.forward(x)[0], jax_runner.forward(x)[0]
    assert rel_err(jax_runner.get(y_j), torch_runner.get(y_t)) <= 1e-5
    g_t, g_j = torch_runner.forward_backward(x, None, dy), jax_runner.forward_backward(x, None, dy)
    assert set(g_t) == set(g_j) == set(weights) | {"x"}
    for name in g_t:
        assert rel_err(jax_runner.get(g_j[name]), torch_runner.get(g_t[name])) <= 1e-4, name
    # so does JAX's KV cache: a chunk of prefix, then one step (the mask and positions at an offset)
    state = jax_runner.forward(x[:3], jax_runner.empty_cache(x.shape[1], 8))[1]
    y_3, _ = jax_runner.step_with_output(x[3], state)
    assert rel_err(jax_runner.get(y_3)[0], torch_runner.get(y_t)[3]) <= 1e-5
    assert jax_runner.sdpa_kernel() == "xla"  # cuDNN attention is for GPUs


@pytest.mark.parametrize("name", ["transformer_sdpa", "transformer_jax"])
def test_bfloat16_on_cpu_within_the_half_precision_bound(name):
    """bfloat16 baselines on a CPU (oneDNN's bf16 GEMMs; XLA): outputs against float64 plain-math attention
    and every gradient against the float64 torch model, within the conformance bound for bfloat16."""
    ok, reason = impls.available(name, "cpu")
    if not ok:
        pytest.skip(reason)
    bound = CONFORMANCE_TOLERANCE["bfloat16"]
    runner = impls.get(name).build(SPEC, None, "cpu", "bfloat16")
    oracle = impls.get("transformer_sdpa").build(SPEC, None, "cpu", "float64")
    x = inputs()
    assert rel_err(runner.get(runner.forward(x)[0]), reference_forward(runner.dims, init_params(runner.dims), x)) <= bound
    dy = np.random.default_rng(2).standard_normal((x.shape[0], x.shape[1], runner.output_size))
    g, g_ref = runner.forward_backward(x, None, dy), oracle.forward_backward(x, None, dy)
    assert set(g) == set(g_ref)
    for key in g:
        assert rel_err(runner.get(g[key]), oracle.get(g_ref[key])) <= bound, key
    assert runner.impl_label() in ("sdpa-cpu-flash", "sdpa-math", "jax-xla")


@pytest.mark.parametrize("cell", CELLS)
def test_parameter_count_within_tolerance_of_the_rnn(cell):
    for input_size, hidden, layers in itertools.product((1, 8, 64, 512), (16, 64, 256, 1024), (1, 2)):
        spec = RNNSpec(cell, input_size, hidden, layers)
        smallest = TransformerDims(input_size, 8, 1, 1, 1).param_count()  # one block, d_model 8, FFN 1
        if spec.param_count() * (1 + TOLERANCE) < smallest:
            with pytest.raises(Unsupported, match="within 10%"):
                dims_for(spec)
            continue
        dims = dims_for(spec)
        assert abs(dims.param_count() - spec.param_count()) <= TOLERANCE * spec.param_count(), (spec, dims)
        assert dims.d_model % dims.heads == 0 and dims.ffn >= 1
        assert dims.layers in (max(2, layers), 1)  # one block only where two do not fit
    runner = impls.get("transformer_sdpa").build(SPEC, None, "cpu", "float32")
    assert sum(p.numel() for p in runner.module().parameters()) == runner.dims.param_count()


@pytest.mark.parametrize("backend, mode", [("transformer_sdpa", "forward"), ("transformer_sdpa", "train"),
                                           ("transformer_sdpa", "step"), ("transformer_jax", "train")])
def test_measured_beside_the_rnns(backend, mode):
    """The harness times a baseline like an RNN: the runner contract, sdpa_kernel, gradient profile."""
    ok, reason = impls.available(backend, "cpu")
    if not ok:
        pytest.skip(reason)
    cfg = TimingJob(backend, "lstm", batch=3, seq_len=12, input_size=SPEC.input_size, hidden=SPEC.hidden_size,
                 mode=mode, min_time_s=0.01, max_time_s=0.05, min_repeats=2)  # the shapes above: JAX compiles once
    records = measure(cfg, memory="skip")
    assert [r["status"] for r in records] == ["ok"] * len(records), records
    timing = records[0]
    assert timing["backend_kind"] == "baseline" and timing["sdpa_kernel"] in ("cpu-flash", "math", "xla")
    assert timing["median_s"] > 0 and "max_rel_err" not in timing
    if mode == "train":
        stability = records[1]
        assert stability["kind"] == "stability" and stability["nan_count"] == 0
        assert len(stability["grad_profile"]) == 12 and all(g >= 0 for g in stability["grad_profile"])

"""The JAX backend beyond conformance: trainable form, the custom BPTT against autodiff, x64 hygiene."""
import os
import subprocess
import sys

import numpy as np
import pytest

import impls
from impls.jax_common import CPU_DTYPES
from impls.jax_scan import JaxScanBackend
from impls.spec import RNNSpec, Unsupported, init_weights, make_inputs

from .conftest import rel_err

jax = pytest.importorskip("jax")
jnp = jax.numpy

JAX_NAMES = [n for n in impls.names(kind="rnn") if isinstance(impls.get(n), JaxScanBackend)]


def _build(name, cell="lstm", layers=2, dtype="float32", with_state=True):
    spec = RNNSpec(cell, 3, 5, layers)
    runner = impls.get(name).build(spec, init_weights(spec), "cpu", dtype)
    return spec, runner, make_inputs(spec, 6, 2, with_state=with_state)


def test_variants_are_registered_with_their_options():
    backends = {n: impls.get(n) for n in JAX_NAMES}
    assert backends["jax_scan"].unroll == 1 and backends["jax_scan"].bptt == "custom"
    assert backends["jax_scan_autodiff"].bptt == "autodiff"
    assert any(b.unroll > 1 for b in backends.values())
    assert all(b.framework == "jax" and b.kind == "rnn" for b in backends.values())


def test_apply_is_differentiable_and_matches_forward_backward():
    spec, runner, (x, state, dy) = _build("jax_scan")
    x, state, dy = runner.put(x), runner.put(state), runner.put(dy)

    def loss(params, x, state):
        y, _ = runner.apply(params, x, state)
        return jnp.sum(y * dy)

    d_params, dx, (dh0, dc0) = jax.grad(loss, argnums=(0, 1, 2))(runner.params, x, state)
    grads = runner.forward_backward(x, state, dy)
    for name in spec.weight_names():
        assert rel_err(d_params[name], grads[name]) < 1e-6, name
    for name, g in (("x", dx), ("h0", dh0), ("c0", dc0)):
        assert rel_err(g, grads[name]) < 1e-6, name
    y, final = runner.apply(runner.params, x, state)
    y_fwd, final_fwd = runner.forward(x, state)
    assert rel_err(y, y_fwd) < 1e-6 and rel_err(final[1], final_fwd[1]) < 1e-6


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "bidirectional-ragged"])
def test_custom_bptt_matches_autodiff_in_float64(cell, ragged):
    """The hand-written backward against JAX's own transpose of the same forward scan, with a
    cotangent on the final state too (through padded steps when ragged), and against the oracle."""
    from impls import reference

    with jax.enable_x64(True):
        spec = RNNSpec(cell, 3, 5, 2, bidirectional=ragged)
        weights = init_weights(spec)
        x, state, dy = make_inputs(spec, 6, 3, with_state=True)
        lengths = np.array([6, 1, 3]) if ragged else None
        runner = impls.get("jax_scan").build(spec, weights, "cpu", "float64")
        autodiff = impls.get("jax_scan_autodiff").build(spec, weights, "cpu", "float64")
        xj, sj, dyj = runner.put(x), runner.put(state), runner.put(dy)
        final_ct = jax.tree.map(lambda a: jnp.full_like(a, 0.5), sj)  # a cotangent for the final state too
        grads = {}
        for r in (runner, autodiff):
            _, vjp = jax.vjp(lambda p, xx, s: r.apply(p, xx, s, lengths), r.params, xj, sj)
            grads[r.backend.bptt] = jax.tree.leaves(vjp((dyj, final_ct)))
        for a, b in zip(grads["custom"], grads["autodiff"]):
            assert rel_err(a, b) < 1e-12
        d_params, dx, d_state = vjp((dyj, final_ct))
        halves = {"dh_n": np.full(spec.state_shape(3), 0.5)}
        if spec.has_cell_state:
            halves["dc_n"] = halves["dh_n"]
        ref = reference.forward_backward(spec, weights, x, state, dy, lengths=lengths, **halves)
        for name in spec.weight_names():
            assert rel_err(d_params[name], ref[name]) < 1e-12, name
        assert rel_err(dx, ref["x"]) < 1e-12
        for name, g in zip(spec.state_names(), d_state if spec.has_cell_state else (d_state,)):
            assert rel_err(g, ref[name]) < 1e-12, name


def test_float64_needs_x64_and_x64_does_not_leak():
    spec = RNNSpec("gru", 3, 5)
    assert not jax.config.jax_enable_x64  # nothing before this test left it on
    with pytest.raises(Unsupported, match="jax_enable_x64"):
        impls.get("jax_scan").build(spec, init_weights(spec), "cpu", "float64")
    with jax.enable_x64(True):
        runner = impls.get("jax_scan").build(spec, init_weights(spec), "cpu", "float64")
        assert runner.get(runner.params["weight_hh_l0"]).dtype == np.float64
    assert not jax.config.jax_enable_x64


def test_float32_stays_float32_under_x64():
    with jax.enable_x64(True):
        _, runner, (x, state, dy) = _build("jax_scan", "rnn_tanh", layers=1)
        grads = runner.forward_backward(x, state, dy)
        assert {runner.get(g).dtype for g in grads.values()} == {np.dtype(np.float32)}


@pytest.mark.parametrize("name", ["jax_scan", "jax_scan_autodiff"])
def test_float32_matmuls_are_full_precision_unless_configured(name):
    """TF32 stays off on a GPU unless a run asks for it (fair play); every matmul, backward included."""
    _, runner, (x, state, dy) = _build(name, "gru", layers=1)
    args = (runner.params, runner.put(x), runner.put(state), runner.put(dy), None)  # lengths None
    text = runner._fns["forward_backward"].lower(*args).as_text()
    assert text.count("dot_general") == text.count("precision = [HIGHEST, HIGHEST]") > 0
    with jax.default_matmul_precision("tensorfloat32"):
        assert "HIGHEST" not in runner._fns["forward_backward"].lower(*args).as_text()


@pytest.mark.parametrize("dtype", [d for d in ("bfloat16", "float16") if d not in CPU_DTYPES])
def test_half_types_on_cpu_are_unsupported_with_a_reason(dtype):
    spec = RNNSpec("lstm", 3, 5)
    with pytest.raises(Unsupported, match=f"supports dtypes {', '.join(CPU_DTYPES)}, not {dtype}"):
        impls.get("jax_scan").build(spec, init_weights(spec), "cpu", dtype)


def test_compile_ahead_is_reused_by_the_calls():
    from impls import jax_scan

    spec, runner, (x, state, dy) = _build("jax_scan", "gru", layers=1, with_state=False)
    x, dy = runner.put(x), runner.put(dy)
    assert runner.compile(x, state, dy) > 0
    compiled = len(jax_scan._EXECUTABLES)
    runner.forward_backward(x, state, dy)  # a zero state given as None or as zeros: one executable
    runner.forward(x, runner.get(runner.forward(x)[1]) * 0)
    runner.sync()
    assert len(jax_scan._EXECUTABLES) == compiled  # no compile fell inside a call
    assert runner.impl_label() == "xla-cpu"


def test_step_is_forward_with_one_timestep():
    spec, runner, (x, state, _) = _build("jax_scan", "lstm", layers=2)
    h, c = runner.step(x[0], state)
    _, (h_ref, c_ref) = runner.forward(x[:1], state)
    assert rel_err(h, h_ref) == 0 and rel_err(c, c_ref) == 0


def test_cuda_absent_is_reported_with_a_reason():
    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("a GPU is present")
    ok, reason = impls.available("jax_scan", "cuda")
    assert not ok and "cuda" in reason


def test_listing_does_not_import_jax_and_building_sets_preallocate_off():
    code = (
        "import os, sys, impls\n"
        "os.environ.pop('XLA_PYTHON_CLIENT_PREALLOCATE', None)\n"
        "[impls.get(n) for n in impls.names() if n.startswith('jax')]\n"
        "assert 'jax' not in sys.modules\n"
        "assert impls.available('jax_scan', 'cpu')[0]\n"
        "assert os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)

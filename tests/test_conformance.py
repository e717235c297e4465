"""Every registered RNN backend against the float64 oracle: outputs, final state, every gradient.

A backend joins by registering in ``impls``; it passes here before any figure
of it is published.  Error = max|a - b| / max|b| per tensor.
"""
import numpy as np
import pytest

import impls
from impls import reference
from impls.spec import RNNSpec, Unsupported, init_weights, make_inputs

from .conftest import DEVICES, rel_err

# Per-dtype bounds (DESIGN.md): float64 1e-10, float32 1e-4 for T <= 16; the half
# types keep 8 (bf16) or 11 (fp16) mantissa bits, so a short sequence agrees to a few 1e-2.
TOLERANCE = {"float64": 1e-10, "float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
CASES = [  # (cell, layers, T, B, I, H, with_state)
    (cell, layers, 7, 2, 3, 5, with_state)
    for cell in ("rnn_tanh", "lstm", "gru")
    for layers in (1, 2)
    for with_state in (False, True)
]


@pytest.fixture(autouse=True)
def jax_x64_for_float64(request):
    """JAX runs float64 only with jax_enable_x64, a process-wide flag: on for a JAX backend's
    float64 case alone (a context that restores it), so it never leaks into other tests."""
    params = request.node.callspec.params if hasattr(request.node, "callspec") else {}
    if params.get("dtype") == "float64" and impls.get(params["name"]).framework == "jax":
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield


def run_case(name, device, dtype, cell, layers, T, B, I, H, with_state, seed=0):
    """Build the backend, run forward and forward_backward; return the worst error per tensor."""
    spec = RNNSpec(cell, I, H, layers)
    weights = init_weights(spec, seed=seed)
    x, state, dy = make_inputs(spec, T, B, seed=seed + 1, with_state=with_state)
    try:
        runner = impls.get(name).build(spec, weights, device, dtype)
    except Unsupported as exc:
        pytest.skip(str(exc))
    y_ref, final_ref = reference.forward(spec, weights, x, state)
    grads_ref = reference.forward_backward(spec, weights, x, state, dy)

    y, final = runner.forward(runner.put(x), runner.put(state))
    errors = {"y": rel_err(runner.get(y), y_ref)}
    finals = final if spec.has_cell_state else (final,)
    finals_ref = final_ref if spec.has_cell_state else (final_ref,)
    for sname, a, b in zip(("h_n", "c_n"), finals, finals_ref):
        errors[sname] = rel_err(runner.get(a), b)
    grads = runner.forward_backward(runner.put(x), runner.put(state), runner.put(dy))
    assert set(grads) == set(grads_ref), sorted(grads)
    for gname, ref in grads_ref.items():
        errors["d" + gname] = rel_err(runner.get(grads[gname]), ref)
    return errors


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-L{c[1]}-{'state' if c[6] else 'zeros'}")
@pytest.mark.parametrize("name", impls.names(kind="rnn"))
def test_backend_matches_oracle(name, case, dtype, device):
    ok, reason = impls.available(name, device)
    if not ok:
        pytest.skip(reason)
    errors = run_case(name, device, dtype, *case)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE[dtype], f"{name} {dtype}: {worst} off by {errors[worst]:.3g} ({errors})"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", impls.names(kind="rnn"))
def test_half_precision_on_cuda(name, dtype, cuda_only):
    ok, reason = impls.available(name, "cuda")
    if not ok:
        pytest.skip(reason)
    for case in CASES[::3]:
        errors = run_case(name, "cuda", dtype, *case)
        worst = max(errors, key=errors.get)
        assert errors[worst] <= TOLERANCE[dtype], f"{name} {dtype} {case}: {worst} off by {errors[worst]:.3g}"


def test_step_is_forward_with_one_timestep():
    spec = RNNSpec("lstm", 3, 5, 2)
    weights = init_weights(spec)
    x, state, _ = make_inputs(spec, 1, 2, with_state=True)
    for name in ("torch_eager", "torch_cudnn"):
        runner = impls.get(name).build(spec, weights, "cpu", "float64")
        h, c = runner.step(x[0], state)
        _, (h_ref, c_ref) = reference.forward(spec, weights, x, state)
        assert rel_err(runner.get(h), h_ref) < 1e-12 and rel_err(runner.get(c), c_ref) < 1e-12


def test_unknown_backend_lists_valid_names():
    with pytest.raises(KeyError, match="valid: .*torch_eager"):
        impls.get("no_such_backend")


def test_cudnn_label_says_what_ran_on_cpu():
    spec = RNNSpec("lstm", 3, 5)
    runner = impls.get("torch_cudnn").build(spec, init_weights(spec), "cpu", "float64")
    assert runner.impl_label() == "aten"  # oneDNN takes only float32/bfloat16 LSTMs
    runner = impls.get("torch_cudnn").build(spec, init_weights(spec), "cpu", "float32")
    assert runner.impl_label() in ("aten", "aten-onednn")


def test_half_types_are_unsupported_on_cpu_with_a_reason():
    spec = RNNSpec("gru", 3, 5)
    with pytest.raises(Unsupported, match="supports dtypes float32, float64"):
        impls.get("torch_eager").build(spec, init_weights(spec), "cpu", "float16")


def test_spec_rejects_bad_values_naming_the_field():
    from impls.spec import SpecError

    with pytest.raises(SpecError, match="cell must be one of rnn_tanh, lstm, gru"):
        RNNSpec("transformer", 3, 5)
    with pytest.raises(SpecError, match=r"hidden_size must be an integer in \[1,"):
        RNNSpec("lstm", 3, 0)
    with pytest.raises(SpecError, match=r"num_layers must be an integer in \[1, 64\]"):
        RNNSpec("lstm", 3, 5, 0)


def test_weights_match_torch_state_dict_layout():
    import torch

    spec = RNNSpec("gru", 3, 5, 2)
    module = torch.nn.GRU(3, 5, 2)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == spec.weight_shapes()
    w = init_weights(spec, seed=7)
    bound = 1 / np.sqrt(5)
    assert all(np.all(np.abs(v) <= bound) for v in w.values())
    np.testing.assert_array_equal(init_weights(spec, seed=7)["weight_hh_l1"], w["weight_hh_l1"])

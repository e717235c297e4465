"""Every registered RNN backend against the float64 oracle: outputs, final state, every gradient.

A backend joins by registering in ``impls``; it passes here before any figure
of it is published.  Error = max|a - b| / max|b| per tensor.
"""
import itertools
import re

import numpy as np
import pytest

import impls
from impls import conformance, reference
from impls.conformance import TOLERANCE, Case
from impls.runner import capabilities, supports
from impls.spec import RNNSpec, Unsupported, init_weights, make_inputs

from .conftest import DEVICES, rel_err

CASES = [  # (cell, layers, T, B, I, H, with_state)
    (cell, layers, 7, 2, 3, 5, with_state)
    for cell in ("rnn_tanh", "lstm", "gru", "mingru", "minlstm")
    for layers in (1, 2)
    for with_state in (False, True)
]

# Bidirectional and variable length (docs/design.md): every axis below, against the oracle.  The
# unidirectional full-length corner is CASES above; the default run takes a covering subset in
# which every pair of values of two axes occurs (every value of every axis at least once), and
# the whole product is marked slow.
RAGGED_AXES = {
    "bidirectional": (False, True),
    "lengths": ("none", "full", "ragged"),
    "cell": ("rnn_tanh", "lstm", "gru"),
    "layers": (1, 2),
    "with_state": (False, True),
    "dtype": ("float64", "float32"),
}
T_RAGGED, B_RAGGED = 7, 3
LENGTHS = {"none": None, "full": "full", "ragged": "ragged"}  # impls.conformance.lengths_of: [B] = [7, 1, 4]


# minGRU/minLSTM run on their own backends (torch_scan, jax_assoc, ...): a covering subset of their own,
# so every backend of either family sees every pair of values of the other axes.
CELL_FAMILIES = (("rnn_tanh", "lstm", "gru"), ("mingru", "minlstm"))


def _ragged_product(cells=RAGGED_AXES["cell"]):
    rows = [dict(zip(RAGGED_AXES, v)) for v in itertools.product(*{**RAGGED_AXES, "cell": cells}.values())]
    return [r for r in rows if r["bidirectional"] or r["lengths"] != "none"]


def covering_pairs(rows):
    """Greedy, deterministic: rows until every pair of values that occurs in ``rows`` is covered."""
    def pairs(r):
        return {((a, r[a]), (b, r[b])) for a, b in itertools.combinations(r, 2)}

    todo, chosen = set().union(*map(pairs, rows)), []
    while todo:
        best = max(rows, key=lambda r: len(pairs(r) & todo))
        chosen.append(best)
        todo -= pairs(best)
    return chosen


def _ragged_id(r):
    return (f"{'bi' if r['bidirectional'] else 'uni'}-{r['lengths']}-{r['cell']}-L{r['layers']}-"
            f"{'state' if r['with_state'] else 'zeros'}-{r['dtype']}")


RAGGED_DEFAULT = [r for cells in CELL_FAMILIES for r in covering_pairs(_ragged_product(cells))]
RAGGED_SLOW = [r for cells in CELL_FAMILIES for r in _ragged_product(cells) if r not in RAGGED_DEFAULT]
RAGGED_PARAMS = [pytest.param(r, id=_ragged_id(r)) for r in RAGGED_DEFAULT] + [
    pytest.param(r, id=_ragged_id(r), marks=pytest.mark.slow) for r in RAGGED_SLOW]


@pytest.fixture(autouse=True)
def jax_x64_for_float64(request):
    """JAX runs float64 only with jax_enable_x64, a process-wide flag: on for a JAX backend's
    float64 case alone (a context that restores it), so it never leaks into other tests."""
    params = request.node.callspec.params if hasattr(request.node, "callspec") else {}
    dtype = params["ragged"]["dtype"] if "ragged" in params else params.get("dtype")
    if dtype == "float64" and impls.get(params["name"]).framework == "jax":
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield


def assert_within(errors, dtype, label):
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE[dtype], f"{label}: {worst} off by {errors[worst]:.3g} ({errors})"


def run_case(name, device, dtype, cell, layers, T, B, I, H, with_state, seed=0, bidirectional=False, lengths=None):
    """The worst error per tensor of one case (``impls.conformance.run_case``, which ``rnnbench check``
    runs too); ``lengths``: None, full or ragged.  A case the backend cannot build skips with its reason;
    a backend without gradients (``Unsupported`` from forward_backward) skips once its forward passed."""
    if lengths is not None and not isinstance(lengths, str):
        lengths = tuple(int(v) for v in lengths)  # explicit lengths [B] (a Case is hashable)
    case = Case(cell, dtype, layers, with_state, bidirectional, lengths, T=T, B=B, I=I, H=H)
    try:
        errors = conformance.run_case(name, case, device, seed=seed)
    except Unsupported as exc:
        pytest.skip(str(exc))
    if "gradients" in errors:
        why = errors.pop("why")
        errors.pop("gradients")
        assert_within(errors, dtype, f"{name} {case.label()}")
        pytest.skip(f"forward matches the oracle; gradients: {why}")
    return errors


# Compiled variants whose every (cell, dtype) family costs a compile (10 to 25 s each on 2 cores): float64
# under -m slow only; the code they compile runs uncompiled, float64 included, as the module's first name.
COMPILE_EACH_DTYPE = ("torch_scan_compile",)


def _names_by_dtype(names, dtypes=("float64", "float32")):
    return [pytest.param(n, d, id=f"{n}-{d}", marks=pytest.mark.slow) if n in COMPILE_EACH_DTYPE and d == "float64"
            else pytest.param(n, d, id=f"{n}-{d}") for n in names for d in dtypes]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-L{c[1]}-{'state' if c[6] else 'zeros'}")
@pytest.mark.parametrize("name, dtype", _names_by_dtype(impls.names(kind="rnn")))
def test_backend_matches_oracle(name, case, dtype, device):
    ok, reason = impls.available(name, device)
    if not ok:
        pytest.skip(reason)
    assert_within(run_case(name, device, dtype, *case), dtype, name)


def _variants_slow(names):
    """Every name; a variant (a later name registered on the same module as an earlier one, e.g.
    jax_scan_unroll8 beside jax_scan) runs the extended cases under ``-m slow`` only: it shares the
    masking, reverse and dtype code of the first, which the default run covers, and the JAX variants'
    compiles were most of the default run's time.  test_backend_matches_oracle runs every name."""
    first = {}
    params = []
    for n in names:
        first.setdefault(impls.module_of(n), n)
        variant = first[impls.module_of(n)] != n
        params.append(pytest.param(n, marks=pytest.mark.slow) if variant else n)
    return params


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ragged", RAGGED_PARAMS)
@pytest.mark.parametrize("name", _variants_slow(impls.names(kind="rnn")))
def test_bidirectional_and_lengths_match_oracle(name, ragged, device):
    """Both directions, every length case, every gradient (h0/c0 of both directions, dx exactly 0
    where padded); a backend that declares no support skips with its own reason."""
    ok, reason = impls.available(name, device)
    if not ok:
        pytest.skip(reason)
    lengths = LENGTHS[ragged["lengths"]]
    if lengths is not None:
        ok, reason = supports(impls.get(name), device, ragged["cell"], features=("lengths",))
        if not ok:
            pytest.skip(reason)
    errors = run_case(name, device, ragged["dtype"], ragged["cell"], ragged["layers"], T_RAGGED, B_RAGGED, 3, 5,
                      ragged["with_state"], bidirectional=ragged["bidirectional"], lengths=lengths)
    assert_within(errors, ragged["dtype"], f"{name} {_ragged_id(ragged)}")


def test_covering_subset_covers_every_pair_and_the_rest_is_slow():
    assert len(RAGGED_DEFAULT) + len(RAGGED_SLOW) == 120 + 80
    for cells in CELL_FAMILIES:
        product = _ragged_product(cells)
        default = [r for r in RAGGED_DEFAULT if r["cell"] in cells]
        for a, b in itertools.combinations(RAGGED_AXES, 2):
            seen = {(r[a], r[b]) for r in default}
            assert seen == {(r[a], r[b]) for r in product}, (cells, a, b)
        assert len(default) <= 16


@pytest.mark.parametrize("name", impls.names(kind="rnn"))
def test_undeclared_features_are_unsupported_never_ignored(name):
    """A backend that does not declare bidirectional or lengths refuses them with a reason."""
    if not impls.available(name, "cpu")[0]:
        pytest.skip(impls.available(name, "cpu")[1])
    backend = impls.get(name)
    cell = next(iter(capabilities(backend, "cpu")))  # one it declares: an LSTM-only backend builds an LSTM
    spec = RNNSpec(cell, 3, 4)
    ok, reason = supports(backend, "cpu", cell, features=("bidirectional",))
    if not ok:
        bi = RNNSpec(cell, 3, 4, bidirectional=True)
        with pytest.raises(Unsupported, match=re.escape(reason)):
            backend.build(bi, init_weights(bi), "cpu", "float32")
    if not supports(backend, "cpu", cell, features=("lengths",))[0]:
        runner = backend.build(spec, init_weights(spec), "cpu", "float32")
        x, _, _ = make_inputs(spec, 3, 2)
        with pytest.raises(Unsupported, match="lengths"):
            runner.forward(runner.put(x), None, lengths=np.array([3, 1]))


def test_padded_cudnn_refuses_bidirectional_with_the_reason():
    spec = RNNSpec("lstm", 3, 5, bidirectional=True)
    with pytest.raises(Unsupported, match="reverse direction.*start in the padding"):
        impls.get("torch_cudnn_padded").build(spec, init_weights(spec), "cpu", "float32")


@pytest.mark.parametrize("name", ["torch_eager", "torch_cudnn", "jax_scan"])
def test_step_is_unidirectional_only(name):
    spec = RNNSpec("lstm", 3, 5, bidirectional=True)
    runner = impls.get(name).build(spec, init_weights(spec), "cpu", "float32")
    x, state, _ = make_inputs(spec, 1, 2, with_state=True)
    with pytest.raises(Unsupported, match="unidirectional only"):
        runner.step(runner.put(x[0]), runner.put(state))


def test_bad_lengths_are_refused_naming_the_range():
    from impls.spec import SpecError

    spec = RNNSpec("gru", 3, 5)
    runner = impls.get("torch_eager").build(spec, init_weights(spec), "cpu", "float32")
    x, _, _ = make_inputs(spec, 4, 2)
    with pytest.raises(SpecError, match=r"lengths must lie in \[1, 4\]"):
        runner.forward(runner.put(x), None, lengths=np.array([5, 1]))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", impls.names(kind="rnn"))
def test_half_precision_on_cuda(name, dtype, cuda_only):
    ok, reason = impls.available(name, "cuda")
    if not ok:
        pytest.skip(reason)
    for case in CASES[::3]:
        assert_within(run_case(name, "cuda", dtype, *case), dtype, f"{name} {case}")


@pytest.mark.parametrize("case", CASES[::3], ids=lambda c: f"{c[0]}-L{c[1]}-{'state' if c[6] else 'zeros'}")
@pytest.mark.parametrize("name", _variants_slow(impls.names(kind="rnn")))
def test_bfloat16_on_cpu(name, case):
    """bfloat16 where a backend really runs it on the CPU (oneDNN/ATen, inductor, XLA); the bound is
    TOLERANCE["bfloat16"] (5e-2: 8 mantissa bits over T=7; measured worst 2e-2); others skip with a reason."""
    ok, reason = impls.available(name, "cpu")
    if not ok:
        pytest.skip(reason)
    errors = run_case(name, "cpu", "bfloat16", *case)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE["bfloat16"], f"{name} bfloat16 {case}: {worst} off by {errors[worst]:.3g}"


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
    with pytest.raises(SpecError, match="bidirectional must be true or false"):
        RNNSpec("lstm", 3, 5, 1, "yes")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_weights_match_torch_state_dict_layout(bidirectional):
    import torch

    spec = RNNSpec("gru", 3, 5, 2, bidirectional)
    module = torch.nn.GRU(3, 5, 2, bidirectional=bidirectional)
    assert list({k: tuple(v.shape) for k, v in module.state_dict().items()}.items()) == list(spec.weight_shapes().items())
    w = init_weights(spec, seed=7)
    bound = 1 / np.sqrt(5)
    assert all(np.all(np.abs(v) <= bound) for v in w.values())
    np.testing.assert_array_equal(init_weights(spec, seed=7)["weight_hh_l1"], w["weight_hh_l1"])


def test_check_reports_every_tensor_and_fails_a_planted_error(monkeypatch, capsys):
    """``rnnbench check``'s function: the declared cases, per tensor; a backend 1e-3 off fails (exit 1)."""
    from rnnbench.cli import main

    rows = conformance.check("torch_eager", cells=["gru"], dtypes=("float32",))
    assert rows and all(r.ok and r.error is not None for r in rows)
    assert {"gru float32 L2 h0 bidirectional", "gru float32 L2 h0 lengths=ragged", "gru float32 L1 h0 decode"} \
        <= {r.case for r in rows}
    assert {"y", "h_n", "dweight_hh_l1", "dbias_ih_l1_reverse", "dx", "dh0", "h after one step"} <= {r.tensor for r in rows}
    monkeypatch.setitem(impls._REGISTRY, "planted_error", ("rnn", "tests.synthetic_backends",
                                                           {"seconds": 0.0, "error": 1e-3}))
    monkeypatch.delitem(impls._CACHE, "planted_error", raising=False)
    rows = conformance.check("planted_error", cells=["lstm"], dtypes=("float32",))
    assert [r.tensor for r in rows if not r.ok] and all(r.error > r.tolerance for r in rows if not r.ok)
    assert main(["check", "planted_error", "--cells", "lstm", "--dtype", "float32"]) == 1
    out = capsys.readouterr().out
    assert "dweight_ih_l0" in out and "over tolerance or failed" in out

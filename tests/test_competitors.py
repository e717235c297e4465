"""What the competitor backends (torch_compile, onnxruntime, flax_*, flashrnn) promise beyond the
oracle, which tests/test_conformance.py checks: labels, unsupported answers with reasons, the
recorded runtime settings, and compile work that does not grow with T."""
import numpy as np
import pytest

import impls
from impls import reference
from impls.onednn_isa import onednn_isa, parse_isa
from impls.runner import capabilities, supports, timed
from impls.spec import RNNSpec, Unsupported, init_weights, make_inputs

from .conftest import rel_err


def _skip_unless(name):
    ok, reason = impls.available(name, "cpu")
    if not ok:
        pytest.skip(reason)


def test_onnxruntime_is_inference_only_and_records_its_settings():
    _skip_unless("onnxruntime")
    spec = RNNSpec("gru", 3, 5, 2)
    runner = impls.get("onnxruntime").build(spec, init_weights(spec), "cpu", "float32")
    x, state, dy = make_inputs(spec, 4, 2, with_state=True)
    with pytest.raises(Unsupported, match="inference backend"):
        runner.forward_backward(x, state, dy)
    assert capabilities(impls.get("onnxruntime"), "cpu")["gru"].modes == ("forward", "step", "decode")
    assert supports(impls.get("onnxruntime"), "cpu", "gru", mode="train") == (
        False, "onnxruntime runs forward, step, decode only, not train")
    assert runner.execution_provider() == "CPUExecutionProvider"
    assert runner.threads() == runner._options.intra_op_num_threads >= 1
    assert runner._options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert runner.impl_label().startswith("onnxruntime-") and runner.impl_label().endswith("CPUExecutionProvider")
    h = runner.step(x[0], state)
    _, h_ref = reference.forward(spec, init_weights(spec), x[:1], state)
    assert rel_err(h, h_ref) < 1e-5


def test_onnxruntime_has_no_bfloat16_and_says_why():
    _skip_unless("onnxruntime")
    spec = RNNSpec("lstm", 3, 5)
    with pytest.raises(Unsupported, match="no bfloat16"):
        impls.get("onnxruntime").build(spec, init_weights(spec), "cpu", "bfloat16")


def test_flax_backend_runs_its_own_cell_only():
    _skip_unless("flax_gru")
    spec = RNNSpec("lstm", 3, 5)
    with pytest.raises(Unsupported, match="flax_gru runs gru cells only"):
        impls.get("flax_gru").build(spec, init_weights(spec), "cpu", "float32")


def test_flax_ragged_padding_is_exactly_zero():
    _skip_unless("flax_lstm")
    spec = RNNSpec("lstm", 3, 5, bidirectional=True)
    weights = init_weights(spec)
    x, state, dy = make_inputs(spec, 6, 3, with_state=True)
    lengths = np.array([6, 2, 1])
    runner = impls.get("flax_lstm").build(spec, weights, "cpu", "float32")
    y, _ = runner.forward(x, state, lengths=lengths)
    dx = runner.get(runner.forward_backward(x, state, dy, lengths=lengths)["x"])
    padded = np.arange(6)[:, None] >= lengths  # [T, B]
    assert np.all(runner.get(y)[padded] == 0) and np.all(dx[padded] == 0)
    assert rel_err(runner.get(y), reference.forward(spec, weights, x, state, lengths=lengths)[0]) < 1e-5


def test_flashrnn_on_cpu_is_vanilla_and_never_ranked():
    _skip_unless("flashrnn")
    backend = impls.get("flashrnn")
    spec = RNNSpec("gru", 3, 5)
    runner = backend.build(spec, init_weights(spec), "cpu", "float64")
    assert runner.impl_label() == "flashrnn-vanilla"
    ranked, reason = timed(backend, "cpu", "gru")
    assert not ranked and "exactness only" in reason
    assert supports(backend, "cpu", "gru", features=("lengths",)) == (False, "flashrnn's API takes no sequence lengths")
    with pytest.raises(Unsupported, match="no reverse direction"):
        backend.build(RNNSpec("gru", 3, 5, bidirectional=True), init_weights(RNNSpec("gru", 3, 5, bidirectional=True)))


def test_torch_compile_graph_does_not_grow_with_seq_len():
    """The compiled unit is one cell step: a longer sequence reuses the same graph (no new compile)."""
    _skip_unless("torch_compile")
    from impls.torch_compile import _inductor_cache_counts

    spec = RNNSpec("lstm", 3, 5)
    weights = init_weights(spec)
    runner = impls.get("torch_compile").build(spec, weights, "cpu", "float32")
    x, state, _ = make_inputs(spec, 40, 2, with_state=True)
    runner.compile(x[:3], state)
    assert runner.compile_cache() in ("cold", "warm", "in_process")
    assert runner.impl_label() == "inductor-cpp"
    before = _inductor_cache_counts()
    y, _ = runner.forward(x, state)
    assert _inductor_cache_counts() == before  # T=40 after T=3: nothing new reached inductor
    assert rel_err(runner.get(y), reference.forward(spec, weights, x, state)[0]) < 1e-4


def test_onednn_isa_is_read_from_its_verbose_log():
    log = ("onednn_verbose,v1,info,oneDNN v3.12.0 (commit 80afa71)\n"
           "onednn_verbose,v1,info,cpu,runtime:OpenMP,nthr:2\n"
           "onednn_verbose,v1,info,cpu,isa:Intel AVX2\n")
    assert parse_isa(log) == "Intel AVX2"
    assert parse_isa("no onednn here") is None
    isa = onednn_isa()
    assert isa is None or isa.startswith("Intel")

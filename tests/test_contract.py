"""The one contract (impls.runner): every registered backend's declared capabilities agree with what
its ``build`` accepts, at tiny shapes, without timing anything."""
from __future__ import annotations

import time

import numpy as np
import pytest

import impls
from impls.runner import Backend, Runner, capabilities, probed_capabilities, supports
from impls.spec import CELLS, DTYPES, RNNSpec, Unsupported, init_weights, make_inputs

I, H = 8, 32  # tiny, yet with room for a baseline within 10% of the RNN's parameter count


def _builds(backend, spec, dtype):
    try:
        weights = init_weights(spec) if backend.kind == "rnn" else None  # a baseline makes its own
        return backend.build(spec, weights, "cpu", dtype)
    except Unsupported:
        return None


def test_every_backend_declares_what_its_build_accepts():
    start, checked = time.perf_counter(), 0
    for name in impls.names():
        if not impls.available(name, "cpu")[0]:
            continue
        backend = impls.get(name)
        assert isinstance(backend, Backend), f"{name}: not a Backend (name, kind, framework, available, build)"
        for cell in CELLS:
            for dtype in DTYPES:
                declared, reason = supports(backend, "cpu", cell, dtype=dtype)
                runner = _builds(backend, RNNSpec(cell, I, H), dtype)
                assert declared == (runner is not None), f"{name} {cell} {dtype}: declared {declared} ({reason})"
                checked += 1
                if runner is not None:
                    assert isinstance(runner, Runner), f"{name}: its runner lacks a call of impls.runner.Runner"
            caps = capabilities(backend, "cpu")
            if cell not in caps:
                continue
            dtype = caps[cell].dtypes[0]
            bi = supports(backend, "cpu", cell, dtype=dtype, features=("bidirectional",))[0]
            assert bi == (_builds(backend, RNNSpec(cell, I, H, bidirectional=True), dtype) is not None), \
                f"{name} {cell}: bidirectional declared {bi}"
            runner = _builds(backend, RNNSpec(cell, I, H), dtype)
            x, _, _ = make_inputs(RNNSpec(cell, I, H), 3, 2)
            if impls.kind_of(name) == "rnn" and not supports(backend, "cpu", cell, features=("lengths",))[0]:
                with pytest.raises(Unsupported):  # an undeclared feature is refused, never ignored
                    runner.forward(runner.put(x), None, lengths=np.array([3, 1]))
    assert checked >= 3 * len(DTYPES)
    assert time.perf_counter() - start < 30, "the contract test builds tiny models only: at most 30 s"


def test_a_backend_that_declares_nothing_gets_what_build_accepts():
    class LSTMOnly:
        name, kind, framework = "lstm_only", "rnn", "torch"

        def available(self, device):
            return True, ""

        def build(self, spec, weights, device, dtype):
            if spec.cell != "lstm" or dtype != "float32" or spec.bidirectional:
                raise Unsupported("lstm_only: float32 LSTMs")
            return impls.get("torch_eager").build(spec, weights, device, dtype)

    caps = probed_capabilities(LSTMOnly(), "cpu")
    assert list(caps) == ["lstm"] and caps["lstm"].dtypes == ("float32",)
    assert caps["lstm"].features == () and caps["lstm"].timed  # no lengths unless declared: never ignored
    assert supports(LSTMOnly(), "cpu", "gru") == (False, "lstm_only on cpu runs lstm cells, not gru")

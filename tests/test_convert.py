"""impls.convert: a user's torch.nn.LSTM/GRU/RNN or its state_dict -> spec and canonical weights, and the
modules the suite cannot reproduce refused by the attribute's name."""
import numpy as np
import pytest
import torch

import impls
from impls import reference
from impls.convert import Unconvertible, from_state_dict, from_torch_module, load_state_dict, usage_snippet
from impls.spec import make_inputs

from .conftest import rel_err


@pytest.mark.parametrize("cls,cell,kwargs", [
    (torch.nn.LSTM, "lstm", dict(num_layers=2, bidirectional=True)),
    (torch.nn.GRU, "gru", dict(num_layers=1, batch_first=True)),  # batch_first changes only how x is taken
    (torch.nn.RNN, "rnn_tanh", dict(num_layers=3)),
])
def test_module_converts_to_the_same_function(cls, cell, kwargs):
    torch.manual_seed(0)
    model = cls(5, 7, **kwargs).double()
    spec, weights, dtype = from_torch_module(model)
    assert (spec.cell, spec.input_size, spec.hidden_size) == (cell, 5, 7)
    assert spec.num_layers == kwargs["num_layers"] and spec.bidirectional == kwargs.get("bidirectional", False)
    assert dtype == "float64"
    x, _, _ = make_inputs(spec, 6, 3)  # [T, B, I]
    xt = torch.as_tensor(x)
    y_torch, _ = model(xt.transpose(0, 1) if kwargs.get("batch_first") else xt)
    y_torch = y_torch.transpose(0, 1) if kwargs.get("batch_first") else y_torch
    y_ref, _ = reference.forward(spec, weights, x)
    assert rel_err(y_torch.detach().numpy(), y_ref) < 1e-12
    # the state dict saved to a file says the same
    spec2, weights2 = from_state_dict(model.state_dict(), cell=cell)
    assert spec2 == spec and all(np.array_equal(weights[k], weights2[k]) for k in weights)


@pytest.mark.parametrize("model,attribute", [
    (lambda: torch.nn.LSTM(4, 8, proj_size=3), "proj_size=3"),
    (lambda: torch.nn.RNN(4, 8, nonlinearity="relu"), "nonlinearity='relu'"),
    (lambda: torch.nn.GRU(4, 8, bias=False), "bias=False"),
    (lambda: torch.nn.Linear(4, 8), "Linear"),
])
def test_what_the_suite_cannot_reproduce_is_refused_by_name(model, attribute):
    with pytest.raises(Unconvertible, match=attribute.replace("(", r"\(")):
        from_torch_module(model())


def test_state_dict_refusals_name_the_attribute(tmp_path):
    with pytest.raises(Unconvertible, match="proj_size"):
        from_state_dict(torch.nn.LSTM(4, 8, proj_size=3).state_dict())
    with pytest.raises(Unconvertible, match="bias=False"):
        from_state_dict(torch.nn.LSTM(4, 8, bias=False).state_dict())
    with pytest.raises(Unconvertible, match="is a gru .*not a lstm"):
        from_state_dict(torch.nn.GRU(4, 8).state_dict(), cell="lstm")
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole module, not a state dict: refused, never unpickled
    with pytest.raises(Exception):
        load_state_dict(path)
    torch.save(torch.nn.GRU(4, 8, 2).state_dict(), path)
    spec, _ = from_state_dict(load_state_dict(path))
    assert (spec.cell, spec.num_layers, spec.hidden_size) == ("gru", 2, 8)


@pytest.mark.parametrize("backend", ["torch_cudnn", "jax_scan", "onnxruntime"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_snippet_runs_as_printed_and_gives_the_users_model_output(backend, batch_first):
    """The printed lines run as they stand, ``model`` their one free name, for a torch winner, a JAX
    winner and an inference one; their y is the user's model's on their batch, laid out as the model
    takes it (batch_first or time-major)."""
    torch.manual_seed(1)
    model = torch.nn.LSTM(3, 4, num_layers=2, batch_first=batch_first)
    spec, weights, dtype = from_torch_module(model)
    runner = impls.get(backend).build(spec, weights, "cpu", dtype)
    code = usage_snippet(backend, runner, spec, "cpu", dtype, batch=2, seq_len=5, batch_first=batch_first)
    scope = {"model": model}
    exec(code, scope)  # noqa: S102 - the snippet is ours, checked for running as printed
    x = np.random.default_rng(0).standard_normal((2, 5, 3) if batch_first else (5, 2, 3))  # the snippet's batch
    expected = model(torch.as_tensor(x, dtype=torch.float32))[0].detach().numpy()
    y = scope["y"].detach() if isinstance(scope["y"], torch.Tensor) else scope["y"]  # trainable: it has a graph
    assert np.asarray(y).shape == expected.shape
    assert np.allclose(np.asarray(y), expected, atol=1e-5)


def test_snippet_from_a_state_dict_names_no_free_variable(tmp_path):
    torch.manual_seed(2)
    path = tmp_path / "gru.pt"
    torch.save(torch.nn.GRU(3, 4).state_dict(), path)
    spec, weights = from_state_dict(load_state_dict(path))
    runner = impls.get("torch_eager").build(spec, weights, "cpu", "float32")
    scope = {}
    exec(usage_snippet("torch_eager", runner, spec, "cpu", "float32", str(path), batch=2, seq_len=3), scope)  # noqa: S102
    assert tuple(scope["y"].shape) == (3, 2, 4)

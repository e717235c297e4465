"""Backend registry: every implementation the harness can run, by name.

The harness reaches torch, triton and jax only through the objects returned by
``get(name)``.  Modules are imported lazily, so listing backends never imports a
framework that is not installed.  Adding a backend is one new module (exposing
``make_backend(name, **options)``) and one line below.
"""
from __future__ import annotations

import importlib

# name -> (kind, module, options passed to the module's make_backend)
_REGISTRY: dict[str, tuple[str, str, dict]] = {
    "torch_eager": ("rnn", "impls.torch_eager", {}),
    "torch_cudnn": ("rnn", "impls.torch_cudnn", {}),
    "torch_cudnn_padded": ("rnn", "impls.torch_cudnn", {"ragged": "padded"}),
    "torch_compile": ("rnn", "impls.torch_compile", {}),
    "torch_scan": ("rnn", "impls.torch_scan", {}),
    "torch_scan_compile": ("rnn", "impls.torch_scan", {"compiled": True}),
    "onnxruntime": ("rnn", "impls.onnx_rt", {}),
    "flax_lstm": ("rnn", "impls.flax_cells", {"cell": "lstm"}),
    "flax_gru": ("rnn", "impls.flax_cells", {"cell": "gru"}),
    "flax_rnn": ("rnn", "impls.flax_cells", {"cell": "rnn_tanh"}),
    "flashrnn": ("rnn", "impls.flashrnn_backend", {}),
    "jax_scan": ("rnn", "impls.jax_scan", {"unroll": 1, "bptt": "custom"}),
    "jax_scan_unroll8": ("rnn", "impls.jax_scan", {"unroll": 8, "bptt": "custom"}),
    "jax_scan_autodiff": ("rnn", "impls.jax_scan", {"unroll": 1, "bptt": "autodiff"}),
    "jax_minscan": ("rnn", "impls.jax_minscan", {"form": "sequential"}),
    "jax_minscan_assoc": ("rnn", "impls.jax_minscan", {"form": "associative"}),
    "triton": ("rnn", "impls.triton", {"path": "fused"}),
    "triton_stepwise": ("rnn", "impls.triton", {"path": "stepwise"}),
    "triton_wt": ("rnn", "impls.triton", {"path": "fused", "transposed": True, "fast_tanh": True}),
    "triton_minscan": ("rnn", "impls.triton.minscan", {}),
    "transformer_sdpa": ("baseline", "impls.transformer", {"framework": "torch"}),
    "transformer_jax": ("baseline", "impls.transformer", {"framework": "jax"}),
}

KINDS = ("rnn", "baseline")
_CACHE: dict[str, object] = {}


class UnknownBackend(KeyError):
    def __str__(self):
        return self.args[0]


def names(kind: str | None = None) -> list[str]:
    """Registered backend names, optionally only those of one kind (``rnn`` | ``baseline``)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)} or None, got {kind!r}")
    return [n for n, (k, _, _) in _REGISTRY.items() if kind is None or k == kind]


def kind_of(name: str) -> str:
    _check(name)
    return _REGISTRY[name][0]


def module_of(name: str) -> str:
    """The module that implements ``name``: registered names sharing one are variants of one model."""
    _check(name)
    return _REGISTRY[name][1]


def _check(name: str) -> None:
    if name not in _REGISTRY:
        raise UnknownBackend(f"unknown backend {name!r}; valid: {', '.join(_REGISTRY)}")


def get(name: str):
    """The backend object: ``name``, ``framework``, ``available(device)``, ``build(spec, weights, device, dtype)``."""
    _check(name)
    if name not in _CACHE:
        kind, module, options = _REGISTRY[name]
        backend = importlib.import_module(module).make_backend(name, **options)
        backend.kind = kind
        _CACHE[name] = backend
    return _CACHE[name]


def available(name: str, device: str = "cpu") -> tuple[bool, str]:
    """(ok, reason): False with the reason when the framework or the device is missing."""
    _check(name)
    try:
        backend = get(name)
    except ImportError as exc:  # the framework itself is not installed
        return False, f"cannot import: {exc}"
    return backend.available(device)

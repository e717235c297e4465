"""What every torch backend shares: dtype/device handling and the runner contract.

A torch backend only supplies an ``nn.Module`` whose parameters carry the
canonical names (``weight_ih_l0`` ...) and whose ``forward(x, state)`` returns
``(y, final_state)`` like ``nn.LSTM``.  Gradients, state handling, ``put``/``get``
and ``sync`` are written once here.
"""
from __future__ import annotations

import numpy as np
import torch

from .runtime import cuda_device_ok
from .spec import CLASSIC_CELLS, DTYPES, RNNSpec, check_buildable, check_device, check_lengths, declare, require_feature
from .torch_hooks import TorchHooks

TORCH_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def to_numpy(a):
    """Tensor (or tuple of them) -> NumPy; half types come back as float32 (NumPy has no bfloat16)."""
    if isinstance(a, (tuple, list)):
        return type(a)(to_numpy(v) for v in a)
    if isinstance(a, torch.Tensor):
        a = a.detach()
        if a.dtype in (torch.bfloat16, torch.float16):
            a = a.float()
        return a.cpu().numpy()
    return np.asarray(a)


class TorchBackend:
    """A registered torch backend: availability, dtype support, and the runner class to build."""

    framework = "torch"
    kind = "rnn"

    def __init__(self, name: str, runner_cls, cpu_dtypes=("float32", "float64", "bfloat16"), cuda_dtypes=DTYPES,
                 features=(), feature_reasons=None, cells=CLASSIC_CELLS):
        self.name = name
        self.runner_cls = runner_cls
        self.cells = tuple(cells)  # spec.CELLS this backend runs
        self._dtypes = {"cpu": tuple(cpu_dtypes), "cuda": tuple(cuda_dtypes)}
        # spec.FEATURES this backend implements (none unless it says so), and its reasons for the rest
        self._features = tuple(features)
        self._feature_reasons = dict(feature_reasons or {})

    def available(self, device: str = "cpu") -> tuple[bool, str]:
        check_device(device)
        return cuda_device_ok(device)

    def capabilities(self, device: str) -> dict:
        """Its cells, in the device's dtypes, with the features given at construction."""
        return declare(self._dtypes["cuda" if device.startswith("cuda") else "cpu"], cells=self.cells,
                       features=self._features, reasons=self._feature_reasons)

    def build(self, spec: RNNSpec, weights, device: str = "cpu", dtype: str = "float32"):
        check_buildable(self, spec, weights, device, dtype)
        return self.runner_cls(self, spec, weights, device, dtype)


class TorchArrays(TorchHooks):
    """Arrays at a runner's boundary: NumPy in (``put``), NumPy out (``get``), device sync.

    Subclasses set ``device``, ``torch_dtype`` and ``_module``.
    """

    def module(self) -> torch.nn.Module:
        """The trainable form: ``forward(x, state) -> (y, final_state)``, differentiable by autograd."""
        return self._module

    def put(self, a):
        if a is None or isinstance(a, torch.Tensor):
            return a
        if isinstance(a, (tuple, list)):
            return tuple(self.put(v) for v in a)
        return torch.as_tensor(np.asarray(a), dtype=self.torch_dtype, device=self.device)

    def get(self, a):
        return to_numpy(a)

    def sync(self) -> None:
        sync(self.device)


class TorchRunner(TorchArrays):
    """Runner contract of docs/design.md for any module with canonical parameter names."""

    def __init__(self, backend: TorchBackend, spec: RNNSpec, weights, device: str, dtype: str):
        self.backend, self.spec, self.device, self.dtype = backend, spec, device, dtype
        self.torch_dtype = TORCH_DTYPES[dtype]
        self._module = self.make_module().to(device=device, dtype=self.torch_dtype)
        with torch.no_grad():
            params = dict(self._module.named_parameters())
            for name in spec.weight_names():
                params[name].copy_(torch.as_tensor(np.asarray(weights[name])))
        self._params = [params[n] for n in spec.weight_names()]

    # -- what a backend supplies --------------------------------------------------
    def make_module(self) -> torch.nn.Module:
        raise NotImplementedError

    def impl_label(self) -> str:
        raise NotImplementedError

    # -- the contract (put, get, sync and module() come from TorchArrays) ----------
    def run_lengths(self, x, state, lengths, need_final: bool = True):
        """(y, final) of a ragged batch, lengths an int64 CPU tensor [B]; by default the module
        takes them itself.  ``need_final`` is False when the caller discards the final state."""
        return self._module(x, state, lengths)

    def _lengths(self, lengths, x):
        """None, or the checked lengths as an int64 CPU tensor [B]; Unsupported (the backend's
        reason) where the backend does not implement them."""
        if lengths is None:
            return None
        require_feature(self, "lengths")
        return torch.from_numpy(check_lengths(to_numpy(lengths), x.shape[0], x.shape[1]))

    def _run(self, x, state, lengths, need_final: bool = True):
        return self._module(x, state) if lengths is None else self.run_lengths(x, state, lengths, need_final)

    def _state(self, state, batch: int, requires_grad: bool = False):
        """None | h0 | (h0, c0) -> a list of tensors [L*D, B, H], zeros where absent."""
        n = 2 if self.spec.has_cell_state else 1
        if state is None:
            parts = [None] * n
        elif isinstance(state, (tuple, list)):
            parts = list(state)
        else:
            parts = [state]
        shape = self.spec.state_shape(batch)
        out = []
        for part in parts:
            t = torch.zeros(shape, dtype=self.torch_dtype, device=self.device) if part is None else self.put(part)
            if requires_grad:
                t = t.detach().requires_grad_(True)
            out.append(t)
        return out

    def _pack(self, parts):
        return tuple(parts) if self.spec.has_cell_state else parts[0]

    def forward(self, x, state=None, lengths=None):
        """(y [T, B, D*H], final state); with ``lengths`` [B], row b computes t < lengths[b] only."""
        x = self.put(x)
        lengths = self._lengths(lengths, x)
        with torch.no_grad():
            return self._run(x, self._pack(self._state(state, x.shape[1])), lengths)

    def forward_backward(self, x, state, dy, lengths=None) -> dict:
        """Gradients of L = sum(y * dy): every canonical weight, ``x``, ``h0`` (and ``c0``)."""
        x = self.put(x).detach().requires_grad_(True)
        lengths = self._lengths(lengths, x)
        states = self._state(state, x.shape[1], requires_grad=True)
        y, _ = self._run(x, self._pack(states), lengths, need_final=False)
        grads = torch.autograd.grad(y, self._params + [x] + states, self.put(dy))
        return dict(zip(self.spec.weight_names() + ["x"] + self.spec.state_names(), grads))

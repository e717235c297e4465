"""torch.nn.RNN / LSTM / GRU: cuDNN on CUDA, ATen (oneDNN for LSTM) on CPU.

``impl_label`` is decided at run time from what torch will really dispatch to,
so a record never claims cuDNN when ATen ran.
"""
from __future__ import annotations

import torch

from .torch_common import TorchBackend, TorchRunner

_MODULES = {"rnn_tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


class CudnnRunner(TorchRunner):
    def make_module(self) -> torch.nn.Module:
        spec = self.spec
        kwargs = {"nonlinearity": "tanh"} if spec.cell == "rnn_tanh" else {}
        return _MODULES[spec.cell](spec.input_size, spec.hidden_size, spec.num_layers, **kwargs)

    def impl_label(self) -> str:
        if self.device.startswith("cuda"):
            probe = torch.empty(1, dtype=self.torch_dtype, device=self.device)
            return "cudnn" if torch.backends.cudnn.is_acceptable(probe) else "aten"
        onednn = (
            self.spec.cell == "lstm"
            and self.dtype in ("float32", "bfloat16")
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
        )
        return "aten-onednn" if onednn else "aten"


def make_backend(name: str) -> TorchBackend:
    return TorchBackend(name, CudnnRunner)

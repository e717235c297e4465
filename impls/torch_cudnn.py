"""torch.nn.RNN / LSTM / GRU: cuDNN on CUDA, ATen (oneDNN for LSTM) on CPU.

``impl_label`` is decided at run time from what torch will really dispatch to,
so a record never claims cuDNN when ATen ran.

A ragged batch goes two ways, each its own registered name, so that their cost
is measured rather than guessed:

* ``torch_cudnn`` packs it (``pack_padded_sequence(enforce_sorted=False)``,
  ``pad_packed_sequence(total_length=T)``), as torch's documentation says to.
* ``torch_cudnn_padded`` runs the full padded batch, masks y to 0 past each
  length and gathers the final state at t = len-1.  That needs every layer's
  outputs, so it calls torch.nn's module one layer at a time; an LSTM's cell
  state at len-1 is not among them and is rebuilt from them in closed form.
  Unidirectional only: a padded reverse direction would start in the padding.
"""
from __future__ import annotations

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .spec import FEATURES, split_state
from .torch_common import TorchBackend, TorchRunner

_MODULES = {"rnn_tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
PADDED_BIDIRECTIONAL_REASON = (
    "a padded batch cannot run the reverse direction: it would start in the padding, not at t = len-1; "
    "torch_cudnn packs the batch and supports it"
)


def torch_module(spec, input_size: int, num_layers: int, bidirectional: bool = False) -> torch.nn.Module:
    kwargs = {"nonlinearity": "tanh"} if spec.cell == "rnn_tanh" else {}
    return _MODULES[spec.cell](input_size, spec.hidden_size, num_layers, bidirectional=bidirectional, **kwargs)


def _at(seq, index):
    """seq [T, B, H] at t = index[b] for each row b -> [B, H]."""
    return seq.gather(0, index.view(1, -1, 1).expand(1, -1, seq.shape[2]))[0]


def _lstm_cell_state_at(x, y, h0, c0, w_ih, w_hh, b_ih, b_hh, last):
    """One LSTM layer's c at t = last[b], from its input x [T, B, I] and output y [T, B, H].

    The gates of every step are one product (h_prev is y shifted by one), and c_t = f_t c_{t-1} +
    i_t g_t in closed form: c_e = sum_{s<=e} exp(A_e - A_s) i_s g_s + exp(A_e) c0 with
    A = cumsum(log f); every exponent is <= 0, so nothing overflows.
    """
    T = x.shape[0]
    h_prev = torch.cat([h0[None], y[:-1]])  # [T, B, H]
    i, f, g, _ = (x @ w_ih.t() + b_ih + h_prev @ w_hh.t() + b_hh).chunk(4, dim=2)  # each [T, B, H]
    cum_log_f = torch.cumsum(torch.nn.functional.logsigmoid(f), 0)  # [T, B, H]
    at_end = _at(cum_log_f, last)  # [B, H]
    upto = (torch.arange(T, device=x.device)[:, None] <= last)[..., None]  # [T, B, 1]
    decay = torch.exp(torch.where(upto, at_end - cum_log_f, float("-inf")))  # [T, B, H]
    return (decay * torch.sigmoid(i) * torch.tanh(g)).sum(0) + torch.exp(at_end) * c0


class LayerByLayer(torch.nn.Module):
    """torch.nn's module called once per layer, its parameters also registered under the canonical
    names; forward(x, state, lengths) masks y past each length and gathers the final state there."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        self.layers = torch.nn.ModuleList(torch_module(spec, spec.layer_input_size(k), 1) for k in range(spec.num_layers))
        for k, layer in enumerate(self.layers):
            for name, param in layer.named_parameters():  # shared: named_parameters() lists the canonical name
                self.register_parameter(name.replace("_l0", f"_l{k}"), param)

    def forward(self, x, state=None, lengths=None, need_final: bool = True):
        spec = self.spec
        zeros = x.new_zeros(spec.state_shape(x.shape[1]))  # [L, B, H]
        h0, c0 = split_state(state, spec.has_cell_state, zeros)
        ys, finals, layer_in = [], [], x
        for k, layer in enumerate(self.layers):
            layer_in, final = layer(layer_in, (h0[k:k + 1], c0[k:k + 1]) if c0 is not None else h0[k:k + 1])
            ys.append(layer_in)  # [T, B, H], computed into the padding too
            finals.append(final)
        if lengths is None:
            return layer_in, (tuple(torch.cat(p) for p in zip(*finals)) if c0 is not None else torch.cat(finals))
        valid = (torch.arange(x.shape[0])[:, None] < lengths).to(x.device)[..., None]  # [T, B, 1]
        y = torch.where(valid, layer_in, 0.0)
        if not need_final:
            return y, None
        last = (lengths - 1).to(x.device)  # [B]
        h_n = torch.stack([_at(y_k, last) for y_k in ys])  # [L, B, H]
        if c0 is None:
            return y, h_n
        inputs = [x] + ys[:-1]
        c_n = torch.stack([
            _lstm_cell_state_at(inputs[k], ys[k], h0[k], c0[k], *(getattr(self, n) for n in spec.layer_weight_names(k)), last)
            for k in range(spec.num_layers)
        ])  # [L, B, H]
        return y, (h_n, c_n)


class CudnnRunner(TorchRunner):
    def make_module(self) -> torch.nn.Module:
        spec = self.spec
        return torch_module(spec, spec.input_size, spec.num_layers, spec.bidirectional)

    ran_packed = False  # a call has taken a PackedSequence (lengths given)

    def run_lengths(self, x, state, lengths, need_final: bool = True):
        self.ran_packed = True
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, final = self._module(packed, state)
        y, _ = pad_packed_sequence(out, total_length=x.shape[0])  # [T, B, D*H], 0 past each length
        return y, final

    def impl_label(self) -> str:
        """What ran, as ATen dispatches it: cuDNN where it accepts the tensors (packed ones too); on a CPU
        oneDNN's fused LSTM for float32/bf16 padded input only: ATen's packed LSTM never calls
        ``mkldnn_rnn`` and runs its own per-step loop (``aten``)."""
        if self.device.startswith("cuda"):
            probe = torch.empty(1, dtype=self.torch_dtype, device=self.device)
            return "cudnn" if torch.backends.cudnn.is_acceptable(probe) else "aten"
        onednn = (
            self.spec.cell == "lstm"
            and self.dtype in ("float32", "bfloat16")
            and not self.ran_packed
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
        )
        return "aten-onednn" if onednn else "aten"


class PaddedRunner(CudnnRunner):
    def make_module(self) -> torch.nn.Module:
        return LayerByLayer(self.spec)

    def run_lengths(self, x, state, lengths, need_final: bool = True):
        return self._module(x, state, lengths, need_final)


def make_backend(name: str, ragged: str = "packed") -> TorchBackend:
    """ragged: how a batch with lengths runs, ``packed`` or ``padded`` (see the module docstring)."""
    if ragged == "packed":
        return TorchBackend(name, CudnnRunner, features=FEATURES)
    if ragged == "padded":
        return TorchBackend(name, PaddedRunner, features=("lengths",),
                            feature_reasons={"bidirectional": PADDED_BIDIRECTIONAL_REASON})
    raise ValueError(f"ragged must be packed or padded, got {ragged!r}")

"""FlashRNN (the ``flashrnn`` package): fused CUDA kernels on a GPU, its ``vanilla`` loop on a CPU.

FlashRNN takes the input projection precomputed (``Wx``), so each layer here is
x W_ih^T (one matmul, in the timed work as for every backend) followed by
``flashrnn(Wx, R, b, states)``.  Weight map (``R`` laid out [G, heads=1, H_out,
H_in], i.e. W_hh's gate blocks; ``b`` one bias per gate):

* LSTM: gates i, f, g, o as torch; b = b_ih + b_hh.
* GRU: ``Wx`` gates r, z, n; ``R`` gates (n, r, z) of W_hh; ``b`` = [b_hn, b_ir + b_hr,
  b_iz + b_hz, b_in], so n = tanh(W_in x + b_in + r (W_hn h + b_hn)) as torch's.
* tanh RNN: FlashRNN's ``elman``; b = b_ih + b_hh.

On a CPU only FlashRNN's ``vanilla`` backend runs (a plain PyTorch loop, its
reference implementation): labelled ``flashrnn-vanilla`` and used to check the
mapping against the oracle, so that the CUDA rows compute the same function;
it is not FlashRNN's product, so it is never timed or ranked (``interpreted``).
FlashRNN has no sequence lengths and no reverse direction: both ``Unsupported``.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .spec import split_state
from .torch_common import TorchBackend, TorchRunner

FUNCTIONS = {"lstm": "lstm", "gru": "gru", "rnn_tanh": "elman"}
VANILLA_REASON = ("flashrnn's vanilla backend is its plain-PyTorch reference loop, not its fused kernels: "
                  "exactness only, never timed or ranked")


def _blocks(a, H, order):
    return torch.cat([a[k * H:(k + 1) * H] for k in order])


class FlashRNNModule(torch.nn.Module):
    """Stacked FlashRNN layers with canonical parameter names; forward(x, state) -> (y, final)."""

    def __init__(self, spec, kernel: str):
        super().__init__()
        self.spec, self.kernel = spec, kernel
        for name, shape in spec.weight_shapes().items():
            self.register_parameter(name, torch.nn.Parameter(torch.empty(shape)))

    def _layer_weights(self, k):
        """(R [G, 1, H, H], b [G', 1, H]) of layer k in FlashRNN's gate order."""
        H, cell = self.spec.hidden_size, self.spec.cell
        w_hh, b_ih, b_hh = (getattr(self, f"{p}_l{k}") for p in ("weight_hh", "bias_ih", "bias_hh"))
        if cell == "gru":
            R = _blocks(w_hh, H, (2, 0, 1))
            b = torch.cat([b_hh[2 * H:], b_ih[:2 * H] + b_hh[:2 * H], b_ih[2 * H:]])  # [b_hn, b_r, b_z, b_in]
        else:
            R, b = w_hh, b_ih + b_hh
        return R.view(-1, 1, H, H), b.view(-1, 1, H)

    def forward(self, x, state=None):
        from flashrnn import flashrnn

        spec = self.spec
        T, B, _ = x.shape
        H = spec.hidden_size
        zeros = x.new_zeros(spec.state_shape(B))
        h0, c0 = split_state(state, spec.has_cell_state, zeros)
        h_n, c_n, layer_in = [], [], x
        dtype = {torch.float64: "float64", torch.float32: "float32", torch.bfloat16: "bfloat16",
                 torch.float16: "float16"}[x.dtype]
        for k in range(spec.num_layers):
            gi = layer_in.reshape(T * B, -1) @ getattr(self, f"weight_ih_l{k}").t()  # [T*B, G*H]
            Wx = gi.view(T, B, spec.gates, 1, H).transpose(0, 1)  # [B, T, G, 1, H]
            R, b = self._layer_weights(k)
            parts = [h0[k]] + ([c0[k]] if c0 is not None else [])
            states = torch.stack(parts)[:, :, None, None, :]  # [S, B, 1, 1, H]
            out, last = flashrnn(Wx, R, b, states=states, function=FUNCTIONS[spec.cell], backend=self.kernel, dtype=dtype)
            layer_in = out[0, :, :, 0, :].transpose(0, 1)  # [S, B, T, 1, H] -> [T, B, H]
            h_n.append(last[0, :, 0, 0, :])
            if c0 is not None:
                c_n.append(last[1, :, 0, 0, :])
        final = (torch.stack(h_n), torch.stack(c_n)) if spec.has_cell_state else torch.stack(h_n)
        return layer_in, final


class FlashRNNRunner(TorchRunner):
    def make_module(self) -> torch.nn.Module:
        return FlashRNNModule(self.spec, self.backend.kernel_for(self.device, self.spec.cell))

    def impl_label(self) -> str:
        return "flashrnn-" + self._module.kernel.replace("_", "-")


class FlashRNNBackend(TorchBackend):
    def __init__(self, name: str, cuda_kernel: str):
        super().__init__(name, FlashRNNRunner, cpu_dtypes=("float32", "float64"),
                         cuda_dtypes=("float32", "bfloat16", "float16"),
                         feature_reasons={"bidirectional": "flashrnn has no reverse direction",
                                          "lengths": "flashrnn's API takes no sequence lengths"})
        self.cuda_kernel = cuda_kernel

    def available(self, device: str = "cpu") -> tuple[bool, str]:
        ok, reason = super().available(device)
        if not ok:
            return ok, reason
        try:
            import flashrnn  # noqa: F401
        except ImportError as exc:
            return False, f"flashrnn is not installed: {exc}"
        return True, ""

    def kernel_for(self, device: str, cell: str) -> str:
        """FlashRNN backend that runs here: its fused kernel on CUDA (triton_fused has LSTM only)."""
        if not device.startswith("cuda"):
            return "vanilla"
        return "cuda_fused" if self.cuda_kernel == "triton_fused" and cell != "lstm" else self.cuda_kernel

    def capabilities(self, device: str) -> dict:
        """Not timed where its kernel is the vanilla reference loop (a CPU: see VANILLA_REASON)."""
        caps = super().capabilities(device)
        return {cell: s if self.kernel_for(device, cell) != "vanilla" else
                replace(s, timed=False, reasons={**s.reasons, "timed": VANILLA_REASON}) for cell, s in caps.items()}


def make_backend(name: str, cuda_kernel: str = "cuda_fused") -> FlashRNNBackend:
    return FlashRNNBackend(name, cuda_kernel)

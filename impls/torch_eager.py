"""Eager PyTorch: a Python loop over timesteps, autograd for the backward.

Each layer's input projection for all timesteps is one matmul before the loop
(the same hoisting every backend does), so the loop holds only the recurrent
matmul and the gate math.  This is what a user gets by writing the cell by hand.
"""
from __future__ import annotations

import torch

from .torch_common import TorchBackend, TorchRunner


def cell_step(cell: str, gi_t, h, c, w_hh, b_hh):
    """One timestep from the precomputed input projection gi_t [B, G*H]; returns (h, c)."""
    gh = torch.addmm(b_hh, h, w_hh.t())  # [B, G*H]
    if cell == "rnn_tanh":
        return torch.tanh(gi_t + gh), None
    if cell == "lstm":
        i, f, g, o = (gi_t + gh).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    ir, iz, in_ = gi_t.chunk(3, dim=1)
    hr, hz, hn = gh.chunk(3, dim=1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(in_ + r * hn)
    return n + z * (h - n), None


class EagerRNN(torch.nn.Module):
    """Stacked cells with canonical parameter names; forward(x, state) -> (y, final_state)."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        for name, shape in spec.weight_shapes().items():
            self.register_parameter(name, torch.nn.Parameter(torch.empty(shape)))

    def forward(self, x, state=None):
        spec = self.spec
        T, B, _ = x.shape
        zeros = x.new_zeros(spec.num_layers, B, spec.hidden_size)
        if spec.has_cell_state:
            h0, c0 = state if state is not None else (zeros, zeros)
        else:
            h0, c0 = (state if state is not None else zeros), None
        h_n, c_n, layer_in = [], [], x
        for k in range(spec.num_layers):
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            b_ih, b_hh = getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")
            gi = torch.addmm(b_ih, layer_in.reshape(T * B, -1), w_ih.t()).view(T, B, -1)  # [T, B, G*H]
            h, c = h0[k], (c0[k] if c0 is not None else None)
            outs = []
            for t in range(T):
                h, c = cell_step(spec.cell, gi[t], h, c, w_hh, b_hh)
                outs.append(h)
            layer_in = torch.stack(outs)  # [T, B, H]
            h_n.append(h)
            c_n.append(c)
        final = (torch.stack(h_n), torch.stack(c_n)) if spec.has_cell_state else torch.stack(h_n)
        return layer_in, final


class EagerRunner(TorchRunner):
    def make_module(self) -> torch.nn.Module:
        return EagerRNN(self.spec)

    def impl_label(self) -> str:
        return "eager"


def make_backend(name: str) -> TorchBackend:
    return TorchBackend(name, EagerRunner)

"""minGRU and minLSTM as a parallel scan over T, in log space (torch ops; autograd for the backward).

The gates read x_t alone (docs/design.md "Parallel-in-time cells"), so a layer is the linear
recurrence h_t = a_t h_{t-1} + b_t with a_t in (0, 1) and b_t > 0, whose solution is

    h_t = A_t h_0 + sum_{k=1..t} (prod_{j=k+1..t} a_j) b_k,    A_t = prod_{j<=t} a_j.

The sum runs in log space (Heinsen 2023; Feng et al. 2024): log A = cumsum(log a) and
log(sum) = log A_t + logcumsumexp(log b - log A)_t, one ``cumsum`` and one ``logcumsumexp``
over T instead of T dependent steps.  The h_0 term is kept apart (A_t h_0, a plain product),
so an h_0 of any sign is exact; only b (positive) goes through the logs.

The split is exact in algebra only: log A_t falls linearly in t, and exp(log A_t + ...) turns an
absolute error of about eps * |log A_t| in the logs into that relative error in h.  So the scan
runs in float32 or wider: bfloat16 / float16 inputs project in their own type and scan in
float32 (8 mantissa bits would put |log A_t| ~ 100 off by about 0.4, a 50% error in h).

``lengths``: a padded step's projection is zeroed (no gradient reaches padded x), y is 0 there
and the final state is h at len-1; the reverse direction reverses each row's first len steps
(``reverse_padded``), scans them forward, and reverses back.  ``torch_scan_compile`` runs each
layer's coefficients and scan under ``torch.compile`` with dynamic shapes: one graph per
(dtype, grad mode) family, whatever T and B.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .spec import FEATURES, PARALLEL_CELLS
from .torch_common import TorchBackend, TorchRunner
from .torch_compile import RECOMPILE_LIMIT, InductorCompileHooks
from .torch_eager import layer_parameters

HALF = (torch.bfloat16, torch.float16)


def log_candidate(v):
    """log g(v): log(v + 1/2) for v >= 0, log sigmoid(v) = -softplus(-v) below (``relu`` keeps the
    unused branch finite, so its zero gradient is not 0 * inf)."""
    return torch.where(v >= 0, torch.log(F.relu(v) + 0.5), -F.softplus(-v))


def log_coefficients(cell: str, gi):
    """(log a, log b), each [T, B, H], of minGRU (z, h~) or minLSTM (f, i, h~) from gi [T, B, G*H]."""
    if cell == "mingru":
        a_z, a_h = gi.chunk(2, dim=-1)
        return -F.softplus(a_z), -F.softplus(-a_z) + log_candidate(a_h)  # log(1 - z), log z + log h~
    a_f, a_i, a_h = gi.chunk(3, dim=-1)
    diff = F.softplus(-a_f) - F.softplus(-a_i)  # log(i / f)
    return -F.softplus(diff), -F.softplus(-diff) + log_candidate(a_h)  # log f/(f+i), log i/(f+i) + log h~


def log_space_scan(log_a, log_b, h0):
    """h [T, B, H] of h_t = a_t h_{t-1} + b_t: A_t h0 + exp(log A_t + logcumsumexp(log b - log A)_t)."""
    log_A = torch.cumsum(log_a, dim=0)  # [T, B, H]
    return torch.exp(log_A) * h0 + torch.exp(log_A + torch.logcumsumexp(log_b - log_A, dim=0))


class LinearScan(torch.autograd.Function):
    """``log_space_scan`` with its backward written as the same scan run in reverse.

    The gradient reaching h_t is g_t = dh_t + a_{t+1} g_{t+1}: a linear recurrence over the flipped
    indices, with b = dh of either sign, so it runs as two log-space scans (the positive and negative
    parts of dh).  Autograd through cumsum/logcumsumexp instead gets d log A_t as the difference of
    two sums that grow with t and cancel: 0.17 relative error in d b_ih at T=4096 in float32
    (mingru, B 4, H 64, measured), where this backward stays at the forward's 2e-4.
    """

    @staticmethod
    def forward(ctx, log_a, log_b, h0):
        h = log_space_scan(log_a, log_b, h0)  # [T, B, H]
        ctx.save_for_backward(log_a, log_b, h0, h)
        return h

    @staticmethod
    def backward(ctx, dh):
        log_a, log_b, h0, h = ctx.saved_tensors
        # s = T-1-t: g'_s = a_{t+1} g'_{s-1} + dh_t, the coefficient of the first step multiplies g'_{-1} = 0
        log_a_next = torch.cat([log_a[1:], torch.zeros_like(log_a[:1])]).flip(0)  # [T, B, H]
        dh_rev, zero = dh.flip(0), torch.zeros_like(h0)
        g = (log_space_scan(log_a_next, torch.log(F.relu(dh_rev)), zero)
             - log_space_scan(log_a_next, torch.log(F.relu(-dh_rev)), zero)).flip(0)  # [T, B, H]
        a = torch.exp(log_a)
        h_prev = torch.cat([h0[None], h[:-1]])  # [T, B, H]
        return g * h_prev * a, g * torch.exp(log_b), g[0] * a[0]


def linear_scan(log_a, log_b, h0):
    """h [T, B, H] of h_t = a_t h_{t-1} + b_t from log a, log b [T, B, H] and h0 [B, H] (any sign)."""
    return LinearScan.apply(log_a, log_b, h0)


def layer_scan(cell: str, gi, h0):
    """One layer and direction: gi [T, B, G*H], h0 [B, H] -> h [T, B, H], scanned in float32 or wider."""
    work = torch.float32 if gi.dtype in HALF else gi.dtype
    log_a, log_b = log_coefficients(cell, gi.to(work))
    return linear_scan(log_a, log_b, h0.to(work)).to(gi.dtype)


@functools.cache
def compiled_layer_scan():
    """``layer_scan`` under torch.compile, dynamic in T and B (shared by every runner)."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    return torch.compile(layer_scan, dynamic=True, fullgraph=True)


def reverse_padded(a, lengths):
    """a [T, B, ...] with each row's first lengths[b] steps reversed in time (all T when lengths is None);
    its own inverse, and padded steps stay where they are."""
    if lengths is None:
        return a.flip(0)
    T = a.shape[0]
    t = torch.arange(T, device=a.device)[:, None]  # [T, 1]
    n = lengths.to(a.device)[None, :]  # [1, B]
    index = torch.where(t < n, n - 1 - t, t)  # [T, B]
    return a.gather(0, index.view(T, -1, *([1] * (a.dim() - 2))).expand_as(a))


class ScanRNN(torch.nn.Module):
    """Stacked minGRU / minLSTM layers with canonical parameter names, each layer one parallel scan."""

    def __init__(self, spec, scan=layer_scan):
        super().__init__()
        self.spec, self.scan = spec, scan
        for name, shape in spec.weight_shapes().items():
            self.register_parameter(name, torch.nn.Parameter(torch.empty(shape)))

    def forward(self, x, state=None, lengths=None):
        """x [T, B, I], h0 [L*D, B, H] or None, lengths None or int [B] -> (y [T, B, D*H], h_n [L*D, B, H])."""
        spec = self.spec
        T, B, _ = x.shape
        h0 = state if state is not None else x.new_zeros(spec.state_shape(B))
        valid = None if lengths is None else (torch.arange(T)[:, None] < lengths).to(x.device)[..., None]  # [T, B, 1]
        last = None if lengths is None else (lengths - 1).to(x.device)  # [B]
        h_n, layer_in = [], x
        for k in range(spec.num_layers):
            outs = []
            for d, suffix in enumerate(spec.suffixes()):
                w_ih, _, b_ih, _ = layer_parameters(self, spec, k, suffix)
                gi = torch.addmm(b_ih, layer_in.reshape(T * B, -1), w_ih.t()).view(T, B, -1)  # [T, B, G*H]
                if d == 1:
                    gi = reverse_padded(gi, lengths)
                if valid is not None:
                    gi = torch.where(valid, gi, 0.0)
                h = self.scan(spec.cell, gi, h0[k * spec.directions + d])  # [T, B, H]
                h_n.append(h[-1] if last is None else h[last, torch.arange(B, device=x.device)])
                if d == 1:
                    h = reverse_padded(h, lengths)
                outs.append(h if valid is None else torch.where(valid, h, 0.0))
            layer_in = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]  # [T, B, D*H]
        return layer_in, torch.stack(h_n)


class ScanRunner(TorchRunner):
    def make_module(self) -> torch.nn.Module:
        return ScanRNN(self.spec)

    def impl_label(self) -> str:
        return "logcumsumexp"


class CompiledScanRunner(InductorCompileHooks, ScanRunner):
    def make_module(self) -> torch.nn.Module:
        return ScanRNN(self.spec, compiled_layer_scan())

    def impl_label(self) -> str:
        return "logcumsumexp-inductor-" + ("triton" if self.device.startswith("cuda") else "cpp")


def make_backend(name: str, compiled: bool = False) -> TorchBackend:
    backend = TorchBackend(name, CompiledScanRunner if compiled else ScanRunner, features=FEATURES,
                           cells=PARALLEL_CELLS)
    backend.scan_form = "parallel"  # records of minGRU/minLSTM say which form ran (the default: sequential)
    return backend

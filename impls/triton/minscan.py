"""``triton_minscan``: minGRU / minLSTM with the scan over T in Triton kernels, forward and backward.

Each layer's input projection and gate math are torch's (one matmul, then a_t and b_t elementwise,
``torch_eager.linear_coefficients``); the recurrence h_t = a_t h_{t-1} + b_t runs in the kernels of
``scan_kernels``: chunked across T (one program per chunk of CHUNK steps and block of B*H columns,
sequential within it), the chunks joined by a carry pass.  The backward is the same scan over
flipped indices: g_t = dh_t + a_{t+1} g_{t+1} (REVERSE), then da = g h_{t-1}, db = g, dh0 = a_0 g_0.
The scan is in linear space (no log or exp rounded) and in float32 or float64; half types project in
their own type and scan in float32.  Layers, lengths and the reverse direction are torch_scan's
(``ScanRNN``).  On a CPU the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, set
before the kernel module is imported, which happens in ``build``): exactness only, never timed.
"""
from __future__ import annotations

import torch

from ..spec import FEATURES, PARALLEL_CELLS
from ..torch_common import TorchBackend, TorchRunner
from ..torch_eager import linear_coefficients
from . import TritonBackend, interpreted

BLOCK = 256  # columns (batch rows x hidden units) per program
CHUNK = 64  # timesteps per program on a GPU: T / 64 chunks run in parallel, then T / 64 carry steps


def cdiv(n: int, d: int) -> int:
    return -(-n // d)


def launch_scan(a, b, h0, chunk: int = CHUNK, reverse: bool = False):
    """h [T, B, H] of h_t = a_t h_{t-1} + b_t (t counted from the end when ``reverse``), a, b [T, B, H], h0 [B, H]."""
    from . import scan_kernels

    T = a.shape[0]
    N = a[0].numel()
    a, b, h0 = a.contiguous(), b.contiguous(), h0.contiguous()
    h = torch.empty_like(a)  # [T, B, H]
    n_chunks = cdiv(T, chunk)
    ends = torch.empty((n_chunks, N), dtype=a.dtype, device=a.device)  # each chunk's end state from 0
    prods = torch.empty_like(ends)  # each chunk's product of a
    carry = torch.empty_like(ends)  # the state entering each chunk
    blocks = cdiv(N, BLOCK)
    scan_kernels.chunk_scan_kernel[(n_chunks, blocks)](a, b, h, ends, prods, T, N, CHUNK=chunk, BLOCK=BLOCK,
                                                       REVERSE=reverse)
    scan_kernels.carry_kernel[(blocks,)](ends, prods, h0, carry, n_chunks, N, BLOCK=BLOCK)
    scan_kernels.carry_fixup_kernel[(n_chunks, blocks)](a, h, carry, T, N, CHUNK=chunk, BLOCK=BLOCK, REVERSE=reverse)
    return h


class TritonLinearScan(torch.autograd.Function):
    """h = scan(a, b, h0) in the kernels; the backward is the same kernels over flipped indices."""

    @staticmethod
    def forward(ctx, a, b, h0, chunk):
        h = launch_scan(a, b, h0, chunk)
        ctx.save_for_backward(a, h0, h)
        ctx.chunk = chunk
        return h

    @staticmethod
    def backward(ctx, dh):
        a, h0, h = ctx.saved_tensors
        a_next = torch.cat([a[1:], torch.zeros_like(a[:1])])  # [T, B, H]: g_t = dh_t + a_{t+1} g_{t+1}
        g = launch_scan(a_next, dh, torch.zeros_like(h0), ctx.chunk, reverse=True)  # [T, B, H]
        h_prev = torch.cat([h0[None], h[:-1]])
        return g * h_prev, g, g[0] * a[0], None


class TritonScanLayer:
    """``ScanRNN``'s layer: (cell, gi [T, B, G*H], h0 [B, H]) -> h [T, B, H], scanned in float32 or wider."""

    def __init__(self, chunk: int):
        self.chunk = chunk

    def __call__(self, cell: str, gi, h0):
        work = torch.promote_types(gi.dtype, torch.float32)
        a, b = linear_coefficients(cell, gi.to(work))
        return TritonLinearScan.apply(a, b, h0.to(work), self.chunk).to(gi.dtype)


class TritonScanRunner(TorchRunner):
    def make_module(self) -> torch.nn.Module:
        from ..torch_scan import ScanRNN

        return ScanRNN(self.spec, TritonScanLayer(self.backend.chunk))

    def impl_label(self) -> str:
        return "interpreted" if interpreted() else f"triton-chunk{self.backend.chunk}"


class TritonScanBackend(TritonBackend):
    """Availability and the interpreter rules of the triton backends; its own cells, dtypes and runner."""

    def __init__(self, name: str, chunk: int):
        TorchBackend.__init__(self, name, TritonScanRunner, cpu_dtypes=("float32", "float64"),
                              cuda_dtypes=("float32", "float64", "bfloat16", "float16"), features=FEATURES,
                              cells=PARALLEL_CELLS)
        self.chunk = chunk
        self.scan_form = "parallel"  # the records' scan_form: chunks of T in parallel


def make_backend(name: str, chunk: int = CHUNK) -> TritonScanBackend:
    return TritonScanBackend(name, chunk)

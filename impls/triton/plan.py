"""Which kernel path and tiles a layer runs with, decided from cell, H, dtype and device.

Kept free of triton imports, so options are checked (and plans tested) where triton is absent.
The sizes follow docs/design.md's "what fits where": W_hh is [G*H, H]; one H100 SM holds about
228 KiB of shared memory and 256 KiB of registers.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..spec import GATES, Unsupported

MAX_HIDDEN = 256
PATHS = ("fused", "persistent", "stepwise")
ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}
FUSED_W_BYTES = 128 * 1024  # W_hh one program keeps on chip: LSTM H <= 128 in bf16, H <= 64 in fp32
SPLIT_W_BYTES = 64 * 1024  # W_hh slice per program once the hidden dimension is split


@dataclass(frozen=True)
class Plan:
    path: str  # fused | persistent | stepwise
    block_b: int  # batch rows per program
    block_h: int  # hidden units per program (h_pad on the fused path)
    h_pad: int  # H rounded up to a power of two >= 16 (the dot's K)
    num_warps: int  # forward kernel
    precision: str  # tl.dot input precision for float32 operands: ieee | tf32
    cuda_graph: bool  # stepwise on CUDA: replay the per-step launches as one CUDA graph
    transposed: bool = False  # gates^T = W_hh . h^T (triton_wt): the gate side is the dot's M, the batch its N
    fast_tanh: bool = False  # tanh.approx.f32 (bf16/fp16 on a GPU only: inline asm, ~5e-4 error)
    bwd_warps: int = 0  # backward kernel; 0: as num_warps

    @property
    def label(self) -> str:
        return f"triton{'-wt' if self.transposed else ''}-{self.path}"


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def check_options(path="fused", block_b=None, block_h=None, num_warps=None, tf32=False, cuda_graph=True,
                  transposed=False, fast_tanh=False) -> dict:
    """Validate backend options (at registration, before triton is imported); return them as a dict."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
    for name, value in (("block_b", block_b), ("block_h", block_h)):
        if value is not None and (value < 16 or value > 256 or value != _pow2(value)):
            raise ValueError(f"{name} must be a power of two in [16, 256], got {value!r}")
    if num_warps not in (None, 1, 2, 4, 8, 16):
        raise ValueError(f"num_warps must be one of 1, 2, 4, 8, 16, got {num_warps!r}")
    return dict(path=path, block_b=block_b, block_h=block_h, num_warps=num_warps, tf32=bool(tf32),
                cuda_graph=bool(cuda_graph), transposed=bool(transposed), fast_tanh=bool(fast_tanh))


def make_plan(cell: str, hidden: int, dtype: str, device: str, *, interpreted: bool, path="fused", block_b=None,
              block_h=None, num_warps=None, tf32=False, cuda_graph=True, transposed=False, fast_tanh=False) -> Plan:
    """The plan for one layer; raises Unsupported (with the reason) where no path runs.

    ``fused`` takes the single-program kernel where W_hh fits one SM (always under the
    interpreter, which has no such limit) and the persistent kernel beyond; a ``block_h`` below
    H forces the split, one at or above it the single program.  Split tiles default to the
    largest whose W_hh slice fits SPLIT_W_BYTES.  ``fast_tanh`` holds for bf16/fp16 compiled for a
    GPU only: the float32 bound is tighter than tanh.approx's error, and the interpreter cannot run asm.
    """
    if hidden > MAX_HIDDEN:
        raise Unsupported(
            f"triton kernels hold W_hh on chip (one SM, or split over programs) up to H={MAX_HIDDEN}; got H={hidden}"
        )
    if dtype not in ITEMSIZE:
        raise Unsupported(f"triton kernels take {', '.join(ITEMSIZE)}, not {dtype}")
    gates, itemsize = GATES[cell], ITEMSIZE[dtype]
    h_pad = max(16, _pow2(hidden))
    split_tile = h_pad
    while split_tile > 16 and gates * split_tile * h_pad * itemsize > SPLIT_W_BYTES:
        split_tile //= 2
    if path == "fused" and block_h is None:
        fits = interpreted or gates * h_pad * h_pad * itemsize <= FUSED_W_BYTES
        block_h = h_pad if fits else split_tile
    block_h = min(block_h or split_tile, h_pad)
    if path == "fused" and block_h < h_pad:
        path = "persistent"
    if path == "persistent" and interpreted and block_h < h_pad:
        raise Unsupported(
            "the persistent kernel's cross-program barrier cannot run under the Triton interpreter, which runs "
            "programs one after another; use block_h >= H or the stepwise path"
        )
    block_b = block_b or 16
    w_bytes = gates * block_h * h_pad * itemsize  # W_hh held by one program
    bwd_warps = num_warps
    if num_warps is None:  # fewest spills in sm_90 compiles (impls.triton.kernel_check; tests/kernel_budget.json)
        num_warps = 4 if w_bytes <= 16 * 1024 else 16 if block_h >= 64 and w_bytes >= 64 * 1024 else 8
        # the fused fp32 backward at 16 warps spills (LSTM H=64: 20 B triton 3.6, 28 B 3.9); at 8, none
        bwd_warps = 8 if path == "fused" and itemsize == 4 and num_warps == 16 else num_warps
    return Plan(
        path=path,
        block_b=block_b,
        block_h=block_h,
        h_pad=h_pad,
        num_warps=num_warps,
        precision="tf32" if tf32 else "ieee",
        cuda_graph=cuda_graph and path == "stepwise" and device.startswith("cuda"),
        transposed=transposed,
        fast_tanh=fast_tanh and dtype != "float32" and not interpreted,
        bwd_warps=bwd_warps,
    )

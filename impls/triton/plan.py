"""Which kernel path and tiles a layer runs with, decided from cell, H, dtype and device.

Kept free of triton imports, so options are checked (and plans tested) where triton is absent.
The sizes follow DESIGN.md's "what fits where": W_hh is [G*H, H]; one H100 SM holds about
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
    num_warps: int
    precision: str  # tl.dot input precision for float32 operands: ieee | tf32
    cuda_graph: bool  # stepwise on CUDA: replay the per-step launches as one CUDA graph

    @property
    def label(self) -> str:
        return f"triton-{self.path}"


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def check_options(path="fused", block_b=None, block_h=None, num_warps=None, tf32=False, cuda_graph=True) -> dict:
    """Validate backend options (at registration, before triton is imported); return them as a dict."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
    for name, value in (("block_b", block_b), ("block_h", block_h)):
        if value is not None and (value < 16 or value > 256 or value != _pow2(value)):
            raise ValueError(f"{name} must be a power of two in [16, 256], got {value!r}")
    if num_warps not in (None, 1, 2, 4, 8, 16):
        raise ValueError(f"num_warps must be one of 1, 2, 4, 8, 16, got {num_warps!r}")
    return dict(path=path, block_b=block_b, block_h=block_h, num_warps=num_warps, tf32=bool(tf32), cuda_graph=bool(cuda_graph))


def make_plan(cell: str, hidden: int, dtype: str, device: str, *, interpreted: bool, path="fused", block_b=None,
              block_h=None, num_warps=None, tf32=False, cuda_graph=True) -> Plan:
    """The plan for one layer; raises Unsupported (with the reason) where no path runs.

    ``fused`` takes the single-program kernel where W_hh fits one SM (always under the
    interpreter, which has no such limit) and the persistent kernel beyond; a ``block_h`` below
    H forces the split, one at or above it the single program.  Split tiles default to the
    largest whose W_hh slice fits SPLIT_W_BYTES.
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
    if num_warps is None:  # fewest spills in sm_90 compiles (ptxas resource usage, triton 3.6)
        num_warps = 4 if w_bytes <= 16 * 1024 else 16 if block_h >= 64 and w_bytes >= 64 * 1024 else 8
    return Plan(
        path=path,
        block_b=block_b,
        block_h=block_h,
        h_pad=h_pad,
        num_warps=num_warps,
        precision="tf32" if tf32 else "ieee",
        cuda_graph=cuda_graph and path == "stepwise" and device.startswith("cuda"),
    )

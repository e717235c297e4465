"""The machine's ceilings, measured with torch as the instrument (any backend runs on the same chip):
a large matmul's FLOP/s per dtype, a large copy's bytes/s, the recurrent matmul's FLOP/s.  Only the
child process ``rnnbench.measure`` starts for them imports this (docs/design.md "Harness layers")."""
from __future__ import annotations

import os

from .runner import HostTimer
from .runtime import set_tf32
from .torch_hooks import CudaEventTimer


def torch_timer(device: str, sync):
    """The timer for torch work on ``device`` (CUDA events on a GPU, else the host clock)."""
    return CudaEventTimer(sync) if device.startswith("cuda") else HostTimer(sync)


def measure_ceilings(device: str, dtypes, recurrent_shapes, seconds, tf32: bool = False) -> dict:
    """The device's measured ceilings, with torch as the instrument (any backend runs on the same chip).

    ``seconds(fn, sync) -> seconds`` is the harness's timer (rnnbench.measure.repeat), passed in
    so that there is one timing loop.  Measures a large square matmul's FLOP/s per dtype, a large
    copy's bytes/s (read + write), and for each ``(batch, hidden, gates, dtype)`` the FLOP/s of the
    recurrent matmul h [B, H] x W_hh^T [H, G*H] issued back to back, as a stepwise recurrence issues it.
    """
    import torch

    from .torch_common import TORCH_DTYPES, sync as device_sync

    set_tf32(tf32)
    cuda = device.startswith("cuda")
    sync = lambda: device_sync(device)  # noqa: E731
    gen = torch.Generator(device=device).manual_seed(0)
    n = 8192 if cuda else 2048  # large enough to reach the BLAS's plateau, quick enough to repeat

    def randn(*shape, dtype):
        return torch.randn(*shape, generator=gen, device=device).to(TORCH_DTYPES[dtype])

    matmul = {}
    for dtype in dtypes:
        a, b = randn(n, n, dtype=dtype), randn(n, n, dtype=dtype)  # [n, n]
        c = torch.empty_like(a)
        matmul[dtype] = 2 * n**3 / seconds(lambda: torch.mm(a, b, out=c), sync)
        del a, b, c
    copy_elements = (1 << 28) if cuda else (1 << 24)  # 1 GiB on a GPU, 64 MiB on a CPU (float32)
    src = randn(copy_elements, dtype="float32")
    dst = torch.empty_like(src)
    copy_bytes = 2 * src.numel() * src.element_size()  # each byte read once and written once
    copy_bytes_per_s = copy_bytes / seconds(lambda: dst.copy_(src), sync)
    del src, dst

    recurrent = []
    for batch, hidden, gates, dtype in recurrent_shapes:
        h, w_hh = randn(batch, hidden, dtype=dtype), randn(gates * hidden, hidden, dtype=dtype)  # [B, H], [G*H, H]
        out = torch.empty(batch, gates * hidden, dtype=h.dtype, device=device)  # [B, G*H]
        flops = 2 * batch * hidden * gates * hidden
        # back-to-back calls per sample: enough to hide a GPU's launch gaps behind its queue; on a CPU
        # few (tens of microseconds), so that a busy neighbour's time slice spoils few samples
        calls = max(1, min(200, int((1e9 if cuda else 2e6) // flops)))

        def chain():
            for _ in range(calls):
                torch.mm(h, w_hh.t(), out=out)

        recurrent.append({"batch": batch, "hidden": hidden, "gates": gates, "dtype": dtype,
                          "flops_per_s": flops * calls / seconds(chain, sync)})
    return {"matmul_size": n, "matmul_flops_per_s": matmul, "copy_bytes": copy_bytes,
            "copy_bytes_per_s": copy_bytes_per_s, "recurrent_matmul": recurrent,
            "matmul_precision": "tf32" if cuda and torch.backends.cuda.matmul.allow_tf32 else "ieee",
            "threads": torch.get_num_threads(),
            "instrument": f"torch {torch.__version__}",
            # a busy machine lowers every ceiling (tiny matmuls most): the reader needs to know
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}

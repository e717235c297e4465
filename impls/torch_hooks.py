"""The torch answers to the Runner hooks (``impls.runner``): CUDA-event timer, CUDA peak memory,
torch's thread count and TF32 state.  ``torch_common.TorchArrays`` inherits them."""
from __future__ import annotations

from .runner import HostTimer, MemoryProbe, RunnerDefaults


class CudaEventTimer:
    """Seconds of one call between two CUDA events (the GPU's own clock)."""

    def __init__(self, sync):
        import torch

        self.sync = sync
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def time(self, fn) -> float:
        self.sync()
        self._start.record()
        fn()
        self._end.record()
        self._end.synchronize()
        return self._start.elapsed_time(self._end) / 1e3


class CudaPeakProbe(MemoryProbe):
    """torch on a GPU: ``max_memory_allocated`` after a reset, in the timing process after warm-up."""

    in_process = True
    method = "cuda_max_allocated_rise"

    def __init__(self, sync, device: str):
        super().__init__(sync)
        self.device = device

    def peak(self, fn, fn_one_step) -> int:
        cuda_peak_reset(self.device)
        before = cuda_allocated_bytes(self.device)
        fn()
        return cuda_peak_bytes(self.device) - before


def cuda_peak_reset(device: str) -> None:
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)


def cuda_peak_bytes(device: str) -> int:
    import torch

    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


def cuda_allocated_bytes(device: str) -> int:
    import torch

    return int(torch.cuda.memory_allocated(device))


class TorchHooks(RunnerDefaults):
    """Hooks of every torch runner; the runner sets ``device`` and ``sync``."""

    def _on_gpu(self) -> bool:
        return str(self.device).startswith("cuda")

    def timer(self, sync=None):
        sync = sync or self.sync
        return CudaEventTimer(sync) if self._on_gpu() else HostTimer(sync)

    def memory_probe(self) -> MemoryProbe:
        return CudaPeakProbe(self.sync, str(self.device)) if self._on_gpu() else MemoryProbe(self.sync)

    def threads(self) -> int:
        import torch

        return torch.get_num_threads()

    def matmul_precision(self) -> str:
        if not self._on_gpu():
            return "ieee"
        import torch

        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"

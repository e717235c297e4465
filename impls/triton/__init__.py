"""Triton backends: fused recurrent kernels (forward + backward) behind an autograd Function.

``triton`` runs each layer's recurrence in one launch per direction: a single program per batch
tile where W_hh fits one SM, else the hidden dimension split over programs that meet at a
barrier every step (persistent kernel).  ``triton_stepwise`` splits the same way but launches
once per timestep, replayed as a CUDA graph.  ``triton_wt`` runs the ``triton`` paths with the
transposed product (gates^T = W_hh . h^T) and, for bf16/fp16 on a GPU, the hardware tanh.  Every path
takes per-row lengths and runs the reverse direction (bidirectional layers: a second launch per
layer).  Triton itself is imported only in ``build``, so
listing backends works without it; on CPU the kernels run under Triton's interpreter, which
``TRITON_INTERPRET=1`` selects and which must be set before the kernel module is imported.
"""
from __future__ import annotations

import os
from dataclasses import replace

from ..spec import FEATURES, check_device
from ..torch_common import TorchBackend, TorchRunner
from .plan import check_options, make_plan


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


class TritonRunner(TorchRunner):
    def make_module(self):
        options = self.backend.options
        # checks the configuration (Unsupported with the reason) before triton is imported
        self.plan = make_plan(self.spec.cell, self.spec.hidden_size, self.dtype, self.device,
                              interpreted=interpreted(), **options)
        from .function import TritonRNN

        return TritonRNN(self.spec, options)

    def impl_label(self) -> str:
        """The plan's path; stepwise adds how its launches ran last (``graph`` or ``eager-launches``)."""
        if interpreted():
            return "interpreted"
        ran = self._module.launches - {"one-launch"}
        if not ran:
            return self.plan.label
        return f"{self.plan.label}/{'eager-launches' if 'eager-launches' in ran else 'graph'}"


INTERPRETED_REASON = "runs under Triton's interpreter on a CPU: exactness only, not timed as speed"


class TritonBackend(TorchBackend):
    def __init__(self, name: str, options: dict):
        # lengths and the reverse direction are kernel arguments (RAGGED, REVERSE) on every path
        super().__init__(name, TritonRunner, cpu_dtypes=("float32",), cuda_dtypes=("float32", "bfloat16", "float16"),
                         features=FEATURES)
        self.options = options

    def capabilities(self, device: str) -> dict:
        """Under the interpreter (a CPU) exact but not timed: suites keep it to one tiny shape, out of rankings."""
        caps = super().capabilities(device)
        if device == "cpu" and interpreted():
            caps = {cell: replace(s, timed=False, reasons={**s.reasons, "timed": INTERPRETED_REASON})
                    for cell, s in caps.items()}
        return caps

    def available(self, device: str = "cpu") -> tuple[bool, str]:
        check_device(device)
        if device == "cpu" and not interpreted():
            return False, "Triton runs on the CPU only under its interpreter: set TRITON_INTERPRET=1"
        try:
            import triton  # noqa: F401
        except ImportError as exc:
            return False, f"cannot import triton: {exc}"
        return super().available(device)


def make_backend(name: str, **options) -> TritonBackend:
    return TritonBackend(name, check_options(**options))

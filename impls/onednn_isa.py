"""Which instruction set oneDNN dispatched to, as its own verbose log states it.

torch's ``get_cpu_capability()`` reports ATen's vector level, not oneDNN's; the
``isa`` line that ``ONEDNN_VERBOSE=1`` prints is oneDNN's own word (for example
``Intel AVX2``, or ``Intel AVX-512 with AVX512BW, AVX512VL, AVX512DQ, AVX512_BF16 and Intel AMX``).
The variable must be set before oneDNN initialises, so a child process runs one
small float32 LSTM through torch (oneDNN's RNN primitive) and its log is read;
the answer is computed once per process.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys

_PROBE = "import torch; torch.nn.LSTM(8, 8)(torch.randn(3, 2, 8))"


def parse_isa(log: str) -> str | None:
    """The ``isa:`` value of oneDNN's verbose ``info,cpu`` line, None if absent."""
    for line in log.splitlines():
        if line.startswith("onednn_verbose") and ",info,cpu,isa:" in line:
            return line.split(",info,cpu,isa:", 1)[1].strip()
    return None


@functools.cache
def onednn_isa() -> str | None:
    """oneDNN's ISA on this CPU (None when torch has no oneDNN or the probe fails)."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_isa(done.stdout + done.stderr)

import os

import numpy as np
import pytest

# Triton runs under its interpreter when no CUDA device is present; this must be
# decided before any kernel module is imported.
try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _HAS_CUDA = False
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICES = ["cpu"] + (["cuda"] if _HAS_CUDA else [])


def rel_err(a, b) -> float:
    """max|a - b| / max|b|, the error measure of DESIGN.md."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / (scale if scale > 0 else 1.0))


@pytest.fixture
def cuda_only():
    if not _HAS_CUDA:
        pytest.skip("no CUDA device")

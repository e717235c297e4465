import os

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


from impls.conformance import rel_err  # noqa: E402,F401 - the one error measure (docs/design.md), for every test


@pytest.fixture
def cuda_only():
    if not _HAS_CUDA:
        pytest.skip("no CUDA device")

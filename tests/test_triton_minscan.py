"""triton_minscan: the chunked scan kernels under the interpreter (several chunks, a ragged last one,
both directions, lengths, every gradient against the oracle) and compiled offline for sm_90."""
import os

import numpy as np
import pytest

import impls
from impls import reference
from impls.spec import RNNSpec, init_weights, make_inputs

from .conftest import rel_err
from .test_kernel_plans import needs_ptxas


@pytest.fixture
def interpreter_or_gpu():
    ok, reason = impls.available("triton_minscan", "cpu")
    if not ok:
        pytest.skip(reason)


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_several_chunks_match_the_oracle_with_lengths_both_directions(cell, interpreter_or_gpu):
    """chunk 3 over T=7: three chunks, the last one step long, joined by the carry pass; the backward's
    reverse scan crosses the same chunk edges from the other end."""
    from impls.triton.minscan import make_backend

    spec = RNNSpec(cell, 3, 5, 2, bidirectional=True)
    w = init_weights(spec, 0)
    x, h0, dy = make_inputs(spec, 7, 3, with_state=True)
    lengths = np.array([7, 1, 4])
    runner = make_backend("triton_minscan_chunk3", chunk=3).build(spec, w, "cpu", "float32")
    y, h_n = runner.forward(x, h0, lengths=lengths)
    y_ref, h_ref = reference.forward(spec, w, x, h0, lengths=lengths)
    assert rel_err(runner.get(y), y_ref) <= 1e-5 and rel_err(runner.get(h_n), h_ref) <= 1e-5
    grads = runner.forward_backward(x, h0, dy, lengths=lengths)
    for name, ref in reference.forward_backward(spec, w, x, h0, dy, lengths=lengths).items():
        assert rel_err(runner.get(grads[name]), ref) <= 1e-5, name


def test_reverse_flag_scans_the_flipped_indices(interpreter_or_gpu):
    import torch

    from impls.torch_scan import log_space_scan
    from impls.triton.minscan import launch_scan

    gen = torch.Generator().manual_seed(1)
    a, b = (torch.rand(9, 2, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    h0 = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    for chunk in (2, 4, 16):
        torch.testing.assert_close(launch_scan(a, b, h0, chunk), log_space_scan(a.log(), b.log(), h0))
        torch.testing.assert_close(launch_scan(a, b, h0, chunk, reverse=True),
                                   log_space_scan(a.flip(0).log(), b.flip(0).log(), h0).flip(0))


@needs_ptxas
def test_scan_kernels_compile_for_sm90_without_spills():
    """The three kernels as the GPU launches them (float32, CHUNK 64, both REVERSE values), compiled
    offline with triton's ptxas: no spill, and the shared memory within an H100's."""
    from impls.triton.kernel_check import MAX_SHARED

    script = r'''
import contextlib, io, json, re, sys
from triton import knobs
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from impls.triton import scan_kernels as k
from impls.triton.minscan import BLOCK, CHUNK
p = "*fp32"
cases = {"chunk_scan": (k.chunk_scan_kernel, dict(a_ptr=p, b_ptr=p, h_ptr=p, end_ptr=p, prod_ptr=p, T="i32", N="i32")),
         "carry": (k.carry_kernel, dict(end_ptr=p, prod_ptr=p, h0_ptr=p, carry_ptr=p, n_chunks="i32", N="i32")),
         "carry_fixup": (k.carry_fixup_kernel, dict(a_ptr=p, h_ptr=p, carry_ptr=p, T="i32", N="i32"))}
out = []
for name, (fn, sig) in cases.items():
    for reverse in ((False, True) if name != "carry" else (None,)):
        const = {"BLOCK": BLOCK} if reverse is None else {"BLOCK": BLOCK, "CHUNK": CHUNK, "REVERSE": reverse}
        log = io.StringIO()
        with knobs.nvidia.scope(), knobs.compilation.scope():
            knobs.nvidia.dump_ptxas_log = True
            knobs.compilation.always_compile = True
            with contextlib.redirect_stdout(log):
                c = triton.compile(ASTSource(fn, {**sig, **{n: "constexpr" for n in const}}, const),
                                   target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
        text = log.getvalue()
        out.append(dict(name=f"{name}/reverse={reverse}", spills=int(re.search(r"(\d+) bytes spill stores", text).group(1)),
                        registers=int(re.search(r"Used (\d+) registers", text).group(1)), shared=c.metadata.shared))
print(json.dumps(out))
'''
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == 5
    for r in results:
        assert r["spills"] == 0 and r["shared"] <= MAX_SHARED[90] and r["registers"] <= 255, r

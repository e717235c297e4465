"""Triton backends beyond the conformance cases: tile edges, the split paths, plans, the module.

Without a GPU the kernels run under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1
before any kernel module is imported), a few hundred times slower than eager torch, so shapes
stay tiny.  The persistent kernel's cross-program barrier cannot run there (programs run one
after another): it is covered with one hidden tile here, with several on a GPU, and its code is
compiled for sm_90 (no GPU needed) in the compile checks.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import impls
from impls import reference
from impls.spec import RNNSpec, Unsupported, init_weights, make_inputs
from impls.triton import make_backend
from impls.triton.plan import make_plan

from .conftest import DEVICES, rel_err
from .test_conformance import TOLERANCE, run_case

CELLS = ("rnn_tanh", "lstm", "gru")
DEVICE = DEVICES[-1]  # the GPU where there is one, else the CPU under the interpreter
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def backend(monkeypatch):
    """Register a triton backend with the given options under a test name; returns that name."""

    def register(**options):
        name = "triton_test"
        monkeypatch.setitem(impls._REGISTRY, name, ("rnn", "impls.triton", options))
        monkeypatch.setitem(impls._CACHE, name, make_backend(name, **options))
        return name

    return register


def assert_matches(name, device, cell, layers, T, B, I, H, with_state, dtype="float32"):
    ok, reason = impls.available(name, device)
    if not ok:
        pytest.skip(reason)
    errors = run_case(name, device, dtype, cell, layers, T, B, I, H, with_state)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE[dtype], f"{cell} H={H} B={B}: {worst} off by {errors[worst]:.3g} ({errors})"


# (layers, T, B, I, H, with_state): H of 16, 32 and an odd size; B=17 spans two 16-row batch tiles
SHAPES = [(1, 4, 3, 2, 16, False), (2, 3, 17, 3, 32, True), (1, 4, 2, 3, 21, True)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"L{s[0]}-B{s[2]}-H{s[4]}")
@pytest.mark.parametrize("cell", CELLS)
def test_fused_tiles_match_oracle(cell, shape, device):
    assert_matches("triton", device, cell, *shape)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES[1:], ids=lambda s: f"L{s[0]}-B{s[2]}-H{s[4]}")
@pytest.mark.parametrize("cell", CELLS)
def test_stepwise_split_over_two_programs(backend, cell, shape, device):
    name = backend(path="stepwise", block_h=16)
    plan = make_plan(cell, shape[4], "float32", device, interpreted=device == "cpu", path="stepwise", block_h=16)
    assert -(-shape[4] // plan.block_h) == 2  # two programs share each batch tile's hidden units
    assert_matches(name, device, cell, *shape)


@pytest.mark.parametrize("cell", CELLS)
def test_persistent_kernel_with_one_hidden_tile(backend, cell):
    """The barrier code path on one program per batch tile, which the interpreter can run."""
    assert_matches(backend(path="persistent", block_h=16), "cpu", cell, 2, 3, 17, 3, 16, True)


def to_torch(a, requires_grad=False):
    return torch.tensor(a, dtype=torch.float32, device=DEVICE, requires_grad=requires_grad)


@pytest.mark.parametrize("cell", CELLS)
def test_module_gradients_through_final_state(cell):
    """The trainable module under autograd, with a loss on y and on the final state, against the oracle."""
    spec = RNNSpec(cell, 3, 16, 2)
    weights = init_weights(spec, seed=3)
    x, state, dy = make_inputs(spec, 3, 5, seed=4, with_state=True)
    rng = np.random.default_rng(5)
    dfinal = [rng.standard_normal((2, 5, 16)) for _ in spec.state_names()]
    module = impls.get("triton").build(spec, weights, DEVICE, "float32").module()
    xt = to_torch(x, requires_grad=True)
    parts = [to_torch(s, requires_grad=True) for s in (state if spec.has_cell_state else [state])]
    y, final = module(xt, tuple(parts) if spec.has_cell_state else parts[0])
    finals = final if spec.has_cell_state else (final,)
    loss = (y * to_torch(dy)).sum() + sum((f * to_torch(d)).sum() for f, d in zip(finals, dfinal))
    loss.backward()
    ref = reference.forward_backward(spec, weights, x, state, dy, *dfinal)
    got = {name: p.grad for name, p in module.named_parameters()} | {"x": xt.grad}
    got |= dict(zip(spec.state_names(), (p.grad for p in parts)))
    for name, value in ref.items():
        assert rel_err(got[name].cpu().numpy(), value) <= 1e-4, name


def test_forward_without_grad_and_step_agree():
    spec = RNNSpec("lstm", 3, 16)
    weights = init_weights(spec)
    x, state, _ = make_inputs(spec, 3, 2, with_state=True)
    runner = impls.get("triton").build(spec, weights, DEVICE, "float32")
    y, (h, c) = runner.forward(x, state)
    y_ref, (h_ref, c_ref) = reference.forward(spec, weights, x, state)
    assert max(rel_err(runner.get(a), b) for a, b in ((y, y_ref), (h, h_ref), (c, c_ref))) <= 1e-4
    assert not y.requires_grad
    h1, c1 = runner.step(x[0], state)
    _, (h1_ref, c1_ref) = reference.forward(spec, weights, x[:1], state)
    assert rel_err(runner.get(h1), h1_ref) <= 1e-4 and rel_err(runner.get(c1), c1_ref) <= 1e-4


def test_label_and_availability_say_what_runs(monkeypatch):
    spec = RNNSpec("gru", 3, 5)
    runner = impls.get("triton_stepwise").build(spec, init_weights(spec), DEVICE, "float32")
    assert runner.impl_label() == ("interpreted" if DEVICE == "cpu" else "triton-stepwise")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    ok, reason = impls.get("triton").available("cpu")
    assert not ok and "TRITON_INTERPRET=1" in reason


def test_unsupported_configurations_give_reasons():
    spec = RNNSpec("lstm", 3, 5)
    with pytest.raises(Unsupported, match="not float64"):
        impls.get("triton").build(spec, init_weights(spec), DEVICE, "float64")
    big = RNNSpec("rnn_tanh", 3, 257)
    with pytest.raises(Unsupported, match="up to H=256; got H=257"):
        impls.get("triton").build(big, init_weights(big), DEVICE, "float32")
    with pytest.raises(Unsupported, match="cannot run under the Triton interpreter"):
        make_plan("gru", 32, "float32", "cpu", interpreted=True, path="persistent", block_h=16)


def test_bad_options_are_rejected_at_registration():
    with pytest.raises(ValueError, match="path must be one of fused, persistent, stepwise"):
        make_backend("t", path="warp")
    with pytest.raises(ValueError, match="block_h must be a power of two in"):
        make_backend("t", block_h=24)


@pytest.mark.parametrize(
    "cell, hidden, dtype, path, expected",
    [  # (path, block_h, h_pad) on an H100-class GPU
        ("lstm", 128, "bfloat16", "fused", ("fused", 128, 128)),
        ("lstm", 64, "float32", "fused", ("fused", 64, 64)),
        ("lstm", 128, "float32", "fused", ("persistent", 32, 128)),
        ("lstm", 256, "bfloat16", "fused", ("persistent", 32, 256)),
        ("lstm", 256, "float32", "fused", ("persistent", 16, 256)),
        ("gru", 200, "float16", "fused", ("persistent", 32, 256)),
        ("rnn_tanh", 256, "bfloat16", "fused", ("fused", 256, 256)),
        ("lstm", 1, "float32", "fused", ("fused", 16, 16)),
        ("lstm", 64, "bfloat16", "stepwise", ("stepwise", 64, 64)),
        ("lstm", 256, "bfloat16", "stepwise", ("stepwise", 32, 256)),
    ],
)
def test_plan_follows_what_fits_on_chip(cell, hidden, dtype, path, expected):
    plan = make_plan(cell, hidden, dtype, "cuda", interpreted=False, path=path)
    assert (plan.path, plan.block_h, plan.h_pad) == expected
    assert plan.precision == "ieee" and plan.cuda_graph == (path == "stepwise")
    assert make_plan(cell, hidden, dtype, "cuda", interpreted=False, path=path, tf32=True).precision == "tf32"


def test_registry_does_not_import_triton():
    code = "import sys, impls; impls.get('triton'); impls.get('triton_stepwise'); print('triton' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- compiled for a real GPU, without one: catches errors the interpreter cannot see -------------------------
_COMPILE = r"""
import os, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from impls.spec import GATES
from impls.triton import kernels
from impls.triton.plan import make_plan

cell, dtype, hidden, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
G, p = GATES[cell], "*" + {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[dtype]
plan = make_plan(cell, hidden, dtype, "cuda", interpreted=False, path=path)
consts = dict(G=G, SPLIT=plan.path != "fused", BARRIER=plan.path == "persistent", BLOCK_B=plan.block_b,
              BLOCK_H=plan.block_h, H_PAD=plan.h_pad, PRECISION=plan.precision)
i32, bar = "i32", consts["BARRIER"] and "*i32"
fwd = dict(gi_ptr=p, w_ptr=p, b_ptr=p, hs_ptr=p, c_ptr=G == 4 and "*fp32", cs_ptr=G == 4 and p, acts_ptr=G > 1 and p,
           bar_ptr=bar, t_start=i32, n_steps=i32, B=i32, H=i32, tile_b0=i32)
bwd = dict(w_ptr=p, hs_ptr=p, cs_ptr=G == 4 and p, acts_ptr=G > 1 and p, dy_ptr=p, dg_ptr=p, dn_ptr=G == 3 and p,
           dh_ptr="*fp32", dc_ptr=G == 4 and "*fp32", bar_ptr=bar, t_start=i32, n_steps=i32, T=i32, B=i32, H=i32, tile_b0=i32)
tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
for fn, args, extra in ((kernels.rnn_fwd_kernel, fwd, {"SAVE": True}), (kernels.rnn_bwd_kernel, bwd, {})):
    const = {**consts, **extra, **{k: None for k, v in args.items() if not v}}
    sig = {**{k: v for k, v in args.items() if v}, **{k: "constexpr" for k in const}}
    compiled = triton.compile(ASTSource(fn, sig, const), target=GPUTarget("cuda", 90, 32), options={"num_warps": plan.num_warps})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([os.path.join(tools, "cuobjdump"), "-res-usage", f.name], capture_output=True, text=True).stdout
    print(fn.__name__, [line.split("SHARED")[0].strip() for line in usage.splitlines() if "REG:" in line][0])
"""


def compile_for_sm90(cell, dtype, hidden, path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, "-c", _COMPILE, cell, dtype, str(hidden), path], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def assert_light_spills(usage: str) -> None:
    """Both kernels compiled, spilling at most a few hundred bytes: the layouts that once made ptxas
    fall back to 32 registers spilled kilobytes per thread."""
    stacks = [int(n) for n in re.findall(r"STACK:(\d+)", usage)]
    assert len(stacks) == 2 and max(stacks) <= 512, usage


def _has_ptxas():
    try:
        import triton
    except ImportError:
        return False
    return os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas"))


needs_ptxas = pytest.mark.skipif(not _has_ptxas(), reason="triton ships no ptxas here")


@needs_ptxas
def test_split_kernels_compile_for_sm90():
    """The persistent path (barrier, .cg loads, masked steps) compiles for an H100."""
    assert_light_spills(compile_for_sm90("gru", "bfloat16", 32, "persistent"))


@pytest.mark.slow
@needs_ptxas
@pytest.mark.parametrize("path", ["fused", "persistent", "stepwise"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("cell", CELLS)
def test_kernels_compile_for_sm90(cell, dtype, path):
    assert_light_spills(compile_for_sm90(cell, dtype, 32, path))


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_longer_sequences_and_wider_tiles(backend, cell):
    assert_matches("triton", "cpu", cell, 2, 12, 33, 5, 64, True)
    assert_matches(backend(path="stepwise", block_h=32), "cpu", cell, 1, 9, 4, 3, 100, True)


# --- CUDA only: the paths the interpreter cannot run, and every H the issue promises ---------------------------
# each (H padded, dtype, path) compiles its own kernels: a few here, every H under -m slow
HIDDEN_DTYPES = [(1, "float32"), (33, "bfloat16"), (100, "float32"), (128, "bfloat16"), (129, "float16"), (256, "bfloat16")]


@pytest.mark.parametrize("hidden, dtype", HIDDEN_DTYPES)
@pytest.mark.parametrize("name", ["triton", "triton_stepwise"])
def test_hidden_sizes_on_cuda(name, hidden, dtype, cuda_only):
    for cell in CELLS:
        assert_matches(name, "cuda", cell, 2, 8, 19, 5, hidden, True, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", ["triton", "triton_stepwise"])
def test_every_hidden_size_on_cuda(name, dtype, cuda_only):
    for hidden in range(1, 257):
        for cell in CELLS:
            assert_matches(name, "cuda", cell, 1, 4, 3, 2, hidden, True, dtype)


@pytest.mark.parametrize("cell", CELLS)
def test_persistent_split_and_graph_replay_on_cuda(backend, cell, cuda_only):
    """Several programs per batch tile meeting at the barrier; stepwise runs eager, captured, replayed."""
    assert_matches(backend(path="persistent", block_h=16), "cuda", cell, 2, 16, 40, 5, 64, True)
    from impls.triton import function

    spec = RNNSpec(cell, 5, 48)
    runner = impls.get("triton_stepwise").build(spec, init_weights(spec), "cuda", "float32")
    x, state, _ = make_inputs(spec, 10, 3, with_state=True)
    x, state = runner.put(x), runner.put(state)
    outs = [runner.get(runner.forward(x, state)[0]) for _ in range(3)]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    graphs = function._GRAPHS.entries.values()
    assert any(isinstance(g, torch.cuda.CUDAGraph) for g in graphs), "the same buffers came back, yet nothing replayed"

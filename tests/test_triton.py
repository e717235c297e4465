"""Triton backends beyond the conformance cases: tile edges, the split paths, plans, the module.

Without a GPU the kernels run under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1
before any kernel module is imported), a few hundred times slower than eager torch, so shapes
stay tiny.  The persistent kernel's cross-program barrier cannot complete there (programs run one
after another): it is covered with one hidden tile here, with several on a GPU; with two it must
time out and raise; its code is compiled for sm_90 (no GPU needed) in tests/test_kernel_plans.py.
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
from impls.runner import supports
from impls.spec import RNNSpec, Unsupported, init_weights, make_inputs
from impls.triton import make_backend
from impls.triton.plan import Plan, make_plan

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


# --- lengths and the reverse direction (docs/design.md "Bidirectional and variable length") ------------------------
# lengths [B]: the whole row, one step, part of it; or all shorter than T, so the kernels run fewer steps than T
@pytest.mark.parametrize("name, cell, with_state, lengths", [
    ("triton", "lstm", True, (7, 1, 4)), ("triton_stepwise", "gru", False, (5, 2, 3)),
    ("triton_wt", "rnn_tanh", True, (5, 2, 3))], ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else None)
def test_ragged_bidirectional_matches_oracle(name, cell, with_state, lengths):
    """Each backend's fused or stepwise path, both directions, two layers (layer 1 takes 2H), against the
    float64 oracle: y and dx exactly 0 where padded (run_case asserts it), every gradient within bound."""
    assert supports(impls.get(name), DEVICE, cell, features=("lengths", "bidirectional")) == (True, "")
    errors = run_case(name, DEVICE, "float32", cell, 2, 7, 3, 3, 5, with_state, bidirectional=True,
                      lengths=np.array(lengths))
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE["float32"], f"{name} {cell} lengths={lengths}: {worst} {errors[worst]:.3g}"


@pytest.mark.parametrize("path, cell", [("stepwise", "lstm"), ("stepwise", "gru"), ("persistent", "rnn_tanh")])
def test_ragged_bidirectional_on_the_split_paths(backend, path, cell):
    """The split kernels (SPLIT: every unit's h or dG through global memory, the code the persistent kernel runs
    between barriers): stepwise over two programs per batch tile, 17 rows over two batch tiles with lengths
    1..6 < T; persistent with one program per tile (all the interpreter can run)."""
    H, block_h = (32, 16) if path == "stepwise" else (16, 16)
    lengths = np.random.default_rng(0).integers(1, 7, 17)  # [B]
    name = backend(path=path, block_h=block_h)
    errors = run_case(name, DEVICE, "float32", cell, 1, 7, 17, 3, H, True, bidirectional=True, lengths=lengths)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE["float32"], f"{path} {cell}: {worst} off by {errors[worst]:.3g} ({errors})"


def test_lengths_all_t_run_the_kernels_without_lengths():
    """Rows that all have T steps are no ragged batch: the kernels without lengths run, with T steps."""
    from impls.triton.function import Lengths

    assert Lengths.of(None, 7, "cpu") is None and Lengths.of(torch.tensor([7, 7]), 7, "cpu") is None
    ragged = Lengths.of(torch.tensor([5, 2, 5]), 7, "cpu")
    assert ragged.steps == 5 and ragged.on_device.dtype == torch.int32 and ragged.on_device.tolist() == [5, 2, 5]


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


def ragged_bidirectional_errors(name, device, dtype, cell, layers, T, B, H, lengths, seed=3):
    """One forward with grad of a bidirectional module on a ragged batch, a loss on y and on both directions'
    final states (the forward direction's enters at t = len-1, the reverse's at t = 0): the worst error per
    tensor against the float64 oracle; y and dx must be exactly 0 where padded.  One forward (saving for the
    backward) and one backward a direction: the fewest kernels to compile on a GPU."""
    spec = RNNSpec(cell, 3, H, layers, bidirectional=True)
    weights = init_weights(spec, seed=seed)
    x, state, dy = make_inputs(spec, T, B, seed=seed + 1, with_state=True)
    rng = np.random.default_rng(seed + 2)
    dfinal = [rng.standard_normal(spec.state_shape(B)) for _ in spec.state_names()]
    runner = impls.get(name).build(spec, weights, device, dtype)
    module = runner.module()
    xt = runner.put(x).requires_grad_(True)
    parts = [runner.put(s).requires_grad_(True) for s in (state if spec.has_cell_state else [state])]
    y, final = module(xt, tuple(parts) if spec.has_cell_state else parts[0], torch.tensor(lengths))
    finals = final if spec.has_cell_state else (final,)
    loss = (y * runner.put(dy)).sum() + sum((f * runner.put(d)).sum() for f, d in zip(finals, dfinal))
    loss.backward()
    padded = np.arange(T)[:, None] >= lengths  # [T, B]
    assert not runner.get(y)[padded].any() and not runner.get(xt.grad)[padded].any(), "not exactly 0 where padded"
    y_ref, final_ref = reference.forward(spec, weights, x, state, lengths=lengths)
    errors = {"y": rel_err(runner.get(y), y_ref)}
    errors |= {f"{n}_n": rel_err(runner.get(f), r) for n, f, r in
               zip("hc", finals, final_ref if spec.has_cell_state else (final_ref,))}
    ref = reference.forward_backward(spec, weights, x, state, dy, *dfinal, lengths=lengths)
    got = {n: p.grad for n, p in module.named_parameters()} | {"x": xt.grad}
    got |= dict(zip(spec.state_names(), (p.grad for p in parts)))
    return errors | {"d" + n: rel_err(runner.get(got[n]), value) for n, value in ref.items()}


def test_module_gradients_through_ragged_bidirectional_final_state():
    """Reverse rows shorter than T start from h0, not from the zeros of y; lengths [4, 6, 1], two layers."""
    errors = ragged_bidirectional_errors("triton", DEVICE, "float32", "lstm", 2, 6, 3, 5, np.array([4, 6, 1]))
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, f"{worst} off by {errors[worst]:.3g} ({errors})"


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
    bi = RNNSpec("lstm", 3, 5, bidirectional=True)
    runner = impls.get("triton").build(bi, init_weights(bi), DEVICE, "float32")
    with pytest.raises(Unsupported, match="unidirectional only"):
        runner.step(make_inputs(bi, 1, 2)[0][0])


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


# --- the persistent barrier cannot hang; the resident limit; the graph label ---------------------------------
def _persistent_layer(cell, T=3, B=5, H=32):
    """Inputs of one layer and a plan splitting its 32 units over two programs (which the
    interpreter runs one after the other, so the first waits for a second that never arrives)."""
    G = {"rnn_tanh": 1, "lstm": 4, "gru": 3}[cell]
    gen = torch.Generator().manual_seed(0)
    gi = torch.randn(T, B, G * H, generator=gen)  # [T, B, G*H]
    w_hh = torch.randn(G * H, H, generator=gen) / H**0.5  # [G*H, H]
    b_hh, h0 = torch.zeros(G * H), torch.zeros(B, H)
    c0 = torch.zeros(B, H) if G == 4 else None
    plan = Plan(path="persistent", block_b=16, block_h=16, h_pad=H, num_warps=4, precision="ieee", cuda_graph=False)
    return plan, (gi, w_hh, b_hh, h0, c0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the waiting program reads h/dG the other never wrote
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_barrier_that_never_completes_raises_naming_the_configuration(cell, monkeypatch):
    from impls.triton import function

    monkeypatch.setattr(function, "MAX_SPINS", 20)
    plan, inputs = _persistent_layer(cell)
    with pytest.raises(function.BarrierTimeout, match=rf"forward kernel: .*never arrived \({cell} H=32 B=5 T=3 float32"):
        function.recurrent_forward(plan, *inputs, save=True, launches=set())
    T, B, H = 3, 5, 32
    G = inputs[1].shape[0] // H
    saved = (torch.zeros(T + 1, B, H), torch.zeros(T + 1, B, H) if G == 4 else None, torch.zeros(T, B, 4 * H))
    dy, dh = torch.ones(T, B, H), torch.zeros(B, H)
    with pytest.raises(function.BarrierTimeout, match="backward kernel"):
        function.recurrent_backward(plan, inputs[1], *saved, dy, dh, dh if G == 4 else None, set())


def test_resident_programs_follow_registers_shared_memory_and_sms():
    from types import SimpleNamespace

    from impls.triton.function import resident_programs

    h100 = SimpleNamespace(multi_processor_count=132, max_threads_per_multi_processor=2048,
                           regs_per_multiprocessor=65536, shared_memory_per_multiprocessor=233472)
    assert resident_programs(64, 0, 4, h100) == 132 * 8  # by registers: 64 regs x 128 threads = 8K per program
    assert resident_programs(255, 0, 4, h100) == 132 * 2  # 256-register allocation units: 32K per program
    assert resident_programs(32, 150 * 1024, 4, h100) == 132  # one 150 KiB program per SM
    assert resident_programs(128, 0, 16, h100) == 132  # 16 warps x 128 regs take the whole register file


def test_stepwise_label_says_eager_launches_without_a_graph(backend, monkeypatch):
    """Off the interpreter label: stepwise without CUDA graphs ran its launches eagerly, and says so."""
    spec = RNNSpec("gru", 3, 16)
    runner = impls.get(backend(path="stepwise", cuda_graph=False)).build(spec, init_weights(spec), "cpu", "float32")
    x, state, _ = make_inputs(spec, 3, 2, with_state=True)
    fused = impls.get("triton_wt").build(spec, init_weights(spec), "cpu", "float32")
    runner.forward(x, state)
    fused.forward(x, state)
    monkeypatch.delenv("TRITON_INTERPRET")
    assert runner.impl_label() == "triton-stepwise/eager-launches"
    assert fused.impl_label() == "triton-wt-fused"


def test_transposed_variant_uses_fast_tanh_only_for_half_types_on_a_gpu():
    options = impls.get("triton_wt").options
    plan = make_plan("lstm", 128, "bfloat16", "cuda", interpreted=False, **options)
    assert plan.transposed and plan.fast_tanh and plan.path == "fused"
    assert not make_plan("lstm", 128, "float32", "cuda", interpreted=False, **options).fast_tanh
    assert not make_plan("lstm", 128, "bfloat16", "cpu", interpreted=True, **options).fast_tanh


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


# The points scripts/gpu_check.sh times (the gpu-check suite), so its first figures have passed parity
# and its kernels are in triton's cache: T=256 and 1024, H 64/128/256, both dtypes, fused and
# persistent.  Three cases, 9 kernels a backend: what the check's parity stage (170 s) can compile beside the
# ragged bidirectional case below.
TIMED_CASES = [("lstm", 1024, 128, "bfloat16"), ("lstm", 256, 256, "bfloat16"), ("lstm", 256, 64, "float32")]


@pytest.mark.parametrize("case", TIMED_CASES, ids=lambda c: f"{c[0]}-T{c[1]}-H{c[2]}-{c[3]}")
@pytest.mark.parametrize("name", ["triton", "triton_wt", "triton_stepwise"])
def test_timed_shapes_on_cuda(name, case, cuda_only):
    """Outputs and every gradient at a timed shape.  Over hundreds of steps rounding accumulates past the
    T <= 16 bounds, so the bound is that bound or twice cuDNN's own error at the same shape, whichever is larger."""
    cell, T, H, dtype = case
    shape = (cell, 1, T, 16, 32, H, True)
    cudnn = max(run_case("torch_cudnn", "cuda", dtype, *shape).values())
    errors = run_case(name, "cuda", dtype, *shape)
    worst = max(errors, key=errors.get)
    bound = max(TOLERANCE[dtype], 2 * cudnn)
    assert errors[worst] <= bound, f"{name} {case}: {worst} off by {errors[worst]:.3g} (cuDNN {cudnn:.3g}; {errors})"


# scripts/gpu_check.sh's parity stage (triton, triton_wt): the persistent kernel (LSTM H=256 bf16: 8 programs a batch
# tile) in both directions on a ragged batch, 3 batch tiles, rows of 1 to T steps.  4 kernels a backend to compile.
RAGGED_CUDA_LENGTHS = np.random.default_rng(7).integers(1, 49, 40)  # [B], the longest 48 = T
RAGGED_CUDA_LENGTHS[0] = 48


@pytest.mark.parametrize("name", ["triton", "triton_wt", "triton_stepwise"], ids=lambda n: f"{n}-lstm-H256-bfloat16")
def test_ragged_bidirectional_on_cuda(name, cuda_only):
    """Both directions, two layers, every gradient and the final states; the bound is the T <= 16 bound or
    twice cuDNN's own error (packed sequences) at the same shape and lengths, whichever is larger."""
    shape = ("lstm", 2, 48, 40, 3, 256, True)
    cudnn = max(run_case("torch_cudnn", "cuda", "bfloat16", *shape, bidirectional=True,
                         lengths=RAGGED_CUDA_LENGTHS).values())
    errors = ragged_bidirectional_errors(name, "cuda", "bfloat16", "lstm", 2, 48, 40, 256, RAGGED_CUDA_LENGTHS)
    worst = max(errors, key=errors.get)
    bound = max(TOLERANCE["bfloat16"], 2 * cudnn)
    assert errors[worst] <= bound, f"{name}: {worst} off by {errors[worst]:.3g} (cuDNN {cudnn:.3g}; {errors})"


@pytest.mark.parametrize("cell", CELLS)
def test_persistent_split_and_graph_replay_on_cuda(backend, cell, cuda_only):
    """Several programs per batch tile meeting at the barrier; stepwise replays a graph over its own buffers."""
    assert_matches(backend(path="persistent", block_h=16), "cuda", cell, 2, 16, 40, 5, 64, True)
    from impls.triton import function

    spec = RNNSpec(cell, 5, 48)
    runner = impls.get("triton_stepwise").build(spec, init_weights(spec), "cuda", "float32")
    x, state, _ = make_inputs(spec, 10, 3, with_state=True)
    x, state = runner.put(x), runner.put(state)
    outs = [runner.get(runner.forward(x, state)[0]) for _ in range(3)]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    assert function._GRAPHS.entries, "stepwise on CUDA captured no graph"
    assert runner.impl_label() == "triton-stepwise/graph"
    y_graph = runner.get(runner.forward(x + 1.0, state)[0])  # new data through the same graph
    assert not np.array_equal(y_graph, outs[0])


# --- scripts/gpu_check.sh: stages that cannot overrun ----------------------------------------------------------
GPU_CHECK = os.path.join(ROOT, "scripts", "gpu_check.sh")


def test_gpu_check_stages_are_capped_within_six_and_a_half_minutes():
    text = open(GPU_CHECK).read()
    caps = [int(n) for n in re.findall(r"^\s*stage [\w-]+ (\d+) ", text, flags=re.M)]
    total = int(re.search(r"^TOTAL=(\d+)", text, flags=re.M).group(1))
    assert len(caps) == 5 and total <= 390 and sum(caps) <= total, (caps, total)
    assert 'stage more "$((left - 10))"' in text  # the optional stages get only what is left of TOTAL
    assert "| tail" not in text and 'timeout -k 5 "$secs"' in text and 'tee -a "$LOG"' in text


def test_gpu_check_rejects_an_unknown_flag():
    out = subprocess.run(["bash", GPU_CHECK, "--fast"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("usage: bash scripts/gpu_check.sh [--dry-run]")


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_stage(tmp_path):
    """The whole check on this CPU at tiny shapes: every stage reports its exit status, inside 3 minutes."""
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    out = subprocess.run(["bash", GPU_CHECK, "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    log = (tmp_path / "gpu_check.log").read_text()
    for name in ("env", "base", "base-t", "parity", "triton"):
        assert re.search(rf"== stage {name}: exit \d+", log), (name, out.stdout[-3000:])
    assert "-- Triton backends to time: triton,triton_wt,triton_stepwise" in log
    assert float(re.search(r"== done in (\d+)s", log).group(1)) <= 180
    assert list(tmp_path.glob("dry-run/*/records.jsonl"))

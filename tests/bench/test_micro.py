"""pytest-benchmark micro-benchmarks for kernel work: per backend, one recurrent step, and over a
short sequence the hoisted input projection, the recurrence, the gate math alone, the whole
forward and the forward with backward (train).

Each table (pytest-benchmark group) holds one operation of one cell at one shape, dtype and
device, so the backends sit side by side in it.  Every timed callable ends with the device sync
(``runner.sync()``: ``torch.cuda.synchronize``, ``block_until_ready``), because the fixture's clock
does not wait for a GPU.  ``extra_info`` carries the record fields that ``rnnbench report`` reads.
Run, save and compare with the last saved run: ``bash tests/bench/run.sh`` (README).
"""
from __future__ import annotations

import functools

import pytest

import impls
from impls.spec import RNNSpec, Unsupported, init_weights, make_inputs
from rnnbench.config import MODES
from rnnbench.jobs import TimingJob as Config
from rnnbench.measure import Prepared

from ..conftest import DEVICES

# A short sequence: many steps per forward, yet a round stays within milliseconds on a laptop CPU.
SHAPES = {
    "cpu": dict(batch=16, seq_len=16, input_size=32, hidden=64),
    "cuda": dict(batch=64, seq_len=64, input_size=128, hidden=256),
}
DTYPES = {"cpu": ("float32",), "cuda": ("float32", "bfloat16")}
CASES = [(device, dtype) for device in DEVICES for dtype in DTYPES[device]]
CELLS = ("rnn_tanh", "lstm", "gru")


def torch_eager_parts(runner, spec, x, state):
    """torch_eager's pieces over the T steps: the hoisted input projection (one matmul), and the
    recurrence from it, T calls of its ``cell_step`` (h @ W_hh^T and the gate math)."""
    import torch

    from impls.torch_eager import cell_step

    w = {name: p.detach() for name, p in runner.module().named_parameters()}
    T, B, I = x.shape
    x_rows = x.reshape(T * B, I)  # [T*B, I]
    gi = torch.addmm(w["bias_ih_l0"], x_rows, w["weight_ih_l0"].t()).view(T, B, -1)  # [T, B, G*H]
    h0, c0 = (state[0][0], state[1][0]) if spec.has_cell_state else (state[0], None)  # [B, H]

    def input_projection():
        torch.addmm(w["bias_ih_l0"], x_rows, w["weight_ih_l0"].t())  # [T*B, G*H]
        runner.sync()

    def recurrence():
        h, c = h0, c0
        for gi_t in gi:
            h, c = cell_step(spec.cell, gi_t, h, c, w["weight_hh_l0"], w["bias_hh_l0"])
        runner.sync()

    return {"input_projection": input_projection, "recurrence": recurrence}


def jax_scan_parts(runner, spec, x, state):
    """jax_scan's pieces over the T steps, each under one jit: the hoisted input projection (one
    matmul), the recurrence (a scan of h @ W_hh^T and the gate math), and the gate math alone (a
    scan of its ``_cell`` over given h @ W_hh^T values, so only the elementwise work remains)."""
    import jax

    from impls import jax_scan

    cell = spec.cell
    w_ih, w_hh, b_ih, b_hh = (runner.params[f"{n}_l0"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    h0, c0 = (state[0][0], state[1][0]) if spec.has_cell_state else (state[0], None)  # [B, H]
    project = jax.jit(lambda x, w_ih, b_ih: x @ w_ih.T + b_ih)  # [T, B, G*H]

    @functools.partial(jax.jit, static_argnums=0)
    def steps(with_matmul, gi, gh, h0, c0, w_hh, b_hh):
        def body(carry, gates_in):  # gates_in: gi_t, gh_t [B, G*H]
            h, c = carry
            gi_t, gh_t = gates_in
            if with_matmul:
                gh_t = h @ w_hh.T + b_hh
            return jax_scan._cell(cell, gi_t, gh_t, h, c)[:2], None

        return jax.lax.scan(body, (h0, c0), (gi, gh))[0]

    gi = project(x, w_ih, b_ih)
    gh = project(x, w_ih, b_hh)  # stands in for h @ W_hh^T + b_hh: same shape, dtype and scale
    return {
        "input_projection": lambda: jax.block_until_ready(project(x, w_ih, b_ih)),
        "recurrence": lambda: jax.block_until_ready(steps(True, gi, gh, h0, c0, w_hh, b_hh)),
        "gates": lambda: jax.block_until_ready(steps(False, gi, gh, h0, c0, w_hh, b_hh)),
    }


# Backends whose pieces can be called alone, and which; fused kernels (cuDNN, Triton) keep them
# inside.  torch_eager's gate math is not a function apart from its recurrent matmul (``cell_step``).
PARTS = {"torch_eager": (torch_eager_parts, ("input_projection", "recurrence")),
         "jax_scan": (jax_scan_parts, ("input_projection", "recurrence", "gates"))}
PART_CASES = [(name, part) for name, (_, parts) in PARTS.items() if name in impls.names(kind="rnn") for part in parts]


def skip_unless_available(name: str, device: str, mode: str | None = None) -> None:
    ok, reason = impls.available(name, device)
    if not ok:
        pytest.skip(reason)
    modes = getattr(impls.get(name), "modes", MODES)  # an inference backend declares no train
    if mode is not None and mode not in modes:
        pytest.skip(f"{name} runs {', '.join(modes)} only, not {mode}")


def build_or_skip(make):
    try:
        return make()
    except Unsupported as exc:
        pytest.skip(str(exc))


def describe(benchmark, name, runner, mode, cell, device, dtype, seq_len, shape):
    """Group by operation, cell and shape (backends side by side); extra_info for the report."""
    impl_label = runner.impl_label()
    if impl_label == "interpreted":
        pytest.skip("the Triton interpreter is not timed")
    B, I, H = shape["batch"], shape["input_size"], shape["hidden"]
    benchmark.group = f"{mode} {cell} {device} {dtype} B={B} T={seq_len} I={I} H={H}"
    framework = impls.get(name).framework
    benchmark.extra_info.update(
        backend=name, framework=framework, impl_label=impl_label, device=device, dtype=dtype, cell=cell,
        layers=1, batch=B, seq_len=seq_len, input_size=I, hidden=H, mode=mode, threads=runner.threads(),
    )


def covering(name: str, mode: str, cell: str) -> bool:
    """The subset CI runs (``-m 'not slow'``): each backend once, forward, on its own cell (a Flax backend
    has one) or else an LSTM, and each piece once on an LSTM; the rest is marked slow."""
    return (mode == "forward" or mode in PARTS.get(name, (None, ()))[1]) and cell == own_cell(name)


def own_cell(name: str) -> str:
    """The one cell a backend runs (Flax's declare it), else lstm; lstm when its framework is missing
    (its cases then skip, as ``skip_unless_available`` says)."""
    try:
        return getattr(impls.get(name), "cell", "lstm")
    except ImportError:
        return "lstm"


def cases(names_and_modes):
    return [pytest.param(name, mode, cell, marks=() if covering(name, mode, cell) else pytest.mark.slow)
            for name, mode in names_and_modes for cell in CELLS]


@pytest.mark.parametrize("device,dtype", CASES, ids=lambda v: v)
@pytest.mark.parametrize("name,mode,cell", cases([(n, m) for n in impls.names(kind="rnn")
                                                  for m in ("step", "forward", "train")]))
def test_runner(benchmark, name, mode, cell, device, dtype):
    """One timestep (B x H), or the whole short sequence forward / forward+backward, through the
    same ``Prepared`` runner and callable as the harness times."""
    skip_unless_available(name, device, mode)
    cfg = Config(name, cell, mode=mode, device=device, dtype=dtype, **SHAPES[device])
    p = build_or_skip(lambda: Prepared(cfg))
    describe(benchmark, name, p.runner, mode, cell, device, dtype, 1 if mode == "step" else cfg.seq_len,
             SHAPES[device])
    benchmark(lambda: (p.fn(), p.runner.sync()))


@pytest.mark.parametrize("device,dtype", CASES, ids=lambda v: v)
@pytest.mark.parametrize("name,part,cell", cases(PART_CASES))
def test_part(benchmark, name, part, cell, device, dtype):
    """A piece of the forward over all T steps: the input projection, the recurrence, the gate math."""
    skip_unless_available(name, device)
    shape = SHAPES[device]
    spec = RNNSpec(cell, shape["input_size"], shape["hidden"])
    runner = build_or_skip(lambda: impls.get(name).build(spec, init_weights(spec), device, dtype))
    x, state, _ = make_inputs(spec, shape["seq_len"], shape["batch"], with_state=True)
    timed = PARTS[name][0](runner, spec, runner.put(x), runner.put(state))[part]
    describe(benchmark, name, runner, part, cell, device, dtype, shape["seq_len"], shape)
    benchmark(timed)

"""Launch code for the Triton recurrent kernels, the autograd Function joining them, and the module.

Per layer: the input projection of all timesteps is one addmm (autograd differentiates it,
which gives dW_ih, db_ih and dx as large matmuls); the recurrence is ``RecurrentLayer``, whose
forward kernel stores h_t (and c_t and the gate activations when a backward will follow) and
whose backward kernel walks t in reverse, leaving the per-step gate gradients dG for dW_hh,
db_hh and the input side, again as large matmuls outside the loop.  Layers stack.
"""
from __future__ import annotations

import collections
import contextlib
import functools

import torch

from ..spec import Unsupported
from ..torch_common import TORCH_DTYPES
from ..torch_eager import EagerRNN
from . import interpreted, kernels
from .plan import Plan, make_plan

DTYPE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}
CELLS = {1: "rnn_tanh", 4: "lstm", 3: "gru"}  # by gate count


class _StaticGraph:
    """One stepwise launch sequence captured as a CUDA graph over buffers the graph owns.

    ``fn(*inputs)`` launches the sequence and returns its outputs.  At construction it runs once
    eagerly on copies of the inputs (compiling the kernels), then is captured on those copies: its
    outputs (and every buffer it allocates) live in the graph's memory pool.  ``run`` copies new
    inputs in, replays, and copies the outputs out, so a replay never depends on where the caching
    allocator puts the caller's tensors.
    """

    def __init__(self, fn, inputs):
        self.inputs = [None if x is None else x.clone() for x in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn(*self.inputs)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=side):
                self.outputs = fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)

    def run(self, inputs):
        for static, x in zip(self.inputs, inputs):
            if static is not None:
                static.copy_(x)
        self.graph.replay()
        return tuple(None if out is None else out.clone() for out in self.outputs)


class _GraphCache:
    """Captured sequences keyed by everything a graph bakes in except the data: sizes, dtypes, plan."""

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self.entries: collections.OrderedDict = collections.OrderedDict()

    def run(self, key, fn, inputs) -> tuple:
        entry = self.entries.get(key)
        if entry is None:
            if len(self.entries) >= self.capacity:
                self.entries.popitem(last=False)
            entry = self.entries[key] = _StaticGraph(fn, inputs)
        self.entries.move_to_end(key)
        return entry.run(inputs)


_GRAPHS = _GraphCache()
# Barrier polling budget of one persistent program over a launch: a poll is an L2 round trip (about
# 0.5-1 us), so this is some seconds of waiting, far beyond the microseconds a step's wait takes.
MAX_SPINS = 1 << 24


class BarrierTimeout(RuntimeError):
    """A persistent launch whose programs did not all arrive at a barrier within MAX_SPINS polls."""


def resident_programs(n_regs: int, shared_bytes: int, num_warps: int, props) -> int:
    """How many programs of a kernel fit on the device at once (CUDA's occupancy rule, simplified):
    per SM, the fewest allowed by threads, registers (allocated per warp in 256-register units) and
    shared memory; times the SM count.  ``props`` is torch's device properties."""
    threads = 32 * num_warps
    by_threads = props.max_threads_per_multi_processor // threads
    regs_per_warp = -(-max(n_regs, 1) * 32 // 256) * 256
    by_regs = getattr(props, "regs_per_multiprocessor", 65536) // (regs_per_warp * num_warps)
    by_shared = props.shared_memory_per_multiprocessor // shared_bytes if shared_bytes else by_threads
    return min(by_threads, by_regs, by_shared) * props.multi_processor_count


_RESIDENT: dict = {}


def _carry(a: torch.Tensor) -> torch.Tensor:
    """A fresh row-major float32 copy, which the kernels update in place."""
    return a.to(torch.float32, memory_format=torch.contiguous_format, copy=True)


def _ptrs(*tensors) -> tuple:
    return tuple(0 if t is None else t.data_ptr() for t in tensors)


def constexprs(plan: Plan, gates: int, backward: bool = False) -> dict:
    """A kernel's compile-time arguments for a plan (also what the offline kernel check compiles)."""
    return dict(
        G=gates,
        SPLIT=plan.path != "fused",
        BARRIER=plan.path == "persistent",
        BLOCK_B=plan.block_b,
        BLOCK_H=plan.block_h,
        H_PAD=plan.h_pad,
        PRECISION=plan.precision,
        WT=plan.transposed,
        FAST_TANH=plan.fast_tanh,
        num_warps=(plan.bwd_warps or plan.num_warps) if backward else plan.num_warps,
    )


def _recur(plan: Plan, launch, T: int, B: int, H: int, reverse: bool, device: torch.device) -> None:
    """Run ``launch(grid, t_start, n_steps, tile_b0)`` over the sequence as the plan says.

    fused and persistent: one launch for all steps (T, or T + 1 for a split backward, whose last
    step only finishes dh0).  Persistent programs spin on each other, so a launch is cooperative and
    holds at most as many programs as are resident at once (from the compiled kernel's registers and
    shared memory); larger batches go in groups of batch tiles.  stepwise: one launch per step.
    """
    n_b, n_h = -(-B // plan.block_b), -(-H // plan.block_h)
    if plan.path == "stepwise":
        for t in range(T - 1, -2, -1) if reverse else range(T):
            launch((n_b, n_h), t, 1, 0)
        return
    start, n_steps = (T - 1, T + (plan.path != "fused")) if reverse else (0, T)
    per = n_b
    if plan.path == "persistent" and device.type == "cuda":
        key = (launch.kernel, plan, device)
        if key not in _RESIDENT:
            compiled = launch((1, n_h), start, n_steps, 0, warmup=True)
            compiled._init_handles()  # loads the binary, which fills in n_regs
            props = torch.cuda.get_device_properties(device)
            warps = compiled.metadata.num_warps
            _RESIDENT[key] = resident_programs(compiled.n_regs, compiled.metadata.shared, warps, props)
        per = _RESIDENT[key] // n_h
        if per == 0:
            raise Unsupported(f"the {n_h} programs of a persistent batch tile ({plan}) are not resident at once on {device}")
    for b0 in range(0, n_b, per):
        launch((min(per, n_b - b0), n_h), start, n_steps, b0)


def _launcher(kernel, plan: Plan, args_before, args_after, kw: dict, on_cuda: bool):
    """``launch(grid, t_start, n_steps, tile_b0, warmup=False)`` for one kernel and its fixed arguments."""
    if plan.path == "persistent" and on_cuda:
        kw = dict(kw, launch_cooperative_grid=True)

    def launch(grid, t, n, b0, warmup=False):
        args = (*args_before, t, n, *args_after, b0, MAX_SPINS)
        if warmup:
            return kernel.warmup(*args, grid=grid, **kw)
        return kernel[grid](*args, **kw)

    launch.kernel = kernel
    return launch


def _counters(plan: Plan, B: int, device) -> torch.Tensor | None:
    """Zeroed per-batch-tile arrival counters for the persistent kernel's barrier, then its error flag."""
    if plan.path != "persistent":
        return None
    return torch.zeros(-(-B // plan.block_b) + 1, dtype=torch.int32, device=device)


def _check_barrier(bar, plan: Plan, what: str, T: int, B: int, H: int, G: int, dtype) -> None:
    if bar is not None and bar[-1].item():
        raise BarrierTimeout(
            f"triton persistent {what} kernel: a barrier waited {MAX_SPINS} polls for programs that never arrived "
            f"({CELLS[G]} H={H} B={B} T={T} {DTYPE_NAMES[dtype]}, {plan})"
        )


def _forward_launches(plan: Plan, save: bool, gi, w_hh, b_hh, h0, c0):
    """Allocate the outputs and run the forward kernel over the sequence: (hs, c, cs, acts, bar)."""
    T, B, GH = gi.shape
    H = w_hh.shape[1]
    G = GH // H
    hs = gi.new_empty(T + 1, B, H)  # [T+1, B, H]
    hs[0] = h0
    c = _carry(c0) if G == 4 else None  # [B, H]
    cs = acts = None
    if save and G == 4:
        cs = gi.new_empty(T + 1, B, H)  # [T+1, B, H]
        cs[0] = c0
    if save and G > 1:
        acts = gi.new_empty(T, B, 4 * H)  # [T, B, 4H]
    bar = _counters(plan, B, gi.device)
    kw = dict(SAVE=save, **constexprs(plan, G))
    launch = _launcher(kernels.rnn_fwd_kernel, plan, (gi, w_hh, b_hh, hs, c, cs, acts, bar), (B, H), kw,
                       gi.device.type == "cuda")
    _recur(plan, launch, T, B, H, False, gi.device)
    return hs, c, cs, acts, bar


def _backward_launches(plan: Plan, w_hh, hs, cs, acts, dy, dh_n, dc_n):
    """Allocate the gradients and run the backward kernel: (dg, dn, dh0, dc0, bar)."""
    T, B, H = dy.shape
    G = w_hh.shape[0] // H
    dh = _carry(dh_n)  # [B, H]
    dc = _carry(dc_n) if G == 4 else None  # [B, H]
    dg = hs.new_empty(T, B, G * H)  # [T, B, G*H]
    dn = hs.new_empty(T, B, H) if G == 3 else None  # [T, B, H]
    bar = _counters(plan, B, hs.device)
    launch = _launcher(kernels.rnn_bwd_kernel, plan, (w_hh, hs, cs, acts, dy, dg, dn, dh, dc, bar), (T, B, H),
                       constexprs(plan, G, backward=True), hs.device.type == "cuda")
    _recur(plan, launch, T, B, H, True, hs.device)
    return dg, dn, dh, dc, bar


def _run(plan: Plan, fn, key: tuple, inputs: tuple, launches: set) -> tuple:
    """Run ``fn(*inputs)``: replayed from a CUDA graph where the plan says so, else launched as it is."""
    with torch.cuda.device(inputs[0].device) if inputs[0].is_cuda else contextlib.nullcontext():
        if plan.cuda_graph:
            launches.add("graph")
            return _GRAPHS.run(key, fn, inputs)
        launches.add("eager-launches" if plan.path == "stepwise" else "one-launch")
        return fn(*inputs)


def recurrent_forward(plan: Plan, gi, w_hh, b_hh, h0, c0, save: bool, launches: set):
    """Run the forward kernel; returns hs [T+1, B, H] (h0 then y), c_T [B, H] fp32, cs, acts."""
    T, B, GH = gi.shape
    H = w_hh.shape[1]
    key = ("fwd", T, B, H, gi.dtype, gi.device, save, plan, c0 is None)
    fn = functools.partial(_forward_launches, plan, save)
    hs, c, cs, acts, bar = _run(plan, fn, key, (gi, w_hh, b_hh, h0, c0), launches)
    _check_barrier(bar, plan, "forward", T, B, H, GH // H, gi.dtype)
    return hs, c, cs, acts


def recurrent_backward(plan: Plan, w_hh, hs, cs, acts, dy, dh_n, dc_n, launches: set):
    """Run the backward kernel; returns dG [T, B, G*H], GRU's dn [T, B, H], dh0 and dc0 (fp32)."""
    T, B, H = dy.shape
    key = ("bwd", T, B, H, hs.dtype, hs.device, plan, cs is None, acts is None)
    fn = functools.partial(_backward_launches, plan)
    dg, dn, dh, dc, bar = _run(plan, fn, key, (w_hh, hs, cs, acts, dy, dh_n, dc_n), launches)
    _check_barrier(bar, plan, "backward", T, B, H, w_hh.shape[0] // H, hs.dtype)
    return dg, dn, dh, dc


class RecurrentLayer(torch.autograd.Function):
    """One layer's recurrence from its input projection gi [T, B, G*H]: (y, h_T[, c_T])."""

    @staticmethod
    def forward(ctx, gi, w_hh, b_hh, h0, c0, plan: Plan, save: bool, launches: set):
        gi, w_hh, b_hh = gi.contiguous(), w_hh.contiguous(), b_hh.contiguous()
        hs, c, cs, acts = recurrent_forward(plan, gi, w_hh, b_hh, h0, c0, save, launches)
        if save:
            ctx.save_for_backward(w_hh, hs, cs, acts)
            ctx.plan, ctx.launches = plan, launches
        out = (hs[1:], hs[-1].clone())
        return out if c is None else out + (c.to(gi.dtype),)

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n=None):
        w_hh, hs, cs, acts = ctx.saved_tensors
        dg, dn, dh0, dc0 = recurrent_backward(ctx.plan, w_hh, hs, cs, acts, dy.contiguous(), dh_n, dc_n, ctx.launches)
        T, B, H = dy.shape
        flat = dg.view(T * B, -1)  # [T*B, G*H]
        dw_hh = flat.t() @ hs[:-1].reshape(T * B, H) if ctx.needs_input_grad[1] else None  # [G*H, H]
        db_hh = flat.sum(0, dtype=torch.float32).to(dg.dtype) if ctx.needs_input_grad[2] else None
        # the input side's n gate is not scaled by r, unlike the recurrent side's (GRU)
        dgi = dg if dn is None else torch.cat((dg[..., : 2 * H], dn), dim=-1)  # [T, B, G*H]
        dc0 = None if dc0 is None else dc0.to(dg.dtype)
        return dgi, dw_hh, db_hh, dh0.to(dg.dtype), dc0, None, None, None


class TritonRNN(EagerRNN):
    """The eager module's canonical parameters; each layer's recurrence runs in the Triton kernels."""

    def __init__(self, spec, options: dict):
        super().__init__(spec)
        self.options = options
        self.launches: set = set()  # how the latest call's recurrences ran: graph | eager-launches | one-launch

    def plan(self, dtype: torch.dtype, device: torch.device) -> Plan:
        spec = self.spec
        return make_plan(
            spec.cell, spec.hidden_size, DTYPE_NAMES[dtype], device.type, interpreted=interpreted(), **self.options
        )

    def forward(self, x, state=None):
        spec = self.spec
        T, B, _ = x.shape
        plan = self.plan(x.dtype, x.device)
        self.launches = set()
        zeros = x.new_zeros(spec.num_layers, B, spec.hidden_size)
        if spec.has_cell_state:
            h0, c0 = state if state is not None else (zeros, zeros)
        else:
            h0, c0 = (state if state is not None else zeros), None
        h_n, c_n, layer_in = [], [], x
        for k in range(spec.num_layers):
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            b_ih, b_hh = getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")
            gi = torch.addmm(b_ih, layer_in.reshape(T * B, -1), w_ih.t()).view(T, B, -1)  # [T, B, G*H]
            c0_k = None if c0 is None else c0[k]
            inputs = (gi, w_hh, b_hh, h0[k], c0_k)
            save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
            out = RecurrentLayer.apply(*inputs, plan, save, self.launches)
            layer_in = out[0]
            h_n.append(out[1])
            if spec.has_cell_state:
                c_n.append(out[2])
        final = (torch.stack(h_n), torch.stack(c_n)) if spec.has_cell_state else torch.stack(h_n)
        return layer_in, final

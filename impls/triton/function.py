"""Launch code for the Triton recurrent kernels, the autograd Function joining them, and the module.

Per layer: the input projection of all timesteps is one addmm (autograd differentiates it,
which gives dW_ih, db_ih and dx as large matmuls); the recurrence is ``RecurrentLayer``, whose
forward kernel stores h_t (and c_t and the gate activations when a backward will follow) and
whose backward kernel walks the steps back, leaving the per-step gate gradients dG for dW_hh,
db_hh and the input side, again as large matmuls outside the loop.  Layers stack; a bidirectional
layer runs the same kernels once more with REVERSE (a second launch) and concatenates forward then
reverse.  A ragged batch passes its lengths to the kernels (RAGGED) and runs as many steps as its
longest row; a batch whose rows all have T steps runs the kernels without lengths.
"""
from __future__ import annotations

import collections
import contextlib
import functools
from dataclasses import dataclass

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


def constexprs(plan: Plan, gates: int, backward: bool = False, reverse: bool = False, ragged: bool = False) -> dict:
    """A kernel's compile-time arguments for a plan and direction (also what the offline kernel check compiles)."""
    return dict(
        G=gates,
        SPLIT=plan.path != "fused",
        BARRIER=plan.path == "persistent",
        REVERSE=reverse,
        RAGGED=ragged,
        BLOCK_B=plan.block_b,
        BLOCK_H=plan.block_h,
        H_PAD=plan.h_pad,
        PRECISION=plan.precision,
        WT=plan.transposed,
        FAST_TANH=plan.fast_tanh,
        num_warps=(plan.bwd_warps or plan.num_warps) if backward else plan.num_warps,
    )


def _recur(plan: Plan, launch, steps: int, B: int, H: int, backward: bool, device: torch.device) -> None:
    """Run ``launch(grid, s_start, n_steps, tile_b0)`` over the sequence's steps as the plan says.

    fused and persistent: one launch for all steps (``steps``, or one more for a split backward, whose
    last step only finishes dh0).  Persistent programs spin on each other, so a launch is cooperative and
    holds at most as many programs as are resident at once (from the compiled kernel's registers and
    shared memory); larger batches go in groups of batch tiles.  stepwise: one launch per step.
    """
    n_b, n_h = -(-B // plan.block_b), -(-H // plan.block_h)
    if plan.path == "stepwise":
        for s in range(steps - 1, -2, -1) if backward else range(steps):
            launch((n_b, n_h), s, 1, 0)
        return
    start, n_steps = (steps - 1, steps + (plan.path != "fused")) if backward else (0, steps)
    per = n_b
    if plan.path == "persistent" and device.type == "cuda":
        key = (launch.kernel, launch.variant, plan, device)
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
    """``launch(grid, s_start, n_steps, tile_b0, warmup=False)`` for one kernel and its fixed arguments."""
    if plan.path == "persistent" and on_cuda:
        kw = dict(kw, launch_cooperative_grid=True)

    def launch(grid, t, n, b0, warmup=False):
        args = (*args_before, t, n, *args_after, b0, MAX_SPINS)
        if warmup:
            return kernel.warmup(*args, grid=grid, **kw)
        return kernel[grid](*args, **kw)

    launch.kernel = kernel
    launch.variant = tuple(sorted(kw.items()))  # each variant compiles apart: its own registers, its own residency
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


def _forward_launches(plan: Plan, save: bool, reverse: bool, steps: int, gi, w_hh, b_hh, h0, c0, lens):
    """Allocate the outputs and run the forward kernel over the sequence: (hs, c, cs, acts, bar).

    hs (and cs) hold h0 and h_0 .. h_T-1: forward [h0, h_0 ..], reverse [.. h_T-1, h0], so that y is
    hs[1:] or hs[:T]; the times no row reaches (t >= steps) are y = 0, set here."""
    T, B, GH = gi.shape
    H = w_hh.shape[1]
    G = GH // H
    start = T if reverse else 0  # h0's plane
    hs = gi.new_empty(T + 1, B, H)  # [T+1, B, H]
    hs[start] = h0
    if steps < T:
        (hs[steps:T] if reverse else hs[steps + 1:]).zero_()
    c = _carry(c0) if G == 4 else None  # [B, H]
    cs = acts = None
    if save and G == 4:
        cs = gi.new_empty(T + 1, B, H)  # [T+1, B, H]
        cs[start] = c0
    if save and G > 1:
        acts = gi.new_empty(T, B, 4 * H)  # [T, B, 4H]
    bar = _counters(plan, B, gi.device)
    kw = dict(SAVE=save, **constexprs(plan, G, reverse=reverse, ragged=lens is not None))
    launch = _launcher(kernels.rnn_fwd_kernel, plan, (gi, w_hh, b_hh, hs, c, cs, acts, lens, bar), (T, B, H), kw,
                       gi.device.type == "cuda")
    _recur(plan, launch, steps, B, H, False, gi.device)
    return hs, c, cs, acts, bar


def _backward_launches(plan: Plan, reverse: bool, steps: int, w_hh, hs, cs, acts, dy, dh_n, dc_n, lens):
    """Allocate the gradients and run the backward kernel: (dg, dn, dh0, dc0, bar).  dG is exactly 0 at
    every padded time: the kernel writes the zeros of the padded steps it runs, the times no row
    reaches (t >= steps) are set here."""
    T, B, H = dy.shape
    G = w_hh.shape[0] // H
    dh = _carry(dh_n)  # [B, H]
    dc = _carry(dc_n) if G == 4 else None  # [B, H]
    dg = hs.new_empty(T, B, G * H)  # [T, B, G*H]
    dn = hs.new_empty(T, B, H) if G == 3 else None  # [T, B, H]
    if steps < T:
        dg[steps:] = 0
        if dn is not None:
            dn[steps:] = 0
    bar = _counters(plan, B, hs.device)
    launch = _launcher(kernels.rnn_bwd_kernel, plan, (w_hh, hs, cs, acts, dy, dg, dn, dh, dc, lens, bar),
                       (steps, T, B, H), constexprs(plan, G, True, reverse, lens is not None), hs.device.type == "cuda")
    _recur(plan, launch, steps, B, H, True, hs.device)
    return dg, dn, dh, dc, bar


def _run(plan: Plan, fn, key: tuple, inputs: tuple, launches: set) -> tuple:
    """Run ``fn(*inputs)``: replayed from a CUDA graph where the plan says so, else launched as it is."""
    with torch.cuda.device(inputs[0].device) if inputs[0].is_cuda else contextlib.nullcontext():
        if plan.cuda_graph:
            launches.add("graph")
            return _GRAPHS.run(key, fn, inputs)
        launches.add("eager-launches" if plan.path == "stepwise" else "one-launch")
        return fn(*inputs)


def recurrent_forward(plan: Plan, gi, w_hh, b_hh, h0, c0, save: bool, launches: set, reverse: bool = False,
                      lengths: "Lengths | None" = None):
    """Run the forward kernel; returns hs [T+1, B, H] (h0 and y, see _forward_launches), c [B, H] fp32 (each
    row's last step), cs, acts."""
    T, B, GH = gi.shape
    H = w_hh.shape[1]
    steps, lens = (T, None) if lengths is None else (lengths.steps, lengths.on_device)
    key = ("fwd", T, B, H, gi.dtype, gi.device, save, plan, c0 is None, reverse, steps, lens is None)
    fn = functools.partial(_forward_launches, plan, save, reverse, steps)
    hs, c, cs, acts, bar = _run(plan, fn, key, (gi, w_hh, b_hh, h0, c0, lens), launches)
    _check_barrier(bar, plan, "forward", T, B, H, GH // H, gi.dtype)
    return hs, c, cs, acts


def recurrent_backward(plan: Plan, w_hh, hs, cs, acts, dy, dh_n, dc_n, launches: set, reverse: bool = False,
                       lengths: "Lengths | None" = None):
    """Run the backward kernel; returns dG [T, B, G*H], GRU's dn [T, B, H], dh0 and dc0 (fp32)."""
    T, B, H = dy.shape
    steps, lens = (T, None) if lengths is None else (lengths.steps, lengths.on_device)
    key = ("bwd", T, B, H, hs.dtype, hs.device, plan, cs is None, acts is None, reverse, steps, lens is None)
    fn = functools.partial(_backward_launches, plan, reverse, steps)
    dg, dn, dh, dc, bar = _run(plan, fn, key, (w_hh, hs, cs, acts, dy, dh_n, dc_n, lens), launches)
    _check_barrier(bar, plan, "backward", T, B, H, w_hh.shape[0] // H, hs.dtype)
    return dg, dn, dh, dc


@dataclass(frozen=True)
class Lengths:
    """A ragged batch as the kernels take it: each row's steps (int32 on the device, and int64 there for
    gathers) and the longest row's, which is how many steps the kernels run."""

    on_device: torch.Tensor  # [B] int32
    index: torch.Tensor  # [B] int64
    steps: int

    @staticmethod
    def of(lengths, T: int, device) -> "Lengths | None":
        """None where every row has all T steps (the kernels without lengths run then), else the lengths."""
        if lengths is None or bool((lengths == T).all()):
            return None
        index = torch.as_tensor(lengths, dtype=torch.int64).to(device)
        return Lengths(index.to(torch.int32), index, int(lengths.max()))


class RecurrentLayer(torch.autograd.Function):
    """One layer's recurrence in one direction from its input projection gi [T, B, G*H]: (y, h_n[, c_n])."""

    @staticmethod
    def forward(ctx, gi, w_hh, b_hh, h0, c0, plan: Plan, save: bool, launches: set, reverse: bool,
                lengths: Lengths | None):
        gi, w_hh, b_hh = gi.contiguous(), w_hh.contiguous(), b_hh.contiguous()
        hs, c, cs, acts = recurrent_forward(plan, gi, w_hh, b_hh, h0, c0, save, launches, reverse, lengths)
        if save:
            ctx.save_for_backward(w_hh, hs, cs, acts)
            ctx.plan, ctx.launches, ctx.reverse, ctx.lengths = plan, launches, reverse, lengths
        T, B, _ = gi.shape
        if reverse:  # y = hs[:T]; every row ends at t = 0
            out = (hs[:T], hs[0].clone())
        elif lengths is None:
            out = (hs[1:], hs[T].clone())
        else:  # a row's final h is its y at t = len-1
            out = (hs[1:], hs[lengths.index, torch.arange(B, device=hs.device)])
        return out if c is None else out + (c.to(gi.dtype),)

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n=None):
        w_hh, hs, cs, acts = ctx.saved_tensors
        reverse, lengths = ctx.reverse, ctx.lengths
        dg, dn, dh0, dc0 = recurrent_backward(ctx.plan, w_hh, hs, cs, acts, dy.contiguous(), dh_n, dc_n, ctx.launches,
                                              reverse, lengths)
        T, B, H = dy.shape
        flat = dg.view(T * B, -1)  # [T*B, G*H]
        dw_hh = db_hh = None
        if ctx.needs_input_grad[1]:
            h_prev = hs[1:] if reverse else hs[:T]  # [T, B, H] the state each time starts from
            dw_hh = flat.t() @ h_prev.reshape(T * B, H)  # [G*H, H]
            if reverse and lengths is not None:
                # a reverse row shorter than T starts from h0 (plane T), not from plane len, its y = 0 there
                rows = torch.arange(B, device=dg.device)
                first = dg[lengths.index - 1, rows] * (lengths.index < T)[:, None].to(dg.dtype)  # [B, G*H]
                dw_hh = dw_hh + first.t() @ hs[T]
        if ctx.needs_input_grad[2]:
            db_hh = flat.sum(0, dtype=torch.float32).to(dg.dtype)
        # the input side's n gate is not scaled by r, unlike the recurrent side's (GRU)
        dgi = dg if dn is None else torch.cat((dg[..., : 2 * H], dn), dim=-1)  # [T, B, G*H]
        dc0 = None if dc0 is None else dc0.to(dg.dtype)
        return dgi, dw_hh, db_hh, dh0.to(dg.dtype), dc0, None, None, None, None, None


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

    def forward(self, x, state=None, lengths=None):
        """x [T, B, I], state h0 / (h0, c0) [L*D, B, H], lengths None or int [B] (CPU) -> (y [T, B, D*H], final)."""
        spec = self.spec
        T, B, _ = x.shape
        plan = self.plan(x.dtype, x.device)
        ragged = Lengths.of(lengths, T, x.device)
        self.launches = set()
        zeros = x.new_zeros(spec.state_shape(B))
        if spec.has_cell_state:
            h0, c0 = state if state is not None else (zeros, zeros)
        else:
            h0, c0 = (state if state is not None else zeros), None
        h_n, c_n, layer_in = [], [], x
        for k in range(spec.num_layers):
            outs = []
            for d, suffix in enumerate(spec.suffixes()):
                w_ih, w_hh, b_ih, b_hh = (getattr(self, n) for n in spec.layer_weight_names(k, suffix))
                gi = torch.addmm(b_ih, layer_in.reshape(T * B, -1), w_ih.t()).view(T, B, -1)  # [T, B, G*H]
                row = k * spec.directions + d
                inputs = (gi, w_hh, b_hh, h0[row], None if c0 is None else c0[row])
                save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
                out = RecurrentLayer.apply(*inputs, plan, save, self.launches, d == 1, ragged)
                outs.append(out[0])  # [T, B, H]
                h_n.append(out[1])
                if spec.has_cell_state:
                    c_n.append(out[2])
            layer_in = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]  # [T, B, D*H]
        final = (torch.stack(h_n), torch.stack(c_n)) if spec.has_cell_state else torch.stack(h_n)
        return layer_in, final

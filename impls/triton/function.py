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

import torch

from ..torch_common import TORCH_DTYPES
from ..torch_eager import EagerRNN
from . import interpreted, kernels
from .plan import Plan, make_plan

DTYPE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}


class _GraphCache:
    """CUDA graphs of stepwise launch sequences, keyed by the sizes and every pointer they bake in.

    A sequence runs eagerly the first time its key is seen (compiling the kernels), is captured
    the second time and replays from then on, so repeated calls on the same buffers (a timing
    loop, whose caching allocator hands back the same blocks) cost one graph launch, not T.
    """

    def __init__(self, capacity: int = 32):
        self.capacity = capacity
        self.entries: collections.OrderedDict = collections.OrderedDict()

    def run(self, key, steps) -> None:
        entry = self.entries.get(key)
        if entry is None:
            steps()
            if len(self.entries) >= self.capacity:
                self.entries.popitem(last=False)
            self.entries[key] = False  # seen once: compiled
            return
        if entry is False:
            entry = torch.cuda.CUDAGraph()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                entry.capture_begin()
                steps()
                entry.capture_end()
            torch.cuda.current_stream().wait_stream(side)
            self.entries[key] = entry
        self.entries.move_to_end(key)
        entry.replay()


_GRAPHS = _GraphCache()


def _carry(a: torch.Tensor) -> torch.Tensor:
    """A fresh row-major float32 copy, which the kernels update in place."""
    return a.to(torch.float32, memory_format=torch.contiguous_format, copy=True)


def _ptrs(*tensors) -> tuple:
    return tuple(0 if t is None else t.data_ptr() for t in tensors)


def _constexprs(plan: Plan, gates: int) -> dict:
    return dict(
        G=gates,
        SPLIT=plan.path != "fused",
        BARRIER=plan.path == "persistent",
        BLOCK_B=plan.block_b,
        BLOCK_H=plan.block_h,
        H_PAD=plan.h_pad,
        PRECISION=plan.precision,
        num_warps=plan.num_warps,
    )


def _recur(plan: Plan, launch, T: int, B: int, H: int, reverse: bool, device: torch.device, key: tuple) -> None:
    """Run ``launch(grid, t_start, n_steps, tile_b0)`` over the sequence as the plan says.

    fused and persistent: one launch for all steps (T, or T + 1 for a split backward, whose last
    step only finishes dh0).  Persistent programs spin on each other, so one launch holds at most
    one program per SM; larger batches go in groups of batch tiles.  stepwise: one launch per
    step, replayed as a CUDA graph.
    """
    n_b, n_h = -(-B // plan.block_b), -(-H // plan.block_h)
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        if plan.path == "stepwise":
            starts = range(T - 1, -2, -1) if reverse else range(T)

            def steps():
                for t in starts:
                    launch((n_b, n_h), t, 1, 0)

            if plan.cuda_graph:
                _GRAPHS.run(key, steps)
            else:
                steps()
            return
        start, n_steps = (T - 1, T + (plan.path != "fused")) if reverse else (0, T)
        per = n_b
        if plan.path == "persistent" and device.type == "cuda":
            per = max(1, torch.cuda.get_device_properties(device).multi_processor_count // n_h)
        for b0 in range(0, n_b, per):
            launch((min(per, n_b - b0), n_h), start, n_steps, b0)


def _counters(plan: Plan, B: int, device) -> torch.Tensor | None:
    """Zeroed per-batch-tile arrival counters for the persistent kernel's barrier."""
    if plan.path != "persistent":
        return None
    return torch.zeros(-(-B // plan.block_b), dtype=torch.int32, device=device)


def recurrent_forward(plan: Plan, gi, w_hh, b_hh, h0, c0, save: bool):
    """Run the forward kernel; returns hs [T+1, B, H] (h0 then y), c_T [B, H] fp32, cs, acts."""
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

    def launch(grid, t, n, b0):
        kernels.rnn_fwd_kernel[grid](
            gi, w_hh, b_hh, hs, c, cs, acts, bar, t, n, B, H, b0, SAVE=save, **_constexprs(plan, G)
        )

    key = ("fwd", T, B, H, save, plan) + _ptrs(gi, w_hh, b_hh, hs, c, cs, acts)
    _recur(plan, launch, T, B, H, False, gi.device, key)
    return hs, c, cs, acts


def recurrent_backward(plan: Plan, w_hh, hs, cs, acts, dy, dh_n, dc_n):
    """Run the backward kernel; returns dG [T, B, G*H], GRU's dn [T, B, H], dh0 and dc0 (fp32)."""
    T, B, H = dy.shape
    G = w_hh.shape[0] // H
    dh = _carry(dh_n)  # [B, H]
    dc = _carry(dc_n) if G == 4 else None  # [B, H]
    dg = hs.new_empty(T, B, G * H)  # [T, B, G*H]
    dn = hs.new_empty(T, B, H) if G == 3 else None  # [T, B, H]
    bar = _counters(plan, B, hs.device)
    kw = _constexprs(plan, G)

    def launch(grid, t, n, b0):
        kernels.rnn_bwd_kernel[grid](w_hh, hs, cs, acts, dy, dg, dn, dh, dc, bar, t, n, T, B, H, b0, **kw)

    key = ("bwd", T, B, H, plan) + _ptrs(w_hh, hs, cs, acts, dy, dg, dn, dh, dc)
    _recur(plan, launch, T, B, H, True, hs.device, key)
    return dg, dn, dh, dc


class RecurrentLayer(torch.autograd.Function):
    """One layer's recurrence from its input projection gi [T, B, G*H]: (y, h_T[, c_T])."""

    @staticmethod
    def forward(ctx, gi, w_hh, b_hh, h0, c0, plan: Plan, save: bool):
        gi, w_hh, b_hh = gi.contiguous(), w_hh.contiguous(), b_hh.contiguous()
        hs, c, cs, acts = recurrent_forward(plan, gi, w_hh, b_hh, h0, c0, save)
        if save:
            ctx.save_for_backward(w_hh, hs, cs, acts)
            ctx.plan = plan
        out = (hs[1:], hs[-1].clone())
        return out if c is None else out + (c.to(gi.dtype),)

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n=None):
        w_hh, hs, cs, acts = ctx.saved_tensors
        dg, dn, dh0, dc0 = recurrent_backward(ctx.plan, w_hh, hs, cs, acts, dy.contiguous(), dh_n, dc_n)
        T, B, H = dy.shape
        flat = dg.view(T * B, -1)  # [T*B, G*H]
        dw_hh = flat.t() @ hs[:-1].reshape(T * B, H) if ctx.needs_input_grad[1] else None  # [G*H, H]
        db_hh = flat.sum(0, dtype=torch.float32).to(dg.dtype) if ctx.needs_input_grad[2] else None
        # the input side's n gate is not scaled by r, unlike the recurrent side's (GRU)
        dgi = dg if dn is None else torch.cat((dg[..., : 2 * H], dn), dim=-1)  # [T, B, G*H]
        dc0 = None if dc0 is None else dc0.to(dg.dtype)
        return dgi, dw_hh, db_hh, dh0.to(dg.dtype), dc0, None, None


class TritonRNN(EagerRNN):
    """The eager module's canonical parameters; each layer's recurrence runs in the Triton kernels."""

    def __init__(self, spec, options: dict):
        super().__init__(spec)
        self.options = options

    def plan(self, dtype: torch.dtype, device: torch.device) -> Plan:
        spec = self.spec
        return make_plan(
            spec.cell, spec.hidden_size, DTYPE_NAMES[dtype], device.type, interpreted=interpreted(), **self.options
        )

    def forward(self, x, state=None):
        spec = self.spec
        T, B, _ = x.shape
        plan = self.plan(x.dtype, x.device)
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
            out = RecurrentLayer.apply(*inputs, plan, save)
            layer_in = out[0]
            h_n.append(out[1])
            if spec.has_cell_state:
                c_n.append(out[2])
        final = (torch.stack(h_n), torch.stack(c_n)) if spec.has_cell_state else torch.stack(h_n)
        return layer_in, final

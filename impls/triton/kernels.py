"""Triton kernels for the recurrent part of rnn_tanh, LSTM and GRU layers.

One forward and one backward kernel serve the three launch plans of ``function.py``:

* fused (``SPLIT=False``): a program owns a batch tile and every hidden unit, keeps W_hh on
  chip (Triton stages the loop-invariant tiles in shared memory) and the state in registers,
  and loops over all timesteps in one launch;
* persistent (``SPLIT=True, BARRIER=True``): the hidden (and gate) dimension is split across
  programs, each keeping its slice of W_hh; each step's h (forward) or gate gradients
  (backward) go through global memory, and the programs of a batch tile meet at an
  atomic-counter barrier every step;
* stepwise (``SPLIT=True, BARRIER=False``): the same split, one launch per timestep, so the
  launch boundary is the barrier.

``WT`` selects the transposed product (backend ``triton_wt``): every tile is held as its
transpose, [BH, BB] instead of [BB, BH], so the gate dot is gates^T = W_hh . h^T with the G*H
gate side as the dot's M and the batch tile as its narrow N, and W_hh is the dot's first operand
(the one Hopper's wgmma takes from registers).  Memory layouts are the same for both.

The cell is selected by ``G``, the number of gate blocks: 1 rnn_tanh, 4 LSTM (i, f, g, o),
3 GRU (r, z, n).  The input projection (with b_ih) is computed outside, for all timesteps at
once; the kernels add W_hh h + b_hh and do the gate math in float32.  Tensors are contiguous;
``B``/``H`` are the real sizes, ``BLOCK_B``/``BLOCK_H``/``H_PAD`` powers of two >= 16 (the
``tl.dot`` minimum), with masks for the padding.
"""
import triton
import triton.language as tl


@triton.jit
def _tanh(x):
    """tanh(x) = 2 sigmoid(2x) - 1: triton 3.6 has no tl.tanh, and a where(x >= 0, ..) form sends
    triton 3.9's LLVM SLP vectorizer into an assertion beside fp32 dots."""
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _tanh_approx(x):
    """The hardware tanh (sm_75+, max error about 5e-4): for bf16/fp16 layers only.  Inline asm does
    not run in the interpreter, so it is behind the FAST_TANH constexpr, off there."""
    return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _act_tanh(x, FAST_TANH: tl.constexpr):
    if FAST_TANH:
        return _tanh_approx(x)
    else:
        return _tanh(x)


@triton.jit
def _mm(a, w, WT: tl.constexpr, PRECISION: tl.constexpr):
    """The recurrent product of a state-side tile with a W_hh tile: a @ w, or w @ a when transposed."""
    if WT:
        return tl.dot(w, a, input_precision=PRECISION)
    else:
        return tl.dot(a, w, input_precision=PRECISION)


@triton.jit
def _axes(rows, cols, ks, WT: tl.constexpr):
    """The index vectors as 2-D tiles: rows, cols (and ks as the state's K) along a [BB, *] tile, or along
    its transpose; kw is ks in the other orientation, for the W_hh tiles."""
    if WT:
        return rows[None, :], cols[:, None], ks[:, None], ks[None, :]
    else:
        return rows[:, None], cols[None, :], ks[None, :], ks[:, None]


@triton.jit
def _plane(t, size):
    """Offset of timestep t in a [T, ...] buffer whose steps hold `size` elements, in int64."""
    return tl.cast(t, tl.int64) * size


@triton.jit
def _rows_if(rows, B, cond):
    """rows < B where the scalar cond holds, else no row.  A tensor comparison, because the
    interpreter turns `mask & scalar_condition` into an int32 mask that tl.load rejects."""
    return rows < tl.where(cond, B, 0)


@triton.jit
def _grid_barrier(counter_ptr, target, err_ptr, spins_left):
    """Arrive, then wait until `target` arrivals: every program of this batch tile has finished
    the step.  As in CUDA cooperative groups' grid sync: a CTA barrier so all threads' stores are
    issued, a gpu-scope release by one thread, an acquire spin, and a CTA barrier again.

    The spin is bounded: `spins_left` is this program's polling budget for the whole launch.  When
    it runs out before the others arrive, the program sets the error flag and stops waiting (this
    and every later barrier pass at once), so the launch ends and the caller raises.  Returns the
    budget left."""
    tl.debug_barrier()
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
    arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    while (arrived < target) & (spins_left > 0):
        arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
        spins_left -= 1
    if arrived < target:
        tl.atomic_max(err_ptr, 1, sem="relaxed", scope="gpu")
    tl.debug_barrier()
    return spins_left


@triton.jit
def _store4(ptr, H, a, b, c, d, mask):
    """Store four [BB, BH] tiles one gate block (H) apart, in the buffer's dtype."""
    ty = ptr.dtype.element_ty
    tl.store(ptr, a.to(ty), mask=mask)
    tl.store(ptr + H, b.to(ty), mask=mask)
    tl.store(ptr + 2 * H, c.to(ty), mask=mask)
    tl.store(ptr + 3 * H, d.to(ty), mask=mask)


@triton.jit
def _time(s, lens, T, REVERSE: tl.constexpr, RAGGED: tl.constexpr):
    """The time step s works on: s forward; reverse T-1-s, or per row len-1-s while s < len, then the
    row's padded times len, len+1, .. in its padded steps (so every step of a row has its own plane)."""
    if REVERSE:
        if RAGGED:
            return tl.where(s < lens, lens - 1 - s, s)
        else:
            return T - 1 - s
    else:
        return s


@triton.jit
def _after(tau, REVERSE: tl.constexpr):
    """Plane of the state after time tau in a [T+1, B, H] state buffer: forward [h0, h_0 .. h_T-1],
    reverse [h_0 .. h_T-1, h0], so the layer's y is a view of it either way."""
    if REVERSE:
        return tau
    else:
        return tau + 1


@triton.jit
def _before(s, lens, T, REVERSE: tl.constexpr, RAGGED: tl.constexpr):
    """Plane of the state step s starts from: the one step s-1 left, h0's at s = 0.  A reverse row's
    padded steps read plane 0, the state after its last step (kept there, never overwritten)."""
    if REVERSE:
        if RAGGED:
            return tl.where(s == 0, T, tl.maximum(lens - s, 0))
        else:
            return T - s
    else:
        return s


@triton.jit
def _next(p, d, size, REVERSE: tl.constexpr, RAGGED: tl.constexpr):
    """A per-step pointer moved d planes, where every row is at the same time: the scalar pointer the loop
    carries.  A ragged reverse batch (a time per row) sets its pointers with _rowwise instead."""
    if REVERSE and RAGGED:
        return p
    else:
        return p + d * size


@triton.jit
def _rowwise(p, base, plane, size, REVERSE: tl.constexpr, RAGGED: tl.constexpr):
    """p; in a ragged reverse batch the pointer at each row's own plane instead, [BB, 1] ([1, BB] when WT)."""
    if REVERSE and RAGGED:
        return base + _plane(plane, size)
    else:
        return p


@triton.jit
def _valid(mask, s, lens, RAGGED: tl.constexpr):
    """mask where step s is one of the row's own (s < len), for loads that skip a padded step."""
    if RAGGED:
        return mask & (s < lens)
    else:
        return mask


@triton.jit(do_not_specialize=["s_start", "tile_b0"])
def rnn_fwd_kernel(
    gi_ptr,  # [T, B, G*H] input projection, b_ih included
    w_ptr,  # [G*H, H] W_hh
    b_ptr,  # [G*H] b_hh
    hs_ptr,  # [T+1, B, H] h0's plane set on entry (0 forward, T reverse); the kernel writes y_t beside it
    c_ptr,  # [B, H] float32 LSTM cell carry: c0 on entry, c of the row's last step on exit
    cs_ptr,  # [T+1, B, H] LSTM c, laid out as hs (SAVE)
    acts_ptr,  # [T, B, 4H] gate activations: LSTM i f g o, GRU r z n hn (SAVE)
    len_ptr,  # [B] int32 steps of each row (RAGGED)
    bar_ptr,  # [batch tiles + 1] int32 arrival counters, zeroed, then the error flag (BARRIER)
    s_start,  # first step of this launch
    n_steps,
    T,
    B,
    H,
    tile_b0,  # first batch tile of this launch
    max_spins,  # barrier polling budget per program (BARRIER)
    G: tl.constexpr,
    SAVE: tl.constexpr,
    SPLIT: tl.constexpr,
    BARRIER: tl.constexpr,
    REVERSE: tl.constexpr,
    RAGGED: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    H_PAD: tl.constexpr,
    PRECISION: tl.constexpr,
    WT: tl.constexpr,
    FAST_TANH: tl.constexpr,
):
    """Steps s_start .. s_start + n_steps - 1.  RAGGED: a row's step s >= len stores y = 0 and keeps
    its c; its h runs on (bounded, from zero inputs) but is never stored, so the final h is the plane
    of its last step."""
    pid_b = tile_b0 + tl.program_id(0)
    n_h = tl.num_programs(1)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # batch rows of this program
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)  # hidden units it computes
    ks = tl.arange(0, H_PAD)  # every hidden unit: the dot's K
    rr, cc, kk, kw = _axes(rows, cols, ks, WT)
    own = (rr < B) & (cc < H)  # [BB, BH] ([BH, BB] when WT, as every tile below)
    full = (rr < B) & (kk < H)  # [BB, HP]
    own_hw = rr * H + cc  # offsets in a [B, H] plane
    full_hw = rr * H + kk
    gate_hw = rr * (G * H) + cc  # gate 0 in a [B, G*H] plane
    act_hw = rr * (4 * H) + cc  # gate 0 in a [B, 4H] plane
    spins = max_spins
    if RAGGED:
        lens = tl.load(len_ptr + rr, mask=rr < B, other=0)  # [BB, 1] ([1, BB] when WT)
    else:
        lens = T

    # W_hh^T for this program's units, one [HP, BH] tile per gate: (k, j) -> W_hh[g*H + cols_j, k]
    # (WT: W_hh itself, [BH, HP])
    w_tile = w_ptr + cc * H + kw
    w_mask = (kw < H) & (cc < H)
    w0 = tl.load(w_tile, mask=w_mask, other=0.0)
    b0 = tl.load(b_ptr + cc, mask=cc < H, other=0.0).to(tl.float32)  # [1, BH]
    if G >= 3:
        w1 = tl.load(w_tile + H * H, mask=w_mask, other=0.0)
        w2 = tl.load(w_tile + 2 * H * H, mask=w_mask, other=0.0)
        b1 = tl.load(b_ptr + H + cc, mask=cc < H, other=0.0).to(tl.float32)
        b2 = tl.load(b_ptr + 2 * H + cc, mask=cc < H, other=0.0).to(tl.float32)
    if G == 4:
        w3 = tl.load(w_tile + 3 * H * H, mask=w_mask, other=0.0)
        b3 = tl.load(b_ptr + 3 * H + cc, mask=cc < H, other=0.0).to(tl.float32)
        c = tl.load(c_ptr + own_hw, mask=own, other=0.0)
    if REVERSE:
        d = -1  # planes a step moves
    else:
        d = 1

    # per-step pointers (scalars, or [BB, 1] per row in a ragged reverse batch), advanced a plane a step
    tau = _time(s_start, lens, T, REVERSE, RAGGED)
    gi_s = gi_ptr + _plane(tau, B * G * H)
    hs_s = hs_ptr + _plane(_before(s_start, lens, T, REVERSE, RAGGED), B * H)  # h of the step before
    if SAVE:  # rnn_tanh saves nothing: h_t is in hs
        if G > 1:
            acts_s = acts_ptr + _plane(tau, B * 4 * H)
        if G == 4:
            cs_s = cs_ptr + _plane(_after(tau, REVERSE), B * H)
    if not SPLIT:
        h = tl.load(hs_s + full_hw, mask=full, other=0.0).to(tl.float32)  # [BB, HP]
    step_in = _valid(own, s_start, lens, RAGGED)
    x0 = tl.load(gi_s + gate_hw, mask=step_in, other=0.0)
    if G >= 3:
        x1 = tl.load(gi_s + H + gate_hw, mask=step_in, other=0.0)
        x2 = tl.load(gi_s + 2 * H + gate_hw, mask=step_in, other=0.0)
    if G == 4:
        x3 = tl.load(gi_s + 3 * H + gate_hw, mask=step_in, other=0.0)

    for i in range(n_steps):
        s = s_start + i
        tau = _time(s, lens, T, REVERSE, RAGGED)  # used by the per-row pointers only
        hs_s = _rowwise(hs_s, hs_ptr, _before(s, lens, T, REVERSE, RAGGED), B * H, REVERSE, RAGGED)
        if SAVE:
            if G > 1:
                acts_s = _rowwise(acts_s, acts_ptr, tau, B * 4 * H, REVERSE, RAGGED)
            if G == 4:
                cs_s = _rowwise(cs_s, cs_ptr, _after(tau, REVERSE), B * H, REVERSE, RAGGED)
        # prefetch the next step's input projection; its latency hides behind this step
        gi_s = _rowwise(_next(gi_s, d, B * G * H, REVERSE, RAGGED), gi_ptr, _time(s + 1, lens, T, REVERSE, RAGGED),
                        B * G * H, REVERSE, RAGGED)
        more = _valid(_rows_if(rr, B, i + 1 < n_steps) & (cc < H), s + 1, lens, RAGGED)
        n0 = tl.load(gi_s + gate_hw, mask=more, other=0.0)
        if G >= 3:
            n1 = tl.load(gi_s + H + gate_hw, mask=more, other=0.0)
            n2 = tl.load(gi_s + 2 * H + gate_hw, mask=more, other=0.0)
        if G == 4:
            n3 = tl.load(gi_s + 3 * H + gate_hw, mask=more, other=0.0)

        if SPLIT:  # h_{t-1} of every unit, written by all programs of the tile (.cg: from L2, not a stale L1)
            hk = tl.load(hs_s + full_hw, mask=full, other=0.0, cache_modifier=".cg")
            if G == 3:
                h_own = tl.load(hs_s + own_hw, mask=own, other=0.0, cache_modifier=".cg").to(tl.float32)
        else:
            hk = h.to(w0.dtype)
            h_own = h
        a0 = x0.to(tl.float32) + b0 + _mm(hk, w0, WT, PRECISION)
        if G == 1:
            h_new = _act_tanh(a0, FAST_TANH)
        elif G == 4:
            i_g = tl.sigmoid(a0)
            f = tl.sigmoid(x1.to(tl.float32) + b1 + _mm(hk, w1, WT, PRECISION))
            g = _act_tanh(x2.to(tl.float32) + b2 + _mm(hk, w2, WT, PRECISION), FAST_TANH)
            o = tl.sigmoid(x3.to(tl.float32) + b3 + _mm(hk, w3, WT, PRECISION))
            c_new = f * c + i_g * g
            h_new = o * _act_tanh(c_new, FAST_TANH)
            if RAGGED:  # a padded step keeps c (stored too: the backward reads it there)
                c = tl.where(s < lens, c_new, c)
            else:
                c = c_new
            if SAVE:
                _store4(acts_s + act_hw, H, i_g, f, g, o, own)
                tl.store(cs_s + own_hw, c.to(cs_ptr.dtype.element_ty), mask=own)
                acts_s = _next(acts_s, d, B * 4 * H, REVERSE, RAGGED)
                cs_s = _next(cs_s, d, B * H, REVERSE, RAGGED)
        else:
            r = tl.sigmoid(a0)
            z = tl.sigmoid(x1.to(tl.float32) + b1 + _mm(hk, w1, WT, PRECISION))
            hn = b2 + _mm(hk, w2, WT, PRECISION)
            n = _act_tanh(x2.to(tl.float32) + r * hn, FAST_TANH)
            h_new = n + z * (h_own - n)
            if SAVE:
                _store4(acts_s + act_hw, H, r, z, n, hn, own)
                acts_s = _next(acts_s, d, B * 4 * H, REVERSE, RAGGED)
        if RAGGED:  # y is exactly 0 at a padded step
            y = tl.where(s < lens, h_new, 0.0)
        else:
            y = h_new
        hs_s = _rowwise(_next(hs_s, d, B * H, REVERSE, RAGGED), hs_ptr, _after(tau, REVERSE), B * H, REVERSE, RAGGED)
        tl.store(hs_s + own_hw, y.to(hs_ptr.dtype.element_ty), mask=own)
        x0 = n0
        if G >= 3:
            x1 = n1
            x2 = n2
        if G == 4:
            x3 = n3
        if not SPLIT:
            h = h_new
        if BARRIER:
            spins = _grid_barrier(bar_ptr + pid_b, (i + 1) * n_h, bar_ptr + tl.cdiv(B, BLOCK_B), spins)
    if G == 4:
        tl.store(c_ptr + own_hw, c, mask=own)


@triton.jit(do_not_specialize=["s_start", "tile_b0"])
def rnn_bwd_kernel(
    w_ptr,  # [G*H, H] W_hh
    hs_ptr,  # [T+1, B, H] h0 and h_0 .. h_T-1, laid out as the forward left them
    cs_ptr,  # [T+1, B, H] LSTM c0 and c_0 .. c_T-1, as hs
    acts_ptr,  # [T, B, 4H] gate activations: LSTM i f g o, GRU r z n hn
    dy_ptr,  # [T, B, H] gradient arriving at y
    dg_ptr,  # [T, B, G*H] out: gradient of the recurrent pre-activation W_hh h_{t-1} + b_hh
    dn_ptr,  # [T, B, H] out, GRU: gradient of the input side's n pre-activation
    dh_ptr,  # [B, H] float32 carry: dh_T on entry, dh of the earliest step reached on exit
    dc_ptr,  # [B, H] float32 LSTM carry, as dh_ptr
    len_ptr,  # [B] int32 steps of each row (RAGGED)
    bar_ptr,  # [batch tiles + 1] int32 arrival counters, zeroed, then the error flag (BARRIER)
    s_start,  # latest step of this launch; it runs s_start, s_start - 1, .. down to s_start - n_steps + 1
    n_steps,
    S,  # steps of the whole sequence (the longest row)
    T,
    B,
    H,
    tile_b0,
    max_spins,  # barrier polling budget per program (BARRIER)
    G: tl.constexpr,
    SPLIT: tl.constexpr,
    BARRIER: tl.constexpr,
    REVERSE: tl.constexpr,
    RAGGED: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    H_PAD: tl.constexpr,
    PRECISION: tl.constexpr,
    WT: tl.constexpr,
    FAST_TANH: tl.constexpr,
):
    """Reverse loop over the forward's steps.  Step s: dh_t = dy_t + (dG_{s+1} @ W_hh)[own units] (+ GRU's
    z_{s+1} * dh_{s+1}), then the gate gradients dG_t.  A fused program applies dG_t @ W_hh as soon as it
    has dG_t (S steps); split programs read every unit's dG_{s+1} at the start of step s (after the
    barrier, or in the next launch), so they run one step more, s = -1, which only completes h0's
    gradient.  RAGGED: a padded step (s >= len) reads its saved values as the identity step (gates
    i = o = 0, f = z = 1, h_t = 1 for rnn_tanh), so its dG is exactly 0 and dc passes through; dh passes
    through by one select (LSTM, rnn_tanh) or z = 1 (GRU)."""
    pid_b = tile_b0 + tl.program_id(0)
    n_h = tl.num_programs(1)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ks = tl.arange(0, H_PAD)
    rr, cc, kk, kw = _axes(rows, cols, ks, WT)
    own = (rr < B) & (cc < H)  # [BB, BH] ([BH, BB] when WT, as every tile below)
    own_hw = rr * H + cc
    gate_hw = rr * (G * H) + cc
    gate_full = rr * (G * H) + kk  # [BB, HP] gate 0 of every unit
    act_hw = rr * (4 * H) + cc
    spins = max_spins
    if RAGGED:
        lens = tl.load(len_ptr + rr, mask=rr < B, other=0)  # [BB, 1] ([1, BB] when WT)
        one = 1.0  # a padded step's f, z and rnn_tanh's h_t
    else:
        lens = T
        one = 0.0  # no padded step: the masked lanes (rows >= B) as before

    # W_hh for this program's units, one [HP, BH] tile per gate: (k, j) -> W_hh[g*H + k, cols_j]
    # (WT: its transpose, [BH, HP])
    w_tile = w_ptr + kw * H + cc
    w_mask = (kw < H) & (cc < H)
    w0 = tl.load(w_tile, mask=w_mask, other=0.0)
    if G >= 3:
        w1 = tl.load(w_tile + H * H, mask=w_mask, other=0.0)
        w2 = tl.load(w_tile + 2 * H * H, mask=w_mask, other=0.0)
    if G == 4:
        w3 = tl.load(w_tile + 3 * H * H, mask=w_mask, other=0.0)
        dc = tl.load(dc_ptr + own_hw, mask=own, other=0.0)
        c_at = _plane(_after(_time(s_start, lens, T, REVERSE, RAGGED), REVERSE), B * H)
        # c_t; none for the launch of step -1 alone (stepwise), which only completes dh0
        c_hi = tl.load(cs_ptr + c_at + own_hw, mask=_rows_if(rr, B, s_start >= 0) & (cc < H), other=0.0)
    dh = tl.load(dh_ptr + own_hw, mask=own, other=0.0)  # [BB, BH] fp32
    if REVERSE:
        d = -1  # planes a step of the forward moves; the backward moves the other way
    else:
        d = 1

    # per-step pointers at step s (scalars, or [BB, 1] per row in a ragged reverse batch), moved back a step
    tau = _time(s_start, lens, T, REVERSE, RAGGED)
    hs_s = hs_ptr + _plane(_before(s_start, lens, T, REVERSE, RAGGED), B * H)  # h_{t-1}; h_t is d planes on
    dy_s = dy_ptr + _plane(tau, B * H)
    dg_s = dg_ptr + _plane(tau, B * G * H)
    if G > 1:
        acts_s = acts_ptr + _plane(tau, B * 4 * H)
    if G == 4:
        cs_s = cs_ptr + _plane(_before(s_start, lens, T, REVERSE, RAGGED), B * H)  # c_{t-1}
    if G == 3:
        dn_s = dn_ptr + _plane(tau, B * H)

    for i in range(n_steps):
        s = s_start - i
        tau = _time(s, lens, T, REVERSE, RAGGED)  # used by the per-row pointers only
        hs_s = _rowwise(hs_s, hs_ptr, _before(s, lens, T, REVERSE, RAGGED), B * H, REVERSE, RAGGED)
        dy_s = _rowwise(dy_s, dy_ptr, tau, B * H, REVERSE, RAGGED)
        dg_s = _rowwise(dg_s, dg_ptr, tau, B * G * H, REVERSE, RAGGED)
        if G > 1:
            acts_s = _rowwise(acts_s, acts_ptr, tau, B * 4 * H, REVERSE, RAGGED)
        if G == 4:
            cs_s = _rowwise(cs_s, cs_ptr, _before(s, lens, T, REVERSE, RAGGED), B * H, REVERSE, RAGGED)
        if G == 3:
            dn_s = _rowwise(dn_s, dn_ptr, tau, B * H, REVERSE, RAGGED)
        # this step's saved values first (none at s = -1), so their latency overlaps the recurrent half
        live = _rows_if(rr, B, s >= 0) & (cc < H)
        step_in = _valid(live, s, lens, RAGGED)
        dy = tl.load(dy_s + own_hw, mask=step_in, other=0.0)
        if G == 1:
            h_t_s = _rowwise(hs_s + d * B * H, hs_ptr, _after(tau, REVERSE), B * H, REVERSE, RAGGED)
            h_t = tl.load(h_t_s + own_hw, mask=step_in, other=one).to(tl.float32)
        elif G == 4:
            a_i = tl.load(acts_s + act_hw, mask=step_in, other=0.0).to(tl.float32)
            a_f = tl.load(acts_s + H + act_hw, mask=step_in, other=one).to(tl.float32)
            a_g = tl.load(acts_s + 2 * H + act_hw, mask=step_in, other=0.0).to(tl.float32)
            a_o = tl.load(acts_s + 3 * H + act_hw, mask=step_in, other=0.0).to(tl.float32)
            c_lo = tl.load(cs_s + own_hw, mask=live, other=0.0)  # a padded step's: the c it kept
        else:
            a_r = tl.load(acts_s + act_hw, mask=step_in, other=0.0).to(tl.float32)
            a_z = tl.load(acts_s + H + act_hw, mask=step_in, other=one).to(tl.float32)
            a_n = tl.load(acts_s + 2 * H + act_hw, mask=step_in, other=0.0).to(tl.float32)
            a_hn = tl.load(acts_s + 3 * H + act_hw, mask=step_in, other=0.0).to(tl.float32)
            h_prev = tl.load(hs_s + own_hw, mask=step_in, other=0.0).to(tl.float32)

        if SPLIT:  # dh_t += dG_{s+1} @ W_hh; every unit's dG_{s+1}, from L2 (.cg); none at s = S-1
            after = _rows_if(rr, B, s < S - 1) & (kk < H)
            dg_next = _rowwise(dg_s + d * B * G * H, dg_ptr, _time(s + 1, lens, T, REVERSE, RAGGED), B * G * H,
                               REVERSE, RAGGED) + gate_full
            d0 = tl.load(dg_next, mask=after, other=0.0, cache_modifier=".cg")
            dh += _mm(d0, w0, WT, PRECISION)
            if G >= 3:
                d1 = tl.load(dg_next + H, mask=after, other=0.0, cache_modifier=".cg")
                d2 = tl.load(dg_next + 2 * H, mask=after, other=0.0, cache_modifier=".cg")
                dh += _mm(d1, w1, WT, PRECISION)
                dh += _mm(d2, w2, WT, PRECISION)
            if G == 4:
                d3 = tl.load(dg_next + 3 * H, mask=after, other=0.0, cache_modifier=".cg")
                dh += _mm(d3, w3, WT, PRECISION)

        # gate gradients of step t (no runtime branch: one in the loop makes Triton keep the
        # gradients in replicated dot-operand layouts and spill; step -1 is masked instead)
        dht = dh + dy.to(tl.float32)
        dg_own = dg_s + gate_hw
        ty = dg_ptr.dtype.element_ty
        if G == 1:
            e0 = dht * (1.0 - h_t * h_t)
            if RAGGED:
                dh_new = tl.where(s < lens, 0.0, dht)
            else:
                dh_new = tl.zeros_like(dh)
            tl.store(dg_own, e0.to(ty), mask=live)
        elif G == 4:
            tc = _act_tanh(c_hi.to(tl.float32), FAST_TANH)
            dct = dc + dht * a_o * (1.0 - tc * tc)
            e0 = dct * a_g * a_i * (1.0 - a_i)
            e1 = dct * c_lo.to(tl.float32) * a_f * (1.0 - a_f)
            e2 = dct * a_i * (1.0 - a_g * a_g)
            e3 = dht * tc * a_o * (1.0 - a_o)
            dc = tl.where(s >= 0, dct * a_f, dc)
            c_hi = c_lo
            if RAGGED:
                dh_new = tl.where(s < lens, 0.0, dht)
            else:
                dh_new = tl.zeros_like(dh)
            _store4(dg_own, H, e0, e1, e2, e3, live)
        else:
            dnn = dht * (1.0 - a_z) * (1.0 - a_n * a_n)
            e0 = dnn * a_hn * a_r * (1.0 - a_r)
            e1 = dht * (h_prev - a_n) * a_z * (1.0 - a_z)
            e2 = dnn * a_r
            dh_new = dht * a_z
            tl.store(dn_s + own_hw, dnn.to(ty), mask=live)
            tl.store(dg_own, e0.to(ty), mask=live)
            tl.store(dg_own + H, e1.to(ty), mask=live)
            tl.store(dg_own + 2 * H, e2.to(ty), mask=live)
        if SPLIT:
            dh = tl.where(s >= 0, dh_new, dh)
        else:  # dh_{t-1} += dG_t @ W_hh at once, so no gate gradients are carried between steps
            dh = dh_new + _mm(e0.to(ty), w0, WT, PRECISION)
            if G >= 3:
                dh += _mm(e1.to(ty), w1, WT, PRECISION)
                dh += _mm(e2.to(ty), w2, WT, PRECISION)
            if G == 4:
                dh += _mm(e3.to(ty), w3, WT, PRECISION)
        if BARRIER:
            spins = _grid_barrier(bar_ptr + pid_b, (i + 1) * n_h, bar_ptr + tl.cdiv(B, BLOCK_B), spins)
        hs_s = _next(hs_s, -d, B * H, REVERSE, RAGGED)
        dy_s = _next(dy_s, -d, B * H, REVERSE, RAGGED)
        dg_s = _next(dg_s, -d, B * G * H, REVERSE, RAGGED)
        if G > 1:
            acts_s = _next(acts_s, -d, B * 4 * H, REVERSE, RAGGED)
        if G == 4:
            cs_s = _next(cs_s, -d, B * H, REVERSE, RAGGED)
        if G == 3:
            dn_s = _next(dn_s, -d, B * H, REVERSE, RAGGED)
    tl.store(dh_ptr + own_hw, dh, mask=own)
    if G == 4:
        tl.store(dc_ptr + own_hw, dc, mask=own)

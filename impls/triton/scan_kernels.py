"""Triton kernels of the linear scan h_t = a_t h_{t-1} + b_t over [T, N] (N = B*H columns).

Chunked across T, sequential within a program: the T steps are cut into chunks of CHUNK, one
program per (chunk, column block).  Three launches: ``chunk_scan_kernel`` scans each chunk from a
zero state and writes its end state and the product of its a's; ``carry_kernel`` walks the
chunks in order (T / CHUNK steps) for the state entering each; ``carry_fixup_kernel`` adds
(prod of a up to t within the chunk) * (state entering it) to every step.  REVERSE runs the
same scan over flipped indices (t -> T-1-t): the backward's scan, without
``tl.associative_scan(reverse=True)`` (triton-lang/triton#4362).  dtype-generic: the state is
kept in the arrays' own type (the launcher passes float32 or float64).
"""
import triton
import triton.language as tl


@triton.jit
def _index(t, T, REVERSE: tl.constexpr):
    if REVERSE:
        return T - 1 - t
    return t


@triton.jit
def chunk_scan_kernel(a_ptr, b_ptr, h_ptr, end_ptr, prod_ptr, T, N, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
                      REVERSE: tl.constexpr):
    chunk, block = tl.program_id(0), tl.program_id(1)
    cols = block * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    in_cols = cols < N
    h = tl.zeros([BLOCK], dtype=h_ptr.dtype.element_ty)
    prod = tl.zeros([BLOCK], dtype=h_ptr.dtype.element_ty) + 1
    for s in range(CHUNK):
        t = chunk * CHUNK + s
        mask = in_cols & ((cols * 0 + t) < T)  # [BLOCK]
        offset = _index(t, T, REVERSE).to(tl.int64) * N + cols
        a = tl.load(a_ptr + offset, mask=mask, other=1.0)
        b = tl.load(b_ptr + offset, mask=mask, other=0.0)
        h = a * h + b
        prod = prod * a
        tl.store(h_ptr + offset, h, mask=mask)
    tl.store(end_ptr + chunk * N + cols, h, mask=in_cols)
    tl.store(prod_ptr + chunk * N + cols, prod, mask=in_cols)


@triton.jit
def carry_kernel(end_ptr, prod_ptr, h0_ptr, carry_ptr, n_chunks, N, BLOCK: tl.constexpr):
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    in_cols = cols < N
    state = tl.load(h0_ptr + cols, mask=in_cols, other=0.0)
    for c in range(n_chunks):
        tl.store(carry_ptr + c * N + cols, state, mask=in_cols)  # the state entering chunk c
        prod = tl.load(prod_ptr + c * N + cols, mask=in_cols, other=1.0)
        end = tl.load(end_ptr + c * N + cols, mask=in_cols, other=0.0)
        state = prod * state + end


@triton.jit
def carry_fixup_kernel(a_ptr, h_ptr, carry_ptr, T, N, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
                       REVERSE: tl.constexpr):
    chunk, block = tl.program_id(0), tl.program_id(1)
    cols = block * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    in_cols = cols < N
    carried = tl.load(carry_ptr + chunk * N + cols, mask=in_cols, other=0.0)
    for s in range(CHUNK):
        t = chunk * CHUNK + s
        mask = in_cols & ((cols * 0 + t) < T)  # [BLOCK]
        offset = _index(t, T, REVERSE).to(tl.int64) * N + cols
        carried = carried * tl.load(a_ptr + offset, mask=mask, other=1.0)
        tl.store(h_ptr + offset, tl.load(h_ptr + offset, mask=mask, other=0.0) + carried, mask=mask)

"""Analytical FLOPs and bytes of a configuration, and where a timing stands against the machine.

"Backend A is 2x faster than B" does not say whether A is good.  Each timing
record therefore carries the work it did (``flops``, ``bytes``, from the counts
below) and, once the run's measured ceilings are known, how close it came to
them: ``fraction_of_peak`` against a large matmul's FLOP/s (what the hardware
can do at best) and ``fraction_of_recurrent_roofline``: a lower bound on the
time over the time taken (at most 1).  The bound is the faster of two: the
FLOP/byte roofline at the machine's ceilings (the FLOPs at the large matmul's
rate or the bytes at the large copy's, whichever takes longer), and the chain
of recurrent matmuls alone ([B, H] x [H, G*H] each step, and in training the
[B, G*H] x [G*H, H] of dh at each step back) at the rate measured for that
shape.  The faster of the two, because a fused kernel (oneDNN's LSTM) can beat
the separate step matmul: a rate measured with separate matmuls is no bound.

Counting conventions (one FLOP per multiply or add; a matmul [M, K] x [K, N]
is 2*M*K*N; a sigmoid or tanh counts as one FLOP; a bias add or a reduction
one per element):

* forward, per layer: the input projection over all steps (2*T*B*I*G*H), the
  recurrent matmul at every step (2*T*B*H*G*H), the gate math (bias adds, gate
  sums, nonlinearities, state update; ``FORWARD_GATE_OPS`` per hidden unit).
* backward, term by term: each matmul Y = X W^T needs dX = dY W and
  dW = dY^T X, two matmuls of Y's size (dx and dh0 are part of the runner
  contract, so layer 0's dX is counted too); the gate derivatives and the bias
  reductions (``BACKWARD_GATE_OPS``).
* bytes: the least traffic of a layer-by-layer implementation that keeps
  nothing between passes on chip: each pass reads the weights once, the layer
  input and the initial state, writes the output and the final state; training
  also writes in the forward and reads in the backward the activations the
  backward needs (``SAVED_PER_UNIT``), and the backward reads the output,
  incoming gradient and input, and writes the weight, input and state gradients.

This module is arithmetic (pure functions); the ceilings themselves are measured
by ``rnnbench.measure.machine_ceilings``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ITEMSIZE = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}
GATES = {"rnn_tanh": 1, "lstm": 4, "gru": 3, "mingru": 2, "minlstm": 3}
STATES = {"rnn_tanh": 1, "lstm": 2, "gru": 1, "mingru": 1, "minlstm": 1}  # h (and c) per layer
# Cells whose gates read x_t only: no W_hh, so no recurrent matmul (h_t = a_t h_{t-1} + b_t)
PARALLEL = ("mingru", "minlstm")

# Gate math FLOPs per hidden unit, per batch row, per step.
FORWARD_GATE_OPS = {
    "rnn_tanh": 3 + 1,  # + b_ih, + b_hh, gi + gh; tanh
    "lstm": 3 * 4 + 4 + 3 + 1 + 1,  # bias adds and gate sums on 4 gates; 3 sigmoids + tanh(g); f*c + i*g; tanh(c); o*tanh(c)
    "gru": 2 * 3 + 2 * 2 + 3 + 3,  # b_ih, b_hh on 3 gates; r, z: sum + sigmoid; n: r*hn, + in, tanh; n + z*(h - n)
    "mingru": 2 + 1 + 2 + 1 + 1 + 2,  # b_ih on 2 gates; sigmoid(z); g (compare, add or sigmoid); 1 - z; z*g; a*h + b
    "minlstm": 3 + 2 + 2 + 1 + 2 + 1 + 2,  # b_ih on 3 gates; sigmoid f, i; g; f + i; f/s, i/s; i'*g; a*h + b
}
BACKWARD_GATE_OPS = {
    "rnn_tanh": 1 + 3 + 2,  # dh = dy + dh_next; da = dh*(1 - h^2); db_ih, db_hh
    # dh; do, dtanh(c); dc = dtc*(1 - tc^2) + dc_next; df, di, dg, dc_prev; 4 pre-activations (3 each); db_ih, db_hh
    "lstm": 1 + 2 + 4 + 4 + 4 * 3 + 2 * 4,
    # dh; dn = dh*(1 - z), dz = dh*(h - n), dh*z; da_n = dn*(1 - n^2); dhn, dr; da_r, da_z (3 each); dh_prev sum; db
    "gru": 1 + 5 + 3 + 2 + 2 * 3 + 1 + 2 * 3,
    # dh; da = dh*h, dh_prev = dh*a; dz = db*g - da; da_z (3); da_g = db*z*g' (2); db_ih on 2 gates
    "mingru": 1 + 2 + 2 + 3 + 2 + 2,
    # dh; da, dh_prev; q = db*g; df, di (7, s^2 shared); da_f, da_i (3 each); da_g (3); db_ih on 3 gates
    "minlstm": 1 + 2 + 1 + 7 + 2 * 3 + 3 + 3,
}
# Activations per hidden unit per step that a training forward stores for its backward
# (besides the layer's output, which is stored anyway): LSTM gates i, f, g, o and c;
# GRU r, z, n and W_hn h + b_hn; tanh RNN none (tanh' comes from h itself).
# minGRU / minLSTM: their G pre-activations (every gate is recomputed from them).
SAVED_PER_UNIT = {"rnn_tanh": 0, "lstm": 5, "gru": 4, "mingru": 2, "minlstm": 3}


def _layer_weights(cell: str, G: int, I: int, H: int) -> int:
    """Parameters of one layer and direction: W_ih, W_hh, b_ih, b_hh (W_ih, b_ih for a parallel cell)."""
    return G * H * (I + 1) if cell in PARALLEL else G * H * (I + H) + 2 * G * H


@dataclass(frozen=True)
class Cost:
    """The analytical work of one timed call; ``terms`` holds each FLOP term by name."""

    terms: dict = field(default_factory=dict)
    bytes: int = 0

    @property
    def flops(self) -> int:
        return sum(self.terms.values())

    @property
    def matmul_flops(self) -> int:
        return sum(v for k, v in self.terms.items() if not k.startswith(("gate_math", "elementwise")))


def rnn_cost(cell: str, layers: int, batch: int, seq_len: int, input_size: int, hidden: int,
             mode: str, dtype: str = "float32", directions: int = 1, tokens: int | None = None) -> Cost:
    """FLOPs and least bytes of ``mode`` (forward | train | step | decode) for a stacked RNN (step and
    decode: one step, whatever the context: the state is h and c).

    ``directions`` 2 for a bidirectional model (layer k > 0 then reads 2H inputs); ``tokens`` the valid
    (row, step) pairs of a ragged batch (the sum of its lengths; B*T when None): the least work counts
    only those, so a backend that computes the padding too (padded-with-mask) is charged for it by its
    time, never by a bound it could beat."""
    G, H, B, D = GATES[cell], hidden, batch, directions
    N = B if mode in ("step", "decode") else (B * seq_len if tokens is None else tokens)  # tokens a direction
    train = mode == "train"
    S, n_state = SAVED_PER_UNIT[cell], STATES[cell]
    terms = dict.fromkeys(("input_projection", "recurrent", "gate_math"), 0)
    if train:
        terms.update(dict.fromkeys(("input_projection_backward", "recurrent_backward", "gate_math_backward"), 0))
    elements = 0
    for k in range(layers):
        I = input_size if k == 0 else D * H
        weights = _layer_weights(cell, G, I, H)
        state = n_state * B * H
        recurrent = 0 if cell in PARALLEL else 2 * N * H * G * H
        for _ in range(D):  # each direction is a pass of its own over the layer's input
            terms["input_projection"] += 2 * N * I * G * H
            terms["recurrent"] += recurrent
            terms["gate_math"] += FORWARD_GATE_OPS[cell] * N * H
            elements += weights + N * I + state + N * H + state  # read W, x, h0; write y, h_n
            if train:
                terms["input_projection_backward"] += 2 * (2 * N * I * G * H)  # d(input), dW_ih
                terms["recurrent_backward"] += 2 * recurrent  # dh_prev, dW_hh
                terms["gate_math_backward"] += BACKWARD_GATE_OPS[cell] * N * H
                elements += 2 * S * N * H  # saved activations: written forward, read backward
                # backward reads W, input, output, dy, initial state; writes dW, d(input), d(state)
                elements += 2 * weights + 2 * N * I + 2 * N * H + 2 * state
    return Cost(terms, elements * ITEMSIZE[dtype])


def _shape_of(cfg) -> dict:
    """Directions and valid tokens of a job or a record (dict): ``length_mean`` * B where it has one."""
    def field(name):
        return cfg.get(name) if isinstance(cfg, dict) else getattr(cfg, name, None)

    mean = field("length_mean")
    return {"directions": 2 if field("bidirectional") else 1,
            "tokens": None if mean is None else round(mean * field("batch"))}


# Untimed calls of one configuration besides its timed repeats: the compile/warm-up call and a second
# warm-up; round 0 adds the memory probe's one step and call and the gradient profile's call.
WARMUP_CALLS, FIRST_ROUND_CALLS = 2, 3


def predicted_point_s(per_token_s: float, tokens: float, min_repeats: int, min_time_s: float, max_time_s: float,
                      first_round: bool) -> float:
    """Seconds a configuration will take, from the time per token measured at a shorter T: its calls
    (``rnnbench.measure.repeat``: min_repeats whatever each takes, then on until min_time_s, capped at
    max_time_s; plus the untimed ones) times the tokens a call carries.  Time per token grows with T for
    attention, so this is a lower estimate for a transformer; it decides what a suite skips."""
    call_s = per_token_s * tokens
    timed = max(min_repeats * call_s, min(min_time_s, max_time_s))
    return timed + (WARMUP_CALLS + (FIRST_ROUND_CALLS if first_round else 0)) * call_s


# Transformer elementwise FLOPs, same conventions: a LayerNorm forward is 7 per element (sum, centre,
# square, sum, scale, weight, bias) and 11 backward (dy*w, dw, db, two means, the combination);
# softmax 6 per score (scale, max, subtract, exp, sum, divide) and 3 backward (dP - D, times P,
# scale), plus D = rowsum(dO * O), 2 per output element; GELU 1 forward, 2 backward.
LN_FORWARD, LN_BACKWARD, SOFTMAX_FORWARD, SOFTMAX_BACKWARD = 7, 11, 6, 3


def transformer_cost(dims, batch: int, seq_len: int, mode: str, dtype: str = "float32") -> Cost:
    """FLOPs and least bytes of the causal pre-LN transformer baseline (``impls.transformer``).

    ``dims`` has input_size, d_model, heads, layers, ffn.  Attention counts the
    score pairs a causal mask keeps, T(T+1)/2 per sequence (what a fused kernel
    that skips masked blocks does), and assumes the scores never reach memory;
    ``step`` decodes one position with an empty KV cache (what the timing runs); ``decode`` one
    position after ``seq_len`` cached ones: its query meets seq_len + 1 keys, and the cache is read.
    """
    I, d, heads, L, f = dims.input_size, dims.d_model, dims.heads, dims.layers, dims.ffn
    T = 1 if mode in ("step", "decode") else seq_len
    N = batch * T  # tokens
    # (query, key) pairs kept by the causal mask, per head
    pairs = batch * (seq_len + 1) if mode == "decode" else batch * T * (T + 1) // 2
    params = transformer_params(dims)
    terms = {
        "input_projection": 2 * N * I * d,
        "qkv_out_projection": L * 2 * N * d * 4 * d,
        "attention": L * 2 * (2 * pairs * d),  # QK^T and PV over every head
        "ffn": L * 2 * (2 * N * d * f),
        # input bias + positions; per block 2 LayerNorms, 5 biases, 2 residual adds, GELU, softmax; final LN
        "elementwise": 2 * N * d + L * (N * (2 * LN_FORWARD * d + 5 * d + f + 2 * d + f)
                                        + SOFTMAX_FORWARD * heads * pairs) + LN_FORWARD * N * d,
    }
    # each stage reads its input and writes its output: input projection, L blocks, final norm
    elements = params + N * I + N * d + L * 2 * N * d + 2 * N * d
    if mode == "decode":  # every block reads its cache's k and v (seq_len + 1 positions with the new one)
        elements += L * 2 * batch * (seq_len + 1) * d
    if mode == "train":
        terms.update({f"{k}_backward": 2 * terms[k] for k in ("input_projection", "qkv_out_projection",
                                                              "attention", "ffn")})  # dX and dW / dQ dK dV dP
        terms["elementwise_backward"] = N * d + L * (
            N * (2 * LN_BACKWARD * d + 3 * d + d + f + d + 2 * f + 2 * d + 2 * d)  # LNs, bias grads, GELU', merges, D
            + SOFTMAX_BACKWARD * heads * pairs) + LN_BACKWARD * N * d
        # saved for the backward per token and block: qkv, attention output, log-sum-exp per head,
        # the mid-block residual, the FFN pre-activation, 2 LayerNorms' mean and rstd; final LN's 2
        saved = L * N * (3 * d + d + heads + d + f + 4) + 2 * N
        # backward: weights read, gradients written; each stage re-reads its input, reads the
        # gradient of its output and writes the gradient of its input
        elements += 2 * saved + 2 * params + (N * I + N * d + N * I) + L * 3 * N * d + 3 * N * d
    return Cost(terms, elements * ITEMSIZE[dtype])


def transformer_params(dims) -> int:
    """Parameters of the baseline: input projection, per block qkv, out, FFN and 2 LayerNorms, final LayerNorm."""
    I, d, L, f = dims.input_size, dims.d_model, dims.layers, dims.ffn
    return I * d + d + L * (3 * d * d + 3 * d + d * d + d + 2 * d * f + f + d + 4 * d) + 2 * d


def record_cost(cfg, backend_kind: str, model_dims=None, tokens: int | None = None) -> dict:
    """``flops`` and ``bytes`` for a timing record; a baseline's come from its runner's ``dims``.
    ``tokens``: the valid tokens of the batch (else ``cfg.length_mean`` * B, else B*T)."""
    if backend_kind == "rnn":
        shape = _shape_of(cfg)
        c = rnn_cost(cfg.cell, cfg.layers, cfg.batch, cfg.seq_len, cfg.input_size, cfg.hidden, cfg.mode, cfg.dtype,
                     shape["directions"], shape["tokens"] if tokens is None else tokens)
    elif model_dims is not None:
        c = transformer_cost(model_dims, cfg.batch, cfg.seq_len, cfg.mode, cfg.dtype)
    else:
        return {"flops": None, "bytes": None}
    return {"flops": c.flops, "bytes": c.bytes}


# -- the machine's ceilings ---------------------------------------------------------------


def step_ceiling(ceilings: dict, rec: dict) -> float | None:
    """FLOP/s of the recurrent-shaped matmul measured at this record's B, H, gates and dtype."""
    for m in (ceilings.get(rec.get("device")) or {}).get("recurrent_matmul", []):
        if (m["batch"], m["hidden"], m["gates"], m["dtype"]) == (
                rec.get("batch"), rec.get("hidden"), GATES.get(rec.get("cell")), rec.get("dtype")):
            return m["flops_per_s"]
    return None


def sequential_flops(rec: dict) -> int | None:
    """FLOPs of the steps that must run one after another: the recurrent matmul at every valid step
    of one direction (a reverse direction is a chain of its own, free to run beside it), and in
    training its dh half at every step back (the dW_hh half can be batched over steps)."""
    if rec.get("cell") not in GATES:
        return None
    c = rnn_cost(rec["cell"], rec["layers"], rec["batch"], rec["seq_len"], rec["input_size"], rec["hidden"],
                 rec["mode"], rec["dtype"], tokens=_shape_of(rec)["tokens"])
    return c.terms["recurrent"] + c.terms.get("recurrent_backward", 0) // 2


def time_lower_bound_s(ceilings: dict, rec: dict) -> float | None:
    """The least time this RNN record's work can take on its machine (None where a ceiling is missing)."""
    device = (ceilings or {}).get(rec.get("device")) or {}
    peak = (device.get("matmul_flops_per_s") or {}).get(rec.get("dtype"))
    bandwidth = device.get("copy_bytes_per_s")
    flops, nbytes = rec.get("flops"), rec.get("bytes")
    if not (peak and bandwidth and flops and nbytes):
        return None
    roofline_s = max(flops / peak, nbytes / bandwidth)
    step, chain = step_ceiling(ceilings, rec), sequential_flops(rec)
    return min(roofline_s, chain / step) if step and chain else roofline_s


def complete(rec: dict, ceilings: dict | None) -> dict:
    """Add achieved FLOP/s and the fractions of the ceilings to a timing record (None where unknown)."""
    if rec.get("kind") != "timing":
        return rec
    flops, median = rec.get("flops"), rec.get("median_s")
    ok = rec.get("status") == "ok" and median
    achieved = flops / median if ok and flops else None
    device = (ceilings or {}).get(rec.get("device")) or {}
    peak = (device.get("matmul_flops_per_s") or {}).get(rec.get("dtype"))
    # a transformer has no chain of recurrent steps: the recurrent roofline is the RNNs' alone
    bound = time_lower_bound_s(ceilings, rec) if ok and rec.get("backend_kind") == "rnn" else None
    return {**rec, "flops": flops, "bytes": rec.get("bytes"), "achieved_flops_per_s": achieved,
            "fraction_of_peak": achieved / peak if achieved and peak else None,
            "fraction_of_recurrent_roofline": bound / median if bound else None}


def footprint_bytes(cell: str, layers: int, batch: int, seq_len: int, input_size: int, hidden: int, mode: str,
                    dtype: str = "float32") -> int:
    """An estimate of the memory one configuration holds at once (what a machine must have free).

    On the device, per layer: the weights, the layer input, the hoisted input projection
    ([T, B, G*H]), the output and the states; training adds the saved activations, the weight
    gradients, and the gradients of the input, output and gate pre-activations.  On the host: the
    float64 inputs and output gradient every backend is given (made at full T, even for ``step``).
    A lower bound of what a real backend allocates (workspaces are not counted), so refusing on
    it never refuses what could fit.
    """
    G, H, B, T = GATES[cell], hidden, batch, seq_len
    steps = 1 if mode == "step" else T
    elements = 0
    for k in range(layers):
        I = input_size if k == 0 else H
        weights = _layer_weights(cell, G, I, H)
        elements += weights + steps * B * (I + G * H + H) + 4 * STATES[cell] * B * H
        if mode == "train":
            elements += SAVED_PER_UNIT[cell] * T * B * H + weights + T * B * (I + G * H + H)
    host = 8 * T * B * (input_size + hidden)  # x [T, B, I] and dy [T, B, H] in float64
    return elements * ITEMSIZE[dtype] + host


# attention kernels that write the [B, heads, T, T] scores to memory (the others tile them on chip)
MATERIALIZED_ATTENTION = ("math", "xla")


def transformer_footprint_bytes(dims, batch: int, seq_len: int, mode: str, dtype: str = "float32",
                                scores_in_memory: bool = True) -> int:
    """An estimate of the memory the transformer baseline holds at once, as ``footprint_bytes`` is the RNN's.

    Per block and token: q, k, v, the attention output, two residuals and the FFN's hidden layer;
    where the attention kernel materializes the scores (``MATERIALIZED_ATTENTION``) the [B, heads,
    T, T] scores too: a forward holds one block's (scores and softmax), training keeps every block's
    probabilities for the backward and makes two more there (dP and dS).  Decode: the forward over the
    prefix, and the KV cache.  Host: the float64 inputs and output gradient.
    """
    I, d, heads, L = dims.input_size, dims.d_model, dims.heads, dims.layers
    T = 1 if mode == "step" else seq_len
    per_block = batch * T * (3 * d + d + 2 * d + dims.ffn)
    scores = batch * heads * T * T if scores_in_memory else 0
    kept = L if mode == "train" else 0  # blocks whose activations wait for the backward
    elements = transformer_params(dims) + batch * T * (I + d) + (kept + 2) * (per_block + scores)
    if mode == "decode":
        elements += 2 * L * batch * (T + 1) * d
    return elements * ITEMSIZE[dtype] + 8 * T * batch * (I + d)


def estimated_peak_bytes(cfg, backend_kind: str, model_dims=None, scores_in_memory: bool = True) -> int | None:
    """The memory estimate of one timing configuration (None where unknown: a baseline without dims)."""
    if backend_kind == "rnn":
        return footprint_bytes(cfg.cell, cfg.layers, cfg.batch, cfg.seq_len, cfg.input_size, cfg.hidden, cfg.mode,
                               cfg.dtype)
    if model_dims is None:
        return None
    return transformer_footprint_bytes(model_dims, cfg.batch, cfg.seq_len, cfg.mode, cfg.dtype, scores_in_memory)

"""Every named preset of ``rnnbench run`` and the harness's thresholds, in one place.

A suite is the axes of a product of configurations, the timing settings its
configurations are measured with, the device it runs on when the user names
none, and optional ``extra`` configurations added as they are.  A suite of kind
``training`` (``tasks``) runs the training tasks instead of timings.  A new
preset is one more ``Suite(...)`` passed to ``register``; a new threshold is one
more field of ``Settings``.  Nothing here imports a framework.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# The axes a sweep takes (CLI flags, config files), in the order they are listed.
SWEEP_AXES = ("backends", "cells", "batch", "seq_len", "input_size", "hidden", "layers", "dtype", "mode", "device",
              "bidirectional", "lengths", "threads")
# Shapes for a backend that runs under an interpreter (Triton on a CPU): exactness, not speed.
INTERPRETED_SHAPE = {"batch": 4, "seq_len": 8, "input_size": 8, "hidden": 16}
# ... timed once: the row checks exactness (max_rel_err), its time says nothing about the kernel's speed
INTERPRETED_TIMING = {"min_repeats": 1, "min_time_s": 0.0, "max_time_s": 0.0}


@dataclass(frozen=True)
class Settings:
    """The harness's thresholds; each says why it has its value."""

    # timing (rnnbench.measure): repeats go on until min_time_s and min_repeats have passed, stop at max_time_s
    min_time_s: float = 0.3
    max_time_s: float = 2.0
    min_repeats: int = 5
    # contention (rnnbench.contention): others' CPU time over a timed window, in cores; above this the
    # window is measured again, up to contention_retries times, then kept with contended: true
    contention_threshold: float = 0.2
    contention_retries: int = 3
    timing_timeout_s: float = 300.0  # process/ray executors: a configuration running longer is a timeout
    memory_probe_timeout_s: float = 300.0
    # --metric instructions: one configuration under callgrind (set-up and warm-up run emulated, the
    # counted calls instrumented: tens of times slower than native, more on a loaded machine)
    instructions_timeout_s: float = 1800.0
    # training (rnnbench.train)
    train_timeout_s: float = 600.0
    clip_norm: float = 1.0
    timeout_share: float = 0.8  # the rest is for start-up, so the process executor's kill never comes first
    # an open forget gate at the start (see impls.models): copy T=10 fell to 0.43 nats in 1000 steps with
    # it, to 0.54 in 1200 without (baseline 0.69)
    forget_bias: float = 2.0
    # stability (rnnbench.stability)
    max_profile_points: int = 64
    max_oracle_steps: int = 64
    # comparisons (report, recommend)
    change_factor: float = 1.1  # asv compare's default factor
    p_threshold: float = 0.01  # reachable with 5 repeats a side (the smallest two-sided p is then 0.008)
    short_t_max: int = 128  # "short" sequences in the regime table: T <= this
    reference_backend: str = "torch_cudnn"
    max_distance: float = 2.0  # recommend: doublings; a 4x gap on one axis, or 2x on two, is the farthest used
    crossover_near: float = 2.0  # recommend names an RNN/transformer crossover within this factor of the query's T
    # report: a gradient "reaches" back to the earliest t where ||dL/dx_t|| is still this fraction of its value
    # at T-1 (three decades: well past where an optimizer step can use it)
    gradient_reach_ratio: float = 1e-3
    # measure: a configuration whose estimated memory (rnnbench.cost.estimated_peak_bytes) exceeds this
    # fraction of the device's is unsupported before it runs; the rest is for the OS, the memory probe's
    # fresh process and the estimate's error (and, on this shared 2-core VM, the other users)
    memory_fraction: float = 0.6
    dpi: int = 100  # report figures


SETTINGS = Settings()


@dataclass(frozen=True)
class Suite:
    """A named preset: a product of ``axes`` measured with ``timing``, on ``device`` by default."""

    name: str
    description: str
    axes: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    device: str = "cpu"
    extra: tuple = ()  # configurations added as they are (dicts of job fields)
    grids: tuple = ()  # several products: each dict replaces some of ``axes`` (e.g. a mode with its own batches)
    device_axes: dict = field(default_factory=dict)  # per kind of device (cpu, cuda): axes that replace ``axes``
    # times the sweep visits the grid, each visit shuffled: a comparison tests per-round medians, and
    # needs 5 rounds a side (two runs, rank test) or 8 paired rounds (two backends, signed-rank test); above
    # 1, each round of each backend runs in a fresh process of its own (rnnbench.sweep.batches), in-process at 1
    rounds: int = 1
    kind: str = "timing"  # timing | training | quality


SUITES: dict[str, Suite] = {}


def register(suite: Suite) -> Suite:
    if suite.name in SUITES:
        raise ValueError(f"suite {suite.name!r} is registered twice")
    SUITES[suite.name] = suite
    return suite


register(Suite(
    # One backend per family (the eager loop, torch.nn, the JAX scan, our Triton kernels under the
    # interpreter, ONNX Runtime for inference) and both baselines.  torch_compile (a cold compile costs
    # ~20-40 s a configuration here), the other JAX variants, Flax and flashrnn's CPU reference are left to
    # `--backends` and the committed sets, so the README's main job keeps its budget (3 minutes): `bash
    # dev.sh run` in a fresh clone took 75 s on a quiet 2-core CPU on 2026-12-07, set-up already done.
    "quick", "the default: one backend per family and both baselines, small shapes, about 1.5 minutes on a "
             "quiet 2-core CPU",
    axes={"backends": ["torch_eager", "torch_cudnn", "jax_scan", "triton", "onnxruntime", "transformer_sdpa",
                       "transformer_jax"],
          "cells": ["lstm", "gru"], "batch": [16], "seq_len": [32, 128], "input_size": [32], "hidden": [64],
          "layers": [1], "dtype": ["float32"], "mode": ["forward", "train"], "device": ["cpu"]},
    timing={"min_time_s": 0.2, "max_time_s": 1.0}))
register(Suite(
    # 5 rounds, so that two runs can be compared (rank test on round medians); 5 samples a round at
    # least, extra ones only up to 0.1 s.  Estimated from the committed run of 2026-11-27 (706 s for
    # one round of LSTM and GRU, 116 configurations): a later round repeats build, compile, warm-up
    # and samples but no memory probe, oracle check or gradient profile, about 330 s for both cells;
    # LSTM alone: 370 s + 4 x 165 s = about 17 minutes, the rest of the 20 for re-measures under load.
    # Rounds in processes (issue 27): each round of each backend is a fresh process (imports, a calibration,
    # and in round 0 a forkserver for the memory probes), about 5 s each on a quiet 2-core CPU, 15 backends x 5
    # rounds: about 6 minutes more, so about 23 minutes (estimated; to be measured on a quiet machine).
    "cpu", "the committed CPU result set (LSTM training, 5 rounds, each round of each backend a fresh process: "
           "about 23 minutes)",
    axes={"cells": ["lstm"], "batch": [16, 64], "seq_len": [32, 256], "input_size": [64],
          "hidden": [64, 256], "layers": [1], "dtype": ["float32"], "mode": ["train"], "device": ["cpu"]},
    timing={"min_time_s": 0.1, "max_time_s": 0.5}, rounds=5))
register(Suite(
    "kernels", "GPU kernels (docs/design.md): LSTM grid, plus GRU and tanh RNN at one point",
    axes={"cells": ["lstm"], "batch": [16, 64], "seq_len": [256, 1024], "input_size": None,
          "hidden": [64, 128, 256], "layers": [1], "dtype": ["float32", "bfloat16"], "mode": ["forward", "train"],
          "device": ["cuda"]},
    timing={"min_time_s": 0.2, "max_time_s": 0.5, "min_repeats": 3}, device="cuda",
    extra=tuple({"cell": c, "batch": 64, "seq_len": 1024, "hidden": 128, "dtype": "bfloat16", "mode": "train"}
                for c in ("gru", "rnn_tanh"))))
register(Suite(
    "gpu-check", "the first run on a lent GPU (scripts/gpu_check.sh): 4 LSTM points per backend, each capped",
    # LSTM B=64 T=1024 H=128 bf16, forward and train: the fused path where W_hh fits one SM, at the
    # suite's longest T; extras: H=256 bf16 (the persistent path) and H=64 fp32 (the warp count the
    # offline kernel check fixed).  timeout_s caps one configuration in the process executor.
    axes={"cells": ["lstm"], "batch": [64], "seq_len": [1024], "input_size": None, "hidden": [128],
          "layers": [1], "dtype": ["bfloat16"], "mode": ["forward", "train"], "device": ["cuda"]},
    timing={"min_time_s": 0.1, "max_time_s": 0.3, "min_repeats": 3, "timeout_s": 40.0}, device="cuda",
    extra=({"cell": "lstm", "batch": 64, "seq_len": 1024, "hidden": 256, "dtype": "bfloat16", "mode": "train"},
           {"cell": "lstm", "batch": 64, "seq_len": 1024, "hidden": 64, "dtype": "float32", "mode": "train"})))
RAGGED_BACKENDS = ["torch_cudnn", "torch_cudnn_padded", "torch_eager", "jax_scan", "transformer_sdpa"]
register(Suite(
    # issue 19: what ragged batches and the reverse direction cost each backend.  The backends that take
    # lengths at full speed on a CPU (torch.nn packed and padded-with-mask, the eager loop, the JAX scan)
    # and the SDPA baseline with a key-padding mask (non-causal when bidirectional); torch_cudnn_padded
    # answers unsupported for bidirectional.  2 cells x 2 modes x 2 models x 3 length mixes = 24 a backend.
    # 8 rounds: the packed-vs-padded verdict is a paired signed-rank test over round medians, which needs 8
    # for p < 0.01.  One round took 2.5 minutes here (memory probes, oracle checks and JAX compiles are round
    # 0's); the later rounds time only.  On CUDA our Triton kernels join (issue 30: lengths and the reverse
    # direction as kernel arguments; LSTM and GRU at H=128 fp32 run the persistent path).  Each round of each
    # backend a fresh process (issue 27): 5 backends x 8 rounds x about 5 s of start-up and calibration,
    # about 3.5 minutes more (estimated).
    "ragged", "bidirectional and variable-length batches: LSTM and GRU, B=32 T=128 H=128, lengths full / "
    "uniform:16 / zipf:1.2, uni- and bidirectional, forward and train, 8 rounds, each round of each backend a "
    "fresh process (about 14 minutes)",
    axes={"backends": RAGGED_BACKENDS, "cells": ["lstm", "gru"], "batch": [32], "seq_len": [128], "input_size": None,
          "hidden": [128], "layers": [1], "dtype": ["float32"], "mode": ["forward", "train"], "device": ["cpu"],
          "bidirectional": [False, True], "lengths": ["full", "uniform:16", "zipf:1.2"]},
    device_axes={"cuda": {"backends": RAGGED_BACKENDS + ["triton", "triton_wt", "triton_stepwise"]}},
    timing={"min_time_s": 0.1, "max_time_s": 0.5}, rounds=8))
# The crossover surface's widths on a CPU: H=1024 runs the oneDNN LSTM against the SDPA transformer only
# (the JAX pair's curves at H 64 and 256 show the same shape; at H=1024 they would double the budget).
SURFACE_PAIR = ["torch_cudnn", "transformer_sdpa"]
register(Suite(
    # Where an RNN and a parameter-matched transformer cross: a surface over width H (I = H), T and
    # precision, not a line (docs/design.md "RNN or transformer").  LSTM on the fastest backend of each family
    # here (jax_scan_unroll8 won most rows of the committed cpu run) vs both baselines at H 64 and 256;
    # torch_cudnn vs transformer_sdpa at H=1024, train to T=1024, forward and decode to 4096.  float32 and
    # bfloat16; decode at B 1 and 16, forward and train at B 16.  A point predicted to take over 120 s
    # (from the time per token at the previous T) is recorded unsupported with the estimate.  Slow rows
    # take 3 samples at least, more only up to 0.1 s; one round.  Budget 60 minutes on a 2-core CPU;
    # estimated from the H 64/256 float32 half of it, measured at 620 s on 2026-12-07 (AMD EPYC).
    "crossover", "RNN vs transformer over H and T: LSTM decode (B 1, 16), forward and train (B 16), T 16-4096, "
                 "H 64, 256 and 1024 (I = H), float32 and bfloat16 (at most 60 minutes on a 2-core CPU)",
    axes={"backends": ["torch_cudnn", "jax_scan_unroll8", "transformer_sdpa", "transformer_jax"],
          "cells": ["lstm"], "batch": [16], "seq_len": [16, 64, 256, 1024, 4096], "input_size": None,
          "hidden": [64, 256], "layers": [1], "dtype": ["float32", "bfloat16"], "mode": ["forward", "train"],
          "device": ["cpu"]},
    grids=({"mode": ["decode"], "batch": [1, 16]}, {},
           {"mode": ["decode"], "batch": [1, 16], "hidden": [1024], "backends": SURFACE_PAIR},
           {"mode": ["forward"], "hidden": [1024], "backends": SURFACE_PAIR},
           {"mode": ["train"], "hidden": [1024], "seq_len": [16, 64, 256, 1024], "backends": SURFACE_PAIR}),
    # CUDA: every pair at every width to 2048 and T to 16K (the grids' duplicates collapse): a longer lease
    device_axes={"cuda": {"backends": ["torch_cudnn", "jax_scan_unroll8", "triton", "transformer_sdpa",
                                       "transformer_jax"], "seq_len": [16, 64, 256, 1024, 4096, 16384],
                          "hidden": [64, 256, 1024, 2048]}},
    timing={"min_time_s": 0.1, "max_time_s": 0.4, "min_repeats": 3, "max_point_s": 120.0}))
PARALLEL_T = [16, 64, 256, 1024, 4096]
DECODE_T = [16, 256, 4096]
register(Suite(
    # issue 31: minGRU and minLSTM (gates from x_t only), their sequential loop (torch_eager, jax_minscan)
    # against their parallel scan over T (torch_scan: log space; jax_minscan_assoc: associative_scan), beside
    # the LSTM on torch.nn (oneDNN) at the same H and the SDPA transformer matched in parameters to the LSTM
    # and to the minGRU (its cell field names what it is matched to).  B 16, I = H = 256, float32, one round.
    # Decode: the sequential step (a parallel form has nothing to spread at T=1), the LSTM and the KV cache.
    # 125 configurations; estimate in the README ("Parallel-in-time cells").  torch_scan_compile (a compile
    # per configuration) and triton_minscan (interpreted here) are left to --backends.
    "parallel", "minGRU/minLSTM sequential vs parallel scan, beside LSTM (oneDNN) and the parameter-matched "
                "transformer: B 16, H 256, T 16-4096, forward, train and decode (about 15 minutes on a 2-core CPU)",
    axes={"backends": ["torch_eager", "torch_scan", "jax_minscan", "jax_minscan_assoc"],
          "cells": ["mingru", "minlstm"], "batch": [16], "seq_len": PARALLEL_T, "input_size": None, "hidden": [256],
          "layers": [1], "dtype": ["float32"], "mode": ["forward", "train"], "device": ["cpu"]},
    grids=({}, {"backends": ["torch_cudnn"], "cells": ["lstm"]},
           {"backends": ["transformer_sdpa"], "cells": ["lstm", "mingru"]},
           {"mode": ["decode"], "seq_len": DECODE_T, "backends": ["torch_eager"], "cells": ["mingru", "minlstm"]},
           {"mode": ["decode"], "seq_len": DECODE_T, "backends": ["torch_cudnn"], "cells": ["lstm"]},
           {"mode": ["decode"], "seq_len": DECODE_T, "backends": ["transformer_sdpa"], "cells": ["lstm", "mingru"]}),
    timing={"min_time_s": 0.1, "max_time_s": 0.4, "min_repeats": 3}))
register(Suite(
    "tasks", "short training runs of every task for every RNN backend and the transformer baseline",
    kind="training"))
register(Suite(
    # issue 29: time to quality (MLPerf's rule: training seconds to a stated target on held-out data) and
    # memory depth (the longest T each model learns the copy and adding problems at, as Hochreiter and
    # Schmidhuber swept them).  The grid, and each run's budget, is QUALITY below.  Estimate (from per-step
    # times taken on the 2-core CPU while other jobs ran, scaled down, so to be confirmed by the first quiet
    # run): time to quality 8-10 minutes (24 runs, most stop at their target; a run that misses costs its
    # budget, >= 60 s), memory depth 20-25 minutes (a walk costs its reached lengths, one missed run at its
    # budget, and two more seeds at the boundary).  T 400 and 800 (--seq-len 10,25,50,100,200,400,800) add
    # two longer runs to every walk that reaches T=200: not in the 60-minute default.
    "quality", "time to quality of every task per training backend, and memory depth (copy, adding) per cell "
               "and the transformer (estimated 30-35 minutes on a quiet 2-core CPU)",
    kind="quality"))


@dataclass(frozen=True)
class Quality:
    """The quality suite's grid.  A model is a (cell, backend) pair: a new cell (e.g. a parallel-in-time
    one) joins the memory-depth sweep as one more entry of ``depth_models``."""

    # time to quality: each task at its default setting, LSTM on one backend per family that trains at full
    # speed on a CPU, and the transformer baseline
    backends: tuple = ("torch_cudnn", "torch_eager", "jax_scan", "transformer_sdpa")
    depth_tasks: tuple = ("copy", "adding")
    # the transformer is parameter-matched to the LSTM; minGRU/minLSTM on their parallel scan (torch_scan)
    depth_models: tuple = (("rnn_tanh", "torch_cudnn"), ("lstm", "torch_cudnn"), ("gru", "torch_cudnn"),
                           ("lstm", "transformer_sdpa"), ("mingru", "torch_scan"), ("minlstm", "torch_scan"))
    depth_seq_lens: str = "10,25,50,100,200"
    depth_seeds: int = 3  # at the boundary length
    # a run's budget: max(step_factor x the steps an LSTM needed at the task's shortest length, budget_s)
    step_factor: int = 3
    budget_s: float = 60.0
    eval_every: int = 10  # the resolution of steps_to_target


QUALITY = Quality()


def suite_names() -> list[str]:
    return list(SUITES)


def get(name: str) -> Suite:
    """The suite called ``name``; KeyError naming the valid ones."""
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; valid: {', '.join(SUITES)}")
    return SUITES[name]

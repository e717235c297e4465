"""Synthetic result sets for the report and recommend tests: run folders written through
rnnbench.store.Run, with times from a simple cost model so the right answers are known."""
from __future__ import annotations

import numpy as np

from rnnbench.store import Run

# seconds per call = a * B*T*H*H + b * T (per-step overhead); the baseline adds a T^2 term
COST = {
    "torch_cudnn": ("rnn", 2e-10, 2e-6),
    "torch_eager": ("rnn", 2e-10, 4e-5),
    "jax_scan": ("rnn", 1e-10, 1e-4),  # cheaper arithmetic, dear steps: wins only where B*H*H is large
    "transformer_sdpa": ("baseline", 1e-10, 1e-6),
}
SHAPES = dict(cells=("lstm", "gru"), modes=("forward", "train"), batch=(16, 64), seq_len=(16, 64, 256),
              hidden=(64, 128))
INPUT_SIZE = 32
REPEATS = 7


def model_seconds(backend: str, cell: str, mode: str, batch: int, seq_len: int, hidden: int) -> float:
    kind, a, b = COST[backend]
    gates = {"lstm": 4, "gru": 3}[cell]
    t = a * gates * batch * seq_len * hidden * hidden + b * seq_len
    if kind == "baseline":
        t += a * batch * seq_len * seq_len * hidden
    return t * (3 if mode == "train" else 1)


def timing_record(backend, cell, mode, batch, seq_len, hidden, seconds, rng, *, repeats=REPEATS, noise=0.02,
                  device="cpu", dtype="float32", round=0, round_noise=0.0, **extra) -> dict:
    """One round's record; ``round_noise``: the spread of this round's level (one process's) around ``seconds``."""
    kind = COST.get(backend, ("rnn",))[0]
    level = seconds * np.exp(round_noise * rng.standard_normal()) if round_noise else seconds
    samples = level * np.exp(noise * rng.standard_normal(repeats))  # [repeats]
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    gates = {"lstm": 4, "gru": 3}[cell]
    peak = 4 * batch * seq_len * (gates * hidden if kind == "rnn" else seq_len) * (3 if mode == "train" else 1)
    return {"kind": "timing", "backend": backend, "backend_kind": kind, "framework": "torch",
            "impl_label": extra.pop("impl_label", backend.split("_")[-1]), "device": device, "dtype": dtype,
            "cell": cell, "layers": 1, "batch": batch, "seq_len": seq_len, "input_size": INPUT_SIZE, "hidden": hidden,
            "status": "ok", "message": "", "threads": 2, "matmul_precision": "ieee", "mode": mode,
            "median_s": float(med), "iqr_s": float(q3 - q1), "samples_s": samples.tolist(), "compile_s": 0.01,
            "tokens_per_s": batch * seq_len / float(med), "peak_bytes": peak, "peak_method": "rss_rise_fresh_process",
            "flops": None, "bytes": None, "achieved_flops_per_s": None, "fraction_of_peak": None,
            "fraction_of_recurrent_roofline": None, "round": round, "repeats": repeats, "contention": 0.0, "contended": False,
            **({"max_rel_err": 1e-7} if kind == "rnn" else {"sdpa_kernel": "math"}),
            **extra}


CALIBRATION_S = {"calibration_matmul_s": 0.003, "calibration_loop_s": 0.004}  # a quiet process of this machine


def calibration_record(backend, round, speed, rng, noise=0.02) -> dict:
    """One process's calibration: the machine ``speed`` times slower than CALIBRATION_S, with ``noise``."""
    return {"kind": "calibration", "backend": backend, "round": round, "thread_limit": 0, "pid": 1000 + round,
            "status": "ok", "message": "", "contention": 0.0, "contended": False,
            **{k: v * speed * float(np.exp(noise * rng.standard_normal())) for k, v in CALIBRATION_S.items()}}


def stability_record(backend, cell, batch, seq_len, hidden) -> dict:
    kind = COST[backend][0]
    decay = {"lstm": -0.05, "gru": -0.03}[cell] if kind == "rnn" else 0.0
    t = np.arange(seq_len)
    profile = 10.0 ** (decay * (seq_len - 1 - t)) * (1 + 0.1 * np.cos(t))  # [T]
    return {"kind": "stability", "backend": backend, "backend_kind": kind, "framework": "torch",
            "impl_label": backend, "device": "cpu", "dtype": "float32", "cell": cell, "layers": 1, "batch": batch,
            "seq_len": seq_len, "input_size": INPUT_SIZE, "hidden": hidden, "status": "ok", "message": "",
            "grad_profile": profile[np.unique(np.round(np.linspace(0, seq_len - 1, 64)).astype(int))].tolist(),
            "grad_decay_per_step": decay, "nan_count": 0, "inf_count": 0, "threads": 2, "matmul_precision": "ieee"}


def training_records(task, backend, baseline_metric, rng) -> list[dict]:
    out = []
    for step in range(1, 61):
        loss = baseline_metric * (0.2 + 0.8 * np.exp(-step / 20)) + 0.01 * rng.standard_normal()
        out.append({"kind": "training", "task": task, "backend": backend, "backend_kind": COST[backend][0],
                    "framework": "torch", "impl_label": backend, "device": "cpu", "dtype": "float32",
                    "cell": "lstm", "layers": 1, "batch": 32, "seq_len": 50, "input_size": 8, "hidden": 64,
                    "status": "ok", "message": "", "step": step, "loss": loss, "grad_norm": 1.0,
                    "metric": loss * 1.1 if step % 10 == 0 else None, "baseline_metric": baseline_metric,
                    "metric_name": "mse", "data_sha256": "0" * 64, "step_s": 0.01, "nan_count": 0, "steps": 60,
                    "seed": 0, "threads": 2, "matmul_precision": "ieee", "target_metric": 0.3 * baseline_metric,
                    "budget_s": 0.0, "stop_at_target": True, "depth_walk": False})
    # the run's time-to-quality verdict, on its last record
    out[-1].update(target_reached=True, steps_to_target=50, time_to_target_s=0.5, compile_s=0.0, train_s=0.6)
    return out


def depth_record(task, backend, cell, boundary) -> dict:
    """A memory-depth walk's verdict: reached every length up to ``boundary``, missed the next."""
    lengths = [10, 25, 50, 100]
    reached = [T for T in lengths if T <= boundary]
    return {"kind": "depth", "task": task, "backend": backend, "backend_kind": COST[backend][0],
            "framework": "torch", "impl_label": backend, "device": "cpu", "dtype": "float32", "cell": cell,
            "layers": 1, "batch": 64, "seq_len": 100, "input_size": 64, "hidden": 64, "status": "ok", "message": "",
            "threads": 2, "matmul_precision": "ieee", "seq_lens": "10,25,50,100", "seeds": 3, "steps": 300,
            "budget_s": 60.0, "tried_seq_lens": lengths[:len(reached) + 1], "reached_seq_lens": reached,
            "boundary_seq_len": boundary, "boundary_reached": 3, "boundary_runs": 3, "grad_decay_per_step": -0.01}


def make_run(root, *, machine="synthbox", seed=0, backends=tuple(COST), slower=None, efficiency=False,
             extras=True, shapes=SHAPES, rounds=1, machine_speed=None) -> Run:
    """A run folder like the cpu suite's.  ``slower``: {backend: factor} multiplies that backend's times;
    ``rounds``: each configuration's, each round's level spread by 2% around the cost model;
    ``machine_speed``: the machine ran everything that many times slower, and each (backend, round) process
    recorded its calibration (None: no calibration records, as a run measured in one process)."""
    rng = np.random.default_rng(seed)
    run = Run.create(root, machine, {"cpu_model": "Synthetic CPU", "gpu": {},
                                     "versions": {"torch": "2.13.0", "jax": "0.10.2", "python": "3.11"}})
    slower = {b: f * (machine_speed or 1.0) for b, f in {**dict.fromkeys(backends, 1.0), **(slower or {})}.items()}
    for backend in backends:
        if machine_speed is not None:
            for r in range(rounds):
                run.append(calibration_record(backend, r, machine_speed, rng))
        for cell in shapes["cells"]:
            for mode in shapes["modes"]:
                for b in shapes["batch"]:
                    for t in shapes["seq_len"]:
                        for h in shapes["hidden"]:
                            s = model_seconds(backend, cell, mode, b, t, h) * slower.get(backend, 1.0)
                            extra = {}
                            if efficiency:
                                flops = 2.0 * 4 * b * t * h * (h + INPUT_SIZE)
                                extra = {"flops": flops, "bytes": 1e6, "achieved_flops_per_s": flops / s,
                                         "fraction_of_peak": flops / s / 1e11, "fraction_of_recurrent_roofline": 0.5}
                            for r in range(rounds):
                                run.append(timing_record(backend, cell, mode, b, t, h, s, rng, round=r,
                                                         round_noise=0.02 if rounds > 1 else 0.0, **extra))
                            if mode == "train":
                                run.append(stability_record(backend, cell, b, t, h))
    if extras:
        for task, base in (("copy", 2.3), ("adding", 0.17)):
            for backend in ("torch_cudnn", "transformer_sdpa"):
                for rec in training_records(task, backend, base, rng):
                    run.append(rec)
                run.append(depth_record(task, backend, "lstm", 50 if backend == "torch_cudnn" else 25))
        run.append(timing_record("triton_fused", "lstm", "train", 4, 8, 16, 0.5, rng, impl_label="interpreted"))
        run.append({**timing_record("torch_eager", "lstm", "train", 64, 256, 128, 1.0, rng), "dtype": "float64",
                    "status": "oom", "message": "out of memory", "median_s": None, "samples_s": None})
    return run

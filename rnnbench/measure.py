"""The one timing path (CLI, asv and training all use it) and the memory probes.

Rules (DESIGN.md): warm up first (jit/compile/autotune time goes to
``compile_s``), sync the device around every sample (CUDA events for torch on a
GPU), repeat until a minimum total time and count, keep every sample, report
median and IQR.  Peak memory is the rise during one iteration over what the
built runner already holds: CUDA's ``max_memory_allocated`` after a reset in
process; on a CPU (and for JAX on a GPU) in a fresh process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from .config import Config, backend_identity
from .cost import record_cost

RECORD_PREFIX = "RNNBENCH_RECORD "


@dataclass
class Timing:
    median_s: float
    iqr_s: float
    samples_s: list


def summarize(samples) -> Timing:
    s = np.asarray(samples, dtype=np.float64)
    q1, med, q3 = np.percentile(s, [25, 50, 75])
    return Timing(float(med), float(q3 - q1), [float(v) for v in s])


def repeat(time_once, *, min_repeats: int = 5, min_time_s: float = 0.3, max_time_s: float = 2.0,
           max_repeats: int = 10_000) -> Timing:
    """Call ``time_once() -> seconds`` until min_repeats and min_time_s are both reached (capped)."""
    samples, total = [], 0.0
    while len(samples) < max_repeats:
        dt = time_once()
        samples.append(dt)
        total += dt
        if len(samples) >= min_repeats and total >= min_time_s:
            break
        if total >= max_time_s and len(samples) >= 2:
            break
    return summarize(samples)


def time_callable(fn, sync=lambda: None, warmup: int = 1, **kw) -> tuple[Timing, float]:
    """Time ``fn`` on the host clock after a sync; returns (timing, first-call seconds)."""
    def once():
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    first = once()
    for _ in range(max(0, warmup - 1)):
        once()
    return repeat(once, **kw), first


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise OSError(f"{field} not in /proc/self/status")


def rss_rise(fn) -> int:
    """Rise of peak RSS over the current RSS during one call.

    Linux lets a process reset its RSS high-water mark (``clear_refs`` 5), so the
    imports' and the build's transient peaks do not hide the call's own.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_bytes("VmRSS")
    fn()
    return max(0, _status_bytes("VmHWM") - before)


# -- one configuration ------------------------------------------------------------------------


class Prepared:
    """A built runner with its inputs on the device and the callable that the mode times."""

    def __init__(self, cfg: Config):
        import impls
        from impls import runtime
        from impls.spec import RNNSpec, init_weights, make_inputs

        self.cfg = cfg
        self.backend = impls.get(cfg.backend)
        self.kind = impls.kind_of(cfg.backend)
        runtime.set_tf32(cfg.tf32)
        self.spec = RNNSpec(cfg.cell, cfg.input_size, cfg.hidden, cfg.layers)
        self.weights = init_weights(self.spec, seed=cfg.seed) if self.kind == "rnn" else None
        self.runner = self.backend.build(self.spec, self.weights, cfg.device, cfg.dtype)
        self.out_size = getattr(self.runner, "output_size", cfg.hidden)
        x, state, _ = make_inputs(self.spec, cfg.seq_len, cfg.batch, seed=cfg.seed + 1)
        self.x_host = x
        dy = np.random.default_rng(cfg.seed + 2).standard_normal((cfg.seq_len, cfg.batch, self.out_size))
        r = self.runner
        self.x, self.state, self.dy = r.put(x), r.put(state), r.put(dy)  # made once: no copy is timed
        self.x_t = r.put(x[0])
        self.fn = self._mode_fn(self.x, self.dy)
        # one timestep of the same work: warms the libraries' lazy state before a memory baseline
        self.fn_one_step = self._mode_fn(r.put(x[:1]), r.put(dy[:1]))
        self.compile_s = 0.0
        if hasattr(r, "compile"):  # ahead-of-time compilation (JAX): reported apart, never timed
            t0 = time.perf_counter()
            r.compile(self.x, self.state, self.dy if cfg.mode == "train" else None)
            self.compile_s = time.perf_counter() - t0

    def _mode_fn(self, x, dy):
        r, cfg = self.runner, self.cfg
        return {
            "forward": lambda: r.forward(x, self.state),
            "train": lambda: r.forward_backward(x, self.state, dy),
            "step": lambda: r.step(self.x_t, self.state),
        }[cfg.mode]

    def base_fields(self) -> dict:
        from impls import runtime

        cfg = self.cfg
        return {
            "backend_kind": self.kind, "framework": self.backend.framework, "impl_label": self.runner.impl_label(),
            "threads": runtime.threads(self.backend.framework),
            "matmul_precision": runtime.matmul_precision(self.backend.framework, cfg.device),
        }

    def timer(self):
        from impls.runtime import DeviceTimer

        return DeviceTimer(self.backend.framework, self.cfg.device, self.runner.sync)

    def peak_memory(self, fresh_process: bool) -> tuple[int | None, str]:
        """(peak_bytes, peak_method) of one iteration, by the method valid in this process."""
        from impls import runtime

        cfg, r = self.cfg, self.runner
        if cfg.device.startswith("cuda") and self.backend.framework == "torch":
            runtime.cuda_peak_reset(cfg.device)
            before = runtime.cuda_allocated_bytes(cfg.device)
            self.fn()
            return runtime.cuda_peak_bytes(cfg.device) - before, "cuda_max_allocated_rise"
        if not fresh_process:
            return None, "needs a fresh process"
        if cfg.device.startswith("cuda"):  # JAX on a GPU: its peak counter cannot be reset
            stats = lambda: runtime.xla_memory_stats(cfg.device)  # noqa: E731
            before = stats().get("bytes_in_use", 0)
            self.fn()
            r.sync()
            return stats().get("peak_bytes_in_use", 0) - before, "xla_peak_rise_fresh_process"
        self.fn_one_step()
        r.sync()
        return rss_rise(lambda: (self.fn(), r.sync())), "rss_rise_fresh_process"


def base_record(cfg: Config, kind: str = "timing") -> dict:
    rec = {"kind": kind, **cfg.record_fields, "status": "ok", "message": ""}
    if kind == "timing":
        rec["mode"] = cfg.mode
    return rec


def failure_record(cfg: Config, status: str, message: str, kind: str = "timing") -> dict:
    return {**base_record(cfg, kind), "status": status, "message": message[-2000:], **backend_identity(cfg.backend)}


def classify(exc: BaseException) -> str:
    from impls.runtime import is_out_of_memory
    from impls.spec import Unsupported

    if isinstance(exc, Unsupported):
        return "unsupported"
    return "oom" if is_out_of_memory(exc) else "error"


def measure(cfg: Config, memory: str = "subprocess") -> list[dict]:
    """Records of one configuration: a timing record, and a stability record for mode ``train``.

    memory: ``fresh`` (this process is fresh: probe here), ``subprocess`` (probe in a
    fresh child where the rules need one), or ``skip``.
    """
    try:
        ok, reason = _available(cfg)
        if not ok:
            return [failure_record(cfg, "unsupported", reason)]
        p = Prepared(cfg)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a record
        return [failure_record(cfg, classify(exc), f"{type(exc).__name__}: {exc}")]
    records = []
    rec = {**base_record(cfg), **p.base_fields()}
    try:
        in_process = _memory_in_process(p)
        if memory == "fresh" and not in_process:  # before any iteration: the RSS baseline is clean
            rec["peak_bytes"], rec["peak_method"] = p.peak_memory(fresh_process=True)
        timer = p.timer()
        first = timer.time(p.fn)  # first call: jit, autotune, lazy init
        rec["compile_s"] = p.compile_s + first
        timer.time(p.fn)  # second warm-up, untimed
        if memory != "skip" and in_process:  # after warm-up: lazy workspaces are not the model's
            rec["peak_bytes"], rec["peak_method"] = p.peak_memory(fresh_process=False)
        t = repeat(lambda: timer.time(p.fn), min_repeats=cfg.min_repeats, min_time_s=cfg.min_time_s,
                   max_time_s=cfg.max_time_s)
        rec.update(median_s=t.median_s, iqr_s=t.iqr_s, samples_s=t.samples_s)
        tokens = cfg.batch * (1 if cfg.mode == "step" else cfg.seq_len)
        rec["tokens_per_s"] = tokens / t.median_s if t.median_s > 0 else None
        # flops, bytes; the sweep adds the fractions of the run's ceilings
        rec.update(record_cost(cfg, p.kind, getattr(p.runner, "dims", None)))
        if p.kind == "rnn":
            from .stability import max_rel_err

            rec["max_rel_err"] = max_rel_err(p.runner, p.spec, p.weights, p.x_host)
        if hasattr(p.runner, "sdpa_kernel"):
            rec["sdpa_kernel"] = p.runner.sdpa_kernel()
        if "peak_bytes" not in rec and memory == "subprocess":
            rec["peak_bytes"], rec["peak_method"] = probe_memory_in_child(cfg)
    except Exception as exc:  # noqa: BLE001
        rec.update(status=classify(exc), message=f"{type(exc).__name__}: {exc}"[-2000:])
    records.append(rec)
    if cfg.mode == "train" and rec["status"] == "ok":
        records.append(stability_record(p, rec))
    return records


def stability_record(p: Prepared, timing: dict) -> dict:
    from .stability import gradient_profile

    rec = {**base_record(p.cfg, "stability"), **{k: timing[k] for k in
           ("backend_kind", "framework", "impl_label", "threads", "matmul_precision")}}
    try:
        rec.update(gradient_profile(p.runner, p.x_host, p.out_size, seed=p.cfg.seed))
    except Exception as exc:  # noqa: BLE001
        rec.update(status=classify(exc), message=f"{type(exc).__name__}: {exc}")
    return rec


def _available(cfg: Config) -> tuple[bool, str]:
    import impls

    return impls.available(cfg.backend, cfg.device)


def _memory_in_process(p: Prepared) -> bool:
    return p.cfg.device.startswith("cuda") and p.backend.framework == "torch"


def probe_memory_in_child(cfg: Config, timeout_s: float = 300.0) -> tuple[int | None, str]:
    """Peak memory of one iteration measured in a fresh Python process."""
    cmd = [sys.executable, "-m", "rnnbench.worker", "--memory-only", json.dumps(cfg.to_dict())]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=child_env())
    except subprocess.TimeoutExpired:
        return None, "memory probe timed out"
    for line in proc.stdout.splitlines():
        if line.startswith(RECORD_PREFIX):
            out = json.loads(line[len(RECORD_PREFIX):])
            return out.get("peak_bytes"), out.get("peak_method", "")
    return None, f"memory probe failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}"


def child_env() -> dict:
    """The environment for a fresh measuring process: this one's, with the repo importable."""
    from .store import REPO_ROOT

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env

"""The one timing path (CLI, asv and training all use it) and the memory probes.

Rules (docs/design.md): warm up first (jit/compile/autotune time goes to
``compile_s``), sync the device around every sample (CUDA events for torch on a
GPU), repeat until a minimum total time and count, keep every sample, report
median and IQR.  Peak memory is the rise during one iteration over what the
built runner already holds: CUDA's ``max_memory_allocated`` after a reset in
process; on a CPU (and for JAX on a GPU) in a fresh process.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import contention, cost, ragged
from .config import backend_identity
from .suites import SETTINGS

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
    """Call ``time_once() -> seconds`` min_repeats times whatever each takes, then on until min_time_s
    has passed or max_time_s is spent (the caps bound the extra samples, never the minimum)."""
    samples, total = [], 0.0
    while len(samples) < max_repeats:
        dt = time_once()
        samples.append(dt)
        total += dt
        if len(samples) >= min_repeats and total >= min(min_time_s, max_time_s):
            break
    return summarize(samples)


def timed_window(time_once, cfg) -> tuple[Timing, contention.Window, int]:
    """The samples of one round, re-measured while others used more than the contention threshold
    of the CPU meanwhile, up to ``contention_retries`` times: (timing, its window, re-measures)."""
    for attempt in range(SETTINGS.contention_retries + 1):
        with contention.Window() as window:
            t = repeat(time_once, min_repeats=cfg.min_repeats, min_time_s=cfg.min_time_s, max_time_s=cfg.max_time_s)
        if window.cores <= SETTINGS.contention_threshold:
            break
    return t, window, attempt


# -- the machine's speed, in every measuring process ----------------------------------------------

CALIBRATION_SIZE = 256  # the matmul's n: [n, n] @ [n, n] float64 on one BLAS thread, twice a sample (about 3 ms)
CALIBRATION_LOOP = 50_000  # the Python loop's iterations (about 4 ms)
CALIBRATION_SAMPLES = 5


def calibration_times(samples: int = CALIBRATION_SAMPLES) -> tuple[float, float]:
    """(matmul_s, loop_s): medians of a fixed workload, a NumPy matmul on one BLAS thread (whatever the
    process's thread limit) and a pure Python loop, tens of milliseconds in all.  What moves them between
    two runs moved the machine (clock, neighbours, thermal state), not the code under test."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((CALIBRATION_SIZE, CALIBRATION_SIZE))  # [n, n]

    def matmul():
        t0 = time.perf_counter()
        a @ a
        a @ a
        return time.perf_counter() - t0

    def loop():
        t0 = time.perf_counter()
        total = 0
        for i in range(CALIBRATION_LOOP):
            total += i * i
        return time.perf_counter() - t0

    with threadpool_limits(limits=1, user_api="blas"):
        matmul(), loop()  # warm: BLAS buffers, the interpreter's caches
        return (float(np.median([matmul() for _ in range(samples)])),
                float(np.median([loop() for _ in range(samples)])))


def calibration_record(backend: str, round_: int, thread_limit: int = 0) -> dict:
    """The calibration of this process (``store.CALIBRATION_FIELDS``), timed under a contention window;
    ``backend``, ``round_`` and ``thread_limit`` name the batch of configurations the process runs."""
    with contention.Window() as window:
        matmul_s, loop_s = calibration_times()
    return {"kind": "calibration", "backend": backend, "round": round_, "thread_limit": thread_limit, "pid": os.getpid(),
            "status": "ok", "message": "", "calibration_matmul_s": matmul_s, "calibration_loop_s": loop_s,
            "contention": window.cores, "contended": window.cores > SETTINGS.contention_threshold}


# -- one configuration ------------------------------------------------------------------------


class Prepared:
    """A built runner with its inputs on the device and the callable that the mode times."""

    def __init__(self, cfg, weights=None):
        """``weights``: canonical weights of cfg's spec (a user's model: recommend --measure); default seeded."""
        import impls
        from impls import runtime
        from impls.runner import hook
        from impls.spec import RNNSpec, init_weights, make_inputs

        self.cfg = cfg
        self.backend = impls.get(cfg.backend)
        self.kind = impls.kind_of(cfg.backend)
        runtime.set_tf32(cfg.tf32)
        self.spec = RNNSpec(cfg.cell, cfg.input_size, cfg.hidden, cfg.layers, bidirectional=cfg.bidirectional)
        # [B] or None: drawn from the configuration alone, so the same for every backend
        self.lengths = ragged.draw(cfg.lengths, cfg.seq_len, cfg.batch, cfg.seed)
        if weights is None and self.kind == "rnn":
            weights = init_weights(self.spec, seed=cfg.seed)
        self.weights = weights
        self.runner = r = self.backend.build(self.spec, self.weights, cfg.device, cfg.dtype)
        self.hook = lambda name: hook(r, name)  # noqa: E731 - the runner's optional hooks, with defaults
        self.out_size = self.hook("output_size")()
        self._check_fits()  # before any input exists: what cannot fit is unsupported, with the estimate
        decode = cfg.mode == "decode"
        # decode: the prefix x[:seq_len] and the token x[seq_len] the timed step reads
        x, state, _ = make_inputs(self.spec, cfg.seq_len + decode, cfg.batch, seed=cfg.seed + 1)  # [T(+1), B, I]
        self.x_host = x
        dy = np.random.default_rng(cfg.seed + 2).standard_normal((cfg.seq_len, cfg.batch, self.out_size))
        self.x, self.state, self.dy = r.put(x), r.put(state), r.put(dy)  # made once: no copy is timed
        self.x_t = r.put(x[cfg.seq_len] if decode else x[0])
        self.decoder = self.state_bytes = None
        if decode:  # the state after the prefix, built once here, outside any timing (impls.decode)
            self.decoder = self.hook("decoder")(x[:cfg.seq_len], state)
            self.state_bytes = self.decoder.state_bytes
        self.fn = self._mode_fn(self.x, self.dy, self.lengths)
        # one timestep of the same work: warms the libraries' lazy state before a memory baseline
        self.fn_one_step = self._mode_fn(r.put(x[:1]), r.put(dy[:1]), None if self.lengths is None else
                                         np.minimum(self.lengths, 1))
        t0 = time.perf_counter()  # ahead-of-time compilation (JAX): reported apart, never timed
        if not decode:  # a decode step compiles at its first call (that goes to compile_s too)
            self.hook("compile")(self.x, self.state, self.dy if cfg.mode == "train" else None)
        self.compile_s = time.perf_counter() - t0
        self.memory_probe = self.hook("memory_probe")()

    def _mode_fn(self, x, dy, lengths):
        r, cfg = self.runner, self.cfg
        ragged_batch = {} if lengths is None else {"lengths": lengths}  # a full batch calls as before lengths existed
        return {
            "forward": lambda: r.forward(x, self.state, **ragged_batch),
            "train": lambda: r.forward_backward(x, self.state, dy, **ragged_batch),
            "step": lambda: self.hook("step")(self.x_t, self.state),
            "decode": lambda: self.decoder.step_after_prefix(self.x_t),
        }[cfg.mode]

    def _check_fits(self) -> None:
        """Unsupported, naming the estimate, where the configuration's estimated memory exceeds
        ``SETTINGS.memory_fraction`` of what the device has available."""
        from impls import runtime
        from impls.spec import Unsupported

        scores = self.hook("attention_kernel")() in cost.MATERIALIZED_ATTENTION
        need = cost.estimated_peak_bytes(self.cfg, self.kind, getattr(self.runner, "dims", None), scores)
        free, where = runtime.available_memory(self.cfg.device)
        if need is not None and free is not None and need > SETTINGS.memory_fraction * free:
            raise Unsupported(f"estimated memory {need / 2**30:.3g} GiB exceeds {SETTINGS.memory_fraction:.0%} of "
                              f"the {free / 2**30:.3g} GiB available on {self.cfg.device} ({where})")

    def base_fields(self) -> dict:
        from impls.runner import timed

        return {
            "backend_kind": self.kind, "framework": self.backend.framework, "impl_label": self.runner.impl_label(),
            "threads": self.hook("threads")(), "matmul_precision": self.hook("matmul_precision")(),
            "ranked": timed(self.backend, self.cfg.device, self.cfg.cell)[0],  # False: never ranked (report, recommend)
            "param_count": self.param_count(),
            # minGRU/minLSTM: whether the backend runs the recurrence as a parallel scan over T or step by step
            **({"scan_form": getattr(self.backend, "scan_form", "sequential")} if self.cfg.cell in cost.PARALLEL
               else {}),
        }

    def param_count(self) -> int:
        """The model's parameters: the RNN's canonical weights, or the baseline's (matched to within 10%)."""
        dims = getattr(self.runner, "dims", None)
        return int(dims.param_count()) if dims is not None else self.spec.param_count()

    def timer(self):
        return self.hook("timer")()

    def peak_memory(self, fresh_process: bool) -> tuple[int | None, str]:
        """(peak_bytes, peak_method) of one iteration, by the runner's probe, where it is valid."""
        probe = self.memory_probe
        if not (probe.in_process or fresh_process):
            return None, "needs a fresh process"
        return probe.peak(self.fn, self.fn_one_step), probe.method


def base_record(cfg, kind: str = "timing") -> dict:
    rec = {"kind": kind, **cfg.record_fields, "status": "ok", "message": ""}
    if kind in ("timing", "instructions"):
        rec["mode"] = cfg.mode
    if kind == "instructions":  # the figure it holds (rnnbench.instructions); a timing record's is time
        rec["metric"] = "instructions"
    return rec


def failure_record(cfg, status: str, message: str, kind: str = "timing") -> dict:
    """A record of a configuration that did not finish; a timing one has the cost fields, as None."""
    rec = {**base_record(cfg, kind), "status": status, "message": message[-2000:], **backend_identity(cfg.backend)}
    return cost.complete(rec, None)


def classify(exc: BaseException) -> str:
    from impls.runtime import is_out_of_memory
    from impls.spec import Unsupported

    if isinstance(exc, Unsupported):
        return "unsupported"
    return "oom" if is_out_of_memory(exc) else "error"


def measure(cfg, memory: str = "subprocess", ceilings: dict | None = None) -> list[dict]:
    """Complete records of one configuration: a timing record, and a stability record for mode ``train``.

    memory: ``fresh`` (this process is fresh: probe here), ``subprocess`` (probe in a
    fresh child where the rules need one), or ``skip``.  ``ceilings``: the machine's
    (``machine_ceilings``); by default read from the cache, measured in a child on a miss.
    """
    try:
        ok, reason = _available(cfg)
        if ok:
            ok, reason = _features(cfg)
        if not ok:
            return [failure_record(cfg, "unsupported", reason)]
        p = Prepared(cfg)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a record
        return [failure_record(cfg, classify(exc), f"{type(exc).__name__}: {exc}")]
    records = []
    rec = {**base_record(cfg), **p.base_fields()}
    try:
        in_process = p.memory_probe.in_process
        if memory == "fresh" and not in_process:  # before any iteration: the RSS baseline is clean
            rec["peak_bytes"], rec["peak_method"] = p.peak_memory(fresh_process=True)
        timer = p.timer()
        first = timer.time(p.fn)  # first call: jit, autotune, lazy init
        rec["compile_s"] = p.compile_s + first
        timer.time(p.fn)  # second warm-up, untimed
        if memory != "skip" and in_process:  # after warm-up: lazy workspaces are not the model's
            rec["peak_bytes"], rec["peak_method"] = p.peak_memory(fresh_process=False)
        t, window, remeasured = timed_window(lambda: timer.time(p.fn), cfg)
        rec["impl_label"] = p.runner.impl_label()  # asked again now that it has run (packed input, launches)
        rec.update(median_s=t.median_s, iqr_s=t.iqr_s, samples_s=t.samples_s, repeats=len(t.samples_s),
                   contention=window.cores, contended=window.cores > SETTINGS.contention_threshold,
                   remeasured=remeasured)
        one_position = cfg.mode in ("step", "decode")  # a call makes one token per row
        padded = cfg.batch * (1 if one_position else cfg.seq_len)
        valid = cfg.batch if one_position else ragged.valid_tokens(p.lengths, cfg.seq_len, cfg.batch)
        if p.state_bytes is not None:
            rec["state_bytes"] = int(p.state_bytes)  # what the decode step reads: h/c, or the filled KV cache
        rec["tokens_per_s"] = valid / t.median_s if t.median_s > 0 else None  # valid tokens only
        rec["padded_tokens_per_s"] = padded / t.median_s if t.median_s > 0 else None
        rec.update(cost.record_cost(cfg, p.kind, getattr(p.runner, "dims", None), valid))  # flops, bytes
        if p.kind == "rnn":
            from .stability import max_rel_err

            # exactness is the configuration's: checked in round 0
            rec["max_rel_err"] = (max_rel_err(p.runner, p.spec, p.weights, p.x_host, p.lengths)
                                  if getattr(cfg, "round", 0) == 0 else None)
        attention = p.hook("attention_kernel")()
        if attention is not None:
            rec["sdpa_kernel"] = attention
        if "peak_bytes" not in rec and memory == "subprocess":
            rec["peak_bytes"], rec["peak_method"] = probe_memory_in_child(cfg)
        elif "peak_bytes" not in rec:
            rec["peak_bytes"], rec["peak_method"] = None, "skipped"
    except Exception as exc:  # noqa: BLE001
        rec.update(status=classify(exc), message=f"{type(exc).__name__}: {exc}"[-2000:])
    if ceilings is None and rec["status"] == "ok":  # after the timing: a miss is measured in a child
        ceilings = ceilings_or_none([cfg])
    records.append(cost.complete(rec, ceilings))
    # gradient flow over the whole T, once per configuration (round 0)
    if cfg.mode == "train" and rec["status"] == "ok" and p.lengths is None and getattr(cfg, "round", 0) == 0:
        records.append(stability_record(p, rec))
    return records


def stability_record(p: Prepared, timing: dict) -> dict:
    from .stability import gradient_profile

    rec = {**base_record(p.cfg, "stability"), **{k: timing[k] for k in
           ("backend_kind", "framework", "impl_label", "threads", "matmul_precision")}}
    try:
        rec.update(gradient_profile(p.runner, p.x_host, p.out_size, seed=p.cfg.seed, bidirectional=p.spec.bidirectional,
                                    reverse_from=p.spec.hidden_size if p.kind == "rnn" else None))
    except Exception as exc:  # noqa: BLE001
        rec.update(status=classify(exc), message=f"{type(exc).__name__}: {exc}")
    return rec


def _available(cfg) -> tuple[bool, str]:
    import impls

    return impls.available(cfg.backend, cfg.device)


def _features(cfg) -> tuple[bool, str]:
    """(ok, reason): what the configuration needs of the backend beyond a plain batch, asked before
    anything is built (the backend's declared capabilities), so a backend never silently ignores it."""
    import impls
    from impls.runner import supports

    if cfg.mode in ("step", "decode") and cfg.lengths != ragged.FULL:
        return False, f"{cfg.mode} times one timestep of every row: it takes no lengths"
    if cfg.mode in ("step", "decode") and cfg.bidirectional:
        return False, f"{cfg.mode} is unidirectional only: a bidirectional model has no next step"
    needed = [f for f, on in (("bidirectional", cfg.bidirectional), ("lengths", cfg.lengths != ragged.FULL)) if on]
    return supports(impls.get(cfg.backend), cfg.device, cfg.cell, features=needed)


def probe_memory_in_child(cfg, timeout_s: float = SETTINGS.memory_probe_timeout_s) -> tuple[int | None, str]:
    """Peak memory of one iteration measured in a fresh process that has run nothing else.

    The process is forked from a server process started once per sweep (``python -m rnnbench.worker
    --probe-server``) that has only imported the registered frameworks and plugins, so each probe is
    a new process with its own address space without paying a new interpreter's imports (2-4 s a
    configuration).  Not multiprocessing's forkserver: its children import the user's ``__main__``
    again, so a script without a ``__main__`` guard would run its sweep once per probe.
    """
    import impls

    portable, reason = impls.portable(cfg.backend)
    if not portable:
        return None, f"memory probe skipped: {reason}"
    global _PROBE_SERVER
    if _PROBE_SERVER is None or _PROBE_SERVER.poll() is not None:
        _PROBE_SERVER = subprocess.Popen([sys.executable, "-m", "rnnbench.worker", "--probe-server"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         env=child_env(), start_new_session=True, bufsize=0)
    server = _PROBE_SERVER
    try:
        server.stdin.write((json.dumps(cfg.to_dict()) + "\n").encode())
        line = _read_record_line(server.stdout.fileno(), timeout_s)
    except OSError as exc:  # the server died: the next probe starts another
        line = None
        _stop_probe_server()
        return None, f"memory probe failed: the probe server is gone ({exc})"
    if line is None:
        _stop_probe_server()
        return None, "memory probe timed out"
    answer = json.loads(line)
    return answer["peak_bytes"], answer["peak_method"]


_PROBE_SERVER = None


def _read_record_line(fd: int, timeout_s: float) -> str | None:
    """The next RECORD_PREFIX line on ``fd`` (other output is skipped), or None after ``timeout_s``."""
    import select

    deadline, buf = time.monotonic() + timeout_s, b""
    while True:
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            if line.startswith(RECORD_PREFIX.encode()):
                return line[len(RECORD_PREFIX):].decode()
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            raise OSError("its output ended")
        buf += chunk


def _stop_probe_server() -> None:
    """Kill the probe server and the probe it forked (one session: they go together)."""
    global _PROBE_SERVER
    if _PROBE_SERVER is not None:
        import signal

        try:
            os.killpg(_PROBE_SERVER.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _PROBE_SERVER.wait()
        _PROBE_SERVER = None


def child_env(threads: int = 0) -> dict:
    """The environment for a fresh measuring process: this one's, with the repo importable, and
    ``threads`` intra-op threads for every framework (``impls.runtime.thread_env``; 0: as this one's)."""
    from impls.runtime import thread_env

    from .store import REPO_ROOT

    env = thread_env(threads) if threads else dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


# -- the machine's ceilings: measured once per machine in a child process, then cached ------------


def ceiling_plan(configs) -> dict:
    """Per device: the dtypes to measure a large matmul in and the recurrent shapes of the configurations.

    CUDA always gets float32, bfloat16 and float16 (cheap there, and what a reader
    compares against); a CPU gets the dtypes its configurations use.
    """
    import impls

    plan: dict = {}
    for cfg in configs:
        p = plan.setdefault(cfg.device, {"dtypes": set(), "shapes": set(), "tf32": False})
        p["dtypes"].add(cfg.dtype)
        p["tf32"] |= cfg.tf32
        if impls.kind_of(cfg.backend) == "rnn" and cfg.cell not in cost.PARALLEL:  # no recurrent matmul
            p["shapes"].add((cfg.batch, cfg.hidden, cost.GATES[cfg.cell], cfg.dtype))
    for device, p in plan.items():
        if device.startswith("cuda"):
            p["dtypes"] |= {"float32", "bfloat16", "float16"}
        p["dtypes"], p["shapes"] = sorted(p["dtypes"]), sorted(p["shapes"])
    return plan


def cache_dir() -> Path:
    """``$RNNBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnbench``, else ``~/.cache/rnnbench``."""
    if os.environ.get("RNNBENCH_CACHE_DIR"):
        return Path(os.environ["RNNBENCH_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnnbench"


def ceilings_cache_file(device: str, tf32: bool) -> Path:
    """One file per machine, instrument versions, device and TF32 setting; dtypes and shapes inside."""
    from importlib.metadata import PackageNotFoundError, version

    from .store import default_machine

    def installed(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    key = {"machine": default_machine(), "device": device, "tf32": tf32, "python": sys.version.split()[0],
           **{name: installed(name) for name in ("torch", "numpy")}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"ceilings-{key['machine']}-{device.replace(':', '_')}-{digest}.json"


def _missing(cached: dict, dtypes, shapes) -> tuple[list, list]:
    have_shapes = {(m["batch"], m["hidden"], m["gates"], m["dtype"]) for m in cached.get("recurrent_matmul", [])}
    return ([d for d in dtypes if d not in cached.get("matmul_flops_per_s", {})],
            [tuple(s) for s in shapes if tuple(s) not in have_shapes])


def machine_ceilings(configs) -> dict:
    """device -> measured ceilings covering the configurations: from the cache, with what it lacks
    measured in a fresh child process (so no ceiling matmul runs in, or leaves its allocator state
    to, the process that times) and added to the cache."""
    from .store import write_json_atomic

    out = {}
    for device, p in ceiling_plan(configs).items():
        path = ceilings_cache_file(device, p["tf32"])
        cached = json.loads(path.read_text()) if path.is_file() else {}
        dtypes, shapes = _missing(cached, p["dtypes"], p["shapes"])
        if dtypes or shapes or not cached:
            fresh = _ceilings_in_child(device, dtypes or p["dtypes"][:1], shapes, p["tf32"])
            cached = {**cached, **{k: v for k, v in fresh.items() if k not in ("matmul_flops_per_s", "recurrent_matmul")},
                      "matmul_flops_per_s": {**cached.get("matmul_flops_per_s", {}), **fresh["matmul_flops_per_s"]},
                      "recurrent_matmul": cached.get("recurrent_matmul", []) + fresh["recurrent_matmul"]}
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, cached)
        keep = {tuple(s) for s in p["shapes"]}
        out[device] = {**cached, "matmul_flops_per_s": {d: cached["matmul_flops_per_s"][d] for d in p["dtypes"]},
                       "recurrent_matmul": [m for m in cached["recurrent_matmul"]
                                            if (m["batch"], m["hidden"], m["gates"], m["dtype"]) in keep]}
    return out


def ceilings_or_none(configs) -> dict | None:
    """The ceilings covering the configurations, or None (fractions unknown) when they cannot be
    measured: one warning line, and the run goes on."""
    try:
        return machine_ceilings(configs)
    except Exception as exc:  # noqa: BLE001 - a record without fractions beats no record
        print(f"warning: machine ceilings unavailable, records carry no fraction of peak ({exc})", file=sys.stderr)
        return None


def _ceilings_in_child(device: str, dtypes, shapes, tf32: bool) -> dict:
    plan = {"device": device, "dtypes": list(dtypes), "shapes": [list(s) for s in shapes], "tf32": tf32}
    cmd = [sys.executable, "-m", "rnnbench.worker", "--ceilings", json.dumps(plan)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SETTINGS.memory_probe_timeout_s,
                          env=child_env())
    for line in proc.stdout.splitlines():
        if line.startswith(RECORD_PREFIX):
            return json.loads(line[len(RECORD_PREFIX):])
    raise RuntimeError(f"ceiling measurement failed in a child process (exit status {proc.returncode}): "
                       f"{_last_error_line(proc.stderr)}")


def _last_error_line(stderr: str) -> str:
    """The exception line of a child's traceback (``SomeError: why``), else its last line of text."""
    lines = [line.strip() for line in stderr.splitlines() if any(ch.isalnum() for ch in line)]
    errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception|Interrupt|Exit)\b", line)]
    return (errors or lines or ["no output"])[-1]


def measure_ceilings_here(device: str, dtypes, shapes, tf32: bool = False) -> dict:
    """The ceilings measured in this process (the child ``machine_ceilings`` starts)."""
    from impls import ceilings

    def fastest_s(fn, sync):
        """A ceiling is the best the machine did: the fastest sample (a busy neighbour only slows samples)."""
        timer = ceilings.torch_timer(device, sync)
        timer.time(fn)  # warm-up: allocator, BLAS threads, cuBLAS handles
        return min(repeat(lambda: timer.time(fn), min_repeats=10, min_time_s=0.05, max_time_s=0.5).samples_s)

    return ceilings.measure_ceilings(device, dtypes, [tuple(s) for s in shapes], fastest_s, tf32=tf32)

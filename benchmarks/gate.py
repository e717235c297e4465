"""The regression gate: one timed point per backend family and mode, sized for CI.

asv runs today's benchmarks against each old build, so this module reaches the project only
through what every commit of main has had since the foundation: ``impls.get(name).build(spec,
weights, device, dtype)``, the runner's ``put`` / ``forward`` / ``forward_backward`` / ``sync``,
``impls.names``, ``impls.available`` and ``impls.spec``.  It imports nothing from ``rnnbench``
(the harness moves) and nothing from ``benchmarks.common`` (which does).  A backend a commit does
not register, or that this machine cannot run, is skipped (n/a) at that commit.

Enough samples to gate on (``asv continuous --factor 1.25 --split``): 5 per round, 8 rounds in
processes of their own (asv interleaves base's and head's), each sample averaging calls until it lasts
50 ms: the spread that moves a whole process is in the samples (scripts/asv_aa.sh measures the factor).

``Instructions`` counts the same calls under valgrind's callgrind (deterministic, so it gates at a
factor of 1.02): all of a commit's points in one ``setup_cache``, torch's in one process under
valgrind and JAX's in one of its own, through ``rnnbench/callgrind.py`` of this checkout, loaded by
path (standard library only), so every old commit is counted by today's code.
"""
import json
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import impls
from impls.spec import RNNSpec, Unsupported, init_weights, make_inputs

# One backend per family: eager torch, torch.nn (cuDNN / ATen-oneDNN), JAX lax.scan.  Not our Triton
# kernel: the gate is sized for CPU runners, where Triton runs under its interpreter (exact, but its
# speed means nothing) and each skipped point still costs a process per round; backends.Speed times
# it on a GPU (the GPU workflow), and so the transformer baselines, which are no RNN backend.
BACKENDS = ["torch_eager", "torch_cudnn", "jax_scan"]
MODES = ["forward", "train"]
# One shape, the same on every machine and every commit, so that a history means one thing.
CELL, SEQ_LEN, BATCH, INPUT_SIZE, HIDDEN = "lstm", 64, 16, 64, 128


def device() -> str:
    """The GPU when torch sees one, else the CPU (torch_eager is registered at every commit)."""
    return "cuda" if impls.available("torch_eager", "cuda")[0] else "cpu"


def _skip_unless_runnable(backend: str, device: str) -> None:
    if backend not in impls.names():
        raise NotImplementedError(f"{backend} is not registered at this commit")
    ok, reason = impls.available(backend, device)
    if not ok:
        raise NotImplementedError(reason)
    if not _timed(backend, device):
        raise NotImplementedError(f"{backend} on {device}: exactness only, not timed as speed")


def _timed(backend: str, device: str) -> bool:
    """Its timings mean speed: the ``timed`` its ``capabilities(device)`` declares for the gate's cell
    (a backend that declares nothing is timed); on a commit before that contract, not ``interpreted_on``."""
    b = impls.get(backend)
    declared = getattr(b, "capabilities", None)
    if declared is None:
        return not getattr(b, "interpreted_on", lambda _: False)(device)
    support = declared(device).get(CELL)
    return support is None or support.timed


class Gate:
    """One forward (no graph) or one forward + backward of an LSTM, T=64 B=16 I=64 H=128 float32."""

    params = (BACKENDS, MODES)
    param_names = ["backend", "mode"]
    repeat = 5
    rounds = 8
    sample_time = 0.05
    warmup_time = 0.2
    timeout = 300  # a loaded shared runner: a point that is slow, not hung

    def setup(self, backend, mode):
        where = device()
        _skip_unless_runnable(backend, where)
        spec = RNNSpec(CELL, INPUT_SIZE, HIDDEN)
        try:
            self.runner = impls.get(backend).build(spec, init_weights(spec), where, "float32")
        except Unsupported as exc:
            raise NotImplementedError(str(exc)) from exc
        x, _, dy = make_inputs(spec, SEQ_LEN, BATCH)  # x [T, B, I], dy [T, B, H]
        self.x, self.dy = self.runner.put(x), self.runner.put(dy)
        self.call = self._forward if mode == "forward" else self._train
        for _ in range(2):  # the first calls compile (JAX) or allocate: never timed
            self.time_iteration(backend, mode)

    def _forward(self):
        return self.runner.forward(self.x)

    def _train(self):
        return self.runner.forward_backward(self.x, None, self.dy)

    def time_iteration(self, backend, mode):
        self.call()
        self.runner.sync()



def _callgrind():
    """``rnnbench/callgrind.py`` of this checkout (the one whose benchmarks asv runs), not the commit's."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "rnnbench" / "callgrind.py"
    spec = importlib.util.spec_from_file_location("rnnbench_gate_callgrind", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


COUNTS_PREFIX = "RNNBENCH_GATE_COUNTS "
# The processes under valgrind and the CPU seconds each may use (torch's about 4 min, start-up included;
# JAX compiles under emulation).  CPU time, not wall time: on this 2-core machine at load 20, a wall-time
# budget of 30 min killed torch's process after 1.6 min of CPU.  A process past its budget leaves its
# points n/a, saying so.
PROCESSES = [(["torch_eager", "torch_cudnn"], 600), (["jax_scan"], 600)]


def count_here(backends) -> dict:
    """In the process under callgrind: 'backend mode' -> instructions per call, or why it did not run."""
    collector = _callgrind().Collector(tempfile.mkdtemp(prefix="rnnbench-gate-helper-"))
    counts = {}
    for backend in backends:
        for mode in MODES:
            gate = Gate()
            try:
                gate.setup(backend, mode)  # the timed gate's own set-up and warm-up calls
            except NotImplementedError as exc:
                counts[f"{backend} {mode}"] = str(exc)
                continue
            counts[f"{backend} {mode}"] = collector.count(lambda: gate.time_iteration(backend, mode))[0]
    return counts


def count_under_valgrind(backends, budget_s: float) -> dict:
    """The backends' points counted in one fresh process under valgrind (its start-up paid once), which
    may use ``budget_s`` seconds of CPU (asv's timeout of setup_cache bounds the wall time)."""
    callgrind = _callgrind()
    problem = callgrind.setup_problem()
    if problem:
        return {f"{b} {m}": problem for b in backends for m in MODES}
    with tempfile.TemporaryDirectory(prefix="rnnbench-gate-") as out_dir:
        cmd = callgrind.command(out_dir, [sys.executable, str(Path(__file__).resolve()), *backends])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=callgrind.environment(out_dir),
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CPU, (budget_s, budget_s + 10)))
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        why = f"not counted within its budget of {budget_s:.0f} CPU seconds under valgrind"
        return {f"{b} {m}": why for b in backends for m in MODES}
    for line in proc.stdout.splitlines():
        if line.startswith(COUNTS_PREFIX):
            return json.loads(line[len(COUNTS_PREFIX):])
    why = f"the process under valgrind exited with status {proc.returncode}: {proc.stderr.strip()[-300:]}"
    return {f"{b} {m}": why for b in backends for m in MODES}


class Instructions:
    """The gate's calls counted: instructions per call under callgrind, by difference of 1 and 3 calls.

    Deterministic to about 0.01% on a loaded machine (wall time moves 15%), so ``asv continuous
    --factor 1.02`` gates on it; it measures the code path on valgrind's emulated CPU (no AVX-512:
    oneDNN and XLA take their AVX2 paths), not this CPU's speed (docs/instructions.md).
    """

    params = (BACKENDS, MODES)
    param_names = ["backend", "mode"]
    timeout = 3600  # setup_cache's wall time: both processes under valgrind on a loaded runner

    def setup_cache(self):
        counts = {}
        for backends, budget_s in PROCESSES:
            counts.update(count_under_valgrind(backends, budget_s))
        return counts

    setup_cache.timeout = 3600

    def setup(self, counts, backend, mode):
        if not isinstance(counts.get(f"{backend} {mode}"), float):
            raise NotImplementedError(counts.get(f"{backend} {mode}", f"{backend} {mode} was not counted"))

    def track_instructions(self, counts, backend, mode):
        return counts[f"{backend} {mode}"]

    track_instructions.unit = "instructions"


if __name__ == "__main__":  # the process under valgrind that count_under_valgrind starts
    print(COUNTS_PREFIX + json.dumps(count_here(sys.argv[1:])), flush=True)

"""The regression gate: one timed point per backend family and mode, sized for CI.

asv runs today's benchmarks against each old build, so this module reaches the project only
through what every commit of main has had since the foundation: ``impls.get(name).build(spec,
weights, device, dtype)``, the runner's ``put`` / ``forward`` / ``forward_backward`` / ``sync``,
``impls.names``, ``impls.available`` and ``impls.spec``.  It imports nothing from ``rnnbench``
(the harness moves) and nothing from ``benchmarks.common`` (which does).  A backend a commit does
not register, or that this machine cannot run, is skipped (n/a) at that commit.

Enough samples to gate on (``asv continuous --factor 1.25 --split``): 10 per round, 2 rounds in
processes of their own, each sample averaging calls until it lasts 50 ms.
"""
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
    repeat = 10
    rounds = 2
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


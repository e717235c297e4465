"""Sequence models for training: input layer -> any backend's core -> head, and a trainer per framework.

The core is a runner's trainable form (docs/design.md): ``module()`` for torch
runners (the RNN backends and the SDPA transformer), ``params`` and a pure
``apply(params, x, state)`` for JAX runners.  Around it: an embedding (token
tasks) or a linear layer (feature tasks) from the task's inputs to the core's
input size, and a linear head from the core's output to the task's outputs,
applied to every step or to the last one.

Every weight starts from seeded NumPy arrays (the core's canonical weights from
``spec.init_weights``, the input layer and head from ``io_weights``), so every
backend starts a run from the same model; the harness feeds them the same
batches.  Optimiser: gradient clipping by global norm, then Adam
(``torch.optim.Adam`` / ``optax.adam``, the same defaults); the recorded
gradient norm is the one before clipping.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .jax_common import _jax
from .runner import hook
from .spec import RNNSpec, init_weights

INPUT_KINDS = ("tokens", "features")
LOSSES = ("xent", "mse")
TARGETS = ("all", "last")


@dataclass(frozen=True)
class ModelIO:
    """How a task's data meets the model."""

    input_kind: str  # "tokens": an embedding reads ids [T, B]; "features": a linear layer reads [T, B, F]
    input_dim: int  # vocabulary size, or features per step
    output_size: int  # classes (logits) or regression outputs
    loss: str  # "xent" (targets are class ids) | "mse"
    targets: str  # "all": outputs [T, B, O]; "last": outputs [B, O] from the final step only

    def __post_init__(self):
        for field, value, valid in (("input_kind", self.input_kind, INPUT_KINDS), ("loss", self.loss, LOSSES),
                                    ("targets", self.targets, TARGETS)):
            if value not in valid:
                raise ValueError(f"{field} must be one of {', '.join(valid)}, got {value!r}")


def io_weights(io: ModelIO, input_size: int, core_output: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded float64 weights of the input layer and the head, with torch's default init laws."""
    rng = np.random.default_rng([seed, 1])
    w = {}
    if io.input_kind == "tokens":
        w["input.weight"] = rng.standard_normal((io.input_dim, input_size))  # [V, I], like nn.Embedding
    else:
        bound = 1.0 / np.sqrt(io.input_dim)
        w["input.weight"] = rng.uniform(-bound, bound, (input_size, io.input_dim))  # [I, F], like nn.Linear
        w["input.bias"] = rng.uniform(-bound, bound, input_size)
    bound = 1.0 / np.sqrt(core_output)
    w["head.weight"] = rng.uniform(-bound, bound, (io.output_size, core_output))  # [O, H]
    w["head.bias"] = rng.uniform(-bound, bound, io.output_size)
    return w


def build_trainer(backend_name: str, spec: RNNSpec, io: ModelIO, device: str = "cpu", dtype: str = "float32",
                  seed: int = 0, lr: float = 1e-3, clip: float = 1.0, forget_bias: float = 0.0):
    """A trainer of input layer -> ``backend_name`` -> head, from seeded weights (the core: ``build_core``)."""
    import impls

    runner = build_core(backend_name, spec, device, dtype, seed, forget_bias)
    core_output = hook(runner, "output_size")()
    head = io_weights(io, spec.input_size, core_output, seed)
    trainer_cls = {"torch": TorchTrainer, "jax": JaxTrainer}[impls.get(backend_name).framework]
    return trainer_cls(runner, io, head, lr, clip)


def build_core(backend_name: str, spec: RNNSpec, device: str = "cpu", dtype: str = "float32", seed: int = 0,
               forget_bias: float = 0.0):
    """The runner of a trainer's core as it starts training.

    An RNN core starts from ``init_weights(spec, seed)``, an LSTM's forget-gate
    bias raised by ``forget_bias`` (Gers et al. 2000; Jozefowicz et al. 2015: a
    forget gate that starts open lets memories last long enough to be learned
    from).  A baseline core (kind ``baseline``) starts from its own seeded weights,
    sized against ``spec``.
    """
    import impls

    backend = impls.get(backend_name)
    if impls.kind_of(backend_name) != "rnn":
        return backend.build(spec, None, device, dtype, seed=seed)
    weights = init_weights(spec, seed)
    if spec.cell == "lstm":
        H = spec.hidden_size
        for k in range(spec.num_layers):
            weights[f"bias_ih_l{k}"][H:2 * H] += forget_bias  # the f block of (i, f, g, o)
    return backend.build(spec, weights, device, dtype)


class TorchTrainer:
    """``step(x, y) -> {loss, grad_norm, nan_count}`` with torch.optim.Adam on the whole model."""

    def __init__(self, runner, io: ModelIO, weights: dict, lr: float, clip: float):
        import torch

        self.runner, self.io, self.clip = runner, io, clip
        self.model = _torch_model(io, runner.module(), weights, runner.device, runner.torch_dtype)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=lr)

    def _put(self, a):
        import torch

        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.integer):  # token ids and class targets
            return torch.as_tensor(a, dtype=torch.long, device=self.runner.device)
        return self.runner.put(a)

    def _loss(self, outputs, y):
        import torch.nn.functional as F

        if self.io.loss == "xent":
            return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]).float(), y.reshape(-1))
        return F.mse_loss(outputs.float(), y.float())

    def step(self, x, y) -> dict:
        import torch

        loss = self._loss(self.model(self._put(x)), self._put(y))
        self.optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in self.params]
        nan_count = sum(torch.isnan(g).sum() for g in grads)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "nan_count": int(nan_count)}

    def predict(self, x) -> np.ndarray:
        """Outputs (logits or values) as NumPy, [T, B, O] or [B, O]."""
        import torch

        with torch.no_grad():
            return self.runner.get(self.model(self._put(x)))

    def param_count(self) -> int:
        return int(sum(p.numel() for p in self.params))

    def sync(self) -> None:
        self.runner.sync()


def _torch_model(io: ModelIO, core, weights: dict, device: str, dtype):
    """input layer -> core (forward(x, state) -> (y, state)) -> head, as one nn.Module."""
    import torch

    class SequenceModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            if io.input_kind == "tokens":
                self.input = torch.nn.Embedding(*weights["input.weight"].shape)  # [V, I]
            else:
                self.input = torch.nn.Linear(io.input_dim, weights["input.weight"].shape[0])  # [I, F]
            self.core = core
            self.head = torch.nn.Linear(weights["head.weight"].shape[1], io.output_size)

        def forward(self, x):
            y, _ = self.core(self.input(x), None)  # [T, B, H]
            return self.head(y[-1] if io.targets == "last" else y)

    model = SequenceModel()
    for layer in (model.input, model.head):
        layer.to(device=device, dtype=dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in weights:
                p.copy_(torch.as_tensor(weights[name]))
    return model


class JaxTrainer:
    """``step(x, y) -> {loss, grad_norm, nan_count}`` with optax: clip by global norm, then Adam; one jit."""

    def __init__(self, runner, io: ModelIO, weights: dict, lr: float, clip: float):
        import optax

        jax, jnp = _jax()
        self.runner, self.io = runner, io
        self._device = next(iter(jax.tree.leaves(runner.params)[0].devices()))  # where the core lives
        self.params = {
            "input": {k.split(".")[1]: runner.put(v) for k, v in weights.items() if k.startswith("input.")},
            "core": runner.params,
            "head": {k.split(".")[1]: runner.put(v) for k, v in weights.items() if k.startswith("head.")},
        }
        optimizer = optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr))
        # committed to the device like the step's outputs, so the second step reuses the first compile
        self.opt_state = jax.device_put(optimizer.init(self.params), self._device)

        def outputs(params, x):
            inp = params["input"]
            h = inp["weight"][x] if io.input_kind == "tokens" else x @ inp["weight"].T + inp["bias"]  # [T, B, I]
            y, _ = runner.apply(params["core"], h, None)  # [T, B, H]
            if io.targets == "last":
                y = y[-1]
            return y @ params["head"]["weight"].T + params["head"]["bias"]

        def loss_fn(params, x, y):
            out = outputs(params, x).astype(jnp.float32)
            if io.loss == "xent":
                return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
            return jnp.mean((out - y) ** 2)

        def train_step(params, opt_state, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            leaves = jax.tree.leaves(grads)
            nan_count = sum(jnp.isnan(g).sum() for g in leaves)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in leaves))  # before clipping, as torch reports
            return optax.apply_updates(params, updates), opt_state, loss, grad_norm, nan_count

        self._train_step = jax.jit(train_step)
        self._outputs = jax.jit(outputs)
        self._last = None

    def _put(self, a):
        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.integer):  # token ids and class targets
            return _jax()[0].device_put(a.astype(np.int32), self._device)
        return self.runner.put(a)

    def step(self, x, y) -> dict:
        self.params, self.opt_state, loss, grad_norm, nan_count = self._train_step(
            self.params, self.opt_state, self._put(x), self._put(y))
        self._last = loss
        return {"loss": float(loss), "grad_norm": float(grad_norm), "nan_count": int(nan_count)}

    def predict(self, x) -> np.ndarray:
        return self.runner.get(self._outputs(self.params, self._put(x)))

    def param_count(self) -> int:
        return int(sum(np.size(p) for p in _jax()[0].tree.leaves(self.params)))

    def sync(self) -> None:
        if self._last is not None:
            _jax()[0].block_until_ready(self._last)



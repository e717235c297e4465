"""Transformer baselines (kind ``baseline``): a causal pre-LayerNorm transformer on torch's
``scaled_dot_product_attention`` (``transformer_sdpa``) and on ``jax.nn.dot_product_attention``
(``transformer_jax``).

Each stands in for the RNN it is compared with: it takes the same x ``[T, B, I]``
and is sized from that RNN's spec so that the whole model (input projection,
blocks, final norm) has within 10% of the RNN's parameter count
(``dims_for``).  Architecture: linear input projection plus sinusoidal
positions, then per block ``h += Attn(LN(h))`` and ``h += W2 gelu(W1 LN(h))``,
then a final LayerNorm; y ``[T, B, d_model]`` (``output_size = d_model``).

Both frameworks load one set of seeded NumPy weights named like the torch
module's ``state_dict`` (``init_params``), which is how the JAX model is checked
against the torch one.  The runner contract is the RNN runner's; the state is a
KV cache, one ``(k, v)`` per block (``None`` = empty), so ``step(x_t, state)``
decodes one position against the cache and returns the grown cache.
``sdpa_kernel()`` says which attention kernel runs: for torch the one its
dispatcher picks for these shapes, dtype and device (``flash``, ``efficient``,
``cudnn``, ``math``, ``cpu-flash``); for JAX the implementation (``cudnn`` where
it runs on the GPU, which needs float16/bfloat16, else ``xla``).
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .jax_scan import JaxArrays
from .spec import DTYPES, RNNSpec, Unsupported, check_device, check_dtype
from .torch_common import TORCH_DTYPES, TorchArrays, cuda_device_ok

TOLERANCE = 0.10  # the baseline's parameter count is within this fraction of the RNN's
LN_EPS = 1e-5


@dataclass(frozen=True)
class TransformerDims:
    input_size: int
    d_model: int
    heads: int
    layers: int
    ffn: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """torch ``state_dict`` names -> shapes; the JAX model uses the same names."""
        d, f = self.d_model, self.ffn
        shapes = {"input.weight": (d, self.input_size), "input.bias": (d,)}
        for k in range(self.layers):
            b = f"blocks.{k}."
            shapes.update({
                b + "norm1.weight": (d,), b + "norm1.bias": (d,),
                b + "qkv.weight": (3 * d, d), b + "qkv.bias": (3 * d,),
                b + "out.weight": (d, d), b + "out.bias": (d,),
                b + "norm2.weight": (d,), b + "norm2.bias": (d,),
                b + "ffn1.weight": (f, d), b + "ffn1.bias": (f,),
                b + "ffn2.weight": (d, f), b + "ffn2.bias": (d,),
            })
        shapes.update({"norm.weight": (d,), "norm.bias": (d,)})
        return shapes

    def param_count(self) -> int:
        return int(sum(np.prod(s) for s in self.param_shapes().values()))


WIDTHS = tuple(range(8, 64, 8)) + tuple(range(64, 8193, 16))  # d_model candidates, about 25% apart at most


def _heads(d_model: int) -> int:
    """At least four heads of the widest of 64, 32, 16 channels that fits, else heads of 8."""
    head_dim = next(h for h in (64, 32, 16, 8) if (d_model % h == 0 and d_model >= 4 * h) or h == 8)
    return d_model // head_dim


def dims_for(spec: RNNSpec) -> TransformerDims:
    """The transformer compared with ``spec``: parameter count within TOLERANCE of the RNN's.

    Depth is max(2, the RNN's layers) (one block where two do not fit); for each
    width in ``WIDTHS`` the FFN width is solved to hit the count, and the width
    whose FFN is nearest the usual 4 * d_model (in ratio) wins.
    """
    target = spec.param_count()
    for layers in dict.fromkeys((max(2, spec.num_layers), 1)):
        best = None
        for d in WIDTHS:
            fixed = TransformerDims(spec.input_size, d, _heads(d), layers, 0).param_count()
            ffn = max(1, round((target - fixed) / (layers * (2 * d + 1))))  # an FFN channel: 2d weights + 1 bias
            dims = TransformerDims(spec.input_size, d, _heads(d), layers, ffn)
            if dims.param_count() > (1 + TOLERANCE) * target:
                break  # too many parameters even with the narrowest FFN, and wider models have more
            if abs(dims.param_count() - target) <= TOLERANCE * target:
                if best is None or abs(math.log(ffn / (4 * d))) < abs(math.log(best.ffn / (4 * best.d_model))):
                    best = dims
        if best is not None:
            return best
    raise Unsupported(f"no causal transformer fits within {TOLERANCE:.0%} of the RNN's {target} parameters")


def init_params(dims: TransformerDims, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded float64 weights, torch's default laws: linear U(+-1/sqrt(fan_in)), LayerNorm (1, 0)."""
    rng = np.random.default_rng([seed, 3])
    shapes = dims.param_shapes()
    params = {}
    for name, shape in shapes.items():
        if ".norm" in name or name.startswith("norm."):
            params[name] = np.ones(shape) if name.endswith("weight") else np.zeros(shape)
        else:
            fan_in = shapes[name.rsplit(".", 1)[0] + ".weight"][1]
            params[name] = rng.uniform(-1 / np.sqrt(fan_in), 1 / np.sqrt(fan_in), shape)
    return params


def sinusoid(start: int, length: int, d_model: int) -> np.ndarray:
    """Positional encodings of positions start .. start+length-1, [length, d_model] float64 (d_model even)."""
    pos = np.arange(start, start + length, dtype=np.float64)[:, None]
    freq = np.exp(-np.log(10000.0) * np.arange(0, d_model, 2) / d_model)[None, :]
    pe = np.zeros((length, d_model))
    pe[:, 0::2] = np.sin(pos * freq)
    pe[:, 1::2] = np.cos(pos * freq)
    return pe


def cache_length(state, seq_axis: int) -> int:
    """Positions already in a KV cache (0 for None)."""
    return 0 if state is None else state[0][0].shape[seq_axis]


# -- torch -------------------------------------------------------------------------------------


class Block(torch.nn.Module):
    def __init__(self, dims: TransformerDims):
        super().__init__()
        d = dims.d_model
        self.heads = dims.heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(d, eps=LN_EPS), torch.nn.LayerNorm(d, eps=LN_EPS)
        self.qkv, self.out = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.ffn1, self.ffn2 = torch.nn.Linear(d, dims.ffn), torch.nn.Linear(dims.ffn, d)

    def forward(self, h, cache=None):
        """h [B, T, d], cache (k, v) [B, heads, S, head_dim] or None -> (h, (k, v))."""
        B, T, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        start = 0
        if cache is not None:
            start = cache[0].shape[2]
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)  # [B, heads, S+T, hd]
        a = F.scaled_dot_product_attention(q, k, v, **_torch_mask(start, T, h.device))  # [B, heads, T, hd]
        h = h + self.out(a.transpose(1, 2).reshape(B, T, d))
        return h + self.ffn2(F.gelu(self.ffn1(self.norm2(h)))), (k, v)


def _torch_mask(start: int, T: int, device) -> dict:
    """Causal masking of T new queries after ``start`` cached positions."""
    if start == 0:
        return {"is_causal": True}
    if T == 1:
        return {}  # one new query sees every cached position
    return {"attn_mask": torch.ones(T, start + T, dtype=torch.bool, device=device).tril(start)}


class CausalTransformer(torch.nn.Module):
    """forward(x [T, B, I], state) -> (y [T, B, d_model], new KV cache), like an RNN module."""

    def __init__(self, dims: TransformerDims):
        super().__init__()
        self.dims = dims
        self.input = torch.nn.Linear(dims.input_size, dims.d_model)
        self.blocks = torch.nn.ModuleList(Block(dims) for _ in range(dims.layers))
        self.norm = torch.nn.LayerNorm(dims.d_model, eps=LN_EPS)
        self._pe = None  # positional table, grown on demand: [P, d_model]

    def positions(self, start: int, T: int, like):
        if self._pe is None or self._pe.shape[0] < start + T or self._pe.dtype != like.dtype:
            size = max(2 * (start + T), 64)
            self._pe = torch.as_tensor(sinusoid(0, size, self.dims.d_model), dtype=like.dtype, device=like.device)
        return self._pe[start:start + T]

    def forward(self, x, state=None):
        T = x.shape[0]
        start = cache_length(state, 2)
        h = (self.input(x) + self.positions(start, T, x)[:, None, :]).transpose(0, 1)  # [B, T, d]
        caches = []
        for k, block in enumerate(self.blocks):
            h, kv = block(h, None if state is None else state[k])
            caches.append(kv)
        return self.norm(h).transpose(0, 1), tuple(caches)


_KERNEL_NAMES = {"FLASH_ATTENTION": "flash", "EFFICIENT_ATTENTION": "efficient", "CUDNN_ATTENTION": "cudnn",
                 "MATH": "math", "OVERRIDEABLE": "overrideable"}


class TorchTransformerRunner(TorchArrays):
    """The RNN runner contract for the SDPA transformer; ``module()`` is the trainable form."""

    def __init__(self, backend, spec: RNNSpec, dims: TransformerDims, params: dict, device: str, dtype: str):
        self.backend, self.spec, self.dims, self.device, self.dtype = backend, spec, dims, device, dtype
        self.torch_dtype = TORCH_DTYPES[dtype]
        self.output_size = dims.d_model
        self._module = CausalTransformer(dims).to(device=device, dtype=self.torch_dtype)
        with torch.no_grad():
            named = dict(self._module.named_parameters())
            for name in dims.param_shapes():
                named[name].copy_(torch.as_tensor(params[name]))
        self._names = list(dims.param_shapes())
        self._params = [named[n] for n in self._names]
        self._seq_len = 16  # the sequence length sdpa_kernel() asks about: the last one run

    def forward(self, x, state=None):
        x = self.put(x)
        self._seq_len = x.shape[0]
        with torch.no_grad():
            return self._module(x, state)

    def forward_backward(self, x, state, dy) -> dict:
        """Gradients of L = sum(y * dy): every parameter (state_dict names) and ``x``."""
        x = self.put(x).detach().requires_grad_(True)
        self._seq_len = x.shape[0]
        y, _ = self._module(x, state)
        grads = torch.autograd.grad(y, self._params + [x], self.put(dy))
        return dict(zip(self._names + ["x"], grads))

    def step(self, x_t, state=None):
        """Decode one position: x_t [B, I] against the KV cache -> the grown cache."""
        with torch.no_grad():
            return self._module(self.put(x_t)[None], state)[1]

    def sdpa_kernel(self) -> str:
        """The kernel torch's dispatcher picks for causal attention at these shapes, dtype, device."""
        d = self.dims
        q = torch.zeros(1, d.heads, self._seq_len, d.head_dim, dtype=self.torch_dtype, device=self.device)
        name = torch.nn.attention.SDPBackend(torch._fused_sdp_choice(q, q, q, is_causal=True)).name
        label = _KERNEL_NAMES.get(name, name.lower())
        return f"cpu-{label}" if self.device == "cpu" and label == "flash" else label

    def impl_label(self) -> str:
        return f"sdpa-{self.sdpa_kernel()}"


# -- JAX ---------------------------------------------------------------------------------------


def _jax():
    from .jax_scan import _jax as import_jax  # sets XLA_PYTHON_CLIENT_PREALLOCATE=false first

    return import_jax()


def _layer_norm(h, weight, bias):
    _, jnp = _jax()
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    return (h - mean) / jnp.sqrt(var + LN_EPS) * weight + bias


def jax_apply(dims: TransformerDims, implementation: str, params: dict, x, state=None):
    """Pure: params (state_dict names), x [T, B, I], KV cache (k, v) [B, S, heads, head_dim] per block
    or None -> (y [T, B, d_model], new cache).  Differentiable by ``jax.grad`` / ``jax.vjp``."""
    jax, jnp = _jax()
    T, B, _ = x.shape
    d, heads = dims.d_model, dims.heads
    start = cache_length(state, 1)
    pe = jnp.asarray(sinusoid(start, T, d), dtype=x.dtype)  # [T, d]
    h = (x @ params["input.weight"].T + params["input.bias"] + pe[:, None, :]).transpose(1, 0, 2)  # [B, T, d]
    mask = {"is_causal": True} if start == 0 else {}
    if start and T > 1:
        mask = {"mask": jnp.tril(jnp.ones((T, start + T), dtype=bool), start)[None, None]}  # [1, 1, T, S]
    caches = []
    for k in range(dims.layers):
        p = {name[len(f"blocks.{k}."):]: v for name, v in params.items() if name.startswith(f"blocks.{k}.")}
        a = _layer_norm(h, p["norm1.weight"], p["norm1.bias"])
        qkv = (a @ p["qkv.weight"].T + p["qkv.bias"]).reshape(B, T, 3, heads, d // heads)
        q, kk, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each [B, T, heads, head_dim]
        if state is not None:
            kk, v = jnp.concatenate([state[k][0], kk], axis=1), jnp.concatenate([state[k][1], v], axis=1)
        att = jax.nn.dot_product_attention(q, kk, v, implementation=implementation, **mask)  # [B, T, heads, hd]
        h = h + att.reshape(B, T, d) @ p["out.weight"].T + p["out.bias"]
        a = _layer_norm(h, p["norm2.weight"], p["norm2.bias"])
        h = h + jax.nn.gelu(a @ p["ffn1.weight"].T + p["ffn1.bias"], approximate=False) @ p["ffn2.weight"].T \
            + p["ffn2.bias"]
        caches.append((kk, v))
    y = _layer_norm(h, params["norm.weight"], params["norm.bias"]).transpose(1, 0, 2)  # [T, B, d]
    return y, tuple(caches)


@functools.cache
def _jax_fns(dims: TransformerDims, implementation: str):
    """jit-compiled forward and forward+backward (shared by runners of the same shape)."""
    jax, _ = _jax()
    apply = functools.partial(jax_apply, dims, implementation)

    def forward_backward(params, x, state, dy):
        y, vjp = jax.vjp(lambda p, x_: apply(p, x_, state)[0], params, x)
        d_params, dx = vjp(dy)
        return {**d_params, "x": dx}

    return jax.jit(apply), jax.jit(forward_backward)


class JaxTransformerRunner(JaxArrays):
    """The RNN runner contract on ``jax.nn.dot_product_attention``; ``params``/``apply`` are trainable."""

    def __init__(self, backend, spec: RNNSpec, dims: TransformerDims, params: dict, device: str, dtype: str):
        from .jax_scan import _jax_device

        _, jnp = _jax()
        self.backend, self.spec, self.dims, self.device, self.dtype = backend, spec, dims, device, dtype
        self.output_size = dims.d_model
        self._jax_device = _jax_device(device)
        self._np_dtype = np.dtype(jnp.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
        self.params = {name: self.put(params[name]) for name in dims.param_shapes()}
        self.implementation = self._pick_implementation()
        self._forward, self._forward_backward = _jax_fns(dims, self.implementation)
        self._last = None

    def _pick_implementation(self) -> str:
        """cuDNN's fused attention where it accepts this GPU and dtype (float16/bfloat16), else XLA's."""
        if self._jax_device.platform not in ("gpu", "cuda"):
            return "xla"
        jax, jnp = _jax()
        q = self.put(np.zeros((1, 8, self.dims.heads, self.dims.head_dim)))
        try:
            jax.block_until_ready(jax.nn.dot_product_attention(q, q, q, is_causal=True, implementation="cudnn"))
            return "cudnn"
        except Exception:  # noqa: BLE001 - any refusal (dtype, GPU generation, cuDNN version) means XLA
            return "xla"

    def apply(self, params: dict, x, state=None):
        return jax_apply(self.dims, self.implementation, params, x, state)

    def sync(self) -> None:
        if self._last is not None:
            _jax()[0].block_until_ready(self._last)

    def compile(self, x, state=None, dy=None) -> float:
        """Compile (and run once) the forward, and forward_backward when dy is given; seconds spent."""
        t0 = time.perf_counter()
        self.forward(x, state)
        if dy is not None:
            self.forward_backward(x, state, dy)
        self.sync()
        return time.perf_counter() - t0

    def forward(self, x, state=None):
        self._last = self._forward(self.params, self.put(x), self.put(state))
        return self._last

    def forward_backward(self, x, state, dy) -> dict:
        self._last = self._forward_backward(self.params, self.put(x), self.put(state), self.put(dy))
        return self._last

    def step(self, x_t, state=None):
        """Decode one position against the KV cache -> the grown cache (one compile per cache length)."""
        return self.forward(self.put(x_t)[None], state)[1]

    def sdpa_kernel(self) -> str:
        return self.implementation

    def impl_label(self) -> str:
        return f"jax-{self.implementation}"


# -- the registered backends -------------------------------------------------------------------


class TransformerBackend:
    """A registered baseline: ``build(spec, weights, ...)`` sizes the model against ``spec``.

    ``weights`` None makes seeded weights (``init_params(dims_for(spec))``); a dict
    of such weights (torch ``state_dict`` names) loads them instead.
    """

    kind = "baseline"

    def __init__(self, name: str, framework: str):
        if framework not in ("torch", "jax"):
            raise ValueError(f"framework must be torch or jax, got {framework!r}")
        self.name, self.framework = name, framework

    def available(self, device: str = "cpu") -> tuple[bool, str]:
        check_device(device)
        if self.framework == "torch":
            return cuda_device_ok(device)
        from .jax_scan import JaxScanBackend

        return JaxScanBackend(self.name).available(device)

    def supports(self, device: str, dtype: str) -> tuple[bool, str]:
        if self.framework == "jax":
            from .jax_scan import JaxScanBackend

            return JaxScanBackend(self.name).supports(device, dtype)
        allowed = DTYPES if device.startswith("cuda") else ("float32", "float64")
        if dtype not in allowed:
            return False, f"{self.name} on {device} supports dtypes {', '.join(allowed)}, not {dtype}"
        return True, ""

    def build(self, spec: RNNSpec, weights=None, device: str = "cpu", dtype: str = "float32", seed: int = 0):
        check_device(device)
        check_dtype(dtype)
        for ok, reason in (self.available(device), self.supports(device, dtype)):
            if not ok:
                raise Unsupported(reason)
        dims = dims_for(spec)
        params = init_params(dims, seed) if weights is None else weights
        runner_cls = TorchTransformerRunner if self.framework == "torch" else JaxTransformerRunner
        return runner_cls(self, spec, dims, params, device, dtype)


def make_backend(name: str, framework: str = "torch") -> TransformerBackend:
    return TransformerBackend(name, framework)

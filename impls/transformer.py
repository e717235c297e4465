"""Transformer baselines (kind ``baseline``): a causal pre-LayerNorm transformer on torch's
``scaled_dot_product_attention`` (``transformer_sdpa``) and on ``jax.nn.dot_product_attention``
(``transformer_jax``).

Each stands in for the RNN it is compared with: it takes the same x ``[T, B, I]``
and is sized from that RNN's spec so that the whole model (input projection,
blocks, final norm) has within 10% of the RNN's parameter count
(``dims_for``).  Architecture: linear input projection plus sinusoidal
positions, then per block ``h += Attn(LN(h))`` and ``h += W2 gelu(W1 LN(h))``,
then a final LayerNorm; y ``[T, B, d_model]`` (``output_size = d_model``).  A bidirectional
RNN is compared with the same model without the causal mask (an encoder); a ragged batch
(``lengths`` [B]) gets a key-padding mask, and y is 0 past each row's length, as an RNN's.

Both frameworks load one set of seeded NumPy weights named like the torch
module's ``state_dict`` (``init_params``), which is how the JAX model is checked
against the torch one.  The runner contract is the RNN runner's; the state is a
``KVCache``: buffers preallocated to a capacity and the number of positions
filled (``None`` = empty).  ``forward(x, cache)`` and ``step(x_t, cache)`` write
their positions into it in place (torch: slice assignment; JAX: the buffers are
donated to the jitted step, so XLA updates them where they are) and never grow
it: a cache without room is an error, as in decoders that preallocate.  Decode
mode's set-up is ``decoder(x_prefix, capacity=)`` (``KVCacheDecoder``).
``sdpa_kernel()`` says which attention kernel runs: for torch the one its
dispatcher picks for these shapes, dtype and device (``flash``, ``efficient``,
``cudnn``, ``math``, ``cpu-flash``); for JAX the implementation (``cudnn`` where
it runs on the GPU, which needs float16/bfloat16, else ``xla``).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .decode import Decoder
from .jax_common import JaxArrays, _jax, jax_available, jax_dtypes
from .spec import (CELLS, DTYPES, FEATURES, RNNSpec, Unsupported, check_device, check_dtype, check_lengths, declare,
                   require_unidirectional, supports)
from .torch_common import TORCH_DTYPES, TorchArrays, cuda_device_ok, to_numpy

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


@dataclass(frozen=True)
class KVCache:
    """A KV cache preallocated to its capacity, and how many of its positions are filled.

    ``buffers`` holds one ``[k, v]`` per block, each [B, heads, capacity, head_dim] in torch
    and [B, capacity, heads, head_dim] in JAX (``seq_axis`` says which).  The list is shared
    by every state of one decode and written in place, so a state stays valid while nothing
    writes below its length; stepping twice from one state writes the same position twice
    (decode's timed call).  A forward without a cache returns one exactly full (x's k, v).
    """

    buffers: list
    length: int
    seq_axis: int

    @property
    def capacity(self) -> int:
        return self.buffers[0][0].shape[self.seq_axis]

    def nbytes(self, positions: int | None = None) -> int:
        """Bytes of ``positions`` positions (default: the filled ones) of every block's k and v."""
        allocated = sum(int(a.nbytes) for kv in self.buffers for a in kv)
        return allocated * (self.length if positions is None else positions) // self.capacity

    def advanced(self, positions: int) -> "KVCache":
        """The state once ``positions`` more are written; checked before any write."""
        if self.length + positions > self.capacity:
            raise ValueError(f"KV cache full: {self.length} of {self.capacity} positions filled, {positions} more "
                             "asked; preallocate a larger one (empty_cache, or decoder's capacity)")
        return KVCache(self.buffers, self.length + positions, self.seq_axis)


class KVCacheDecoder(Decoder):
    """A transformer's decode: the prefix written into a KV cache preallocated to ``capacity``
    positions (default: the prefix and the position the timed step writes), then each step
    writes one position in place.  ``state_bytes`` is the filled part after the prefix,
    2 * layers * B * prefix_len * d_model * itemsize: linear in the context."""

    def __init__(self, runner, x_prefix, state=None, capacity=None):
        x_prefix = runner.put(x_prefix)
        S, B = x_prefix.shape[:2]
        cache = runner.empty_cache(B, S + 1 if capacity is None else capacity) if state is None else state
        _, prefix_state = runner.forward(x_prefix, cache)
        runner.sync()
        super().__init__(runner, prefix_state, prefix_state.length, prefix_state.nbytes())
        self._y = None

    def _advance(self, x_t, state):
        self._y, state = self.runner.step_with_output(x_t, state)
        return state

    def output(self):
        return self._y[0]


class KVCacheDecoding:
    """Decode-mode set-up of both baselines' runners (the ``decoder`` hook of ``impls.runner``)."""

    def decoder(self, x_prefix, state=None, capacity=None) -> KVCacheDecoder:
        require_unidirectional(self.spec, "decode")
        return KVCacheDecoder(self, x_prefix, state, capacity)

    def step(self, x_t, state=None):
        """Decode one position: x_t [B, I], written into the KV cache ``state`` -> the cache after it."""
        require_unidirectional(self.spec, "step")
        return self.step_with_output(x_t, state)[1]


def _check_cache_use(causal: bool, state, lengths) -> None:
    """A KV cache serves causal decoding of full rows only: an encoder (bidirectional) and a ragged
    batch run from no cache."""
    if state is not None and not causal:
        raise Unsupported("a bidirectional (non-causal) transformer has no KV cache: state must be None")
    if state is not None and lengths is not None:
        raise Unsupported("lengths are taken from an empty KV cache only: state must be None")


# -- torch -------------------------------------------------------------------------------------


class Block(torch.nn.Module):
    def __init__(self, dims: TransformerDims):
        super().__init__()
        d = dims.d_model
        self.heads = dims.heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(d, eps=LN_EPS), torch.nn.LayerNorm(d, eps=LN_EPS)
        self.qkv, self.out = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.ffn1, self.ffn2 = torch.nn.Linear(d, dims.ffn), torch.nn.Linear(dims.ffn, d)

    def forward(self, h, cache=None, start: int = 0, attention=None):
        """h [B, T, d] at positions start..start+T-1 -> (h, (k, v) attended).  cache: this block's
        [k, v] [B, heads, C, head_dim] with ``start`` positions filled, which x's are written into
        in place, or None (start 0: the keys and values are x's own).  attention: SDPA's mask
        arguments (``_torch_mask``; default causal)."""
        B, T, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            cache[0][:, :, start:start + T] = k  # in place: the cache never grows
            cache[1][:, :, start:start + T] = v
            k, v = cache[0][:, :, :start + T], cache[1][:, :, :start + T]  # views [B, heads, start+T, hd]
        if attention is None:
            attention = _torch_mask(start, T, h.device)
        a = F.scaled_dot_product_attention(q, k, v, **attention)  # [B, heads, T, hd]
        h = h + self.out(a.transpose(1, 2).reshape(B, T, d))
        return h + self.ffn2(F.gelu(self.ffn1(self.norm2(h)))), (k, v)


def _torch_mask(start: int, T: int, device, causal: bool = True, lengths=None) -> dict:
    """SDPA's mask arguments for T new queries after ``start`` cached positions: causal, or none
    (an encoder); with ``lengths`` [B] (no cache, start 0) a key-padding mask as well, so no query
    attends a key at t >= its row's length."""
    if lengths is not None:
        keys = (torch.arange(T, device=device) < lengths.to(device)[:, None])[:, None, None, :]  # [B, 1, 1, T]
        return {"attn_mask": keys & torch.ones(T, T, dtype=torch.bool, device=device).tril() if causal else keys}
    if not causal:
        return {}
    if start == 0:
        return {"is_causal": True}
    if T == 1:
        return {}  # one new query sees every cached position
    return {"attn_mask": torch.ones(T, start + T, dtype=torch.bool, device=device).tril(start)}


class CausalTransformer(torch.nn.Module):
    """forward(x [T, B, I], state, lengths) -> (y [T, B, d_model], KV cache after x), like an RNN module.

    ``causal=False`` is the encoder a bidirectional RNN is compared with (every position sees the
    whole row).  With ``lengths`` [B] keys past each row's length are masked and y is 0 there, so
    padded positions change nothing that is valid and get no gradient.
    """

    def __init__(self, dims: TransformerDims, causal: bool = True):
        super().__init__()
        self.dims, self.causal = dims, causal
        self.input = torch.nn.Linear(dims.input_size, dims.d_model)
        self.blocks = torch.nn.ModuleList(Block(dims) for _ in range(dims.layers))
        self.norm = torch.nn.LayerNorm(dims.d_model, eps=LN_EPS)
        self._pe = None  # positional table, grown on demand: [P, d_model]

    def positions(self, start: int, T: int, like):
        if self._pe is None or self._pe.shape[0] < start + T or self._pe.dtype != like.dtype:
            size = max(2 * (start + T), 64)
            self._pe = torch.as_tensor(sinusoid(0, size, self.dims.d_model), dtype=like.dtype, device=like.device)
        return self._pe[start:start + T]

    def forward(self, x, state: KVCache | None = None, lengths=None):
        _check_cache_use(self.causal, state, lengths)
        T = x.shape[0]
        start = 0 if state is None else state.length
        after = None if state is None else state.advanced(T)  # the room is checked before any write
        h = (self.input(x) + self.positions(start, T, x)[:, None, :]).transpose(0, 1)  # [B, T, d]
        attention = _torch_mask(start, T, x.device, self.causal, lengths)
        kvs = []
        for k, block in enumerate(self.blocks):
            h, kv = block(h, None if state is None else state.buffers[k], start, attention)
            kvs.append(list(kv))
        y = self.norm(h).transpose(0, 1)  # [T, B, d]
        if lengths is not None:
            y = torch.where((torch.arange(T, device=x.device)[:, None] < lengths.to(x.device))[..., None], y, 0.0)
        return y, KVCache(kvs, T, seq_axis=2) if after is None else after


_KERNEL_NAMES = {"FLASH_ATTENTION": "flash", "EFFICIENT_ATTENTION": "efficient", "CUDNN_ATTENTION": "cudnn",
                 "MATH": "math", "OVERRIDEABLE": "overrideable"}


class TorchTransformerRunner(KVCacheDecoding, TorchArrays):
    """The RNN runner contract for the SDPA transformer; ``module()`` is the trainable form."""

    def __init__(self, backend, spec: RNNSpec, dims: TransformerDims, params: dict, device: str, dtype: str):
        self.backend, self.spec, self.dims, self.device, self.dtype = backend, spec, dims, device, dtype
        self.torch_dtype = TORCH_DTYPES[dtype]
        self.output_size = dims.d_model
        self._module = CausalTransformer(dims, causal=not spec.bidirectional).to(device=device, dtype=self.torch_dtype)
        with torch.no_grad():
            named = dict(self._module.named_parameters())
            for name in dims.param_shapes():
                named[name].copy_(torch.as_tensor(params[name]))
        self._names = list(dims.param_shapes())
        self._params = [named[n] for n in self._names]
        self._last_call = (1, 16, None)  # (B, T, lengths) of the last call run: what sdpa_kernel() asks about

    def _lengths(self, lengths, x):
        """None, or the checked lengths [B] as an int64 tensor."""
        self._last_call = (x.shape[1], x.shape[0], lengths)
        if lengths is None:
            return None
        lengths = torch.from_numpy(check_lengths(to_numpy(lengths), x.shape[0], x.shape[1]))
        self._last_call = (x.shape[1], x.shape[0], lengths)
        return lengths

    def forward(self, x, state=None, lengths=None):
        x = self.put(x)
        lengths = self._lengths(lengths, x)
        with torch.no_grad():
            return self._module(x, state, lengths)

    def forward_backward(self, x, state, dy, lengths=None) -> dict:
        """Gradients of L = sum(y * dy): every parameter (state_dict names) and ``x``."""
        _no_cache(state)
        x = self.put(x).detach().requires_grad_(True)
        lengths = self._lengths(lengths, x)
        y, _ = self._module(x, state, lengths)
        grads = torch.autograd.grad(y, self._params + [x], self.put(dy))
        return dict(zip(self._names + ["x"], grads))

    def empty_cache(self, batch: int, capacity: int) -> KVCache:
        """A KV cache preallocated to ``capacity`` positions, none filled."""
        shape = (batch, self.dims.heads, capacity, self.dims.head_dim)  # [B, heads, C, hd]
        return KVCache([[torch.zeros(shape, dtype=self.torch_dtype, device=self.device) for _ in range(2)]
                        for _ in range(self.dims.layers)], 0, seq_axis=2)

    def step_with_output(self, x_t, state=None):
        """One position x_t [B, I] -> (y [1, B, d_model], the KV cache after it)."""
        with torch.no_grad():
            return self._module(self.put(x_t)[None], state)

    def sdpa_kernel(self) -> str:
        """The kernel torch's dispatcher picks for the last call's attention (causal or not, with its
        key-padding mask) at its shapes, dtype and device."""
        d, (B, T, lengths) = self.dims, self._last_call
        q = torch.zeros(B if lengths is not None else 1, d.heads, T, d.head_dim, dtype=self.torch_dtype,
                        device=self.device)
        mask = _torch_mask(0, T, self.device, self._module.causal, lengths)
        name = torch.nn.attention.SDPBackend(torch._fused_sdp_choice(q, q, q, **mask)).name
        label = _KERNEL_NAMES.get(name, name.lower())
        return f"cpu-{label}" if self.device == "cpu" and label == "flash" else label

    attention_kernel = sdpa_kernel  # the Runner hook (impls.runner)

    def impl_label(self) -> str:
        return f"sdpa-{self.sdpa_kernel()}"


# -- JAX ---------------------------------------------------------------------------------------


def _layer_norm(h, weight, bias):
    _, jnp = _jax()
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    return (h - mean) / jnp.sqrt(var + LN_EPS) * weight + bias


def jax_apply(dims: TransformerDims, implementation: str, params: dict, x, cache=None, start=0, pe_table=None, *,
              causal: bool = True, lengths=None):
    """Pure: params (state_dict names), x [T, B, I] (or one position [B, I]) -> (y [T, B, d_model], kv).

    Without ``cache``: causal attention over x at positions 0..T-1 (none when ``causal`` is False:
    the encoder), and kv is x's own (k, v) [B, T, heads, head_dim] per block; with ``lengths`` [B]
    no query attends a key at t >= its row's length and y is 0 there.  With one: ``cache`` is a
    (k, v) [B, C, heads, head_dim] per block with ``start`` (a traced int) positions filled and ``pe_table`` [C, d_model] the positional
    encodings; x's keys and values are written at start..start+T-1 (in place where the cache is
    donated) and kv is the written cache.  Differentiable by ``jax.grad`` / ``jax.vjp``.
    """
    jax, jnp = _jax()
    x = x[None] if x.ndim == 2 else x  # [T, B, I]: inside the jit, so a step dispatches no reshape
    T, B, _ = x.shape
    d, heads = dims.d_model, dims.heads
    if cache is None:
        pe = jnp.asarray(sinusoid(0, T, d), dtype=x.dtype)  # [T, d]
        mask = {"is_causal": causal}
        if lengths is not None:
            mask["key_value_seq_lengths"] = lengths
    else:
        pe = jax.lax.dynamic_slice_in_dim(pe_table, start, T)  # [T, d]
        visible = jnp.arange(pe_table.shape[0])[None, :] <= start + jnp.arange(T)[:, None]  # [T, C]
        mask = {"mask": visible[None, None]}  # [1, 1, T, C]: the filled positions, causally
    h = (x @ params["input.weight"].T + params["input.bias"] + pe[:, None, :]).transpose(1, 0, 2)  # [B, T, d]
    caches = []
    for k in range(dims.layers):
        p = {name[len(f"blocks.{k}."):]: v for name, v in params.items() if name.startswith(f"blocks.{k}.")}
        a = _layer_norm(h, p["norm1.weight"], p["norm1.bias"])
        qkv = (a @ p["qkv.weight"].T + p["qkv.bias"]).reshape(B, T, 3, heads, d // heads)
        q, kk, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each [B, T, heads, head_dim]
        if cache is not None:
            kk = jax.lax.dynamic_update_slice_in_dim(cache[k][0], kk, start, axis=1)  # [B, C, heads, hd]
            v = jax.lax.dynamic_update_slice_in_dim(cache[k][1], v, start, axis=1)
        att = jax.nn.dot_product_attention(q, kk, v, implementation=implementation, **mask)  # [B, T, heads, hd]
        h = h + att.reshape(B, T, d) @ p["out.weight"].T + p["out.bias"]
        a = _layer_norm(h, p["norm2.weight"], p["norm2.bias"])
        h = h + jax.nn.gelu(a @ p["ffn1.weight"].T + p["ffn1.bias"], approximate=False) @ p["ffn2.weight"].T \
            + p["ffn2.bias"]
        caches.append((kk, v))
    y = _layer_norm(h, params["norm.weight"], params["norm.bias"]).transpose(1, 0, 2)  # [T, B, d]
    if lengths is not None:
        y = jnp.where((jnp.arange(T)[:, None] < lengths[None, :])[..., None], y, 0)
    return y, tuple(caches)


@functools.cache
def _jax_fns(dims: TransformerDims, implementation: str, causal: bool = True):
    """jit-compiled forward, forward+backward (both without a cache) and the cached forward, whose
    cache argument is donated so that XLA writes the new positions into it where it lies (shared
    by runners of the same shape)."""
    jax, _ = _jax()
    apply = functools.partial(jax_apply, dims, implementation, causal=causal)

    def forward_backward(params, x, dy, lengths=None):
        y, vjp = jax.vjp(lambda p, x_: apply(p, x_, lengths=lengths)[0], params, x)
        d_params, dx = vjp(dy)
        return {**d_params, "x": dx}

    return jax.jit(apply), jax.jit(forward_backward), jax.jit(apply, donate_argnums=2)


class JaxTransformerRunner(KVCacheDecoding, JaxArrays):
    """The RNN runner contract on ``jax.nn.dot_product_attention``; ``params``/``apply`` are trainable."""

    def __init__(self, backend, spec: RNNSpec, dims: TransformerDims, params: dict, device: str, dtype: str):
        self._setup(backend, spec, device, dtype)
        self.dims, self.output_size = dims, dims.d_model
        self.params = {name: self.put(params[name]) for name in dims.param_shapes()}
        self.implementation = self._pick_implementation()
        self.causal = not spec.bidirectional  # the encoder a bidirectional RNN is compared with
        self._forward, self._forward_backward, self._forward_cached = _jax_fns(dims, self.implementation, self.causal)
        self._pe_tables = {}  # capacity -> positional encodings [C, d_model] on the device

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
        """The trainable form: pure, from an empty cache (``state`` None)."""
        _no_cache(state)
        return jax_apply(self.dims, self.implementation, params, x, causal=self.causal)

    def forward(self, x, state: KVCache | None = None, lengths=None):
        """y [T, B, d_model] and the KV cache after x: ``state`` written in place, or, without one,
        a cache holding exactly x's positions.  ``lengths`` [B]: keys past each row's length masked."""
        _check_cache_use(self.causal, state, lengths)
        x = self.put(x)
        if state is not None:
            return self._write(x, state, x.shape[0])
        y, kv = self._last = self._forward(self.params, x, lengths=self.put_lengths(lengths, x))
        return y, KVCache([list(pair) for pair in kv], x.shape[0], seq_axis=1)

    def _write(self, x, state: KVCache, positions: int):
        """x's positions into ``state``'s buffers: donated to the jitted call, whose outputs (the same
        memory) replace them in the shared list."""
        after = state.advanced(positions)  # checked first: dynamic_update_slice would clamp silently
        if state.capacity not in self._pe_tables:
            self._pe_tables[state.capacity] = self.put(sinusoid(0, state.capacity, self.dims.d_model))
        buffers = tuple(tuple(pair) for pair in state.buffers)
        y, kv = self._last = self._forward_cached(self.params, x, buffers, state.length,
                                                  self._pe_tables[state.capacity])
        state.buffers[:] = [list(pair) for pair in kv]
        return y, after

    def forward_backward(self, x, state, dy, lengths=None) -> dict:
        _no_cache(state)
        x = self.put(x)
        self._last = self._forward_backward(self.params, x, self.put(dy), self.put_lengths(lengths, x))
        return self._last

    def empty_cache(self, batch: int, capacity: int) -> KVCache:
        """A KV cache preallocated to ``capacity`` positions, none filled."""
        _, jnp = _jax()
        shape = (batch, capacity, self.dims.heads, self.dims.head_dim)  # [B, C, heads, hd]
        return KVCache([[jnp.zeros(shape, self._np_dtype, device=self._jax_device) for _ in range(2)]
                        for _ in range(self.dims.layers)], 0, seq_axis=1)

    def step_with_output(self, x_t, state=None):
        """One position x_t [B, I] -> (y [1, B, d_model], the KV cache after it)."""
        x_t = self.put(x_t)
        return self.forward(x_t[None]) if state is None else self._write(x_t, state, 1)

    def sdpa_kernel(self) -> str:
        return self.implementation

    attention_kernel = sdpa_kernel  # the Runner hook (impls.runner)

    def impl_label(self) -> str:
        return f"jax-{self.implementation}"


def _no_cache(state) -> None:
    if state is not None:
        raise ValueError("gradients are taken from an empty KV cache: state must be None")


# -- the registered backends -------------------------------------------------------------------


# float16 on a CPU: no fused kernels and slow conversions in every GEMM; bfloat16 runs natively where the
# CPU has AVX512-BF16 or AMX (oneDNN) and is emulated elsewhere, as the RNNs' bfloat16 is
CPU_DTYPES = ("float32", "float64", "bfloat16")


class TransformerBackend:
    """A registered baseline: ``build(spec, weights, ...)`` sizes the model against ``spec``.

    ``weights`` None makes seeded weights (``init_params(dims_for(spec))``); a dict
    of such weights (torch ``state_dict`` names) loads them instead.  A bidirectional spec
    gets the non-causal encoder; ragged batches get a key-padding mask.
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
        return jax_available(device)

    def capabilities(self, device: str) -> dict:
        """Sized against any cell (parameter-matched); bidirectional (non-causal) and lengths (key-padding mask)."""
        if self.framework == "jax":
            dtypes, reasons = jax_dtypes(self.name, device)
        else:
            dtypes, reasons = (DTYPES if device.startswith("cuda") else CPU_DTYPES), {}
        return declare(dtypes, cells=CELLS, features=FEATURES, reasons=reasons)

    def build(self, spec: RNNSpec, weights=None, device: str = "cpu", dtype: str = "float32", seed: int = 0):
        check_device(device)
        check_dtype(dtype)
        ok, reason = self.available(device)
        if ok:
            ok, reason = supports(self, device, spec.cell, dtype=dtype)
        if not ok:
            raise Unsupported(reason)
        dims = dims_for(spec)
        params = init_params(dims, seed) if weights is None else weights
        runner_cls = TorchTransformerRunner if self.framework == "torch" else JaxTransformerRunner
        return runner_cls(self, spec, dims, params, device, dtype)


def make_backend(name: str, framework: str = "torch") -> TransformerBackend:
    return TransformerBackend(name, framework)

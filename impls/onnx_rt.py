"""ONNX Runtime: the ONNX ``LSTM`` / ``GRU`` / ``RNN`` operators, built from the canonical weights.

An inference backend (``forward`` and ``step``; ``forward_backward`` is
``Unsupported``: ONNX Runtime's training API is a separate package that trains
exported torch graphs, not these operators).  The graph is built with the
``onnx`` package, one operator per layer, stacked; both directions are one
operator (``direction="bidirectional"``) and ragged batches use its
``sequence_lens`` input, which follow torch's packed-sequence semantics.

Weight map: ONNX LSTM gates are i, o, f, c (torch i, f, g, o); GRU z, r, h
(torch r, z, n) with ``linear_before_reset=1``, which is torch's
n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); ``B`` is [W_b, R_b] per direction.
The session runs on the CPU execution provider (CUDA where onnxruntime-gpu is
installed) with intra-op spinning off, so that its idle threads do not steal
the cores of the next measurement; provider and intra-op threads are recorded.
"""
from __future__ import annotations

import time

import numpy as np

from . import runtime
from .runner import RunnerDefaults
from .spec import (DTYPES, FEATURES, RNNSpec, Unsupported, check_buildable, check_device, check_lengths, declare,
                   require_feature)

OPS = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN"}
GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn_tanh": (0,)}  # ONNX block k = torch block ORDER[k]
# ONNX Runtime's CPU LSTM and RNN kernels are float only ("LSTM operator does not support double
# yet"); ONNX's LSTM/GRU/RNN operators have no bfloat16 at all
CPU_DTYPES = ("float32",)
CUDA_DTYPES = ("float32", "float16")
TRAIN_REASON = ("onnxruntime is an inference backend: its LSTM/GRU/RNN operators have no gradient "
                "kernels here (training needs onnxruntime-training on an exported torch graph)")


def _reorder(a, cell: str, H: int):
    """torch's gate blocks (rows of W / entries of b) in ONNX's order."""
    return np.concatenate([a[k * H:(k + 1) * H] for k in GATE_ORDER[cell]], axis=0)


def build_model(spec: RNNSpec, weights, np_dtype, with_lengths: bool):
    """The ONNX model: inputs x [T, B, I], h0 (c0) [L*D, B, H] (and lengths [B] int32);
    outputs y [T, B, D*H], h_n (c_n) [L*D, B, H]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = helper.np_dtype_to_tensor_dtype(np.dtype(np_dtype))
    H, D, L = spec.hidden_size, spec.directions, spec.num_layers
    cell, op = spec.cell, OPS[spec.cell]
    state_names = spec.state_names()
    inputs = [helper.make_tensor_value_info("x", elem, ["T", "B", spec.input_size])]
    inputs += [helper.make_tensor_value_info(s, elem, [L * D, "B", H]) for s in state_names]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, ["B"]))
    outputs = [helper.make_tensor_value_info("y", elem, ["T", "B", D * H])]
    outputs += [helper.make_tensor_value_info(s.replace("0", "_n"), elem, [L * D, "B", H]) for s in state_names]

    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value).astype(value.dtype), name))
        return name

    layer_in, finals = "x", {s: [] for s in state_names}
    for k in range(L):
        names = [spec.layer_weight_names(k, suffix) for suffix in spec.suffixes()]
        W = np.stack([_reorder(weights[n[0]], cell, H) for n in names]).astype(np_dtype)  # [D, G*H, K]
        R = np.stack([_reorder(weights[n[1]], cell, H) for n in names]).astype(np_dtype)  # [D, G*H, H]
        B = np.stack([np.concatenate([_reorder(weights[n[2]], cell, H), _reorder(weights[n[3]], cell, H)])
                      for n in names]).astype(np_dtype)  # [D, 2*G*H]
        rows = const(f"rows_l{k}", np.arange(k * D, (k + 1) * D, dtype=np.int64))
        states = []
        for s in state_names:  # this layer's D rows of the initial state, [D, B, H]
            nodes.append(helper.make_node("Gather", [s, rows], [f"{s}_l{k}"], axis=0))
            states.append(f"{s}_l{k}")
        op_inputs = [layer_in, const(f"W_l{k}", W), const(f"R_l{k}", R), const(f"B_l{k}", B),
                     "lengths" if with_lengths else "", *states]
        op_outputs = [f"Y_l{k}"] + [f"{s}_n_l{k}" for s in state_names]
        attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
        if cell == "gru":
            attrs["linear_before_reset"] = 1
        if cell == "rnn_tanh":
            attrs["activations"] = ["Tanh"] * D
        nodes.append(helper.make_node(op, op_inputs, op_outputs, **attrs))
        # Y [T, D, B, H] -> [T, B, D, H] -> [T, B, D*H] (directions concatenated, forward first)
        nodes.append(helper.make_node("Transpose", [f"Y_l{k}"], [f"Yt_l{k}"], perm=[0, 2, 1, 3]))
        shape = const(f"shape_l{k}", np.array([0, 0, D * H], dtype=np.int64))
        layer_in = "y" if k == L - 1 else f"x_l{k + 1}"
        nodes.append(helper.make_node("Reshape", [f"Yt_l{k}", shape], [layer_in]))
        for s in state_names:
            finals[s].append(f"{s}_n_l{k}")
    for s in state_names:
        nodes.append(helper.make_node("Concat", finals[s], [s.replace("0", "_n")], axis=0))
    graph = helper.make_graph(nodes, f"{cell}_L{L}_D{D}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


class OnnxRunner(RunnerDefaults):
    """Runner contract of docs/design.md over an ``InferenceSession`` (NumPy arrays at the boundary)."""

    def __init__(self, backend, spec: RNNSpec, weights, device: str, dtype: str):
        import onnxruntime as ort

        self.backend, self.spec, self.device, self.dtype = backend, spec, device, dtype
        self._np_dtype = np.dtype(dtype)
        self._weights = {n: np.asarray(weights[n]) for n in spec.weight_names()}
        self._sessions = {}
        options = ort.SessionOptions()
        options.intra_op_num_threads = runtime.intra_op_threads()  # the process's limit (--threads), else every core
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._options = options
        self._providers = ["CUDAExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]

    def _session(self, with_lengths: bool):
        """One session per graph (with or without sequence_lens), built on first use."""
        if with_lengths not in self._sessions:
            import onnxruntime as ort

            model = build_model(self.spec, self._weights, self._np_dtype, with_lengths)
            session = ort.InferenceSession(model.SerializeToString(), self._options, providers=self._providers)
            if session.get_providers()[0] != self._providers[0]:
                raise Unsupported(f"onnxruntime could not start {self._providers[0]} (got {session.get_providers()})")
            self._sessions[with_lengths] = session
        return self._sessions[with_lengths]

    # -- arrays at the boundary: NumPy in and out; the session runs synchronously ---------------
    def put(self, a):
        if a is None:
            return None
        if isinstance(a, (tuple, list)):
            return tuple(self.put(v) for v in a)
        return np.ascontiguousarray(np.asarray(a), dtype=self._np_dtype)

    def get(self, a):
        if isinstance(a, (tuple, list)):
            return type(a)(self.get(v) for v in a)
        return np.asarray(a)

    def sync(self) -> None:
        """Nothing to wait for: ``InferenceSession.run`` returns when its outputs are written."""

    def impl_label(self) -> str:
        import onnxruntime as ort

        return f"onnxruntime-{ort.__version__}-{self.execution_provider()}"

    # -- what the harness records -----------------------------------------------------------------
    def execution_provider(self) -> str:
        return self._providers[0]

    def threads(self) -> int:
        return self._options.intra_op_num_threads

    def compile(self, x, state=None, dy=None) -> float:
        """Build the session (graph optimisation, kernel set-up) and run it once; seconds spent."""
        t0 = time.perf_counter()
        self.forward(x, state)
        return time.perf_counter() - t0

    # -- the contract -----------------------------------------------------------------------------
    def _feeds(self, x, state, lengths):
        x = self.put(x)
        batch = x.shape[1]
        if state is None:
            parts = [None] * len(self.spec.state_names())
        else:
            parts = list(state) if isinstance(state, (tuple, list)) else [state]
        feeds = {"x": x}
        for name, part in zip(self.spec.state_names(), parts):
            feeds[name] = np.zeros(self.spec.state_shape(batch), self._np_dtype) if part is None else self.put(part)
        if lengths is not None:
            require_feature(self, "lengths")
            feeds["lengths"] = check_lengths(np.asarray(lengths), x.shape[0], batch).astype(np.int32)
        return feeds

    def forward(self, x, state=None, lengths=None):
        """(y [T, B, D*H], final state [L*D, B, H]); with ``lengths`` [B], row b runs t < lengths[b]."""
        feeds = self._feeds(x, state, lengths)
        y, *finals = self._session(lengths is not None).run(None, feeds)
        return y, (tuple(finals) if self.spec.has_cell_state else finals[0])

    def forward_backward(self, x, state, dy, lengths=None) -> dict:
        raise Unsupported(TRAIN_REASON)


class OnnxBackend:
    framework = "onnxruntime"
    kind = "rnn"

    def __init__(self, name: str):
        self.name = name

    def available(self, device: str = "cpu") -> tuple[bool, str]:
        check_device(device)
        try:
            import onnx  # noqa: F401
            import onnxruntime as ort
        except ImportError as exc:
            return False, f"onnx/onnxruntime not installed: {exc}"
        if device.startswith("cuda") and "CUDAExecutionProvider" not in ort.get_available_providers():
            return False, f"onnxruntime has no CUDAExecutionProvider (has {', '.join(ort.get_available_providers())}); install onnxruntime-gpu"
        return True, ""

    def capabilities(self, device: str) -> dict:
        """Every cell and feature; no train (TRAIN_REASON); decode is steps."""
        allowed = CUDA_DTYPES if device.startswith("cuda") else CPU_DTYPES
        why = {"bfloat16": " (ONNX's LSTM/GRU/RNN operators have no bfloat16)",
               "float64": " (onnxruntime's CPU LSTM/RNN kernels have no double)"}
        reasons = {d: f"{self.name} on {device} supports dtypes {', '.join(allowed)}, not {d}{why.get(d, '')}"
                   for d in DTYPES if d not in allowed}
        return declare(allowed, modes=("forward", "step", "decode"), features=FEATURES, reasons=reasons)

    def build(self, spec: RNNSpec, weights, device: str = "cpu", dtype: str = "float32") -> OnnxRunner:
        check_buildable(self, spec, weights, device, dtype)
        return OnnxRunner(self, spec, weights, device, dtype)


def make_backend(name: str) -> OnnxBackend:
    return OnnxBackend(name)

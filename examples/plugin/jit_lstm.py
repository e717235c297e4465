"""An LSTM backend written outside rnnbench: one layer, a loop over time under torch.jit.script.

It declares nothing: rnnbench finds what it runs by building it (``Unsupported`` means no), and
every optional hook takes its default.  Installed, it is found by its entry point; as a plain file,
by ``rnnbench --plugin jit_lstm.py``, whose import calls ``impls.register`` below.
"""
import numpy as np
import torch

import impls
from impls.spec import Unsupported

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@torch.jit.script
def lstm_loop(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """x [T, B, I], h and c [B, H] -> y [T, B, H], h_n, c_n; gates i, f, g, o as torch.nn.LSTM."""
    gi = torch.matmul(x, w_ih.t()) + b_ih + b_hh  # [T, B, 4H]
    ys = []
    for t in range(x.shape[0]):
        i, f, g, o = (gi[t] + torch.matmul(h, w_hh.t())).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys), h, c


class JitLSTMRunner:
    def __init__(self, spec, weights, dtype):
        self.spec, self.dtype = spec, DTYPES[dtype]
        self.weights = [self.put(weights[n]) for n in spec.weight_names()]  # w_ih, w_hh, b_ih, b_hh

    def put(self, a):
        return a if a is None or isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a), dtype=self.dtype)

    def get(self, a):
        return a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)

    def _run(self, x, state):
        zeros = torch.zeros(self.spec.state_shape(x.shape[1]), dtype=self.dtype)  # [1, B, H]
        h0, c0 = state if state is not None else (zeros, zeros)
        y, h, c = lstm_loop(x, self.put(h0)[0], self.put(c0)[0], *self.weights)
        return y, (h[None], c[None])

    def forward(self, x, state=None):
        with torch.no_grad():
            return self._run(self.put(x), state)

    def forward_backward(self, x, state, dy):
        x = self.put(x).detach().requires_grad_(True)
        zeros = torch.zeros(self.spec.state_shape(x.shape[1]), dtype=self.dtype)
        h0, c0 = (self.put(s).detach().requires_grad_(True) for s in (state if state is not None else (zeros, zeros)))
        leaves = [w.detach().requires_grad_(True) for w in self.weights]
        y, _, _ = lstm_loop(x, h0[0], c0[0], *leaves)
        grads = torch.autograd.grad(y, leaves + [x, h0, c0], self.put(dy))
        return dict(zip(self.spec.weight_names() + ["x", "h0", "c0"], grads))

    def sync(self):
        pass

    def impl_label(self):
        return "torchscript"


class JitLSTM:
    name, kind, framework = "jit_lstm", "rnn", "torch"

    def available(self, device="cpu"):
        return (True, "") if device == "cpu" else (False, "jit_lstm runs on the CPU only")

    def build(self, spec, weights, device="cpu", dtype="float32"):
        if spec.cell != "lstm" or spec.num_layers != 1 or spec.bidirectional or dtype not in DTYPES:
            raise Unsupported("jit_lstm: one unidirectional LSTM layer, float32 or float64")
        return JitLSTMRunner(spec, weights, dtype)


impls.register("jit_lstm", JitLSTM)

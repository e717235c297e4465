"""Conformance of one backend against the float64 oracle (docs/design.md "Conformance"): the cases, the one
relative error and the one tolerance table of the project.

``rnnbench check NAME`` and ``tests/test_conformance.py`` run these same cases: outputs, final state
and every gradient; lengths, bidirectional and step/decode where the backend declares them
(``capabilities``); the cells it declares.  Error = max|a - b| / max|b| per tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import reference
from .runner import hook
from .spec import PARALLEL_CELLS, RNNSpec, Unsupported, capabilities, init_weights, make_inputs, supports

# Per-dtype bounds (docs/design.md): float64 1e-10, float32 1e-4 for T <= 16; the half
# types keep 8 (bf16) or 11 (fp16) mantissa bits, so a short sequence agrees to a few 1e-2.
TOLERANCE = {"float64": 1e-10, "float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
T, B, I, H = 7, 3, 3, 5  # the cases' shape; T <= 16: the float32 bound holds
PARITY_T = 8  # recommend --measure's parity check: the query's B, I, H and layers, this T (<= 16)


def lengths_of(form, seq_len: int, batch: int):
    """None | full (every row T) | ragged (rows of T, 1 and about T/2 steps, repeated) | the lengths
    themselves (a tuple of B ints): int [B]."""
    if form is None:
        return None
    if not isinstance(form, str):
        return np.asarray(form, dtype=np.int64)
    if form == "full":
        return np.full(batch, seq_len)
    return np.resize([seq_len, 1, (seq_len + 1) // 2], batch)


def rel_err(a, b) -> float:
    """max|a - b| / max|b| (max|a - b| where b is all zeros): the error measure of docs/design.md."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} against the oracle's {b.shape}")
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / (scale if scale > 0 else 1.0))


class NotBuilt(Unsupported):
    """``build`` refused the case's shape (layers, sizes): allowed, it is not a declared capability."""


@dataclass(frozen=True)
class Case:
    cell: str
    dtype: str
    layers: int = 1
    with_state: bool = False
    bidirectional: bool = False
    lengths: str | tuple | None = None  # None (no lengths passed) | full | ragged | a tuple of B lengths
    decode: bool = False  # the state after a prefix of T, then one step
    T: int = T
    B: int = B
    I: int = I
    H: int = H

    def label(self) -> str:
        parts = [self.cell, self.dtype, f"L{self.layers}", "h0" if self.with_state else "zeros"]
        parts += [p for p, on in (("bidirectional", self.bidirectional), (f"lengths={self.lengths}", self.lengths),
                                  ("decode", self.decode)) if on]
        return " ".join(parts)


@dataclass(frozen=True)
class Row:
    """One tensor of one case: its error against the tolerance, or why the case did not run."""

    case: str
    tensor: str
    error: float | None
    tolerance: float
    note: str = ""  # a skipped case's reason, or a violated exactness rule (y/dx not 0 where padded)

    @property
    def ok(self) -> bool:
        if self.error is None:
            return not self.note.startswith("FAIL")
        return bool(self.error <= self.tolerance)  # NaN fails


def cases(name: str, device: str = "cpu", dtypes=("float64", "float32"), cells=None) -> list[Case]:
    """The cases for ``name`` on ``device``: its declared cells (within ``cells``) and ``dtypes``;
    one and two layers, zeros and a given state; lengths, bidirectional and decode where declared."""
    import impls

    backend, out = impls.get(name), []
    for cell in capabilities(backend, device):
        if cells is not None and cell not in cells:
            continue
        for dtype in dtypes:
            if not supports(backend, device, cell, dtype=dtype)[0]:
                continue
            out += [Case(cell, dtype, layers, with_state) for layers in (1, 2) for with_state in (False, True)]
            bidirectional = supports(backend, device, cell, features=("bidirectional",))[0]
            if supports(backend, device, cell, features=("lengths",))[0]:
                out += [Case(cell, dtype, 2, True, lengths="ragged"), Case(cell, dtype, 1, False, lengths="full")]
                if bidirectional:
                    out.append(Case(cell, dtype, 2, True, bidirectional=True, lengths="ragged"))
            if bidirectional:
                out.append(Case(cell, dtype, 2, True, bidirectional=True))
            if supports(backend, device, cell, mode="decode")[0]:
                out.append(Case(cell, dtype, 1, True, decode=True))
    return out


def run_case(name: str, case: Case, device: str = "cpu", seed: int = 0) -> dict:
    """``{tensor: error}`` of one case; Unsupported (the reason) when the backend cannot run it.

    A ragged case also requires y and dx exactly 0 at every padded position (AssertionError).
    Gradients: every canonical weight, x, h0 (and c0) as the oracle gives them; a backend without
    gradients (Unsupported from forward_backward) gives its forward errors and ``"gradients"``: None."""
    import impls

    spec = RNNSpec(case.cell, case.I, case.H, case.layers, case.bidirectional)
    weights = init_weights(spec, seed=seed)
    T = case.T
    x, state, dy = make_inputs(spec, T + case.decode, case.B, seed=seed + 1, with_state=case.with_state)
    try:
        runner = impls.get(name).build(spec, weights, device, case.dtype)
    except Unsupported as exc:
        raise NotBuilt(str(exc)) from None
    if case.decode:
        return _decode_errors(runner, spec, weights, x, state)
    lengths = lengths_of(case.lengths, T, case.B)
    kwargs = {} if lengths is None else {"lengths": lengths}
    padded = None if lengths is None else np.arange(T)[:, None] >= lengths  # [T, B]

    y, final = runner.forward(runner.put(x), runner.put(state), **kwargs)
    if case.dtype in ("bfloat16", "float16") and spec.cell in PARALLEL_CELLS:
        # g(v) of minGRU/minLSTM has slope 1 above 0 and 1/4 below: rounding x and the weights to 8 bits moves
        # a pre-activation near 0 across, so the oracle of the unrounded inputs differs by up to 0.43 in dW
        # (measured, mingru T=7); the oracle takes the inputs the backend was given (then 3e-3 off)
        weights, x, state, dy = (_rounded(v, case.dtype) for v in (weights, x, state, dy))
    y_ref, final_ref = reference.forward(spec, weights, x, state, lengths=lengths)
    errors = {"y": rel_err(runner.get(y), y_ref)}
    for sname, a, b in zip(("h_n", "c_n"), _parts(spec, final), _parts(spec, final_ref)):
        errors[sname] = rel_err(runner.get(a), b)
    if padded is not None and not np.all(runner.get(y)[padded] == 0):
        raise AssertionError("y is not exactly 0 past the lengths")
    grads_ref = reference.forward_backward(spec, weights, x, state, dy, lengths=lengths)
    try:
        grads = runner.forward_backward(runner.put(x), runner.put(state), runner.put(dy), **kwargs)
    except Unsupported as exc:
        return {**errors, "gradients": None, "why": str(exc)}
    if set(grads) != set(grads_ref):
        raise AssertionError(f"forward_backward gives {sorted(grads)}, the contract {sorted(grads_ref)}")
    for gname, ref in grads_ref.items():
        errors["d" + gname] = rel_err(runner.get(grads[gname]), ref)
    if padded is not None and not np.all(runner.get(grads["x"])[padded] == 0):
        raise AssertionError("dx is not exactly 0 at padded steps")
    return errors


def _rounded(a, dtype: str):
    """``a`` (an array, a dict or tuple of them, or None) rounded to a half type and back to float64."""
    import torch

    if a is None:
        return None
    if isinstance(a, dict):
        return {k: _rounded(v, dtype) for k, v in a.items()}
    if isinstance(a, tuple):
        return tuple(_rounded(v, dtype) for v in a)
    return torch.from_numpy(np.asarray(a)).to(getattr(torch, dtype)).double().numpy()


def _parts(spec, state):
    return state if spec.has_cell_state else (state,)


def _decode_errors(runner, spec, weights, x, state) -> dict:
    """The state after the prefix x[:T], then ``step`` on x[T], against the oracle over x[:T+1]."""
    T = len(x) - 1
    _, after_prefix = runner.forward(runner.put(x[:T]), runner.put(state))
    new = hook(runner, "step")(runner.put(x[T]), after_prefix)
    _, final_ref = reference.forward(spec, weights, x, state)
    return {f"{sname} after one step": rel_err(runner.get(a), b)
            for sname, a, b in zip(("h", "c"), _parts(spec, new), _parts(spec, final_ref))}


def check(name: str, device: str = "cpu", dtypes=("float64", "float32"), cells=None) -> list[Row]:
    """Every case of ``name`` as rows of error against tolerance; a case the backend declares but
    cannot run is a failing row (FAIL: ...), one it does not declare is not a case."""
    import impls

    backend, rows = impls.get(name), []
    for cell in capabilities(backend, device):
        for dtype in dtypes:
            ok, reason = supports(backend, device, cell, dtype=dtype)
            if not ok and (cells is None or cell in cells):
                rows.append(Row(f"{cell} {dtype}", "-", None, TOLERANCE[dtype], f"not declared: {reason}"))
    for case in cases(name, device, dtypes, cells):
        tol = TOLERANCE[case.dtype]
        try:
            errors = run_case(name, case, device)
        except NotBuilt as exc:
            rows.append(Row(case.label(), "-", None, tol, f"not run: {exc}"))
            continue
        except Unsupported as exc:
            rows.append(Row(case.label(), "-", None, tol, f"FAIL: declared, but a call refused: {exc}"))
            continue
        except AssertionError as exc:
            rows.append(Row(case.label(), "-", None, tol, f"FAIL: {exc}"))
            continue
        except Exception as exc:  # noqa: BLE001 - a backend that crashes fails its case, the others still run
            rows.append(Row(case.label(), "-", None, tol, f"FAIL: {type(exc).__name__}: {exc}"[:300]))
            continue
        why = errors.pop("why", "")
        for tensor, error in errors.items():
            rows.append(Row(case.label(), tensor, error, tol, "" if error is not None else f"skipped: {why}"))
    return rows


def format_table(rows: list[Row]) -> str:
    """One line per tensor: case, tensor, error, tolerance, ok; the case named once."""
    width = max([len(r.case) for r in rows] + [4])
    lines = [f"{'case':<{width}}  {'tensor':<22}  {'error':>9}  {'tolerance':>9}  ok"]
    last = None
    for r in rows:
        error = f"{r.error:9.2e}" if r.error is not None else f"{'-':>9}"
        mark = "yes" if r.ok else "NO"
        lines.append(f"{r.case if r.case != last else '':<{width}}  {r.tensor:<22}  {error}  {r.tolerance:9.0e}  "
                     f"{mark}{'  ' + r.note if r.note else ''}")
        last = r.case
    return "\n".join(lines)


def parity_error(runner, spec, weights, mode: str, batch: int, seed: int = 0) -> tuple[float, str]:
    """(worst relative error, the tensor) of a runner built at a user's shape against the oracle at
    T = PARITY_T (``recommend --measure``).

    Forward: y and the final state; train: also every gradient (as the conformance test).
    """
    def err(a, b):
        return rel_err(runner.get(a), b)

    x, state, dy = make_inputs(spec, PARITY_T, batch, seed=seed + 1, with_state=True)  # [T, B, I], [L*D, B, H]
    errors = {}
    if mode == "step":
        x = x[:1]
        new = hook(runner, "step")(runner.put(x[0]), runner.put(state))
        _, final = reference.forward(spec, weights, x, state)
        for name, a, b in zip(spec.state_names(), new if spec.has_cell_state else [new],
                              final if spec.has_cell_state else [final]):
            errors[f"{name} after one step"] = err(a, b)
    else:
        y, final = runner.forward(runner.put(x), runner.put(state))
        y_ref, final_ref = reference.forward(spec, weights, x, state)
        errors["y"] = err(y, y_ref)
        for name, a, b in zip(("h_n", "c_n"), final if spec.has_cell_state else [final],
                              final_ref if spec.has_cell_state else [final_ref]):
            errors[name] = err(a, b)
        if mode == "train":
            grads = runner.forward_backward(runner.put(x), runner.put(state), runner.put(dy))
            ref = reference.forward_backward(spec, weights, x, state, dy)
            errors.update({f"d{name}": err(grads[name], ref[name]) for name in ref})
    worst = max(errors, key=errors.get)
    return errors[worst], worst

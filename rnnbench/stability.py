"""Gradient flow through time and agreement with the oracle.

Profile: L = <y_{T-1}, u> with u a fixed seeded unit vector per batch row;
g_t = ||dL/dx_t|| for t = 0..T-1.  ``grad_decay_per_step`` =
(log10 g_0 - log10 g_{T-1}) / (T - 1): negative when gradients vanish going
back in time, positive when they explode.  A bidirectional model's reverse
direction carries gradients the other way, so it gets its own profile: L =
<y_0, u> over the reverse direction's channels, g_t for t = 0..T-1, and
``grad_decay_per_step_reverse`` = (log10 g_{T-1} - log10 g_0) / (T - 1), the same
sign convention along the direction its gradients flow; the forward profile
then probes the forward direction's channels only.
"""
from __future__ import annotations

import math

import numpy as np

from .suites import SETTINGS


def probe_direction(batch: int, out_size: int, seed: int = 0) -> np.ndarray:
    """The fixed unit vector u (one per batch row), [B, H]."""
    u = np.random.default_rng(10_000 + seed).standard_normal((batch, out_size))
    return u / np.linalg.norm(u)


def downsample(profile: np.ndarray, points: int = SETTINGS.max_profile_points) -> list[float]:
    if len(profile) <= points:
        return [float(v) for v in profile]
    idx = np.unique(np.round(np.linspace(0, len(profile) - 1, points)).astype(int))
    return [float(profile[i]) for i in idx]


def decay_per_step(profile: np.ndarray) -> float | None:
    """(log10 g_0 - log10 g_{T-1}) / (T - 1).

    When the earliest gradients underflow to exactly zero (a long float32 sequence), the slope is
    taken from the first non-zero step instead of being undefined; None only when fewer than two
    steps are finite and non-zero.
    """
    profile = np.asarray(profile, dtype=np.float64)
    usable = np.flatnonzero((profile > 0) & np.isfinite(profile))
    if len(usable) < 2 or usable[-1] != len(profile) - 1:
        return None
    first = usable[0]
    return (math.log10(profile[first]) - math.log10(profile[-1])) / (len(profile) - 1 - first)


def _flow(runner, x, out_size: int, t: int, channels: slice, seed: int):
    """(g [T], every gradient as float64 NumPy) for L = <y_t, u> over y's ``channels``."""
    T, B = x.shape[0], x.shape[1]
    dy = np.zeros((T, B, out_size))  # [T, B, D*H]: only step t, in ``channels``, carries the probe
    width = len(range(out_size)[channels])
    dy[t, :, channels] = probe_direction(B, width, seed)
    grads = runner.forward_backward(runner.put(x), None, runner.put(dy))
    all_grads = {name: np.asarray(runner.get(g), dtype=np.float64) for name, g in grads.items()}
    dx = all_grads["x"]  # [T, B, I]
    return np.sqrt((dx.reshape(T, -1) ** 2).sum(axis=1)), list(all_grads.values())


def gradient_profile(runner, x, out_size: int, seed: int = 0, bidirectional: bool = False,
                     reverse_from: int | None = None) -> dict:
    """The stability fields of a record, from forward_backward of ``runner`` on x [T, B, I].

    ``bidirectional``: also the reverse profile.  ``reverse_from``: the first channel of y that
    belongs to the reverse direction (H for a bidirectional RNN, whose y is [forward, reverse]);
    None where y has no direction halves (an encoder): both probes then read every channel.
    """
    T = x.shape[0]
    split = reverse_from if bidirectional else None
    profile, grads = _flow(runner, x, out_size, T - 1, slice(0, split), seed)
    fields = {"grad_profile": downsample(profile), "grad_decay_per_step": decay_per_step(profile)}
    if bidirectional:
        reverse, more = _flow(runner, x, out_size, 0, slice(split, None), seed + 1)
        grads += more
        fields.update(grad_profile_reverse=downsample(reverse),
                      grad_decay_per_step_reverse=decay_per_step(reverse[::-1]))
    return {**fields, "nan_count": int(sum(np.isnan(g).sum() for g in grads)),
            "inf_count": int(sum(np.isinf(g).sum() for g in grads))}


def max_rel_err(runner, spec, weights, x, lengths=None) -> float:
    """Forward output against the float64 oracle on the same weights, over at most 64 steps
    (a ragged batch's lengths cut to them: both sides run the same shortened batch)."""
    from impls import reference
    from impls.conformance import rel_err

    x = x[:SETTINGS.max_oracle_steps]
    kw = {} if lengths is None else {"lengths": np.minimum(lengths, x.shape[0])}
    y_ref, _ = reference.forward(spec, weights, x, None, **kw)
    y, _ = runner.forward(runner.put(x), None, **kw)
    return rel_err(runner.get(y), y_ref)

"""Gradient flow through time and agreement with the oracle.

Profile: L = <y_{T-1}, u> with u a fixed seeded unit vector per batch row;
g_t = ||dL/dx_t|| for t = 0..T-1.  ``grad_decay_per_step`` =
(log10 g_0 - log10 g_{T-1}) / (T - 1): negative when gradients vanish going
back in time, positive when they explode.
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


def gradient_profile(runner, x, out_size: int, seed: int = 0) -> dict:
    """The stability fields of a record, from one forward_backward of ``runner`` on x [T, B, I]."""
    T, B = x.shape[0], x.shape[1]
    dy = np.zeros((T, B, out_size))  # [T, B, H]: only the last step carries the probe
    dy[-1] = probe_direction(B, out_size, seed)
    grads = runner.forward_backward(runner.put(x), None, runner.put(dy))
    dx = np.asarray(runner.get(grads["x"]), dtype=np.float64)  # [T, B, I]
    profile = np.sqrt((dx.reshape(T, -1) ** 2).sum(axis=1))  # [T]
    all_grads = [np.asarray(runner.get(g), dtype=np.float64) for g in grads.values()]
    return {
        "grad_profile": downsample(profile),
        "grad_decay_per_step": decay_per_step(profile),
        "nan_count": int(sum(np.isnan(g).sum() for g in all_grads)),
        "inf_count": int(sum(np.isinf(g).sum() for g in all_grads)),
    }


def max_rel_err(runner, spec, weights, x) -> float:
    """Forward output against the float64 oracle on the same weights, over at most 64 steps."""
    from impls import reference

    x = x[:SETTINGS.max_oracle_steps]
    y_ref, _ = reference.forward(spec, weights, x, None)
    y, _ = runner.forward(runner.put(x), None)
    y = np.asarray(runner.get(y), dtype=np.float64)
    scale = np.max(np.abs(y_ref))
    return float(np.max(np.abs(y - y_ref)) / (scale if scale > 0 else 1.0))

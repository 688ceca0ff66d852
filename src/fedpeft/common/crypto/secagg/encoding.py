"""Fixed-point encoding of float updates into the integers modulo 2**ring_bits.

Masks only cancel in exact modular arithmetic, so each value is clipped to
[-clip_range, clip_range] and rounded to the nearest of 2**bits evenly spaced levels,
0 .. 2**bits - 1. Levels are non-negative, so a weighted sum of them never needs a sign and
the decoder only divides by the total weight and shifts back.

Accuracy: rounding moves a value by at most half a step, step = 2 * clip_range / (2**bits - 1),
and a weighted mean of values each off by at most half a step is itself off by at most half
a step. So for every coordinate where all the summed values lay inside the clip range,
|decoded mean - true weighted mean| <= quantization_bound(clip_range, bits), up to float64
rounding (relative error ~1e-16). Clipped values add their clipping error on top, which is
why `encode` reports how many there were.
"""

from __future__ import annotations

import math

import numpy as np

MAX_QUANTIZATION_BITS = 48
"""Levels stay far below 2**53, so float64 represents every one of them exactly."""


def encode(values: np.ndarray, clip_range: float, bits: int) -> tuple[np.ndarray, int]:
    """The uint64 level of each value (same shape), and how many values had to be clipped.

    NaN cannot be placed on the grid and is refused; infinities are clipped like any other
    out-of-range value.
    """
    _check(clip_range, bits)
    scaled = np.array(values, dtype=np.float64, copy=True)
    if np.isnan(scaled).any():
        raise ValueError("cannot encode NaN values")
    clipped = int(np.count_nonzero(scaled < -clip_range) + np.count_nonzero(scaled > clip_range))
    np.clip(scaled, -clip_range, clip_range, out=scaled)
    scaled += clip_range
    scaled *= _max_level(bits) / (2 * clip_range)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint64), clipped


def decode_mean(total: np.ndarray, total_weight: int, clip_range: float, bits: int) -> np.ndarray:
    """The weighted mean (float64) of encoded vectors, given the weighted sum of their levels."""
    _check(clip_range, bits)
    if type(total_weight) is not int or total_weight < 1:
        raise ValueError(f"total_weight must be a positive int, got {total_weight!r}")
    step = 2 * clip_range / _max_level(bits)
    mean = np.asarray(total).astype(np.float64)
    mean *= step / total_weight
    mean -= clip_range
    return mean


def quantization_bound(clip_range: float, bits: int) -> float:
    """Half a step: the largest error of a decoded mean where no value was clipped."""
    _check(clip_range, bits)
    return clip_range / _max_level(bits)


def _max_level(bits: int) -> int:
    return (1 << bits) - 1


def _check(clip_range: float, bits: int) -> None:
    if isinstance(clip_range, bool) or not isinstance(clip_range, (int, float)):
        raise TypeError(f"clip_range must be a number, got {type(clip_range).__name__}")
    if not (math.isfinite(clip_range) and clip_range > 0):
        raise ValueError(f"clip_range must be positive and finite, got {clip_range}")
    if type(bits) is not int or not 1 <= bits <= MAX_QUANTIZATION_BITS:
        raise ValueError(f"bits must be an int in [1, {MAX_QUANTIZATION_BITS}], got {bits!r}")

"""Fixed-point encoding: the decoded weighted mean is within half a step of the true one."""

from __future__ import annotations

import numpy as np
import pytest

from fedpeft.common.crypto.secagg.encoding import decode_mean, encode, quantization_bound

CLIP = 4.0


@pytest.mark.parametrize("bits", [8, 16, 24, 40])
def test_weighted_mean_is_within_the_quantization_bound(bits: int) -> None:
    rng = np.random.default_rng(bits)
    vectors = [rng.uniform(-CLIP, CLIP, size=10_000) for _ in range(4)]
    weights = [1, 17, 250, 3]
    total = np.zeros(10_000, dtype=np.uint64)
    for vector, weight in zip(vectors, weights, strict=True):
        levels, clipped = encode(vector, CLIP, bits)
        assert clipped == 0 and levels.dtype == np.uint64
        assert int(levels.max()) <= 2**bits - 1
        total += levels * np.uint64(weight)
    mean = decode_mean(total, sum(weights), CLIP, bits)
    expected = sum(w * v for w, v in zip(weights, vectors, strict=True)) / sum(weights)
    error = np.abs(mean - expected).max()
    assert error <= quantization_bound(CLIP, bits) + 1e-12
    assert mean.dtype == np.float64


def test_bound_is_half_a_step() -> None:
    assert quantization_bound(CLIP, 24) == CLIP / (2**24 - 1)


def test_range_ends_map_to_the_extreme_levels_and_back() -> None:
    levels, clipped = encode(np.array([-CLIP, 0.0, CLIP]), CLIP, 8)
    assert levels.tolist()[0] == 0 and levels.tolist()[2] == 255 and clipped == 0
    assert decode_mean(levels, 1, CLIP, 8)[[0, 2]].tolist() == [-CLIP, CLIP]


def test_out_of_range_values_are_clipped_and_counted() -> None:
    values = np.array([-10.0, -np.inf, 3.9, 4.0, 4.5, np.inf])
    levels, clipped = encode(values, CLIP, 16)
    assert clipped == 4
    decoded = decode_mean(levels, 1, CLIP, 16)
    assert decoded[[0, 1, 4, 5]].tolist() == [-CLIP, -CLIP, CLIP, CLIP]


def test_float32_input_is_accepted_and_nan_refused() -> None:
    levels, _ = encode(np.array([0.5, -0.5], dtype=np.float32), CLIP, 16)
    error = np.abs(decode_mean(levels, 1, CLIP, 16) - [0.5, -0.5]).max()
    assert error <= quantization_bound(CLIP, 16)
    with pytest.raises(ValueError, match="NaN"):
        encode(np.array([0.0, np.nan]), CLIP, 16)


@pytest.mark.parametrize(
    ("clip", "bits"), [(0.0, 16), (-1.0, 16), (np.inf, 16), (1.0, 0), (1.0, 49)]
)
def test_invalid_settings_are_refused(clip: float, bits: int) -> None:
    with pytest.raises(ValueError, match="clip_range must be positive|bits must be an int"):
        encode(np.zeros(3), clip, bits)

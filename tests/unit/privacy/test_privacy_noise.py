"""Noise has the calibrated std, and distributed shares add up to at least the central noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedpeft.common.privacy import (
    add_gaussian_noise,
    central_noise_std,
    distributed_noise_std,
    noise_rng,
)

# With n = 1e6 samples the sample std has relative standard error 1 / sqrt(2n) = 0.07%, so 1%
# is 14 standard errors; the mean's standard error is std / 1000, and 5 of them are allowed.
SAMPLES = 1_000_000


def test_central_std_is_sigma_times_clip_norm() -> None:
    assert central_noise_std(1.1, 0.5) == pytest.approx(0.55)
    assert central_noise_std(0.0, 0.5) == 0.0
    with pytest.raises(ValueError, match="clip_norm > 0"):
        central_noise_std(1.0, 0.0)


def test_added_noise_has_the_calibrated_std_and_zero_mean() -> None:
    std = central_noise_std(1.1, 0.5)
    state = {
        "lora_A": np.zeros((500, 1000), dtype=np.float32),
        "lora_B": np.zeros((1000, 500), dtype=np.float32),
    }
    noisy = add_gaussian_noise(state, std, np.random.default_rng(0))
    assert set(noisy) == set(state)
    assert all(noisy[key].shape == state[key].shape for key in state)
    assert all(value.dtype == np.float32 for value in noisy.values())
    assert not state["lora_A"].any()  # the input is left alone

    values = np.concatenate([value.ravel() for value in noisy.values()]).astype(np.float64)
    assert values.size == SAMPLES
    assert values.std() == pytest.approx(std, rel=0.01)
    assert abs(values.mean()) < 5 * std / math.sqrt(SAMPLES)


def test_noise_is_added_to_the_values() -> None:
    state = {"w": np.full(4, 3.0, dtype=np.float32)}
    assert np.array_equal(add_gaussian_noise(state, 0.0, np.random.default_rng(0))["w"], state["w"])
    with pytest.raises(ValueError, match="non-negative, got -1.0"):
        add_gaussian_noise(state, -1.0)


def test_default_generator_is_freshly_seeded() -> None:
    state = {"w": np.zeros(64, dtype=np.float32)}
    first, second = add_gaussian_noise(state, 1.0), add_gaussian_noise(state, 1.0)
    assert not np.array_equal(first["w"], second["w"])
    assert noise_rng().integers(2**63) != noise_rng().integers(2**63)


@pytest.mark.parametrize("min_participants", [1, 3, 8])
def test_any_sum_of_enough_shares_has_at_least_the_target_std(min_participants: int) -> None:
    target = central_noise_std(1.0, 2.0)
    share = distributed_noise_std(1.0, 2.0, min_participants)
    for present in range(min_participants, 3 * min_participants + 1):
        summed = share * math.sqrt(present)  # independent shares add their variances
        assert summed >= target * (1 - 1e-12)
        if present == min_participants:
            assert summed == pytest.approx(target, rel=1e-12)


@pytest.mark.parametrize("present", [4, 6])
def test_summed_shares_empirically(present: int) -> None:
    # Four institutions are the minimum: their four shares carry exactly the central std (2.0);
    # six carry sqrt(6 / 4) times that.
    target = central_noise_std(1.0, 2.0)
    share = distributed_noise_std(1.0, 2.0, min_participants=4)
    rng = np.random.default_rng(present)
    zero = {"w": np.zeros(SAMPLES // present, dtype=np.float32)}
    total = sum(
        add_gaussian_noise(zero, share, rng)["w"].astype(np.float64) for _ in range(present)
    )
    expected = target * math.sqrt(present / 4)
    assert total.std() == pytest.approx(expected, rel=0.01)
    assert total.std() >= target * 0.99


def test_noise_comes_from_the_given_generator_and_is_added() -> None:
    """A seeded generator is used as given (reproducible tests of the mechanism), and the
    result is value + draw, draw for draw."""
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    noisy = add_gaussian_noise(state, 0.5, np.random.default_rng(7))
    draws = np.random.default_rng(7).normal(0.0, 0.5, size=(2, 3))
    np.testing.assert_array_equal(noisy["w"], (state["w"] + draws).astype(np.float32))

"""Clipping bounds every update's norm, leaves small ones alone; adaptive C finds its quantile."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedpeft.common.errors import ConfigError
from fedpeft.common.privacy import AdaptiveClipping, clip_update, update_norm


def _delta(rng: np.random.Generator, scale: float) -> dict[str, np.ndarray]:
    return {
        "lora_A": (rng.standard_normal((8, 384)) * scale).astype(np.float32),
        "lora_B": (rng.standard_normal((384, 8)) * scale).astype(np.float32),
        "head": (rng.standard_normal(5) * scale).astype(np.float32),
    }


def test_update_norm_is_the_global_l2_norm() -> None:
    delta = _delta(np.random.default_rng(0), 0.1)
    flat = np.concatenate([value.ravel().astype(np.float64) for value in delta.values()])
    assert update_norm(delta) == pytest.approx(float(np.linalg.norm(flat)), rel=1e-12)
    assert update_norm({}) == 0.0


def test_every_clipped_update_is_within_the_bound() -> None:
    rng = np.random.default_rng(1)
    clip_norm = 0.5
    for scale in np.geomspace(1e-4, 1e3, 40):
        delta = _delta(rng, float(scale))
        result = clip_update(delta, clip_norm)
        assert result.norm == pytest.approx(update_norm(delta))
        assert update_norm(result.delta) <= clip_norm + 1e-6
        assert result.clipped == (result.norm > clip_norm)
        assert all(value.dtype == np.float32 for value in result.delta.values())
        if result.clipped:
            # Scaled, not truncated: the direction is kept and the norm lands on the bound.
            assert update_norm(result.delta) == pytest.approx(clip_norm, rel=1e-5)
            ratio = result.delta["lora_A"] / delta["lora_A"]
            assert np.allclose(ratio, ratio.flat[0], rtol=1e-5)


def test_small_update_is_untouched_and_copied() -> None:
    delta = _delta(np.random.default_rng(2), 1e-3)
    result = clip_update(delta, 10.0)
    assert not result.clipped
    for key, value in delta.items():
        assert np.array_equal(result.delta[key], value)
        assert result.delta[key] is not value
    result.delta["head"][0] = 99.0
    assert delta["head"][0] != 99.0


def test_zero_and_non_finite_updates() -> None:
    zero = {"w": np.zeros(3, dtype=np.float32)}
    assert not clip_update(zero, 1.0).clipped
    with pytest.raises(ValueError, match="NaN"):
        clip_update({"w": np.array([1.0, np.nan], dtype=np.float32)}, 1.0)


def test_adaptive_step_follows_the_formula() -> None:
    clipping = AdaptiveClipping(clip_norm=2.0, target_quantile=0.5, learning_rate=0.2)
    # All 10 updates fit under C: C was too large, and shrinks by exp(-0.2 * (1 - 0.5)).
    assert clipping.update(10.0, 10) == pytest.approx(2.0 * math.exp(-0.1))
    # None fits: C grows by exp(0.2 * 0.5).
    assert clipping.update(0.0, 10) == pytest.approx(2.0)


@pytest.mark.parametrize("start", [0.01, 100.0])
def test_adaptive_clipping_converges_to_the_target_quantile(start: float) -> None:
    # Norms are log-normal with median 1; the 0.7 quantile is e^(0.5 * z_0.7) = 1.300.
    rng = np.random.default_rng(3)
    participants, quantile = 100, 0.7
    clipping = AdaptiveClipping(start, target_quantile=quantile, learning_rate=0.2)
    count_std = clipping.count_noise_std(participants)
    for _ in range(400):
        norms = np.exp(0.5 * rng.standard_normal(participants))
        unclipped = np.count_nonzero(norms <= clipping.clip_norm)
        clipping.update(unclipped + rng.normal(0.0, count_std), participants)
    reference = np.exp(0.5 * rng.standard_normal(200_000))
    assert np.mean(reference <= clipping.clip_norm) == pytest.approx(quantile, abs=0.06)


def test_count_noise_defaults_to_a_twentieth_of_the_participants() -> None:
    assert AdaptiveClipping(1.0, 0.5, 0.2).count_noise_std(40) == 2.0
    assert AdaptiveClipping(1.0, 0.5, 0.2, count_stddev=0.5).count_noise_std(40) == 0.5


def test_update_noise_pays_for_the_count_query() -> None:
    clipping = AdaptiveClipping(1.0, 0.5, 0.2)
    z_updates = clipping.update_noise_multiplier(1.0, 100)  # count std 5
    assert z_updates**-2 + (2 * 5.0) ** -2 == pytest.approx(1.0)
    assert z_updates > 1.0
    assert clipping.update_noise_multiplier(0.0, 100) == 0.0
    # Five institutions: count std 0.25 cannot carry a total multiplier of 1.
    with pytest.raises(ConfigError, match="clipped_count_stddev"):
        clipping.update_noise_multiplier(1.0, 5)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0.0, 0.5, 0.2), "clip_norm must be positive"),
        ((1.0, 0.0, 0.2), "target_quantile must be in"),
        ((1.0, 1.0, 0.2), "target_quantile must be in"),
        ((1.0, 1.5, 0.2), "target_quantile must be in"),
        ((1.0, 0.5, 0.0), "learning_rate must be positive"),
        ((1.0, 0.5, 0.2, -0.1), "count_stddev must be non-negative"),
    ],
)
def test_adaptive_clipping_refuses_settings_it_cannot_steer_with(
    arguments: tuple[float, ...], message: str
) -> None:
    """A zero bound, a quantile at the ends (C would run to 0 or to infinity) or a step of
    zero would make the bound meaningless or frozen: refused at construction."""
    with pytest.raises(ValueError, match=message):
        AdaptiveClipping(*arguments)


def test_a_noiseless_count_is_allowed_but_cannot_carry_update_noise() -> None:
    """count_stddev=0 (the count in the clear) is a valid setting, but then no multiplier is
    left for the updates: asking for noise is a configuration error, not a division by 0."""
    clipping = AdaptiveClipping(1.0, 0.5, 0.2, count_stddev=0.0)
    assert clipping.count_noise_std(40) == 0.0
    assert clipping.update_noise_multiplier(0.0, 40) == 0.0
    with pytest.raises(ConfigError, match="clipped_count_stddev above 0.5"):
        clipping.update_noise_multiplier(1.0, 40)


def test_update_noise_for_a_multiplier_other_than_one() -> None:
    """z_updates**-2 = z**-2 - (2 * count_std)**-2 at z = 2 (z = 1 would hide the exponent)."""
    z_updates = AdaptiveClipping(1.0, 0.5, 0.2).update_noise_multiplier(2.0, 100)  # count std 5
    assert z_updates == pytest.approx((2.0**-2 - 10.0**-2) ** -0.5, rel=1e-12)
    assert z_updates == pytest.approx(2.0412414523, rel=1e-9)


@pytest.mark.parametrize("noise_multiplier", [10.0, 12.0])
def test_a_multiplier_at_or_above_twice_the_count_std_is_refused(noise_multiplier: float) -> None:
    """At z = 2 * count_std the count alone would spend the whole budget (z_updates infinite)."""
    with pytest.raises(ConfigError, match="clipped_count_stddev above"):
        AdaptiveClipping(1.0, 0.5, 0.2).update_noise_multiplier(noise_multiplier, 100)


def test_adaptive_step_with_one_participant_and_refusal_without_any() -> None:
    clipping = AdaptiveClipping(clip_norm=2.0, target_quantile=0.5, learning_rate=0.2)
    assert clipping.update(1.0, 1) == pytest.approx(2.0 * math.exp(-0.1))
    with pytest.raises(ValueError, match="participants must be positive, got 0"):
        clipping.update(0.0, 0)
    assert clipping.clip_norm == pytest.approx(2.0 * math.exp(-0.1))


def test_clipped_update_never_exceeds_the_bound_even_by_float32_rounding() -> None:
    """The bound is the sensitivity: not even a rounding step above it."""
    rng = np.random.default_rng(4)
    for scale in np.geomspace(1e-2, 1e3, 60):
        result = clip_update(_delta(rng, float(scale)), 0.5)
        assert result.clipped
        assert update_norm(result.delta) <= 0.5


def test_update_exactly_at_the_bound_is_not_clipped() -> None:
    delta = {"a": np.array([3.0, 0.0], dtype=np.float32), "b": np.array([4.0], dtype=np.float32)}
    result = clip_update(delta, 5.0)
    assert not result.clipped and result.norm == 5.0
    assert np.array_equal(result.delta["a"], delta["a"]) and result.delta["b"][0] == 4.0


@pytest.mark.parametrize("clip_norm", [1e-3, 1e3])
def test_float64_deltas_leave_as_float32_clipped_or_not(clip_norm: float) -> None:
    delta = {"w": np.linspace(-1.0, 1.0, 7, dtype=np.float64)}
    result = clip_update(delta, clip_norm)
    assert result.clipped == (clip_norm < 1.0)
    assert result.delta["w"].dtype == np.float32


def test_zero_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="clip_norm must be positive, got 0"):
        clip_update({"w": np.ones(2, dtype=np.float32)}, 0.0)

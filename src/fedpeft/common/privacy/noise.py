"""Gaussian noise calibrated to the clip norm, added centrally or split among institutions.

Central noise: the server sees the plain sum of clipped updates and adds N(0, (sigma C)^2) to it
once, then divides by the participants (DP-FedAvg, McMahan et al. 2018).

Distributed noise: under secure aggregation the server only ever sees the sum, so nobody can
add noise after summing; instead every institution adds its share before masking, sized so
that the shares of any `min_participants` institutions already add up to the central noise.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping

import numpy as np

from fedpeft.common.adapter.state import AdapterState


def central_noise_std(noise_multiplier: float, clip_norm: float) -> float:
    """Std of the noise added once to the SUM of clipped updates: sigma * C.

    The sum has L2 sensitivity C (one institution more or less changes it by at most C), so
    this is the Gaussian mechanism with multiplier sigma; dividing by the participants
    afterwards is post-processing and divides the std of the average likewise.
    """
    if noise_multiplier < 0 or clip_norm <= 0:
        raise ValueError(
            f"need noise_multiplier >= 0 and clip_norm > 0, got {noise_multiplier}, {clip_norm}"
        )
    return noise_multiplier * clip_norm


def distributed_noise_std(
    noise_multiplier: float, clip_norm: float, min_participants: int
) -> float:
    """Std of one institution's share: sigma * C / sqrt(m), m = `min_participants`.

    Independent Gaussians add their variances, so any sum of k >= m shares has std
    sigma * C * sqrt(k / m): at least the central std, never less. When more than m
    institutions take part the noise is a bit larger than needed, the price of not knowing in
    advance who completes the round. m must be the institutions expected in the round minus the
    dropouts secure aggregation tolerates: a round that completes with fewer than m shares
    carries less noise than the accountant assumes, so it must be aborted, not aggregated.
    """
    if min_participants < 1:
        raise ValueError(f"min_participants must be at least 1, got {min_participants}")
    return central_noise_std(noise_multiplier, clip_norm) / math.sqrt(min_participants)


def noise_rng() -> np.random.Generator:
    """A generator freshly seeded with 256 bits from the OS (`secrets`).

    Noise that an observer could regenerate from a known seed protects nothing, so the seed
    never comes from config, time or a fixed value. The generator itself (PCG64) is a
    statistical, not a cryptographic, PRNG: fine against an observer who never sees its
    state, which stays inside this process.
    """
    return np.random.default_rng(secrets.randbits(256))


def add_gaussian_noise(
    state: Mapping[str, np.ndarray], std: float, rng: np.random.Generator | None = None
) -> AdapterState:
    """A new float32 state: every value plus independent N(0, std^2), drawn from `rng`
    (`noise_rng()` when None; tests pass a seeded one).

    Known caveat, not fixed here: sampling from a continuous Gaussian with floating-point
    numbers and then rounding (to float64, to float32, and under secure aggregation to a
    fixed-point grid) is not exactly the mechanism the proofs analyse. Mironov (2012) showed
    that the irregular spacing of floating-point values let an attacker tell, from the low
    bits, which input Laplace noise was added to; the same concern applies to Gaussian
    sampling. The rigorous remedy is a discrete Gaussian on the quantization grid (Canonne,
    Kamath and Steinke 2020), which fedpeft does not implement.
    """
    if std < 0 or not math.isfinite(std):
        raise ValueError(f"noise std must be finite and non-negative, got {std}")
    generator = noise_rng() if rng is None else rng
    noisy: AdapterState = {}
    for key, value in state.items():
        values = np.asarray(value, dtype=np.float64)
        noisy[key] = (values + generator.normal(0.0, std, size=values.shape)).astype(np.float32)
    return noisy

"""The `[secure_aggregation]` section: SecAgg+-style masking of the updates."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import Field, model_validator

from fedpeft.common.config.base import StrictModel
from fedpeft.common.errors import ConfigError
from fedpeft.common.ring import headroom_problem

NOISE_TAIL_SIGMAS = 6.0
"""How many noise standard deviations the clip range must hold above the update bound.

A Gaussian exceeds 6 std with probability 2e-9, so a 75,000-value update has one of its values
clipped about once in 7,000 rounds, by a fraction of a std (the delivered variance is measured
in tests/unit/secure_aggregation/test_secure_aggregation_strategy.py).
"""


def noise_headroom_problem(clip_range: float, clip_norm: float, noise_std: float) -> str | None:
    """Why `clip_range` cannot carry a clipped update plus its DP noise share, or None.

    Encoding clips each value to +/- clip_range after the institution added its noise share;
    a clipped share is no longer Gaussian and the sum carries less noise than the accountant
    charged for. Each value of an update clipped to L2 norm clip_norm lies within +/- clip_norm,
    so clip_range must reach clip_norm + NOISE_TAIL_SIGMAS * noise_std.
    """
    needed = clip_norm + NOISE_TAIL_SIGMAS * noise_std
    if clip_range >= needed:
        return None
    return (
        f"secure_aggregation.clip_range={clip_range:g} cannot hold an update clipped to "
        f"{clip_norm:g} plus a noise share of std {noise_std:.4g} ({NOISE_TAIL_SIGMAS:g} std): "
        f"encoding would truncate the DP noise; set secure_aggregation.clip_range to at least "
        f"{needed:.4g}"
    )


def default_neighbours(participants: int) -> int:
    """SecAgg+'s logarithmic degree: every other institution up to 5, then ~2 log2(n), even."""
    if participants <= 5:
        return max(1, participants - 1)
    degree = 2 * math.ceil(math.log2(participants))
    return min(participants - 1, degree)


class SecureAggregationConfig(StrictModel):
    """SecAgg+-style masking: the aggregator learns only the weighted sum of the updates.

    Privacy and accuracy trade-off: each update value (the change of the adapter over the
    round) is clipped to [-clip_range, clip_range] and rounded to one of 2**quantization_bits
    levels, so the decoded average is within clip_range / (2**quantization_bits - 1) of the
    plaintext average for every value inside the range. A wider range loses fewer outliers but
    coarsens the grid. Up to `max_dropouts` institutions may vanish after the key exchange and
    the round still completes: each institution's secrets are split among itself and its
    `neighbours`, and any t = neighbours + 1 - max_dropouts of them rebuild them. So the
    aggregator learns one institution's update only by colluding with enough of its neighbours:
    with max_dropouts = 0, all of them (together they know every pairwise mask); otherwise t of
    its share holders. The server also refuses settings where t is not more than half of the
    holders, since it could then ask for both secrets of one institution.
    """

    enabled: bool = Field(False, description="Mask every update; the server unmasks only the sum.")
    neighbours: int | None = Field(
        None, ge=1,
        description="Degree k of the communication graph; None: all others up to 5 "
        "institutions, then 2*ceil(log2 n).",
    )
    max_dropouts: int = Field(
        1, ge=0, description="Institutions that may drop out after the key exchange per round."
    )
    clip_range: float = Field(
        4.0, gt=0, le=1e6,
        description="Each update value is clipped to +/- this before encoding. Left unset under "
        "DP, it widens to hold the clipped update plus its noise share (6 std); a value set "
        "explicitly is checked instead.",
    )
    quantization_bits: int = Field(20, ge=8, le=40, description="Fixed-point levels: 2**bits.")
    ring_bits: int = Field(
        48, ge=32, le=64,
        description="Masked values live in the integers modulo 2**ring_bits and travel in "
        "ceil(ring_bits / 8) bytes each (48: 6 bytes, 1.5x a float32 update).",
    )

    def degree(self, participants: int) -> int:
        """The graph degree for `participants` institutions."""
        if self.neighbours is None:
            return default_neighbours(participants)
        return min(self.neighbours, participants - 1)

    def threshold(self, participants: int) -> int:
        """Shares needed to rebuild one institution's secrets (it holds one of its own)."""
        return self.degree(participants) + 1 - self.max_dropouts

    @model_validator(mode="after")
    def _ring_fits(self) -> SecureAggregationConfig:
        problem = headroom_problem(self.ring_bits, self.quantization_bits)
        if problem:
            raise ValueError(f"secure_aggregation.{problem}")
        return self


@dataclass(frozen=True)
class MaskingPlan:
    """Secure aggregation for one round: each institution's neighbours and how many of its
    share holders rebuild its secrets."""

    degree: int
    threshold: int


def masking_plan(sa: SecureAggregationConfig, participants: int) -> MaskingPlan:
    """Degree and threshold for `participants`, or ConfigError explaining why not.

    The threshold must exceed half of each institution's share holders: otherwise a server
    that declared an institution dropped and also asked for its self-mask shares could
    rebuild both of its secrets and unmask its update.
    """
    if participants < 2:
        raise ConfigError(
            "secure_aggregation.enabled needs at least 2 institutions per round, got "
            f"{participants}"
        )
    degree = sa.degree(participants)
    threshold = sa.threshold(participants)
    holders = degree + 1
    if threshold <= holders / 2 or threshold < 2:
        raise ConfigError(
            f"secure_aggregation.max_dropouts={sa.max_dropouts} is too many for {participants} "
            f"institutions with {degree} neighbours each: a secret needs {threshold} of "
            f"{holders} shares, which must be more than half (at most "
            f"{max(0, (holders - 1) // 2)} dropouts)"
        )
    return MaskingPlan(degree, threshold)

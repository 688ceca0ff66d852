"""Bounding one institution's contribution: L2 clipping, fixed or adaptive.

Client-level DP needs the whole update of an institution in one round, over every tensor
together, to have a bounded L2 norm: that bound is the sensitivity the noise is calibrated to.
Clipping per tensor would bound each tensor but let the total grow with the tensor count.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedpeft.common.adapter.state import AdapterState
from fedpeft.common.errors import ConfigError

logger = logging.getLogger(__name__)

# Storing the scaled update as float32 rounds each value by at most 2**-24 relative, which can
# lift the norm just above the bound; shrinking the factor by a little more keeps it below.
_FLOAT32_MARGIN = 1.0 - 2.0**-22


def update_norm(delta: Mapping[str, np.ndarray]) -> float:
    """Global L2 norm over every tensor, accumulated in float64.

    float32 accumulation over millions of LoRA values loses enough precision to misjudge
    updates right at the bound, and the bound is a privacy guarantee.
    """
    total = 0.0
    for tensor in delta.values():
        flat = np.asarray(tensor, dtype=np.float64).ravel()
        total += float(flat @ flat)
    return math.sqrt(total)


@dataclass(frozen=True)
class ClippedUpdate:
    """A clipped update and what clipping did to it (the norm feeds adaptive clipping)."""

    delta: AdapterState
    norm: float
    clipped: bool


def clip_update(delta: Mapping[str, np.ndarray], clip_norm: float) -> ClippedUpdate:
    """Scale `delta` by min(1, clip_norm / norm) into a new float32 dict.

    Scaling the whole update (not each tensor) keeps its direction, so the aggregate stays an
    unbiased average of directions when few updates are clipped (McMahan et al. 2018).
    A non-finite norm is an error: min(1, C / nan) would silently pass the update unclipped.
    """
    if clip_norm <= 0:
        raise ValueError(f"clip_norm must be positive, got {clip_norm}")
    norm = update_norm(delta)
    if not math.isfinite(norm):
        raise ValueError("update has NaN or infinite values; it cannot be clipped")
    clipped = norm > clip_norm
    if clipped:
        scale = np.float32(clip_norm / norm * _FLOAT32_MARGIN)
        scaled = {key: np.asarray(value, dtype=np.float32) * scale for key, value in delta.items()}
    else:
        scaled = {key: np.array(value, dtype=np.float32, copy=True) for key, value in delta.items()}
    return ClippedUpdate(delta=scaled, norm=norm, clipped=clipped)


class AdaptiveClipping:
    """Clip norm that tracks a quantile of the update norms (Andrew et al. 2021).

    Each round every institution reports one bit, "my norm was <= C"; the server learns only
    the noised count of those bits and moves C geometrically toward the norm below which a
    `target_quantile` fraction of updates fall. The count is itself a private query, which is
    why its noise (`count_noise_std`) is paid for by a larger update noise
    (`update_noise_multiplier`) rather than for free.
    """

    def __init__(
        self,
        clip_norm: float,
        target_quantile: float,
        learning_rate: float,
        count_stddev: float | None = None,
    ) -> None:
        if clip_norm <= 0:
            raise ValueError(f"clip_norm must be positive, got {clip_norm}")
        if not 0 < target_quantile < 1:
            raise ValueError(f"target_quantile must be in (0, 1), got {target_quantile}")
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        if count_stddev is not None and count_stddev < 0:
            raise ValueError(f"count_stddev must be non-negative, got {count_stddev}")
        self.clip_norm = clip_norm
        self.target_quantile = target_quantile
        self.learning_rate = learning_rate
        self.count_stddev = count_stddev

    def count_noise_std(self, participants: int) -> float:
        """Std of the noise on the unclipped count; participants / 20 unless configured.

        participants / 20 is the paper's default: the noisy fraction is then off by about 0.05,
        precise enough to steer C while costing little privacy.
        """
        if self.count_stddev is not None:
            return self.count_stddev
        return participants / 20

    def update_noise_multiplier(self, noise_multiplier: float, participants: int) -> float:
        """Noise multiplier for the updates so that updates and count together cost
        `noise_multiplier`.

        Both queries are Gaussian: the sum of updates with sensitivity C, the count with
        sensitivity 1/2 (each bit is counted as b - 1/2, which the server undoes knowing the
        number of participants). Together they cost one Gaussian query with multiplier z where
        z**-2 = z_updates**-2 + (2 * count_std)**-2 (Andrew et al. 2021), so the accountant
        charges `noise_multiplier` per round.
        """
        if noise_multiplier == 0:
            return 0.0
        count_std = self.count_noise_std(participants)
        if noise_multiplier >= 2 * count_std:
            raise ConfigError(
                f"privacy.noise_multiplier={noise_multiplier} needs "
                f"privacy.clipped_count_stddev above {noise_multiplier / 2:g} with adaptive "
                f"clipping ({count_std:g} for {participants} institutions)"
            )
        return (noise_multiplier**-2 - (2 * count_std) ** -2) ** -0.5

    def update(self, unclipped_count_noisy: float, participants: int) -> float:
        """Move C by exp(-eta * (b - gamma)) and return it, b the noisy unclipped fraction.

        When more than the target fraction of updates already fit under C, C shrinks, and vice
        versa; the geometric step makes the speed independent of the scale of the norms. The
        noisy fraction may leave [0, 1]; that is left as is, like in the paper.
        """
        if participants <= 0:
            raise ValueError(f"participants must be positive, got {participants}")
        fraction = unclipped_count_noisy / participants
        self.clip_norm *= math.exp(-self.learning_rate * (fraction - self.target_quantile))
        logger.debug("adaptive clipping: unclipped fraction %.3f, clip norm now %.6g",
                     fraction, self.clip_norm)
        return self.clip_norm

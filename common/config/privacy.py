"""The `[privacy]` section: client-level differential privacy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedpeft.common.config.base import StrictModel


class PrivacyConfig(StrictModel):
    """Client-level differential privacy on the adapter updates (DP-FedAvg)."""

    enabled: bool = Field(False, description="Clip every update and add Gaussian noise to the sum.")
    noise_multiplier: float = Field(
        1.0, ge=0, description="Noise standard deviation as a multiple of the clipping norm."
    )
    clipping: Literal["fixed", "adaptive"] = Field(
        "fixed", description="adaptive: the norm follows a quantile of the update norms."
    )
    clip_norm: float = Field(1.0, gt=0, description="L2 bound of one update (initial if adaptive).")
    target_quantile: float = Field(0.5, gt=0, lt=1, description="Adaptive clipping quantile.")
    clip_learning_rate: float = Field(0.2, gt=0, description="Adaptive clipping step size.")
    clipped_count_stddev: float | None = Field(
        None, ge=0, description="Adaptive: noise on the clipped-count; None: participants / 20."
    )
    delta: float = Field(1e-5, gt=0, lt=1, description="The delta of (epsilon, delta)-DP.")
    target_epsilon: float | None = Field(
        None, gt=0, description="Stop before the round that would exceed this epsilon."
    )
    max_norm_factor: float = Field(
        1.5, gt=1, description="Updates whose norm exceeds this multiple of the clip norm are refused."
    )

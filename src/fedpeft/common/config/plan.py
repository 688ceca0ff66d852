"""What a round will do, computed once from the config and the number of institutions in it.

Rules that need only the config are in the config validators (`RunConfig`); the few that also
need the round's size (the secure-aggregation degree and threshold, the adaptive-clipping
noise split, each institution's share of distributed noise) are here, in one function that the
strategies call once per round and that `fedpeft simulate` and `fedpeft config show` call
before anything runs, for the simulated federation's round size. Kept out of
`fedpeft.common.config.__init__` because it needs the privacy accountant.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedpeft.common.config.models import RunConfig
from fedpeft.common.config.secure_aggregation import MaskingPlan, masking_plan
from fedpeft.common.errors import ConfigError
from fedpeft.common.privacy import AdaptiveClipping, PrivacyAccountant, distributed_noise_std


@dataclass(frozen=True)
class RoundPlan:
    """One round of `participants` institutions, as the configuration settles it."""

    participants: int
    rounds: int
    """Rounds the run may take: all planned, or fewer when privacy.target_epsilon stops it."""
    masking: MaskingPlan | None
    noise_multiplier: float | None
    """Client-level DP: the multiplier on the updates' sum (adaptive clipping keeps a share of
    the configured one for the count); None without privacy.enabled."""
    noise_std: float | None
    """Under secure aggregation, the std of each institution's share of the noise (the sum of
    any round that completes carries at least the central std); None otherwise."""


def rounds_allowed(cfg: RunConfig) -> int:
    """All planned rounds, or fewer when privacy.target_epsilon would be exceeded.

    Planned with the configured sampling fraction; each round also checks the budget at the
    rate Flower actually sampled (`PrivateStrategy.exhausted`) in case availability differs.
    """
    planned = cfg.federation.num_rounds
    privacy = cfg.privacy
    if not privacy.enabled or privacy.target_epsilon is None:
        return planned
    accountant = PrivacyAccountant(privacy.noise_multiplier, privacy.delta)
    rate = cfg.federation.fraction_train
    allowed = accountant.rounds_within(privacy.target_epsilon, rate, planned)
    if allowed == 0:
        raise ConfigError(
            f"privacy.target_epsilon={privacy.target_epsilon} is exceeded by the first round "
            f"alone (epsilon {accountant.epsilon_after_next(rate):.3f} with noise_multiplier="
            f"{privacy.noise_multiplier}): raise the target or the noise multiplier"
        )
    return allowed


def plan(cfg: RunConfig, participants: int, clip_norm: float | None = None) -> RoundPlan:
    """The round's plan; ConfigError when `participants` institutions cannot run it.

    `clip_norm` is the round's bound when adaptive clipping has moved it (default: the
    configured privacy.clip_norm).
    """
    sa, privacy = cfg.secure_aggregation, cfg.privacy
    masking = masking_plan(sa, participants) if sa.enabled else None
    multiplier = std = None
    if privacy.enabled:
        multiplier = privacy.noise_multiplier
        if privacy.clipping == "adaptive":
            multiplier = AdaptiveClipping(
                privacy.clip_norm, privacy.target_quantile, privacy.clip_learning_rate,
                privacy.clipped_count_stddev).update_noise_multiplier(multiplier, participants)
        if masking is not None:
            std = distributed_noise_std(privacy.noise_multiplier, clip_norm or privacy.clip_norm,
                                        max(1, participants - sa.max_dropouts))
    return RoundPlan(participants, rounds_allowed(cfg), masking, multiplier, std)


def describe(round_plan: RoundPlan) -> str:
    """One line for logs and `fedpeft config show`."""
    parts = [f"{round_plan.participants} institutions per round", f"{round_plan.rounds} rounds"]
    if round_plan.masking is not None:
        parts.append(f"masking with {round_plan.masking.degree} neighbours, threshold "
                     f"{round_plan.masking.threshold}")
    if round_plan.noise_multiplier is not None:
        parts.append(f"noise multiplier {round_plan.noise_multiplier:g}")
    if round_plan.noise_std is not None:
        parts.append(f"noise std per institution {round_plan.noise_std:g}")
    return "; ".join(parts)


def simulated_participants(cfg: RunConfig) -> int:
    """How many institutions Flower samples per training round of a simulation."""
    clients = cfg.simulation.num_clients
    return min(clients, max(int(clients * cfg.federation.fraction_train),
                            cfg.federation.min_train_clients))


class RoundPlanner:
    """Computes each round's plan once and hands the same one to every strategy layer."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self._last: tuple[tuple[int, int, float | None], RoundPlan] | None = None

    def for_round(self, server_round: int, participants: int,
                  clip_norm: float | None = None) -> RoundPlan:
        key = (server_round, participants, clip_norm)
        if self._last is None or self._last[0] != key:
            self._last = (key, plan(self.cfg, participants, clip_norm))
        return self._last[1]

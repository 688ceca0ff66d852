"""Rounds a simulation can run within `privacy.example_target_epsilon`.

Each institution stops itself at the target (`fedpeft.client.rounds`); a simulation knows every
institution's rows, so it also plans: it runs only as many rounds as the institution whose
epsilon grows fastest (fewest rows: highest sampling rate) can train without passing the
target, instead of running into refusals. Planned as if every institution trained every round,
which is exact with full participation and an upper bound with sampling.
"""

from __future__ import annotations

from fedpeft.common.config import RunConfig
from fedpeft.common.privacy import epsilon_for
from fedpeft.common.training import dp_sgd
from fedpeft.common.training.learner import plan_round


def rounds_within(cfg: RunConfig, rows: int, planned: int) -> int:
    """Most rounds (at most `planned`) an institution with `rows` training rows can train."""
    privacy = cfg.privacy
    target = privacy.example_target_epsilon
    assert target is not None
    steps, _ = plan_round(cfg.training, rows)
    rate = dp_sgd.sampling_rate(cfg, rows)
    delta = privacy.effective_example_delta

    def fits(rounds: int) -> bool:
        return epsilon_for(privacy.example_noise_multiplier, rate, rounds * steps, delta) <= target

    low, high = 0, planned  # epsilon grows with the rounds: binary search the last that fits
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def rounds_within_example_budget(cfg: RunConfig, training_rows: list[int]) -> int:
    """The rounds to run: all planned, or fewer when an institution would pass the target."""
    planned = cfg.federation.num_rounds
    if not cfg.privacy.example_level or cfg.privacy.example_target_epsilon is None:
        return planned
    return min(rounds_within(cfg, rows, planned) for rows in training_rows)

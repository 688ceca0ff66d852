"""One round's plan: computed once per round from the config and the round's size."""

from __future__ import annotations

import pytest

from fedpeft.common.config import load_config
from fedpeft.common.config.plan import RoundPlanner, plan, rounds_allowed
from fedpeft.common.errors import ConfigError
from fedpeft.common.privacy import PrivacyAccountant


def test_plan_of_a_masked_private_round() -> None:
    cfg = load_config(overrides={"secure_aggregation.enabled": True, "privacy.enabled": True,
                                 "privacy.noise_multiplier": 2.0, "privacy.clip_norm": 0.5,
                                 "federation.num_rounds": 4})
    round_plan = plan(cfg, 10)
    # 10 institutions: degree 2 * ceil(log2 10) = 8, threshold 8 + 1 - 1 dropout
    assert round_plan.masking is not None
    assert (round_plan.masking.degree, round_plan.masking.threshold) == (8, 8)
    assert round_plan.rounds == 4
    assert round_plan.noise_multiplier == 2.0
    # each of the 10 - 1 institutions that must answer adds sigma * C / sqrt(9)
    assert round_plan.noise_std == pytest.approx(2.0 * 0.5 / 3)


def test_budget_caps_the_rounds() -> None:
    cfg = load_config(overrides={"privacy.enabled": True, "privacy.noise_multiplier": 1.0,
                                 "federation.num_rounds": 50})
    accountant = PrivacyAccountant(1.0, cfg.privacy.delta)
    target = accountant.epsilon_after_next(1.0) * 1.5  # one round fits, a second may not
    capped = cfg.model_copy(update={"privacy": cfg.privacy.model_copy(
        update={"target_epsilon": target})})
    allowed = rounds_allowed(capped)
    assert 1 <= allowed < 50
    assert plan(capped, 3).rounds == allowed


def test_a_round_too_small_for_masking_is_refused() -> None:
    cfg = load_config(overrides={"secure_aggregation.enabled": True})
    with pytest.raises(ConfigError, match="needs at least 2 institutions per round, got 1"):
        plan(cfg, 1)


def test_planner_computes_each_round_once() -> None:
    planner = RoundPlanner(load_config(overrides={"secure_aggregation.enabled": True}))
    first = planner.for_round(1, 5)
    assert planner.for_round(1, 5) is first  # the second layer of the same round
    assert planner.for_round(2, 5) is not first
    smaller = planner.for_round(2, 4).masking
    assert smaller is not None and smaller.degree == 3

"""The learning rate follows one curve over the whole federated run, warming up and decaying
to a floor rather than to 0."""

from __future__ import annotations

import math

import pytest
import torch

from fedpeft.common.config import load_config
from fedpeft.common.config.models import TrainingConfig
from fedpeft.common.errors import ConfigError
from fedpeft.common.training.schedule import global_progress, lr_factor, round_scheduler


@pytest.mark.parametrize(("scheduler", "progress", "expected"), [
    ("linear", 0.0, 0.0), ("linear", 0.05, 0.5), ("linear", 0.1, 1.0), ("linear", 0.55, 0.5),
    ("linear", 1.0, 0.0), ("cosine", 0.1, 1.0), ("cosine", 0.55, 0.5), ("cosine", 1.0, 0.0),
    ("constant", 0.05, 0.5), ("constant", 0.9, 1.0),
])
def test_factor_at_known_points_with_10_percent_warmup(scheduler, progress, expected) -> None:
    assert lr_factor(progress, scheduler, warmup_ratio=0.1) == pytest.approx(expected)


@pytest.mark.parametrize(("scheduler", "progress", "expected"), [
    ("cosine", 1.0, 0.1), ("linear", 1.0, 0.1), ("cosine", 0.55, 0.55), ("linear", 0.55, 0.55),
    ("cosine", 0.1, 1.0), ("cosine", 0.05, 0.5),
])
def test_decay_ends_at_the_floor_not_at_zero(scheduler, progress, expected) -> None:
    assert lr_factor(progress, scheduler, 0.1, min_lr_ratio=0.1) == pytest.approx(expected)


def test_no_warmup_starts_at_peak() -> None:
    assert lr_factor(0.0, "linear", 0.0) == 1.0
    assert lr_factor(0.25, "cosine", 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def _round_lrs(training: TrainingConfig, server_round: int, num_rounds: int,
               steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=training.learning_rate)
    scheduler = round_scheduler(optimizer, training, server_round, num_rounds, steps)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_rounds_continue_one_curve_instead_of_restarting() -> None:
    training = TrainingConfig(learning_rate=1.0, lr_scheduler="linear", warmup_ratio=0.0,
                              min_lr_ratio=0.0)
    lrs = [lr for r in (1, 2, 3, 4) for lr in _round_lrs(training, r, num_rounds=4, steps=5)]
    # each step runs at the learning rate of the point the run reaches when it ends
    assert lrs == pytest.approx([1 - (i + 1) / 20 for i in range(20)])
    assert lrs == sorted(lrs, reverse=True)


def test_default_schedule_warms_up_then_decays_to_the_floor() -> None:
    training = TrainingConfig(learning_rate=1.0)  # cosine, 5% warmup, floor 0.1
    lrs = [lr for r in range(1, 11) for lr in _round_lrs(training, r, num_rounds=10, steps=10)]
    assert lrs[0] == pytest.approx(0.2)  # first step 1/100 of the run, warmup is 5/100
    assert lrs[4] == pytest.approx(1.0)  # warmup ends
    assert max(lrs) == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1)  # the last step still learns
    assert min(lrs) > 0.0


def test_progress_is_independent_of_local_step_count() -> None:
    # an institution taking 3 steps and one taking 12 are at the same point mid-round 2 of 4
    assert global_progress(2, 4, 1, 2) == global_progress(2, 4, 6, 12) == pytest.approx(0.375)


def test_unknown_scheduler_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"training\.lr_scheduler='step'"):
        lr_factor(0.5, "step", 0.0)


def test_local_epochs_and_local_steps_together_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"training.local_epochs=2 and "
                                          r"training.local_steps=10 are both set; set exactly one"):
        load_config(overrides={"training.local_epochs": 2, "training.local_steps": 10})


def test_min_lr_ratio_above_one_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"training.min_lr_ratio"):
        load_config(overrides={"training.min_lr_ratio": 1.5})

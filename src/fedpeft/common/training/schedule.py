"""A learning-rate schedule over the whole federated run, not restarted each round.

Each round is a short local run; a per-round warmup and decay would reheat the learning rate
every round and the global model would never settle. Instead the schedule is a function of the
run's global progress p in [0, 1]: step k of S in round r of R sits at
p = (r - 1 + k / S) / R. Every institution computes the same curve without coordinating,
even when they take different numbers of local steps.

The decay ends at a floor (`training.min_lr_ratio` of the peak), not at 0: with a handful of
rounds, a decay to 0 spends the whole last round (a large share of all training) at learning
rates too small to move the model.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from fedpeft.common.config.models import TrainingConfig
from fedpeft.common.errors import ConfigError


def lr_factor(progress: float, scheduler: str, warmup_ratio: float,
              min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at global progress `progress` (clamped to [0, 1]).

    Linear warmup over the first `warmup_ratio` of the run, then constant, or linear or
    half-cosine decay from 1 to `min_lr_ratio` at the end of the run.
    """
    p = min(max(progress, 0.0), 1.0)
    if p < warmup_ratio:
        return p / warmup_ratio
    if scheduler == "constant":
        return 1.0
    decay = (p - warmup_ratio) / (1.0 - warmup_ratio)
    if scheduler == "linear":
        shape = 1.0 - decay
    elif scheduler == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * decay))
    else:
        raise ConfigError(
            f"training.lr_scheduler={scheduler!r}: expected constant, linear or cosine")
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def global_progress(server_round: int, num_rounds: int, step: int, steps_in_round: int) -> float:
    """Progress of the federated run at local step `step` (0-based) of round `server_round`."""
    return (server_round - 1 + step / steps_in_round) / num_rounds


def round_scheduler(optimizer: Optimizer, training: TrainingConfig, server_round: int,
                    num_rounds: int, steps_in_round: int) -> LambdaLR:
    """Scheduler for one round's optimizer: its base lr is the peak, scaled by `lr_factor`.

    Call `.step()` after each optimizer step, as with any PyTorch scheduler. The first step of
    the run takes a warmup step's learning rate, not 0 (a step at lr 0 would be wasted).
    """
    def factor(step: int) -> float:
        progress = global_progress(server_round, num_rounds, step + 1, steps_in_round)
        return lr_factor(progress, training.lr_scheduler, training.warmup_ratio,
                         training.min_lr_ratio)

    return LambdaLR(optimizer, factor)

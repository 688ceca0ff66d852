"""Config name -> configured Flower strategy.

fedpeft does not reimplement the strategies: FedAvg, FedProx (the client adds the proximal
term), FedAdam, FedYogi, FedAvgM and the robust FedMedian and FedTrimmedAvg are Flower's own
Message-API strategies. This module only maps `StrategyConfig` onto their constructor
arguments, one small builder per strategy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Strategy,
)

from fedpeft.common.config import RunConfig
from fedpeft.server.strategies.reply_metrics import aggregate_client_metrics


def _sampling(cfg: RunConfig) -> dict[str, Any]:
    fed = cfg.federation
    # Without local validation rows there is nothing for institutions to evaluate on; with
    # privacy on, institutions do not send their un-noised validation metrics (and refuse).
    evaluates = cfg.data.validation_fraction > 0 and not cfg.privacy.withholds_statistics
    fraction_evaluate = fed.fraction_evaluate if evaluates else 0.0
    return {
        "fraction_train": fed.fraction_train,
        "fraction_evaluate": fraction_evaluate,
        "min_train_nodes": fed.min_train_clients,
        "min_evaluate_nodes": fed.min_evaluate_clients,
        "min_available_nodes": fed.min_available_clients,
        "train_metrics_aggr_fn": aggregate_client_metrics,
        "evaluate_metrics_aggr_fn": aggregate_client_metrics,
    }


def _fedopt(cfg: RunConfig) -> dict[str, Any]:
    s = cfg.strategy
    # eta_l is only reported by Flower's FedOpt (the client's own optimizer owns the local
    # learning rate), so it mirrors training.learning_rate for honest logs.
    return {"eta": s.effective_server_learning_rate, "eta_l": cfg.training.learning_rate,
            "beta_1": s.beta_1, "beta_2": s.beta_2, "tau": s.tau}


_BUILDERS: dict[str, Callable[[RunConfig], Strategy]] = {
    "fedavg": lambda cfg: FedAvg(**_sampling(cfg)),
    "fedprox": lambda cfg: FedProx(**_sampling(cfg), proximal_mu=cfg.strategy.proximal_mu),
    "fedadam": lambda cfg: FedAdam(**_sampling(cfg), **_fedopt(cfg)),
    "fedyogi": lambda cfg: FedYogi(**_sampling(cfg), **_fedopt(cfg)),
    "fedavgm": lambda cfg: FedAvgM(
        **_sampling(cfg), server_learning_rate=cfg.strategy.effective_server_learning_rate,
        server_momentum=cfg.strategy.server_momentum,
    ),
    "fedmedian": lambda cfg: FedMedian(**_sampling(cfg)),
    "fedtrimmedavg": lambda cfg: FedTrimmedAvg(**_sampling(cfg), beta=cfg.strategy.trim_beta),
}


def build_strategy(cfg: RunConfig) -> Strategy:
    """The Flower strategy named by `cfg.strategy.name`, configured from `cfg`."""
    return _BUILDERS[cfg.strategy.name](cfg)

"""`lora.mode` -> the learner's `Exchange` (the settings a mode cannot honour are refused by
`RunConfig`'s validator)."""

from __future__ import annotations

from peft import PeftModel

from fedpeft.common.config.models import RunConfig
from fedpeft.common.lora.exchange import Exchange, FedAvgExchange
from fedpeft.common.lora.ffa import FfaExchange
from fedpeft.common.lora.stacking_learner import StackingExchange


def exchange_for(cfg: RunConfig, model: PeftModel, rank: int) -> Exchange:
    """The exchange of `cfg.lora.mode` for `model`, adapted at `rank` (<= peft.r)."""
    if cfg.lora.mode == "fedavg":
        return FedAvgExchange(model)
    if cfg.lora.mode == "ffa":
        return FfaExchange(model, cfg.lora.frozen_a_seed, rank, cfg.peft.r)
    return StackingExchange(model, cfg.training.seed)

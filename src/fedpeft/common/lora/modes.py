"""`lora.mode` -> the learner's `Exchange`, after refusing settings the mode cannot honour."""

from __future__ import annotations

from peft import PeftModel

from fedpeft.common.config.models import RunConfig
from fedpeft.common.errors import ConfigError
from fedpeft.common.lora.exchange import Exchange, FedAvgExchange
from fedpeft.common.lora.ffa import FfaExchange
from fedpeft.common.lora.stacking_learner import StackingExchange

_FIXED_BY_MODE = ("r", "lora_alpha", "rank_pattern", "alpha_pattern")
_EXACT_INITS = (True, False, "gaussian")


def check_lora_options(cfg: RunConfig) -> None:
    """Refuse what would break the exactness ffa and stacking promise (fedavg: nothing).

    Both modes set each institution's rank and alpha from peft.r and peft.lora_alpha, so
    options overriding them would give institutions different scalings; initialisations
    such as PiSSA or LoftQ rewrite the base weights from A and B, which these modes replace;
    stacking adds the global update to the base weights, which a quantized base cannot take.
    """
    mode, options = cfg.lora.mode, cfg.peft.options
    if mode == "fedavg":
        return
    for key in _FIXED_BY_MODE:
        if key in options:
            raise ConfigError(f"peft.options.{key}: lora.mode={mode!r} derives every "
                              "institution's rank and alpha from peft.r and peft.lora_alpha; "
                              "remove the option")
    init = options.get("init_lora_weights", True)
    if init not in _EXACT_INITS:
        raise ConfigError(f"peft.options.init_lora_weights={init!r}: lora.mode={mode!r} needs "
                          "a plain LoRA init (true, false or 'gaussian')")
    if mode == "stacking" and cfg.model.quantization != "none":
        raise ConfigError(f"model.quantization={cfg.model.quantization!r}: lora.mode='stacking' "
                          "adds the global update to the base weights, which must not be "
                          "quantized (use lora.mode='ffa')")


def exchange_for(cfg: RunConfig, model: PeftModel, rank: int) -> Exchange:
    """The exchange of `cfg.lora.mode` for `model`, adapted at `rank` (<= peft.r).

    `cfg` must have passed `check_lora_options` before the model was built.
    """
    if cfg.lora.mode == "fedavg":
        return FedAvgExchange(model)
    if cfg.lora.mode == "ffa":
        return FfaExchange(model, cfg.lora.frozen_a_seed, rank, cfg.peft.r)
    return StackingExchange(model, cfg.training.seed)

"""From our `[peft]` section to a peft config object, for any method peft registers.

fedpeft does not keep its own list of methods: the method name is looked up in peft's registry,
and our few generic settings (rank, alpha, dropout, target modules, virtual tokens) go only to
the config classes that have a field for them, so a newly released peft method works without a
code change here. Everything method-specific travels in `peft.options`, checked against the
config class's fields so a misspelt option is an error rather than a silently ignored keyword.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from peft import PEFT_TYPE_TO_CONFIG_MAPPING, PeftModel, PeftType, TaskType, get_peft_model
from peft import PeftConfig as PeftMethodConfig
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from fedpeft.common.config.models import PeftConfig, RunConfig
from fedpeft.common.errors import ConfigError, ModelError
from fedpeft.common.lora.ranks import scaled_alpha
from fedpeft.common.modeling.loader import quiet_transformers
from fedpeft.common.modeling.resolve import portable_model_name

_TASK_TYPES = {"classification": TaskType.SEQ_CLS, "causal-lm": TaskType.CAUSAL_LM}

# Our setting -> the field names it means in peft's config classes. LoHa and LoKr call the
# LoRA scaling numerator `alpha`; dropout is not aliased because their rank/module dropouts
# are different regularisers, not LoRA's input dropout.
_GENERIC_FIELDS: dict[str, tuple[str, ...]] = {
    "r": ("r",),
    "lora_alpha": ("lora_alpha", "alpha"),
    "lora_dropout": ("lora_dropout",),
    "target_modules": ("target_modules",),
    "num_virtual_tokens": ("num_virtual_tokens",),
}

_SHOWN_MODULE_NAMES = 8


def available_methods() -> list[str]:
    """Method names accepted in `peft.method`, as peft registers them, in lower case."""
    return sorted(str(peft_type.value).lower() for peft_type in PEFT_TYPE_TO_CONFIG_MAPPING)


def _config_class(method: str) -> type[PeftMethodConfig]:
    try:
        return PEFT_TYPE_TO_CONFIG_MAPPING[PeftType(method.upper())]
    except (ValueError, KeyError):
        raise ConfigError(
            f"peft.method={method!r} is not a peft method (available: "
            f"{', '.join(available_methods())})"
        ) from None


def _init_fields(config_cls: type[PeftMethodConfig]) -> set[str]:
    return {field.name for field in dataclasses.fields(config_cls) if field.init}


def _adaptable_module_names(model: nn.Module) -> list[str]:
    """Short names of the layers LoRA-style methods can wrap (Linear, and GPT-2's Conv1D)."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, (nn.Linear, Conv1D))}
    return sorted(names)


def _check_target_modules(targets: list[str], model: nn.Module) -> None:
    """Fail on a target that matches nothing, the way peft matches a list: full name or suffix."""
    module_names = [name for name, _ in model.named_modules() if name]
    for target in targets:
        if not any(name == target or name.endswith(f".{target}") for name in module_names):
            shown = ", ".join(_adaptable_module_names(model)[:_SHOWN_MODULE_NAMES])
            raise ModelError(
                f"peft.target_modules: no module named {target!r} in "
                f"{model.config.model_type} (Linear modules: {shown})"
            )


def _generic_values(peft: PeftConfig, rank: int | None) -> dict[str, Any]:
    """Our generic settings; at an institution's own `rank`, alpha scales with it so its
    LoRA scaling stays the federation's (see `fedpeft.common.lora.ranks`)."""
    values = {ours: getattr(peft, ours) for ours in _GENERIC_FIELDS}
    if rank is not None:
        rslora = bool(peft.options.get("use_rslora", False))
        values["r"] = rank
        values["lora_alpha"] = scaled_alpha(peft.lora_alpha, rank, peft.r, rslora)
    return values


def _generic_kwargs(peft: PeftConfig, fields: set[str], rank: int | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for ours, value in _generic_values(peft, rank).items():
        if value is None:  # target_modules=None: let peft pick its per-architecture default
            continue
        for name in _GENERIC_FIELDS[ours]:
            if name in fields:
                kwargs[name] = list(value) if isinstance(value, list) else value
    return kwargs


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def build_peft_config(cfg: RunConfig, model: PreTrainedModel,
                      rank: int | None = None) -> PeftMethodConfig:
    """The peft config for `cfg.peft` on `model`, at `rank` instead of peft.r when given;
    user mistakes raise Config/ModelError."""
    method = cfg.peft.method
    config_cls = _config_class(method)
    fields = _init_fields(config_cls)
    for key in cfg.peft.options:
        if key not in fields:
            raise ConfigError(
                f"peft.options.{key}: not a setting of peft method {method!r} "
                f"({config_cls.__name__})"
            )
    if cfg.peft.target_modules is not None and "target_modules" in fields:
        _check_target_modules(cfg.peft.target_modules, model)
    generic = _generic_kwargs(cfg.peft, fields, rank)
    kwargs = {"task_type": _TASK_TYPES[cfg.model.task], **generic, **cfg.peft.options}
    try:
        return config_cls(**kwargs)
    except (ValueError, TypeError) as err:
        # Our generic settings always reach the method (e.g. r=8 to OFT, whose r excludes its
        # default oft_block_size); name them so the user knows what to override.
        passed = ", ".join(f"{k}={v!r}" for k, v in generic.items() if k not in cfg.peft.options)
        hint = f" (fedpeft passed {passed}; override in peft.options)" if passed else ""
        raise ConfigError(f"peft.method={method!r}: {_one_line(err)}{hint}") from None


def apply_peft(cfg: RunConfig, model: PreTrainedModel, rank: int | None = None) -> PeftModel:
    """Wrap `model` (which this call consumes: peft edits it in place) with the configured method.

    `rank` is an institution's own LoRA rank (heterogeneous ranks); None means peft.r.

    Prompt-learning methods need dimensions of the model (token_dim, layers, heads); peft fills
    them from `model.config` here. Methods that do not support the architecture (e.g. LoHa on
    GPT-2's Conv1D) fail as a ModelError naming method and model type.
    """
    peft_config = build_peft_config(cfg, model, rank)
    try:
        with quiet_transformers(), warnings.catch_warnings():
            # peft flips fan_in_fan_out itself for GPT-2's Conv1D, then warns that it did.
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
            peft_model = get_peft_model(model, peft_config)
    except (ValueError, TypeError, NotImplementedError, KeyError, AttributeError) as err:
        raise ModelError(
            f"peft.method={cfg.peft.method!r} cannot be applied to {model.config.model_type}: "
            f"{_one_line(err)}"
        ) from None
    # peft records the folder the weights came from; a saved adapter should instead name the
    # model as configured, so it resolves on another machine (see resolve.portable_model_name).
    peft_model.peft_config[peft_model.active_adapter].base_model_name_or_path = (
        portable_model_name(cfg.model.name)
    )
    return peft_model

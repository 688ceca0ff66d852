"""The LoRA layers of a model that ffa and stacking can reason about exactly.

Both modes rely on a layer's update being scaling * B @ A and nothing else. DoRA and other
LoRA variants rescale or reshape it, a LoRA bias adds a term no factor product carries, and
LoRA on embeddings, convolutions, attention blocks or bare parameters has other factor
shapes; all are refused up front with the layer named, instead of averaging the wrong thing.
"""

from __future__ import annotations

from peft import PeftModel
from peft.tuners.lora.layer import LoraLayer, MultiheadAttention, ParamWrapper
from torch import nn

from fedpeft.common.errors import ModelError


def lora_layers(model: PeftModel, mode: str) -> dict[str, LoraLayer]:
    """The model's LoRA layers by name (the prefix of their state-dict keys), checked."""
    adapter = model.active_adapter
    layers: dict[str, LoraLayer] = {}
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or adapter not in module.r:
            continue
        # nn.ModuleDict has no .get()
        factor = module.lora_A[adapter] if adapter in module.lora_A else None  # noqa: SIM401
        if isinstance(module, (MultiheadAttention, ParamWrapper)) \
                or not isinstance(factor, nn.Linear):
            raise ModelError(f"lora.mode={mode!r}: layer {name!r} is a {type(module).__name__} "
                             "LoRA; only Linear layers have a plain B @ A update")
        if adapter in module.lora_variant:
            raise ModelError(f"lora.mode={mode!r}: layer {name!r} uses the LoRA variant "
                             f"{type(module.lora_variant[adapter]).__name__} (e.g. DoRA), whose "
                             "update is not B @ A")
        if module.lora_bias.get(adapter, False):
            raise ModelError(f"lora.mode={mode!r}: layer {name!r} has a LoRA bias "
                             "(peft.options.lora_bias), which no factor product carries")
        layers[name] = module
    if not layers:
        raise ModelError(f"lora.mode={mode!r}: the model has no LoRA layers")
    return layers

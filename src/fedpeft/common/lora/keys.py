"""How LoRA factors are named in an adapter state, and how A and B of one module pair up.

peft's state dict names each factor `<module>.lora_A.weight` / `<module>.lora_B.weight`, where
`<module>` is the layer's name inside the PeftModel (`base_model.model.` + its name in the base
model). Every other key (a classification head in `modules_to_save`) is a non-LoRA trainable.
"""

from __future__ import annotations

from collections.abc import Iterable

LORA_A_SUFFIX = ".lora_A.weight"
LORA_B_SUFFIX = ".lora_B.weight"
PEFT_PREFIX = "base_model.model."
"""What peft puts before a layer's name in the base model."""


def is_lora_a(key: str) -> bool:
    return key.endswith(LORA_A_SUFFIX)


def is_lora_b(key: str) -> bool:
    return key.endswith(LORA_B_SUFFIX)


def is_lora(key: str) -> bool:
    return is_lora_a(key) or is_lora_b(key)


def module_of(key: str) -> str:
    """The LoRA layer a factor key belongs to (the key without its factor suffix)."""
    for suffix in (LORA_A_SUFFIX, LORA_B_SUFFIX):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    raise ValueError(f"{key!r} is not a LoRA factor")


def lora_a_key(module: str) -> str:
    return module + LORA_A_SUFFIX


def lora_b_key(module: str) -> str:
    return module + LORA_B_SUFFIX


def lora_modules(keys: Iterable[str]) -> list[str]:
    """The LoRA layers named by `keys` (by their A or B factor), in first-seen order."""
    return list(dict.fromkeys(module_of(key) for key in keys if is_lora(key)))


def base_model_name(module: str) -> str:
    """The layer's name inside the base model, as peft's rank_pattern matches it."""
    return module[len(PEFT_PREFIX):] if module.startswith(PEFT_PREFIX) else module

"""Where the model runs and at which numeric precision.

Weights stay float32 and reduced precision is applied with autocast only: adapters and their
AdamW moments stay float32 (half-precision optimizer state loses small updates), and the
adapter exchanged each round is float32 whatever hardware an institution has, so mixed fleets
of CPU and GPU institutions average compatible tensors.

The GPU branches cannot run on the project's CPU-only machines; they are kept to the few lines
PyTorch and transformers document, and every unsupported combination fails as a ConfigError
before any model is loaded.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

import torch
from transformers import BitsAndBytesConfig

from fedpeft.common.config.models import ModelConfig
from fedpeft.common.errors import ConfigError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(model: ModelConfig) -> torch.device:
    """`model.device` as a torch device; "auto" picks CUDA when PyTorch can see one."""
    wanted = model.device
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device='cuda': PyTorch sees no CUDA device on this machine")
    return torch.device(wanted)


def resolve_precision(model: ModelConfig, device: torch.device) -> torch.dtype:
    """The autocast dtype; "auto" is bf16 on CUDA devices with bf16 support, else fp32."""
    wanted = model.precision
    if wanted == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if wanted != "fp32" and device.type != "cuda":
        raise ConfigError(
            f"model.precision={wanted!r} needs a CUDA device, but the model runs on {device.type} "
            "(use fp32 or auto)"
        )
    return _DTYPES[wanted]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[None]:
    """Mixed precision for forward passes; a no-op at float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def no_grad_autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Evaluation: no autograd graph, same numerics as training."""
    with torch.inference_mode(), autocast(device, dtype):
        yield


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """Loss scaling, which fp16 (not bf16) needs so small gradients do not flush to zero."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def quantization_config(model: ModelConfig) -> BitsAndBytesConfig | None:
    """bitsandbytes settings for loading a frozen 4/8-bit base (QLoRA), or None when not asked."""
    mode = model.quantization
    if mode == "none":
        return None
    if not torch.cuda.is_available():
        raise ConfigError(f"model.quantization={mode!r} needs a CUDA device; none is available")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            f"model.quantization={mode!r} needs the bitsandbytes package "
            "(pip install 'fedpeft[gpu]')"
        )
    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = resolve_precision(model, torch.device("cuda"))
    # NF4 with double quantization is the QLoRA recipe; matmuls run at the autocast dtype.
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)

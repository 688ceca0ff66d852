"""Device and precision resolution; the GPU-only settings must fail clearly without a GPU."""

from __future__ import annotations

import contextlib

import pytest
import torch

from fedpeft.common.config.models import ModelConfig
from fedpeft.common.errors import ConfigError
from fedpeft.common.modeling.device import (
    autocast,
    quantization_config,
    resolve_device,
    resolve_precision,
)

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


def _cfg(**model: str) -> ModelConfig:
    return ModelConfig.model_validate(model)


def test_auto_is_cpu_fp32_without_cuda() -> None:
    cfg = _cfg()
    device = resolve_device(cfg)
    assert device == torch.device("cpu")
    assert resolve_precision(cfg, device) == torch.float32
    assert isinstance(autocast(device, torch.float32), contextlib.nullcontext)
    assert quantization_config(cfg) is None


def test_cuda_without_cuda_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="model.device='cuda'"):
        resolve_device(_cfg(device="cuda"))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_on_cpu_is_a_config_error(precision: str) -> None:
    with pytest.raises(ConfigError, match=f"model.precision='{precision}'"):
        resolve_precision(_cfg(precision=precision), torch.device("cpu"))


def test_quantization_without_cuda_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="model.quantization='4bit' needs a CUDA device"):
        quantization_config(_cfg(quantization="4bit"))

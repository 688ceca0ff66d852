"""Run configuration: pydantic models and their TOML/CLI/wire loading."""

from fedpeft.common.config.loader import from_wire, load_config, save_config, to_toml, to_wire, validate_config
from fedpeft.common.config.models import (
    BUILTIN_DATASET,
    DEFAULT_MODEL,
    DataConfig,
    FederationConfig,
    ModelConfig,
    OutputConfig,
    PeftConfig,
    RunConfig,
    SecurityConfig,
    SimulationConfig,
    StrategyConfig,
    TrainingConfig,
)

__all__ = [
    "BUILTIN_DATASET",
    "DEFAULT_MODEL",
    "DataConfig",
    "FederationConfig",
    "ModelConfig",
    "OutputConfig",
    "PeftConfig",
    "RunConfig",
    "SecurityConfig",
    "SimulationConfig",
    "StrategyConfig",
    "TrainingConfig",
    "from_wire",
    "load_config",
    "save_config",
    "to_toml",
    "to_wire",
    "validate_config",
]

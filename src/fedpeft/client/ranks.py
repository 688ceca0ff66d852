"""Which LoRA rank this institution trains at (heterogeneous ranks, `lora.ranks`).

A deployed institution knows its own hardware, so its node config (`lora-rank`) decides; a
simulated one takes its place in `lora.ranks` round robin by partition id. Without either it
trains at peft.r like everyone else.
"""

from __future__ import annotations

from collections.abc import Mapping

from fedpeft.common.config import RunConfig
from fedpeft.common.errors import ConfigError
from fedpeft.common.lora.ranks import check_rank, simulated_rank
from fedpeft.common.wire.names import LORA_RANK, PARTITION_ID


def _node_rank(value: object) -> int:
    """The node config's value as an int: an integer, or its decimal text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"node config {LORA_RANK}={value!r} is not an integer")


def institution_rank(cfg: RunConfig, node_config: Mapping[str, object]) -> int | None:
    """This institution's LoRA rank, or None for the federation's own (peft.r).

    Refused (ConfigError naming the key and value): a rank below 1 or above peft.r, or any
    rank in a fedavg run, whose element-wise average needs one shape everywhere.
    """
    if LORA_RANK in node_config:
        value = node_config[LORA_RANK]
        return check_rank(cfg.peft, cfg.lora, _node_rank(value), f"node config {LORA_RANK}")
    if PARTITION_ID in node_config:
        return simulated_rank(cfg.peft, cfg.lora, int(node_config[PARTITION_ID]))  # type: ignore[call-overload]
    return None

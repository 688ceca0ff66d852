"""Heterogeneous LoRA ranks: which rank an institution trains at, and how its B travels.

An institution of rank r_i <= R (R = peft.r, the federation's rank) trains B_i (out x r_i)
against the first r_i rows of the shared A. Sent, B_i is zero-padded to out x R, so every
update has the federation's shapes (secure aggregation masks fixed-length vectors) and
(padded B_i) @ A == B_i @ A[:r_i]: the server's plain average stays exact. Received, the
institution keeps the first r_i columns of the global B. Its lora_alpha is scaled so its
LoRA scaling equals the federation's, otherwise each rank would weigh its product differently.
"""

from __future__ import annotations

import math

import numpy as np

from fedpeft.common.config.models import LoraAggregationConfig, PeftConfig
from fedpeft.common.errors import ConfigError


def pad_columns(b: np.ndarray, rank: int) -> np.ndarray:
    """`b` (out x r_i) zero-padded on the right to out x `rank`."""
    if b.shape[1] > rank:
        raise ValueError(f"cannot pad {b.shape[1]} columns down to {rank}")
    if b.shape[1] == rank:
        return b
    padded = np.zeros((b.shape[0], rank), dtype=b.dtype)
    padded[:, : b.shape[1]] = b
    return padded


def first_columns(b: np.ndarray, rank: int) -> np.ndarray:
    """The institution's share of a global B: its first `rank` columns, as a copy."""
    return np.array(b[:, :rank], copy=True)


def scaled_alpha(alpha: float, rank: int, full_rank: int, rslora: bool) -> float:
    """lora_alpha at `rank` that gives the scaling `alpha` gives at `full_rank`.

    peft scales by alpha / r (alpha / sqrt(r) with rsLoRA).
    """
    ratio = rank / full_rank
    return alpha * (math.sqrt(ratio) if rslora else ratio)


def check_rank(peft: PeftConfig, lora: LoraAggregationConfig, rank: int, source: str) -> int:
    """`rank` if this run can train an institution at it; `source` names where it came from."""
    if lora.mode == "fedavg":
        raise ConfigError(f"{source}={rank}: lora.mode='fedavg' averages A and B element by "
                          "element, so every institution uses peft.r (use lora.mode='ffa' or "
                          "'stacking' for per-institution ranks)")
    if rank < 1:
        raise ConfigError(f"{source}={rank}: a LoRA rank must be >= 1")
    if rank > peft.r:
        raise ConfigError(f"{source}={rank} exceeds peft.r={peft.r}, the federation's rank")
    return rank


def simulated_rank(peft: PeftConfig, lora: LoraAggregationConfig,
                   partition_id: int) -> int | None:
    """Rank of simulated institution `partition_id`: lora.ranks round robin, None without."""
    ranks = lora.ranks
    if not ranks:
        return None
    index = partition_id % len(ranks)
    return check_rank(peft, lora, ranks[index], f"lora.ranks[{index}]")

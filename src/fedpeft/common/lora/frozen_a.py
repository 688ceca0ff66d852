"""LoRA A matrices every party derives alike from a seed and a name, so none travels.

FFA-LoRA freezes A; if each institution and the server derive the same A without exchanging
it, averaging B alone is exact (mean of B_i @ A is (mean B_i) @ A) and half the LoRA bytes
stay home. The matrix depends only on the text it is seeded from and its size, never on the
global torch RNG (which would differ with the order modules are created in).
"""

from __future__ import annotations

import hashlib
import math

import torch


def seeded_a(label: str, rows: int, in_features: int) -> torch.Tensor:
    """A float32 rows x in_features matrix drawn from the SHA-256 of `label`.

    Uniform in +-1/sqrt(in_features): peft's default init of lora_A (kaiming uniform with
    a = sqrt(5)), so a seeded A trains like a freshly initialised one.
    """
    seed = int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "big") >> 1
    generator = torch.Generator(device="cpu").manual_seed(seed)
    bound = 1.0 / math.sqrt(in_features)
    return (torch.rand(rows, in_features, generator=generator) * 2.0 - 1.0) * bound


def frozen_a(seed: int, module: str, rank: int, full_rank: int, in_features: int) -> torch.Tensor:
    """The first `rank` rows of the FFA frozen A of `module` (its name in the PeftModel).

    The federation's full_rank x in matrix is drawn whole and cut, so every institution's A is
    a prefix of the same matrix whatever its rank.
    """
    return seeded_a(f"ffa:{seed}:{module}", full_rank, in_features)[:rank].clone()


def fresh_a(seed: int, server_round: int, module: str, rows: int, in_features: int) -> torch.Tensor:
    """A stacking institution's starting A for a round: new directions every round."""
    return seeded_a(f"stacking:{seed}:{server_round}:{module}", rows, in_features)

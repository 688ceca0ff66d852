"""The `[lora]` section: how the server combines LoRA factors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedpeft.common.config.base import StrictModel

LoraMode = Literal["fedavg", "ffa", "stacking"]


class LoraAggregationConfig(StrictModel):
    """How the server combines LoRA factors.

    fedavg averages A and B separately (the average of products is not the product of
    averages, so it is inexact); ffa freezes A from a seed all institutions share and trains
    only B, so averaging B is exact and half the bytes travel; with `ranks`, each institution
    uses the first r_i rows of the shared A and zero-pads its B to the federation's rank
    (`peft.r`), so the sum stays exact. stacking (FLoRA) concatenates the factors of every
    institution: exact for any ranks, but the server sees each institution's adapter.
    """

    mode: LoraMode = Field("fedavg", description="fedavg | ffa | stacking.")
    frozen_a_seed: int = Field(0, ge=0, description="ffa: seed of the shared frozen A matrices.")
    max_stacked_rank: int = Field(
        512, ge=1,
        description="stacking: the largest LoRA rank the stacked global may reach; a round "
        "that would pass it stops the run (each update's rank is capped by peft.r).",
    )
    ranks: list[int] | None = Field(
        None,
        description="Heterogeneous ranks (ffa or stacking): in a simulation institution i uses "
        "ranks[i % len(ranks)]; a deployed institution sets node config lora-rank. Each <= peft.r.",
    )

    @model_validator(mode="after")
    def _ranks_positive(self) -> LoraAggregationConfig:
        if self.ranks is not None:
            if not self.ranks:
                raise ValueError("lora.ranks must not be empty (omit it for one shared rank)")
            bad = [r for r in self.ranks if r < 1]
            if bad:
                raise ValueError(f"lora.ranks: rank {bad[0]} must be >= 1")
        return self

"""One `Learner` per process and model setup, reused across rounds.

Loading the base model is the most expensive thing a client does; a simulation actor or a
long-lived deployment process serves many rounds, so it is loaded once per (model, PEFT,
training, labels, LoRA mode, privacy, own rank) combination. Each round starts by overwriting
the adapter with the global one, so reuse cannot leak state from one round into the next.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from fedpeft.common.config import DataConfig, RunConfig, from_wire, to_wire
from fedpeft.common.training.learner import Learner


@lru_cache(maxsize=2)
def _learner(key: str, rank: int | None) -> Learner:
    cfg = from_wire(key)
    return Learner(cfg, cfg.data.labels, rank)


def learner_for(cfg: RunConfig, cpu_threads: int | None, rank: int | None = None) -> Learner:
    """The cached learner for this setup at this institution's LoRA `rank` (None: peft.r);
    `cpu_threads` caps torch so actors do not oversubscribe."""
    if cpu_threads is not None and cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    # Only what shapes the model or its training belongs in the key; rounds, sampling and
    # paths do not. privacy: the learner runs DP-SGD when privacy.example_level is on.
    key = to_wire(RunConfig(model=cfg.model, peft=cfg.peft, training=cfg.training,
                            data=DataConfig(labels=cfg.data.labels), lora=cfg.lora,
                            privacy=cfg.privacy))
    return _learner(key, rank)

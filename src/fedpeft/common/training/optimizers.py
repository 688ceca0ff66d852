"""The client optimizer of a round, and its state carried to the next round when asked.

By default each round starts a fresh optimizer: the moments describe a model the server has
since replaced by the average. `training.optimizer_state = "keep"` carries them instead (a
common choice for SGD momentum over many short rounds). The state crosses rounds as named
numpy arrays, so the client can keep it in Flower's `Context.state`, which survives between
messages even when a fresh process handles each one; it never leaves the institution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from fedpeft.common.config.models import TrainingConfig
from fedpeft.common.errors import ConfigError

OptimizerState = dict[str, np.ndarray]
"""`"<parameter index>.<name>"` -> value, e.g. `"3.exp_avg"`, `"3.step"`."""


def build_optimizer(params: Sequence[torch.nn.Parameter], training: TrainingConfig,
                    carried: Mapping[str, np.ndarray] | None = None) -> torch.optim.Optimizer:
    """`training.optimizer` at the peak learning rate, resuming `carried` moments if given."""
    optimizer: torch.optim.Optimizer
    if training.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=training.learning_rate, momentum=training.momentum,
                                    weight_decay=training.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=training.learning_rate,
                                      weight_decay=training.weight_decay)
    if carried:
        _load(optimizer, params, carried)
    return optimizer


def export_state(optimizer: torch.optim.Optimizer,
                 params: Sequence[torch.nn.Parameter]) -> OptimizerState:
    """The optimizer's per-parameter state as float32/int arrays (copies)."""
    index = {id(p): i for i, p in enumerate(params)}
    out: OptimizerState = {}
    for param, state in optimizer.state.items():
        for name, value in state.items():
            array = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
            out[f"{index[id(param)]}.{name}"] = np.array(array, copy=True)
    return out


def _load(optimizer: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter],
          carried: Mapping[str, np.ndarray]) -> None:
    for key, array in carried.items():
        position, _, name = key.partition(".")
        if not position.isdigit() or int(position) >= len(params) or not name:
            raise ConfigError(f"training.optimizer_state='keep': carried state {key!r} matches "
                              "no trainable parameter (the model changed between rounds)")
        param = params[int(position)]
        tensor = torch.from_numpy(np.array(array, copy=True))
        if name != "step" and tuple(tensor.shape) != tuple(param.shape):
            raise ConfigError(
                f"training.optimizer_state='keep': carried {key!r} has shape "
                f"{tuple(tensor.shape)}, the parameter {tuple(param.shape)}")
        optimizer.state[param][name] = tensor.to(param.device)

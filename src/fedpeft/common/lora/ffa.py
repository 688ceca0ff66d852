"""FFA-LoRA on one learner: A frozen from the shared seed, only B (and heads) travel.

The update sent has no lora_A keys and each B zero-padded to the federation's rank R, so
every institution sends the same keys and shapes whatever its own rank (see `ranks`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from peft import PeftModel

from fedpeft.common.adapter.state import (
    AdapterState,
    adapter_state,
    check_state_shapes,
    load_adapter_state,
)
from fedpeft.common.lora.exchange import SavedLora
from fedpeft.common.lora.frozen_a import frozen_a
from fedpeft.common.lora.keys import is_lora_a, is_lora_b, lora_a_key, module_of
from fedpeft.common.lora.layers import lora_layers
from fedpeft.common.lora.ranks import first_columns, pad_columns


class FfaExchange:
    """Freezes every lora_A of `model` to the first `rank` rows of the shared A."""

    def __init__(self, model: PeftModel, seed: int, rank: int, full_rank: int) -> None:
        self._model = model
        self._seed = seed
        self._rank = rank
        self._full_rank = full_rank
        self._layers = lora_layers(model, "ffa")
        adapter = model.active_adapter
        with torch.no_grad():
            for name, layer in self._layers.items():
                weight = layer.lora_A[adapter].weight
                shared = frozen_a(seed, name, rank, full_rank, layer.in_features)
                weight.copy_(shared.to(device=weight.device, dtype=weight.dtype))
                weight.requires_grad_(False)
        self._scaling = float(next(iter(self._layers.values())).scaling[adapter])
        self._shapes = {key: (value.shape[0], full_rank) if is_lora_b(key) else value.shape
                        for key, value in adapter_state(model).items() if not is_lora_a(key)}
        """The exchanged layout: the federation's, whatever this institution's rank."""

    def outgoing(self) -> AdapterState:
        return {key: pad_columns(value, self._full_rank) if is_lora_b(key) else value
                for key, value in adapter_state(self._model).items() if not is_lora_a(key)}

    def adopt(self, state: Mapping[str, np.ndarray]) -> None:
        check_state_shapes(self._shapes, state)
        current = adapter_state(self._model)
        load_adapter_state(self._model, {
            key: value if is_lora_a(key)
            else first_columns(state[key], self._rank) if is_lora_b(key) else state[key]
            for key, value in current.items()})

    def begin_round(self, server_round: int) -> None:
        """B continues from the adopted global; A never changes."""

    def saved_form(self, state: Mapping[str, np.ndarray]) -> SavedLora:
        """The global at the federation's rank, with the full shared A every party derives."""
        check_state_shapes(self._shapes, state)
        tensors: AdapterState = {}
        for key, value in state.items():
            if is_lora_b(key):
                module = module_of(key)
                layer = self._layers[module]
                a = frozen_a(self._seed, module, self._full_rank, self._full_rank,
                             layer.in_features)
                tensors[lora_a_key(module)] = a.numpy()
            tensors[key] = np.asarray(value, dtype=np.float32)
        return SavedLora(tensors, self._scaling)

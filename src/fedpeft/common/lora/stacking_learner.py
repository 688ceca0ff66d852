"""FLoRA stacking on one learner: the global update lives in the base weights, LoRA is local.

A stacked global (see `stacking`) can have any rank per layer and a new one every round, so
it cannot be loaded into a LoRA of fixed rank. Instead the learner adds each layer's global
B @ A to a pristine copy of that layer's base weight (only the targeted layers are copied), so
adopting a new global never adds to an old one, and zeroes its own B so its LoRA adds nothing.
Before training it starts a fresh LoRA (a new seeded A, B = 0); what it sends is that LoRA
alone, with the scaling folded into B so the server can stack it as is.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from peft import PeftModel
from peft.tuners.lora.layer import Linear as LoraLinear

from fedpeft.common.adapter.state import AdapterState, adapter_state, load_adapter_state
from fedpeft.common.errors import ModelError
from fedpeft.common.lora.exchange import SavedLora
from fedpeft.common.lora.frozen_a import fresh_a
from fedpeft.common.lora.keys import is_lora_a, is_lora_b, lora_a_key, lora_b_key, module_of
from fedpeft.common.lora.layers import lora_layers
from fedpeft.common.lora.stacking_math import shapes_of, stack_ranks


class StackingExchange:
    """Keeps the pristine targeted base weights of `model` to apply each global onto."""

    def __init__(self, model: PeftModel, seed: int) -> None:
        self._model = model
        self._seed = seed
        self._adapter = model.active_adapter
        self._layers = lora_layers(model, "stacking")
        for name, layer in self._layers.items():
            if not isinstance(layer, LoraLinear):
                raise ModelError(f"lora.mode='stacking': layer {name!r} is a "
                                 f"{type(layer).__name__}, whose base weight cannot take the "
                                 "global update")
        self._pristine = {name: layer.get_base_layer().weight.detach().clone()
                          for name, layer in self._layers.items()}
        self._shapes = shapes_of(adapter_state(model))
        """The own LoRA's layout; a global may differ from it only in its ranks."""

    def _scaling(self, module: str) -> float:
        return float(self._layers[module].scaling[self._adapter])

    def outgoing(self) -> AdapterState:
        return {key: value * np.float32(self._scaling(module_of(key))) if is_lora_b(key) else value
                for key, value in adapter_state(self._model).items()}

    def adopt(self, state: Mapping[str, np.ndarray]) -> None:
        stack_ranks(self._shapes, shapes_of(state))
        own = adapter_state(self._model)
        with torch.no_grad():
            for name, layer in self._layers.items():
                a = torch.from_numpy(np.asarray(state[lora_a_key(name)], dtype=np.float64))
                b = torch.from_numpy(np.asarray(state[lora_b_key(name)], dtype=np.float64))
                delta = b @ a
                if layer.fan_in_fan_out:  # GPT-2's Conv1D stores the weight as in x out
                    delta = delta.T
                pristine = self._pristine[name]
                weight = layer.get_base_layer().weight
                weight.copy_((pristine.to(torch.float64) + delta.to(pristine.device))
                             .to(dtype=weight.dtype))
        load_adapter_state(self._model, {
            key: value if is_lora_a(key) else np.zeros_like(value) if is_lora_b(key)
            else state[key] for key, value in own.items()})

    def begin_round(self, server_round: int) -> None:
        """A fresh LoRA, the same on every institution for the round, that adds nothing yet."""
        with torch.no_grad():
            for name, layer in self._layers.items():
                weight = layer.lora_A[self._adapter].weight
                a = fresh_a(self._seed, server_round, name, weight.shape[0], layer.in_features)
                weight.copy_(a.to(device=weight.device, dtype=weight.dtype))
                layer.lora_B[self._adapter].weight.zero_()

    def saved_form(self, state: Mapping[str, np.ndarray]) -> SavedLora:
        """The stacked global as it is: B already carries the scaling, so the LoRA's is 1."""
        stack_ranks(self._shapes, shapes_of(state))
        return SavedLora({key: np.asarray(value, dtype=np.float32) for key, value in state.items()},
                         1.0)

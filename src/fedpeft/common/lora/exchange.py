"""What a learner sends and how it takes in a global adapter, per `lora.mode`.

The `Learner` delegates these four steps to one `Exchange` so training and evaluation code
stays the same in every mode: `outgoing` (the update to send), `adopt` (a global adapter
received), `begin_round` (before local training) and `saved_form` (a global adapter as
the tensors of a peft LoRA folder).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from peft import PeftModel

from fedpeft.common.adapter.state import AdapterState, adapter_state, load_adapter_state


@dataclass(frozen=True)
class SavedLora:
    """A global adapter as a peft LoRA checkpoint: every factor at its own rank, and the one
    LoRA scaling (alpha / r) all layers use."""

    tensors: AdapterState
    scaling: float


class Exchange(Protocol):
    """How one learner's adapter and the federation's global adapter relate."""

    def outgoing(self) -> AdapterState:
        """The update this institution sends after training (float32 copies)."""

    def adopt(self, state: Mapping[str, np.ndarray]) -> None:
        """Make the model compute with the global `state`; refused whole if it does not fit."""

    def begin_round(self, server_round: int) -> None:
        """Prepare the trainable factors for a round of local training."""

    def saved_form(self, state: Mapping[str, np.ndarray]) -> SavedLora | None:
        """The global `state` for a peft folder; None: it is the model's own adapter form."""


class FedAvgExchange:
    """peft's own adapter state both ways: what the model trains is what travels."""

    def __init__(self, model: PeftModel) -> None:
        self._model = model

    def outgoing(self) -> AdapterState:
        return adapter_state(self._model)

    def adopt(self, state: Mapping[str, np.ndarray]) -> None:
        load_adapter_state(self._model, state)

    def begin_round(self, server_round: int) -> None:
        """Training continues from the adopted adapter."""

    def saved_form(self, state: Mapping[str, np.ndarray]) -> SavedLora | None:
        return None

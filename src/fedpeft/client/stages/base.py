"""What a protection stage of the institution sees, and the shape every stage has.

The server wraps its Flower strategy in one layer per protection (`fedpeft.server.strategies`);
the institution mirrors that with one stage per protection on the update's way out:

    trained adapter -> privacy (clip, noise share) -> masking -> sealing -> ledger -> reply

Each stage owns its client half and its refusals, and is in the chain only when the run asks
for its protection (`fedpeft.client.stages.chain`). A stage reads the round (`RoundInput`) and
rewrites the outgoing update (`Outgoing`): it never edits what an earlier stage produced in
place, so a stage's effect is what it returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message

from fedpeft.client.identity import InstitutionKeys
from fedpeft.common.config import RunConfig
from fedpeft.common.wire import secagg as secagg_wire

if TYPE_CHECKING:  # torch-heavy: the secure-aggregation handlers import this module too
    from fedpeft.client.local_data import LocalData
    from fedpeft.common.adapter.state import AdapterState
    from fedpeft.common.training.learner import Learner


@dataclass(frozen=True)
class RoundInput:
    """One message's round at this institution: what it was asked and what it holds."""

    msg: Message
    context: Context
    cfg: RunConfig
    config: ConfigRecord
    data: LocalData
    learner: Learner
    received: AdapterState
    """The global adapter as received, before local training."""
    keys: InstitutionKeys | None
    """None when the run exchanges plaintext adapters (security.seal_updates = false)."""
    server_round: int

    @property
    def federation_id(self) -> str:
        if self.keys is not None:
            return self.keys.federation_id
        return self.cfg.security.federation_id or secagg_wire.UNSEALED_FEDERATION

    @property
    def name(self) -> str:
        return self.keys.name if self.keys is not None else self.data.name


@dataclass(frozen=True)
class Outgoing:
    """The update on its way out, as the stages so far have made it."""

    state: AdapterState
    """What the next stage protects: the trained adapter, or what a stage made of it."""
    delta: AdapterState | None
    """The round's change of the adapter (set when a stage needs it: privacy, masking)."""
    weight: int
    """The FedAvg weight this update carries (example count; 1 under DP)."""
    metrics: dict[str, float]
    ledger: dict[str, Any] = field(default_factory=dict)
    """Facts for the institution's own ledger (form, clipping, noise ...)."""
    arrays: ArrayRecord | None = None
    """The wire form, once a stage has produced it (sealing)."""

    def but(self, **changes: Any) -> Outgoing:
        """A copy with `changes`; metrics and ledger facts are copied, never shared."""
        changes.setdefault("metrics", dict(self.metrics))
        changes.setdefault("ledger", dict(self.ledger))
        return replace(self, **changes)


class ClientStage(ABC):
    """One protection applied to the outgoing update."""

    name: str
    """Short name for logs and `__repr__` (e.g. "privacy", "masking")."""
    needs_delta: bool = False
    """True when the stage works on the round's change rather than on the adapter itself."""

    @abstractmethod
    def apply(self, out: Outgoing, rnd: RoundInput) -> Outgoing:
        """The update after this protection, or SecurityError when it cannot be applied."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

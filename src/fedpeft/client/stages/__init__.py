"""The institution's protections, one stage each, applied in order to the outgoing update.

`chain` builds the stages a round's run asks for; `rounds.train` runs them after local
training. Mirrors the server's strategy wrappers (`fedpeft.server.strategies`).
"""

from __future__ import annotations

from fedpeft.client.stages.base import ClientStage, Outgoing, RoundInput
from fedpeft.client.stages.chain import chain

__all__ = ["ClientStage", "Outgoing", "RoundInput", "chain"]

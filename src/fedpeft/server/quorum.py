"""When a round's training counts: enough institutions replied before the deadline.

Institutions drop out in practice (a VPN down, a stalled GPU, a restart). A round whose
training replies reach the quorum is aggregated from those replies; the institutions that did
not answer in time are recorded as late and their replies, should they still come, are
dropped and recorded where they arrive (`fedpeft.server.polling_grid`), never aggregated. A
round below quorum is not fatal unless configured so: it is sent again, or skipped
with the global adapter unchanged, and the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedpeft.common.config import RunConfig

BelowQuorum = Literal["retry", "skip", "stop"]


@dataclass(frozen=True)
class QuorumPolicy:
    """`quorum` replies needed (at most those sampled); what to do below it."""

    quorum: int
    below: BelowQuorum
    retries: int

    @classmethod
    def from_config(cls, cfg: RunConfig) -> QuorumPolicy:
        fed = cfg.federation
        return cls(fed.quorum or fed.min_train_clients, fed.below_quorum,
                   fed.round_retries if fed.below_quorum == "retry" else 0)

    def needed(self, sent: int) -> int:
        """Replies a round sent to `sent` institutions needs."""
        return min(sent, self.quorum)

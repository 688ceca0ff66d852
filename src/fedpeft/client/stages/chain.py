"""Which protection stages a round's update goes through, in which order.

A stage is in the chain when the run config asks for its protection, not only when the
message carries its parameters: a run that asks for DP or masking and a message without the
bound or the masking parameters is refused by the stage itself, instead of the update leaving
unprotected.
"""

from __future__ import annotations

from fedpeft.client.stages.base import ClientStage, RoundInput
from fedpeft.client.stages.ledger import Recording
from fedpeft.client.stages.masking import Masking
from fedpeft.client.stages.privacy import Privacy
from fedpeft.client.stages.sealing import Sealing
from fedpeft.common.wire import secagg as secagg_wire
from fedpeft.common.wire.names import DP_CLIP_NORM


def chain(rnd: RoundInput) -> list[ClientStage]:
    """privacy -> masking -> sealing -> ledger, each only when the run asks for it."""
    masked = (secagg_wire.RECORD in rnd.msg.content.config_records
              or rnd.cfg.secure_aggregation.enabled)
    stages: list[ClientStage] = []
    if DP_CLIP_NORM in rnd.config or rnd.cfg.privacy.enabled:
        stages.append(Privacy(masked=masked))
    if masked:
        stages.append(Masking())
    if rnd.keys is not None:
        stages.append(Sealing(rnd.keys))
        if rnd.cfg.audit.ledger:
            stages.append(Recording(rnd.keys))
    return stages

"""The masking stage: the institution's half of secure aggregation (key exchange, masking,
unmasking shares).

The protocol state (private keys, the self-mask seed, the shares other institutions sent) is
kept in Flower's `Context.state` between the round's messages: it lives on the institution's
node (the SuperNode, or the simulation's node state) and never travels to the SuperLink.

What an institution checks before it helps: every stage's parameters are bound to one run
and round (`secagg_wire.round_context`), and it masks only for the run and round of the train
message it is answering; the unmasking stage refuses requests that would reveal both secrets
of one institution (`SecAggClient.unmask`). The run's settings come from the server, but an
institution whose run config asks for secure aggregation refuses to send an unmasked update.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.typing import ConfigRecordValues

from fedpeft.client.stages.base import ClientStage, Outgoing, RoundInput
from fedpeft.common.crypto.secagg import SecAggClient, SecAggParams
from fedpeft.common.errors import SecurityError
from fedpeft.common.wire import secagg as wire
from fedpeft.common.wire.names import NUM_EXAMPLES

logger = logging.getLogger(__name__)

_CLIENT = "client"
_CONTEXT = "context"


def _params(msg: Message) -> tuple[SecAggParams, int]:
    record = msg.content.config_records.get(wire.RECORD)
    if record is None:
        raise SecurityError("secure aggregation message without its parameters")
    sid = record.get(wire.ID)
    if not isinstance(sid, int) or sid < 1:
        raise SecurityError(f"secure aggregation: bad protocol id {sid!r}")
    return SecAggParams.from_record(record), sid


def _save(context: Context, client: SecAggClient, params: SecAggParams) -> None:
    context.state[wire.STATE] = ConfigRecord({_CLIENT: client.to_bytes(), _CONTEXT: params.context})


def _load(context: Context, params: SecAggParams) -> SecAggClient:
    record = context.state.config_records.get(wire.STATE)
    if record is None or record.get(_CONTEXT) != params.context:
        raise SecurityError("secure aggregation: no key exchange for this round on this node")
    data = record.get(_CLIENT)
    assert isinstance(data, bytes)
    return SecAggClient.from_bytes(data)


def _reply(msg: Message, values: dict[str, ConfigRecordValues]) -> Message:
    return Message(RecordDict({wire.RECORD: ConfigRecord(values)}), reply_to=msg)


def handle_setup(msg: Message, context: Context) -> Message:
    """Stage 1: fresh key pairs for this round; the public halves go back."""
    params, sid = _params(msg)
    client = SecAggClient(sid, params)
    keys = client.advertise()
    _save(context, client, params)
    return _reply(msg, wire.keys_record({sid: keys}))


def handle_share(msg: Message, context: Context) -> Message:
    """Stage 2: Shamir shares of this institution's secrets, one ciphertext per neighbour."""
    params, _ = _params(msg)
    client = _load(context, params)
    neighbours = wire.read_keys(msg.content.config_records[wire.RECORD])
    ciphertexts = client.share_keys(neighbours)
    _save(context, client, params)
    return _reply(msg, wire.payloads_record(ciphertexts))


def mask_update(msg: Message, context: Context, expected_context: bytes,
                values: np.ndarray, weight: int) -> tuple[np.ndarray, int]:
    """Stage 3: `values` (the flattened update) masked for this round's sum, packed for the
    wire (`secagg_wire.pack`), and how many values fell outside the clip range.

    `expected_context` is what this institution itself knows of the run and round (its
    federation, the message's run id and round), so a server cannot get a mask computed for
    another round out of it.
    """
    params, _ = _params(msg)
    if params.context != expected_context:
        raise SecurityError("secure aggregation parameters are for another run or round")
    client = _load(context, params)
    client.receive_shares(wire.read_payloads(msg.content.config_records[wire.RECORD]))
    masked = client.mask(values, weight)
    _save(context, client, params)
    return wire.pack(masked.vector, params.ring_bits), masked.clipped


def handle_unmask(msg: Message, context: Context) -> Message:
    """Stage 4: the shares that remove the masks of the sum, then the round's state is gone."""
    params, _ = _params(msg)
    client = _load(context, params)
    record = msg.content.config_records[wire.RECORD]
    survivors, dropped = wire.read_ids(record, wire.SURVIVORS), wire.read_ids(record, wire.DROPPED)
    shares = client.unmask(survivors, dropped)
    del context.state[wire.STATE]
    logger.info("secure aggregation: sent %d shares (%d survivors, %d dropped)", len(shares),
                len(survivors), len(dropped))
    return _reply(msg, wire.payloads_record(shares))


class Masking(ClientStage):
    """Replaces the update by this round's masked vector: the round's change times its weight,
    with the weight appended, so that only the sum over institutions can be read."""

    name = "masking"
    needs_delta = True

    def apply(self, out: Outgoing, rnd: RoundInput) -> Outgoing:
        if wire.RECORD not in rnd.msg.content.config_records:
            raise SecurityError(
                "the run asks for secure aggregation but this train message has no masking "
                "parameters: refusing to send an unmasked update"
            )
        assert out.delta is not None  # the chain computes the delta whenever masking is on
        expected = wire.round_context(rnd.federation_id, rnd.msg.metadata.run_id,
                                      rnd.server_round)
        packed, clipped = mask_update(rnd.msg, rnd.context, expected, wire.flatten(out.delta),
                                      out.weight)
        metrics = {k: v for k, v in out.metrics.items() if k != NUM_EXAMPLES}  # travels masked
        return out.but(state={wire.MASKED_ARRAY: packed},
                       metrics={**metrics, wire.CLIPPED: clipped},
                       ledger={**out.ledger, "form": "masked"})

"""How a sealed adapter exchange travels inside Flower messages; shared by server and client.

The envelope itself (`fedpeft.common.crypto.envelope`) is bytes. In a Flower message it is the
one and only `Array` of the message's ArrayRecord, with the raw envelope as its data and a
fedpeft `stype`, so Flower stores and chunks it like any tensor while nothing that expects
numpy (FedAvg, `Array.numpy()`) can mistake it for one.

One global adapter, one signature. The global goes to every sampled institution alike, so the
server signs it once for all of them (`node = "*"`) instead of once per recipient: the blob is
then identical in every message and the SuperLink stores it once. What a per-recipient
signature would add (a global addressed to A is refused by B) protects nothing here, since B
receives the very same tensors. Replay protection comes from `server_round`, which names the
*version* of the global: the round whose aggregation produced it (0: the initial adapter).
Training in round r starts from version r - 1, evaluation in round r looks at version r, so a
client refuses a global from another round, run or federation, and also the evaluation global
of round r presented as the training global of round r (a confusion that binding the round
number alone would allow).
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, MessageType

from fedpeft.common.crypto import UpdateContext
from fedpeft.common.errors import SecurityError
from fedpeft.common.wire.names import SEALED_ARRAY

BROADCAST = "*"
"""`UpdateContext.node` of a global adapter: every institution of the run is a recipient."""


def envelope_record(blob: bytes, stype: str) -> ArrayRecord:
    """An ArrayRecord carrying `blob` as its single raw-bytes Array."""
    return ArrayRecord(
        {SEALED_ARRAY: Array(dtype="uint8", shape=(len(blob),), stype=stype, data=blob)}
    )


def envelope_of(record: object, stype: str, max_size: int | None = None) -> bytes:
    """The envelope inside `record`, or SecurityError when it holds anything else.

    A plaintext adapter where an envelope is expected is refused like a forged one: accepting
    it would let whoever controls the transport switch sealing off. An envelope longer than
    `max_size` is refused before its bytes are touched.
    """
    if not isinstance(record, ArrayRecord):
        raise SecurityError(f"expected an ArrayRecord, got {type(record).__name__}")
    keys = list(record.keys())
    if keys != [SEALED_ARRAY]:
        raise SecurityError(
            f"expected one sealed envelope, found {len(keys)} array(s) "
            "(an unsealed adapter is refused)"
        )
    array = record[SEALED_ARRAY]
    if array.stype != stype:
        raise SecurityError(f"expected an envelope of type {stype!r}, got {array.stype!r}")
    data = array.data
    if max_size is not None and len(data) > max_size:
        raise SecurityError(f"envelope of {len(data)} bytes exceeds the {max_size} bytes an "
                            "update of the expected manifest can take")
    return data if isinstance(data, bytes) else bytes(data)


def global_version(message_type: str, server_round: int) -> int:
    """Which global a message of `message_type` in `server_round` carries (see module doc)."""
    if message_type == MessageType.TRAIN:
        return server_round - 1
    if message_type == MessageType.EVALUATE:
        return server_round
    raise ValueError(f"no global adapter in a {message_type!r} message")


def global_context(federation_id: str, run_id: int, version: int) -> UpdateContext:
    """The signed context of global adapter `version` of run `run_id`."""
    return UpdateContext(federation_id=federation_id, run_id=run_id, server_round=version,
                         node=BROADCAST, direction="global")


def update_context(federation_id: str, run_id: int, server_round: int, name: str) -> UpdateContext:
    """The sealed context of institution `name`'s update in `server_round` of run `run_id`."""
    return UpdateContext(federation_id=federation_id, run_id=run_id, server_round=server_round,
                         node=name, direction="update")

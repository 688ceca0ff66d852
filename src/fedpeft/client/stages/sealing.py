"""The sealing stage: verify the global on the way in, seal and sign the update on the way out.

The envelope is sealed to the aggregator (X25519 + HKDF + AES-256-GCM) and signed with the
institution's key (`fedpeft.common.crypto.envelope`), with the update's FedAvg weight in the
signed header and the associated data (a masked update's weight travels masked instead); the
global adapter must carry the server's signature over its run and version before anything is
loaded.
"""

from __future__ import annotations

import hashlib
import time

from flwr.app import ArrayRecord, ConfigRecord, Context, Message

from fedpeft.client.identity import InstitutionKeys
from fedpeft.client.run_memory import LAST_GLOBAL
from fedpeft.client.stages.base import ClientStage, Outgoing, RoundInput
from fedpeft.common.adapter.state import AdapterState
from fedpeft.common.crypto import seal_update, verify_global
from fedpeft.common.errors import SecurityError
from fedpeft.common.wire.envelopes import (
    envelope_of,
    envelope_record,
    global_context,
    global_version,
    update_context,
)
from fedpeft.common.wire.names import ARRAYS, SEAL_SECONDS, SEALED_UPDATE_STYPE, SIGNED_GLOBAL_STYPE


def open_global(msg: Message, keys: InstitutionKeys, server_round: int,
                context: Context) -> AdapterState:
    """The global adapter of `msg` after checking the server's signature and its context.

    The round number that names the global's version arrives in the unsigned config record, so
    a relay could present an older signed global of the same run with its old round number.
    The institution remembers the newest version it accepted in this run and refuses older ones
    (versions never decrease: training in round r and evaluation in round r - 1 share one);
    after a restart, from its ledger (`fedpeft.client.run_memory`, recalled at admission).
    """
    blob = envelope_of(msg.content[ARRAYS], SIGNED_GLOBAL_STYPE)
    version = global_version(msg.metadata.message_type, server_round)
    seen = context.state.config_records.get(LAST_GLOBAL)
    newest = int(seen["version"]) if seen is not None else -1  # type: ignore[arg-type]
    if version < newest:
        raise SecurityError(
            f"global adapter version {version} is older than version {newest}, already "
            f"received in run {msg.metadata.run_id}: refused as a replay"
        )
    ctx = global_context(keys.federation_id, msg.metadata.run_id, version)
    state = verify_global(blob, ctx, keys.server_signing_key)
    context.state[LAST_GLOBAL] = ConfigRecord({"version": version})
    return state


def seal_state(state: AdapterState, msg: Message, keys: InstitutionKeys,
               server_round: int, weight: int | None) -> ArrayRecord:
    """This institution's update with its weight, sealed to the aggregator and signed."""
    ctx = update_context(keys.federation_id, msg.metadata.run_id, server_round, keys.name)
    blob = seal_update(state, ctx, keys.server_encryption_key, keys.signing_key, weight)
    return envelope_record(blob, SEALED_UPDATE_STYPE)


def sealed_sha256(record: ArrayRecord) -> str:
    """SHA-256 of the sealed envelope in `record`: the bytes the coordinator's ledger quotes."""
    return hashlib.sha256(envelope_of(record, SEALED_UPDATE_STYPE)).hexdigest()


class Sealing(ClientStage):
    """Seals what the earlier stages produced to the aggregator and signs it."""

    name = "sealing"

    def __init__(self, keys: InstitutionKeys) -> None:
        self.keys = keys

    def apply(self, out: Outgoing, rnd: RoundInput) -> Outgoing:
        started = time.perf_counter()
        masked = out.ledger.get("form") == "masked"
        cap = rnd.cfg.security.max_update_weight
        if not masked and not 0 < out.weight <= cap:
            raise SecurityError(f"this update's weight {out.weight} is outside (0, "
                                f"security.max_update_weight={cap}]: the aggregator would "
                                "refuse it")
        weight = None if masked else int(out.weight)
        arrays = seal_state(out.state, rnd.msg, self.keys, rnd.server_round, weight)
        metrics = {**out.metrics, SEAL_SECONDS: time.perf_counter() - started}
        form = "sealed, masked" if masked else "sealed"
        return out.but(arrays=arrays, metrics=metrics,
                       ledger={**out.ledger, "form": form, "sealed_sha256": sealed_sha256(arrays)})

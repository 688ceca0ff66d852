"""A strategy wrapper that signs every global adapter and opens every sealed update.

Composed around a Flower strategy the way Flower's DP wrappers are (and wrapped in turn by
`InstrumentedStrategy`, so the round record counts the bytes that really crossed the wire):

- outgoing: the inner strategy builds its messages from the plaintext global, so it keeps its
  own view of it (FedAdam needs the current arrays); each message is then rebuilt with the
  global's ArrayRecord replaced by one signed envelope (`fedpeft.common.wire.envelopes`).
- incoming: each reply's envelope is checked and decrypted here, inside the aggregation step,
  and only accepted updates reach the inner strategy, as new messages with plaintext arrays
  (replies are never changed in place). A refused update is logged with node, institution and
  reason, recorded as a "sealing" failure, and the round goes on with the others.

Checks per update, cheapest first: the reply names an institution the registry knows and has
not revoked, sent from the node it registered as (when known); one envelope of the update type;
then `open_update`: signature, context (federation, run, this round, this institution, so no
replay from another round or run), manifest equal to the global's (names, shapes, dtypes),
decryption. At most one update per institution per round: later ones are refused.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpeft.common.adapter.state import AdapterState, from_array_record, to_array_record
from fedpeft.common.crypto import Manifest, open_update, sign_global
from fedpeft.common.errors import RunError, SecurityError
from fedpeft.common.wire.names import (
    INSTITUTION,
    INSTITUTION_NAME,
    SEALED_UPDATE_STYPE,
    SIGNED_GLOBAL_STYPE,
)
from fedpeft.common.wire.envelopes import (
    envelope_of,
    envelope_record,
    global_context,
    global_version,
    update_context,
)
from fedpeft.server.credentials import ServerKeys, Signer
from fedpeft.server.round_recorder import RoundRecorder
from fedpeft.server.strategies.wrapper import StrategyWrapper

logger = logging.getLogger(__name__)


class SealedStrategy(StrategyWrapper):
    """Forwards to `inner` with signed globals going out and opened updates coming in."""

    def __init__(self, inner: Strategy, keys: ServerKeys, run_id: int,
                 recorder: RoundRecorder | None = None,
                 update_manifest: Callable[[AdapterState], Manifest | None] = Manifest.of) -> None:
        """`update_manifest` maps the global to what an update must declare: the same tensors
        by default, a masked vector under secure aggregation, None when shapes vary by
        institution (stacking: the decrypted tensors are still checked against the signed
        manifest)."""
        super().__init__(inner)
        self._update_manifest = update_manifest
        self._expected: Manifest | None = None
        self.keys = keys
        self.run_id = run_id
        self.recorder = recorder
        self._global_keys: list[str] = []
        self._manifest: Manifest | None = None
        self._signed: tuple[int, ArrayRecord, ArrayRecord] | None = None
        """(version, plaintext record, signed record) of the last global signed: evaluation in
        round r and training in round r + 1 send the same global, signed once."""

    # -- outgoing: sign the global ---------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        state = from_array_record(arrays)
        self._global_keys = list(state)
        self._manifest = Manifest.of(state)
        self._expected = self._update_manifest(state)
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        return self._signed_messages(server_round, messages)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.inner.configure_evaluate(server_round, arrays, config, grid))
        return self._signed_messages(server_round, messages)

    def _signed_messages(self, server_round: int, messages: list[Message]) -> list[Message]:
        started = time.perf_counter()
        signed: list[Message] = []
        for message in messages:
            meta = message.metadata
            version = global_version(meta.message_type, server_round)
            content = RecordDict({
                key: self._sign(version, record) if isinstance(record, ArrayRecord) else record
                for key, record in message.content.items()
            })
            signed.append(Message(content, dst_node_id=meta.dst_node_id,
                                  message_type=meta.message_type, ttl=meta.ttl,
                                  group_id=meta.group_id))
        self._spent(server_round, started)
        return signed

    def _sign(self, version: int, record: ArrayRecord) -> ArrayRecord:
        if self._signed is not None and self._signed[0] == version and self._signed[1] is record:
            return self._signed[2]
        ctx = global_context(self.keys.federation_id, self.run_id, version)
        blob = sign_global(from_array_record(record), ctx, self.keys.signing_key)
        signed = envelope_record(blob, SIGNED_GLOBAL_STYPE)
        self._signed = (version, record, signed)
        return signed

    # -- incoming: open the updates --------------------------------------------------------
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        started = time.perf_counter()
        signers = self.keys.signers()
        passed: list[Message] = []
        accepted: dict[str, int] = {}  # institution -> node whose update was accepted
        refused: list[str] = []
        for reply in replies:
            if reply.has_error():  # the inner strategy logs and counts failures itself
                passed.append(reply)
                continue
            node = reply.metadata.src_node_id
            name = _claimed_name(reply)
            try:
                state = self._open(server_round, reply, name, signers)
                if name in accepted:
                    raise SecurityError(
                        f"duplicate update from institution {name!r} in round {server_round} "
                        f"(already accepted one from node {accepted[name]})"
                    )
            except SecurityError as err:
                refused.append(f"node {node} ({name or 'unnamed'}): {err}")
                self._refuse(server_round, node, name, str(err))
                continue
            accepted[name] = node
            if self.recorder is not None:
                self.recorder.accepted(server_round, name)
            content = RecordDict({
                key: to_array_record(state) if isinstance(record, ArrayRecord) else record
                for key, record in reply.content.items()
            })
            passed.append(make_message(reply.metadata, content))
        self._spent(server_round, started)
        if not accepted:
            reasons = "; ".join(refused[:3]) or "no update received"
            raise RunError(f"round {server_round}: no update could be accepted ({reasons})")
        arrays, metrics = self.inner.aggregate_train(server_round, passed)
        return self._as_sent(arrays), metrics

    def _as_sent(self, arrays: ArrayRecord | None) -> ArrayRecord | None:
        """The aggregate in the dtypes of the global that went out (FedAdam/FedYogi compute in
        float64): the next global then has the manifest institutions train and seal, float32."""
        if arrays is None or self._manifest is None:
            return arrays
        dtypes = {spec.name: spec.dtype for spec in self._manifest.tensors}
        state = from_array_record(arrays)
        if all(dtypes.get(key, array.dtype.name) == array.dtype.name for key, array in state.items()):
            return arrays
        return to_array_record({key: array.astype(dtypes.get(key, array.dtype.name), copy=False)
                                for key, array in state.items()})

    def _open(self, server_round: int, reply: Message, name: str,
              signers: Mapping[str, Signer]) -> AdapterState:
        if not name:
            raise SecurityError("reply names no institution")
        signer = signers.get(name)
        if signer is None:
            raise SecurityError(f"unknown institution {name!r}")
        if signer.revoked:
            raise SecurityError(f"institution {name!r} is revoked")
        node = reply.metadata.src_node_id
        if signer.node_id is not None and signer.node_id != node:
            raise SecurityError(
                f"institution {name!r} is registered as node {signer.node_id}, not node {node}"
            )
        records = list(reply.content.array_records.values())
        if len(records) != 1:
            raise SecurityError(f"expected one ArrayRecord, found {len(records)}")
        blob = envelope_of(records[0], SEALED_UPDATE_STYPE)
        if self.recorder is not None:
            self.recorder.update_received(server_round, name, hashlib.sha256(blob).hexdigest())
        ctx = update_context(self.keys.federation_id, self.run_id, server_round, name)
        state = open_update(blob, ctx, self.keys.encryption_key, {name: signer.public_key},
                            self._expected)
        # The envelope holds tensors in name order; keep the global's order for the inner
        # strategy (aggregation is by name, but the final adapter is saved in this order).
        bad = [key for key, array in state.items()
               if array.dtype.kind == "f" and not np.isfinite(array).all()]
        if bad:
            raise SecurityError(f"tensor {bad[0]!r} holds NaN or infinite values")
        if set(state) == set(self._global_keys):
            return {key: state[key] for key in self._global_keys}
        return state

    def _refuse(self, server_round: int, node: int, name: str, reason: str) -> None:
        logger.warning("round %d: refused the update of node %d (institution %s): %s",
                       server_round, node, name or "unnamed", reason)
        if self.recorder is not None:
            self.recorder.refused(server_round, node, name, reason)

    def _spent(self, server_round: int, started: float) -> None:
        if self.recorder is not None:
            self.recorder.sealing(server_round, time.perf_counter() - started)



def _claimed_name(reply: Message) -> str:
    info = reply.content.config_records.get(INSTITUTION)
    value = info.get(INSTITUTION_NAME) if info is not None else None
    return value if isinstance(value, str) else ""

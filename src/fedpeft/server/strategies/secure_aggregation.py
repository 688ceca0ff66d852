"""A strategy wrapper that lets the aggregator learn only the weighted sum of the updates.

Composed inside `SealedStrategy` (so masked vectors still travel sealed and signed) and around
the configured Flower strategy, which never sees an individual update: it is handed one
synthetic reply holding the unmasked weighted mean and the summed example count, so FedAvg,
FedProx, FedAdam, FedYogi and FedAvgM apply their own server step to it unchanged.

The extra protocol stages (`fedpeft.common.wire.secagg`) run on the same Flower `Grid` inside
`configure_train` (key exchange) and `aggregate_train` (consistency check, unmasking). Each
stage message carries the run config, from which the institution locates its bundle (its
signing key and roster). Institutions that do not answer a stage drop out of the round; up to
`secure_aggregation.max_dropouts` of the invited institutions in total are tolerated. Beyond
that the round is aborted: the global adapter stays as it was, the failure is recorded, and the
next round starts afresh. (The institutions refuse such a round themselves, too.)

A stage reply that is malformed, or that the protocol would refuse from that institution (share
bundles addressed to other than its neighbours, a masked vector of the wrong length or outside
the ring, shares it was not asked to release), is refused and recorded, and the round goes on
without that institution. What cannot be blamed on one institution (two advertising the same
public key, shares that rebuild no consistent secret) aborts the round like too many dropouts.
`server_s` in the round record is the server's own protocol work: the time spent waiting for
the institutions' stage replies is not in it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpeft.common.adapter.state import AdapterState, from_array_record
from fedpeft.common.config import RunConfig, to_wire
from fedpeft.common.config.plan import RoundPlanner
from fedpeft.common.crypto.secagg import SecAggParams, SecAggServer, SignedKeys
from fedpeft.common.crypto.secagg.params import GRAPH_SEED_SIZE
from fedpeft.common.crypto.secagg.prg import MAX_RING_BITS
from fedpeft.common.errors import ConfigError, RoundAborted, SecurityError
from fedpeft.common.wire import secagg as wire
from fedpeft.common.wire.names import (
    ARRAYS,
    CONFIG,
    NON_AVERAGED_METRICS,
    NUM_EXAMPLES,
    NUM_ROUNDS,
    RUN_CONFIG,
    RUN_CONFIG_SIGNATURE,
)
from fedpeft.server.round_recorder import RoundRecorder
from fedpeft.server.strategies.wrapper import StrategyWrapper

logger = logging.getLogger(__name__)

_SIGNED_RUN_CONFIG = (RUN_CONFIG, NUM_ROUNDS, RUN_CONFIG_SIGNATURE)
"""What a stage message carries of the train config: the run config as the server signed it
(`fedpeft.common.wire.run_record`), which the institution checks before it uses it."""


@dataclass
class _RoundState:
    server: SecAggServer
    params: SecAggParams
    node_of: dict[int, int]
    """protocol id -> Flower node id"""
    current: AdapterState
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class SecureAggregationStrategy(StrategyWrapper):
    """Forwards to `inner` with each round's updates masked, unmasking only their sum."""

    def __init__(self, inner: Strategy, cfg: RunConfig, federation_id: str, run_id: int,
                 recorder: RoundRecorder | None = None,
                 planner: RoundPlanner | None = None) -> None:
        super().__init__(inner)
        self.cfg = cfg
        self.planner = planner or RoundPlanner(cfg)
        self.federation_id = federation_id
        self.run_id = run_id
        self.recorder = recorder
        self._grid: Grid | None = None
        self._round: _RoundState | None = None
        self._run_config = ConfigRecord()

    def settings(self) -> str:
        sa = self.cfg.secure_aggregation
        planned = (f"k={self._round.info['neighbours']}, threshold={self._round.info['threshold']}"
                   if self._round is not None else f"k={sa.neighbours or 'auto'}")
        return (f"{planned}, max_dropouts={sa.max_dropouts}, clip_range={sa.clip_range:g}, "
                f"quantization_bits={sa.quantization_bits}, ring_bits={sa.ring_bits}")

    # -- stages 1-3: key exchange, then the train messages carry the shares -----------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._grid = grid
        self._round = None
        self._run_config = ConfigRecord({key: config[key] for key in _SIGNED_RUN_CONFIG
                                         if key in config})
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        if not messages:
            return messages
        started = time.perf_counter()
        node_ids = [m.metadata.dst_node_id for m in messages]
        try:
            masking = self.planner.for_round(server_round, len(node_ids)).masking
        except ConfigError as err:
            # Too few institutions sampled this round for the configured dropout tolerance
            # (e.g. one was offline when the round was sized): no weaker masking, and not the
            # end of the run; the round is aborted and recorded like a failed stage.
            self._abort(server_round, RoundAborted(f"{len(node_ids)} institutions sampled: {err}"))
            return []
        assert masking is not None  # secure_aggregation.enabled
        degree, threshold = masking.degree, masking.threshold
        sa = self.cfg.secure_aggregation
        params = SecAggParams(
            ring_bits=sa.ring_bits, quantization_bits=sa.quantization_bits,
            clip_range=sa.clip_range, threshold=threshold,
            context=wire.round_context(self.federation_id, self.run_id, server_round),
            participants=len(node_ids), degree=degree, max_dropouts=sa.max_dropouts,
            graph_seed=os.urandom(GRAPH_SEED_SIZE),
        )
        ids = list(range(1, len(node_ids) + 1))
        state = _RoundState(
            server=SecAggServer(params),
            params=params,
            node_of=dict(zip(ids, node_ids)),
            current=from_array_record(arrays),
            info={"participants": len(ids), "neighbours": degree, "threshold": threshold},
        )
        self._round = state
        try:
            routed = self._exchange_keys(server_round, state, params)
        except (RoundAborted, SecurityError) as err:
            state.seconds += time.perf_counter() - started
            self._abort(server_round, err)
            return []
        state.seconds += time.perf_counter() - started
        out: list[Message] = []
        id_of = {node: i for i, node in state.node_of.items()}
        for message in messages:
            sid = id_of[message.metadata.dst_node_id]
            if sid not in routed:
                continue  # dropped during the key exchange
            content = RecordDict(dict(message.content.items()))
            content[wire.RECORD] = ConfigRecord(
                {**params.to_record(), wire.ID: sid, **wire.payloads_record(routed[sid])}
            )
            meta = message.metadata
            out.append(Message(content, dst_node_id=meta.dst_node_id,
                               message_type=meta.message_type, ttl=meta.ttl,
                               group_id=meta.group_id))
        return out

    def _exchange_keys(self, server_round: int, state: _RoundState,
                       params: SecAggParams) -> dict[int, dict[int, bytes]]:
        setup = {sid: ConfigRecord({**params.to_record(), wire.ID: sid}) for sid in state.node_of}
        replies = self._stage(server_round, state, wire.SETUP, setup)
        keys: dict[int, SignedKeys] = {}
        for sid, record in replies.items():
            try:
                advertised = wire.read_keys(record)
                if list(advertised) != [sid]:
                    raise SecurityError(f"keys for protocol ids {sorted(advertised)}, expected "
                                        f"its own only ({sid})")
            except SecurityError as err:
                self._refuse(server_round, state, sid, f"key advertisement refused: {err}")
                continue
            keys[sid] = advertised[sid]
        neighbour_keys = state.server.receive_keys(keys)
        share = {sid: ConfigRecord({**params.to_record(), wire.ID: sid,
                                    **wire.keys_record(neighbours)})
                 for sid, neighbours in neighbour_keys.items()}
        replies = self._stage(server_round, state, wire.SHARE, share)
        sent: dict[int, dict[int, bytes]] = {}
        for sid, record in replies.items():
            try:
                bundles = wire.read_payloads(record)
                expected = sorted(peer for peer in state.server.graph[sid] if peer in keys)
                if sorted(bundles) != expected:
                    raise SecurityError(f"bundles addressed to {sorted(bundles)}, "
                                        f"not to its neighbours {expected}")
            except SecurityError as err:
                self._refuse(server_round, state, sid, f"key shares refused: {err}")
                continue
            sent[sid] = bundles
        return state.server.route_shares(sent)

    def _stage(self, server_round: int, state: _RoundState, message_type: str,
               inputs: Mapping[int, ConfigRecord]) -> dict[int, ConfigRecord]:
        """One request/reply exchange with the institutions in `inputs`; silent ones drop out."""
        assert self._grid is not None
        run_config = self._run_config
        if RUN_CONFIG not in run_config:  # driven without a run loop: nothing was signed
            run_config = ConfigRecord({RUN_CONFIG: to_wire(self.cfg)})
        messages = [
            Message(RecordDict({wire.RECORD: record, CONFIG: run_config}),
                    dst_node_id=state.node_of[sid], message_type=message_type)
            for sid, record in inputs.items()
        ]
        state.bytes_sent += sum(record.count_bytes() for record in inputs.values())
        id_of = {node: sid for sid, node in state.node_of.items()}
        waiting = time.perf_counter()
        replies = self._grid.send_and_receive(messages, timeout=self.cfg.federation.round_timeout)
        state.seconds -= time.perf_counter() - waiting  # the institutions' time, not the server's
        out: dict[int, ConfigRecord] = {}
        for reply in replies:
            sid = id_of.get(reply.metadata.src_node_id)
            if sid is None or sid not in inputs:
                continue
            if reply.has_error():
                logger.warning("round %d %s: node %d dropped out: %s", server_round,
                               message_type, reply.metadata.src_node_id, reply.error.reason)
                self._failure(server_round, state.node_of[sid], message_type,
                              reply.error.reason or "no reason given")
                continue
            record = reply.content.config_records.get(wire.RECORD)
            if record is None:
                self._refuse(server_round, state, sid, f"{message_type} reply has no secagg record")
                continue
            state.bytes_received += record.count_bytes()
            out[sid] = record
        return out

    # -- stage 4: unmask the sum --------------------------------------------------------------
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        state = self._round
        if state is None:
            return None, None
        started = time.perf_counter()
        id_of = {node: sid for sid, node in state.node_of.items()}
        length = wire.flatten(state.current).size + 1  # the values, then the example count
        vectors: dict[int, np.ndarray] = {}
        metrics: dict[int, MetricRecord] = {}
        template: Message | None = None
        for reply in replies:
            sid = id_of.get(reply.metadata.src_node_id)
            if sid is None or reply.has_error():
                continue
            try:
                arrays = reply.content.array_records.get(ARRAYS)
                if arrays is None:
                    raise SecurityError(f"no {ARRAYS!r} record")
                vector = wire.masked_vector(from_array_record(arrays), state.params.ring_bits)
                _check_masked(vector, length, state.params.ring_bits)
            except SecurityError as err:
                self._refuse(server_round, state, sid, f"masked update refused: {err}")
                continue
            vectors[sid] = vector
            metrics[sid] = next(iter(reply.content.metric_records.values()), MetricRecord())
            template = template or reply
        try:
            survivors, _ = state.server.receive_masked(vectors)
            confirm = {sid: ConfigRecord({**state.params.to_record(), wire.ID: sid,
                                          wire.SURVIVORS: survivors})
                       for sid in survivors}
            answers = self._stage(server_round, state, wire.CONFIRM, confirm)
            signatures = {}
            for sid, record in answers.items():
                try:
                    signatures[sid] = wire.read_signature(record)
                except SecurityError as err:
                    self._refuse(server_round, state, sid, f"confirmation refused: {err}")
            forwarded = state.server.receive_confirmations(signatures)
            unmask = {sid: ConfigRecord({**state.params.to_record(), wire.ID: sid,
                                         **wire.payloads_record(held)})
                      for sid, held in forwarded.items()}
            answers = self._stage(server_round, state, wire.UNMASK, unmask)
            shares = {}
            for sid, record in answers.items():
                try:
                    released = wire.read_payloads(record)
                    alive, gone = state.server.unmask_request(sid)
                    unasked = sorted(set(released) - set(alive) - set(gone))
                    if unasked:
                        raise SecurityError(f"shares of nodes {unasked} it was not asked for")
                except SecurityError as err:
                    self._refuse(server_round, state, sid, f"unmasking shares refused: {err}")
                    continue
                shares[sid] = released
            result = state.server.unmask(shares)
        except (RoundAborted, SecurityError) as err:
            state.seconds += time.perf_counter() - started
            self._abort(server_round, err)
            return None, None
        delta = wire.unflatten(result.mean, state.current)
        merged = {key: (state.current[key].astype(np.float64) + delta[key]).astype(
            state.current[key].dtype) for key in state.current}
        state.seconds += time.perf_counter() - started
        state.info.update(survivors=len(result.survivors), dropped=len(result.dropped),
                          total_weight=result.total_weight)
        self._report(server_round, state)
        assert template is not None  # survivors exist, so some reply was accepted
        summary = _mean_metrics([metrics[sid] for sid in result.survivors if sid in metrics])
        return self.aggregate_mean(server_round, template, merged,
                                   {**summary, NUM_EXAMPLES: result.total_weight})


    # -- bookkeeping ----------------------------------------------------------------------
    def _refuse(self, server_round: int, state: _RoundState, sid: int, reason: str) -> None:
        node = state.node_of[sid]
        logger.warning("round %d: secure aggregation refused node %d: %s", server_round, node,
                       reason)
        self._failure(server_round, node, "secure-aggregation", reason)

    def _failure(self, server_round: int, node: int, phase: str, reason: str) -> None:
        if self.recorder is not None:
            self.recorder.failure(server_round, node, phase, reason)

    def _abort(self, server_round: int, err: RoundAborted | SecurityError) -> None:
        logger.error("round %d aborted, global adapter unchanged: %s", server_round, err)
        state = self._round
        if self.recorder is not None:
            self.recorder.failure(server_round, None, "secure-aggregation", f"round aborted: {err}")
            if state is not None:
                state.info["aborted"] = str(err)
                self._report(server_round, state)
        self._round = None

    def _report(self, server_round: int, state: _RoundState) -> None:
        if self.recorder is not None:
            self.recorder.secure_aggregation(server_round, {
                **state.info, "server_s": state.seconds,
                "protocol_bytes_sent": state.bytes_sent,
                "protocol_bytes_received": state.bytes_received,
            })


def _check_masked(vector: np.ndarray, length: int, ring_bits: int) -> None:
    """SecurityError unless `vector` is a masked update of this round: `length` ring elements
    (the adapter's values and the example count), each below 2**ring_bits."""
    if vector.size != length:
        raise SecurityError(f"{vector.size} ring elements, expected {length}")
    if ring_bits < MAX_RING_BITS and int(vector.max()) >> ring_bits:
        raise SecurityError(f"values outside the 2**{ring_bits} ring")


def _mean_metrics(records: list[MetricRecord]) -> dict[str, float]:
    """Unweighted mean of the model metrics the institutions report in the clear.

    Example counts travel masked, so there is nothing to weight by; hardware timings stay per
    institution in the round record.
    """
    if not records:
        return {}
    keys = [k for k in records[0] if k not in NON_AVERAGED_METRICS and k != NUM_EXAMPLES
            and k != wire.CLIPPED]
    out: dict[str, float] = {}
    for key in keys:
        values = [r.get(key) for r in records]
        if all(isinstance(v, (int, float)) for v in values):
            out[key] = float(np.mean([float(v) for v in values]))  # type: ignore[arg-type]
    return out


__all__ = ["SecureAggregationStrategy"]

"""Turns what happens in one federated round into one `metrics.jsonl` record.

The instrumented strategy feeds it the messages going out and the replies coming back; the
server-side evaluation closes the round. A round record holds the aggregate and per-institution
metrics, the bytes the server sent and received, and the round's wall time split into local
compute (what the institutions report), server evaluation and everything else ("framework":
serialisation, scheduling, transport, aggregation).

A reply names its institution in an unsigned record that anyone on the relay can write, so in a
sealed run the round's `participants` are only the institutions whose update's signature
verified (`accepted`, called by the sealing strategy), never the names replies claim.

With privacy on (`withhold_client_metrics`), a per-institution entry keeps only what describes
the institution's hardware and its own guarantee (PUBLIC_CLIENT_METRICS): no loss, validation
metric, count or clipping fact of one institution reaches metrics.jsonl, the ledger or the
report, even if an institution sent one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message, MetricRecord, RecordDict

from fedpeft.common.runs.metrics_log import MetricsLog
from fedpeft.common.wire.names import (
    COMPUTE_SECONDS,
    DP_EXAMPLE_EPSILON,
    INSTITUTION,
    INSTITUTION_NAME,
    SEAL_SECONDS,
)

logger = logging.getLogger(__name__)

LATE_REPLY = "late-reply"
"""Failure phase of a reply that arrived after its exchange's deadline, recorded in the round
in which it arrived (`fedpeft.server.polling_grid`): it was dropped, never aggregated."""

PUBLIC_CLIENT_METRICS = frozenset({COMPUTE_SECONDS, SEAL_SECONDS, DP_EXAMPLE_EPSILON})
"""Per-institution metrics recorded when privacy is on."""


def _content_bytes(content: RecordDict) -> int:
    """Payload bytes of a message: every record's own size estimate (Flower's count_bytes)."""
    return sum(record.count_bytes() for record in content.values())


def _metric_dict(record: MetricRecord | None) -> dict[str, float]:
    if record is None:
        return {}
    return {key: value for key, value in record.items() if isinstance(value, (int, float))}


@dataclass
class _Phase:
    started: float = 0.0
    ended: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    compute: list[float] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return max(0.0, self.ended - self.started)

    def compute_wall(self, parallel_slots: int) -> float:
        """Shortest wall time the reported compute could have taken with `parallel_slots`."""
        if not self.compute:
            return 0.0
        return max(max(self.compute), sum(self.compute) / max(1, parallel_slots))


@dataclass
class _Round:
    number: int
    train: _Phase = field(default_factory=_Phase)
    evaluate: _Phase = field(default_factory=_Phase)
    clients: dict[int, dict[str, Any]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    train_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    sealing_s: float = 0.0
    secure_aggregation: dict[str, Any] | None = None
    updates: dict[str, str] = field(default_factory=dict)
    accepted: set[str] = field(default_factory=set)
    extra: dict[str, Any] = field(default_factory=dict)


class RoundRecorder:
    """Collects a round's facts and writes one record when the round closes.

    `parallel_slots` is how many institutions can compute at the same time (the number of
    simulation actors, or the number of institutions in a deployment); it turns the reported
    per-institution compute into the compute share of the round's wall time.
    """

    def __init__(
        self,
        log: MetricsLog,
        parallel_slots: int,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        signed_updates: bool = False,
        withhold_client_metrics: bool = False,
    ) -> None:
        """`signed_updates`: updates are sealed and signed, so participants are the verified
        signers; otherwise they are the names replies claim, and the record says so.
        `withhold_client_metrics`: privacy is on (see the module docstring)."""
        self._signed_updates = signed_updates
        self._withhold = withhold_client_metrics
        self._log = log
        self._slots = parallel_slots
        self._on_round = on_round
        self._clock = clock
        self._current: _Round | None = None

    # -- called by the instrumented strategy ---------------------------------------------
    def _round(self, number: int) -> _Round:
        if self._current is None or self._current.number != number:
            self._current = _Round(number)
        return self._current

    def messages_out(self, number: int, phase: str, messages: list[Message]) -> None:
        state = getattr(self._round(number), phase)
        state.started = self._clock()
        state.bytes_sent += sum(_content_bytes(m.content) for m in messages if m.has_content())

    def replies_in(self, number: int, phase: str, replies: list[Message]) -> None:
        current = self._round(number)
        state: _Phase = getattr(current, phase)
        state.ended = self._clock()
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                current.failures.append({"node_id": node, "phase": phase,
                                         "reason": reply.error.reason})
                logger.warning("round %d %s: node %d failed: %s", number, phase, node,
                               reply.error.reason)
                continue
            content = reply.content
            state.bytes_received += _content_bytes(content)
            metrics = _metric_dict(next(iter(content.metric_records.values()), None))
            if COMPUTE_SECONDS in metrics:
                state.compute.append(float(metrics[COMPUTE_SECONDS]))
            info = content.config_records.get(INSTITUTION)
            name = (str(info[INSTITUTION_NAME]) if info and INSTITUTION_NAME in info
                    else f"node-{node}")
            entry = current.clients.setdefault(node, {"node_id": node, "name": name})
            if self._withhold:
                metrics = {k: v for k, v in metrics.items() if k in PUBLIC_CLIENT_METRICS}
            entry[phase] = metrics

    def refused(self, number: int, node_id: int, name: str, reason: str) -> None:
        """An update the sealing strategy refused: a failure of phase "sealing"."""
        self._round(number).failures.append(
            {"node_id": node_id, "name": name, "phase": "sealing", "reason": reason}
        )

    def update_received(self, number: int, name: str, sha256: str) -> None:
        """The SHA-256 of a sealed update as it arrived (before opening): the audit trail of
        exactly what each institution sent, refused or not."""
        self._round(number).updates[name] = sha256

    def accepted(self, number: int, name: str) -> None:
        """Institution `name`'s update in round `number` verified (signature, context, seal)."""
        self._round(number).accepted.add(name)

    def failure(self, number: int, node_id: int | None, phase: str, reason: str) -> None:
        """Anything else refused or lost in round `number` (`node_id` None: the whole round)."""
        self._round(number).failures.append({"node_id": node_id, "phase": phase, "reason": reason})

    def secure_aggregation(self, number: int, info: dict[str, Any]) -> None:
        """The round's secure-aggregation facts: participants, dropouts, protocol cost."""
        self._round(number).secure_aggregation = dict(info)

    def annotate(self, number: int, key: str, value: Any) -> None:
        """A further section of the round record (e.g. `privacy`), written as given."""
        self._round(number).extra[key] = value

    def sealing(self, number: int, seconds: float) -> None:
        """Server time spent signing globals and opening updates in round `number`."""
        self._round(number).sealing_s += seconds

    def aggregated(self, number: int, phase: str, metrics: MetricRecord | None) -> None:
        target = "train_metrics" if phase == "train" else "eval_metrics"
        setattr(self._round(number), target, _metric_dict(metrics))

    def _participants(self, current: _Round) -> list[str]:
        if self._signed_updates:
            return sorted(current.accepted)
        return sorted({str(c["name"]) for c in current.clients.values() if "train" in c})

    # -- called by the server-side evaluation ---------------------------------------------
    def validation(self, number: int) -> dict[str, float]:
        """Round `number`'s aggregated client evaluation (institutions' validation rows)."""
        return dict(self._round(number).eval_metrics)

    def close(self, number: int, server_eval: dict[str, float],
              server_eval_s: float) -> dict[str, Any]:
        """Write the round's record (round 0 is the initial model's evaluation)."""
        current = self._round(number)
        record: dict[str, Any] = {"round": number, "server_eval": server_eval}
        if number == 0:
            record.update(current.extra)
        if number > 0:
            round_s = self._clock() - current.train.started
            compute_s = (current.train.compute_wall(self._slots)
                         + current.evaluate.compute_wall(self._slots))
            protocol = current.secure_aggregation or {}
            sent = protocol.get("protocol_bytes_sent", 0)
            received = protocol.get("protocol_bytes_received", 0)
            record.update(
                train=current.train_metrics,
                client_eval=current.eval_metrics,
                clients=[current.clients[k] for k in sorted(current.clients)],
                failures=current.failures,
                bytes={
                    "sent": current.train.bytes_sent + current.evaluate.bytes_sent + sent,
                    "received": (current.train.bytes_received + current.evaluate.bytes_received
                                 + received),
                    "train_sent": current.train.bytes_sent + sent,
                    "train_received": current.train.bytes_received + received,
                },
                time={
                    "round_s": round_s,
                    "local_compute_s": compute_s,
                    "local_compute_total_s": (sum(current.train.compute)
                                              + sum(current.evaluate.compute)),
                    "server_eval_s": server_eval_s,
                    "server_sealing_s": current.sealing_s,
                    "framework_s": max(0.0, round_s - compute_s - server_eval_s),
                },
            )
            record["participants"] = self._participants(current)
            record["participants_verified"] = self._signed_updates
            if current.updates:
                record["updates_sha256"] = dict(sorted(current.updates.items()))
            if current.secure_aggregation is not None:
                record["secure_aggregation"] = current.secure_aggregation
            record.update(current.extra)
        self._log.append(record)
        if self._on_round is not None:
            self._on_round(record)
        self._current = None
        return record

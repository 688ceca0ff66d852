"""The secure-aggregation strategy's test bench: the real strategy over an in-memory Flower grid
whose institutions run the real client-side stage handlers (and can vanish at any stage).

Test modules here import these helpers with `from tests.unit.secure_aggregation.conftest import
...` (pytest's importlib mode registers a conftest under that name before the modules beside it).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.app.message.message import make_message
from flwr.app.typing import ConfigRecordValues
from flwr.serverapp.strategy import Strategy
from tests.unit.flower_identity import pin_task_identity

from fedpeft.client.stages import masking as client_stages
from fedpeft.common.config import load_config
from fedpeft.common.runs.metrics_log import MetricsLog
from fedpeft.common.wire import secagg as wire
from fedpeft.common.wire.names import ARRAYS, METRICS
from fedpeft.server.round_recorder import RoundRecorder
from fedpeft.server.strategies import (
    InstrumentedStrategy,
    SecureAggregationStrategy,
    build_strategy,
)

RUN = 7
_ids = itertools.count(1)

Updates = dict[int, tuple[np.ndarray, int]]


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_task_identity(monkeypatch, RUN)


class _Run:
    run_id = RUN


class Grid:
    """Delivers each message to its node's handlers; `vanish` maps a stage to nodes that stop
    answering from that stage on (their replies never arrive, as after a timeout)."""

    def __init__(self, updates: Updates, vanish: dict[str, set[int]] | None = None) -> None:
        self.updates = updates
        self.vanish = vanish or {}
        self.contexts = {node: Context(RUN, node, {}, RecordDict(), {}) for node in updates}
        self.run = _Run()
        self.seen: list[RecordDict] = []
        self.gone: set[int] = set()

    def get_node_ids(self) -> list[int]:
        return list(self.updates)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> list[Message]:
        replies = []
        for message in messages:
            node, kind = message.metadata.dst_node_id, message.metadata.message_type
            self.gone |= self.vanish.get(kind, set())
            if node in self.gone:
                continue
            delivered = make_message(Metadata(
                run_id=RUN, message_id=f"m{next(_ids)}", src_node_id=0, dst_node_id=node,
                reply_to_message_id="", group_id="1", created_at=time.time(), ttl=60.0,
                message_type=kind), message.content)
            reply = self._handle(delivered, self.contexts[node])
            assert reply.metadata.src_node_id == node
            if reply.has_content():
                self.seen.append(reply.content)
            replies.append(reply)
        return replies

    def _handle(self, msg: Message, context: Context) -> Message:
        kind = msg.metadata.message_type
        if kind == wire.SETUP:
            return client_stages.handle_setup(msg, context)
        if kind == wire.SHARE:
            return client_stages.handle_share(msg, context)
        if kind == wire.CONFIRM:
            return client_stages.handle_confirm(msg, context)
        if kind == wire.UNMASK:
            return client_stages.handle_unmask(msg, context)
        values, weight = self.updates[context.node_id]
        expected = wire.round_context(wire.UNSEALED_FEDERATION, RUN,
                                      int(msg.content["config"]["server-round"]))
        packed, _ = client_stages.mask_update(msg, context, expected, values, weight, None)
        return Message(RecordDict({
            ARRAYS: ArrayRecord({wire.MASKED_ARRAY: Array(packed)}),
            METRICS: MetricRecord({"loss": 1.0}),
        }), reply_to=msg)


def make_strategy(tmp_path: Path, n: int, size: int, max_dropouts: int = 1, seed: int = 0
                  ) -> tuple[InstrumentedStrategy, RoundRecorder, Updates, np.ndarray]:
    """The strategy as the run loop composes it (FedAvg inside, recorder outside), `n` known
    updates of `size` values with their weights, and the current global."""
    cfg = load_config(overrides={
        "secure_aggregation.enabled": True, "secure_aggregation.max_dropouts": max_dropouts,
        "secure_aggregation.clip_range": 2.0, "security.seal_updates": False,
        "federation.min_train_clients": 2, "federation.min_available_clients": 2,
    })
    recorder = RoundRecorder(MetricsLog(tmp_path / "metrics.jsonl"), parallel_slots=2)
    strategy = InstrumentedStrategy(SecureAggregationStrategy(
        build_strategy(cfg), cfg, wire.UNSEALED_FEDERATION, RUN, recorder), recorder)
    rng = np.random.default_rng(seed)
    updates = {100 + i: (rng.uniform(-1, 1, size), int(rng.integers(1, 500))) for i in range(n)}
    current = rng.normal(0, 0.1, size).astype(np.float32)
    return strategy, recorder, updates, current


def run_round(strategy: Strategy, grid: Grid, current: np.ndarray
              ) -> tuple[ArrayRecord | None, MetricRecord | None]:
    """Round 1: configure, deliver the train messages, aggregate the replies."""
    arrays = ArrayRecord({"w": Array(current)})
    messages = list(strategy.configure_train(1, arrays, ConfigRecord({}), grid))  # type: ignore[arg-type]
    replies = grid.send_and_receive(messages)
    return strategy.aggregate_train(1, replies)


def expected_mean(updates: Updates, nodes: Iterable[int], current: np.ndarray) -> np.ndarray:
    """The plaintext result: the global plus the weighted mean of `nodes`' updates."""
    nodes = list(nodes)
    weights = np.array([updates[n][1] for n in nodes], dtype=np.float64)
    mean = sum(updates[n][0] * updates[n][1] for n in nodes) / weights.sum()
    return current.astype(np.float64) + mean


Forgery = Callable[[Message], Message]


class TamperingGrid(Grid):
    """The honest institutions of `Grid`, except that `forge[(stage, node)]` replaces that
    node's honest reply at that stage (as a malicious institution, or a relay, would)."""

    def __init__(self, updates: Updates, forge: dict[tuple[str, int], Forgery],
                 vanish: dict[str, set[int]] | None = None) -> None:
        super().__init__(updates, vanish)
        self.forge = forge

    def _handle(self, msg: Message, context: Context) -> Message:
        reply = super()._handle(msg, context)
        forgery = self.forge.get((msg.metadata.message_type, context.node_id))
        return reply if forgery is None else forgery(reply)


def with_record(reply: Message, **values: ConfigRecordValues | None) -> Message:
    """`reply` with its secure-aggregation record changed: a value None removes the key."""
    record = dict(reply.content.config_records[wire.RECORD])
    for key, value in values.items():
        if value is None:
            record.pop(key, None)
        else:
            record[key] = value
    return make_message(reply.metadata, RecordDict({wire.RECORD: ConfigRecord(record)}))


def with_masked(reply: Message, packed: np.ndarray) -> Message:
    """`reply` (a masked update) carrying `packed` as its masked array instead."""
    content = RecordDict(dict(reply.content.items()))
    content[ARRAYS] = ArrayRecord({wire.MASKED_ARRAY: Array(packed)})
    return make_message(reply.metadata, content)

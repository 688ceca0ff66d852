"""Rounds with institutions that do not answer: the quorum decides whether a round counts, late
institutions are recorded, and a round below quorum is retried, skipped or stops the run."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from tests.unit.flower_identity import pin_task_identity

from fedpeft.common.config import load_config
from fedpeft.common.errors import ConfigError, RunError
from fedpeft.common.runs.metrics_log import MetricsLog
from fedpeft.server.polling_grid import PollingGrid
from fedpeft.server.quorum import QuorumPolicy
from fedpeft.server.round_driver import RoundPlan, drive_rounds
from fedpeft.server.round_recorder import RoundRecorder
from fedpeft.server.strategies import InstrumentedStrategy, build_strategy

RUN = 9


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_task_identity(monkeypatch, RUN)


class _Federation:
    """Nodes 1..n; `silent[k]` lists the nodes that never answer the k-th training exchange."""

    def __init__(self, nodes: int, silent: dict[int, set[int]]) -> None:
        self.nodes, self.silent = nodes, silent
        self.outbox: dict[str, Message] = {}
        self.train_sends = 0
        self.exchanges = 0
        self._exchange_of: dict[str, int] = {}

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.nodes + 1))

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        messages = list(messages)
        self.exchanges += any(m.metadata.message_type == "train" for m in messages)
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self.outbox[message.metadata.message_id] = message
            self._exchange_of[message.metadata.message_id] = self.exchanges
            ids.append(message.metadata.message_id)
            self.train_sends += message.metadata.message_type == "train"
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        replies = []
        for message_id in list(message_ids):
            message = self.outbox[message_id]
            meta = message.metadata
            exchange = self._exchange_of[message_id]
            if meta.message_type == "train" and meta.dst_node_id in self.silent.get(exchange, ()):
                continue
            del self.outbox[message_id]
            arrays = message.content["arrays"]
            moved = {k: Array(v.numpy() + float(meta.dst_node_id)) for k, v in arrays.items()}
            content = RecordDict({"metrics": MetricRecord({"num-examples": 1})})
            if meta.message_type == "train":
                content["arrays"] = ArrayRecord(moved)
            reply = Message(content, reply_to=message)
            reply.metadata.__dict__["_src_node_id"] = meta.dst_node_id
            replies.append(reply)
        return replies


def _run(tmp_path: Path, federation: _Federation, **settings: object) -> list[dict]:
    cfg = load_config(overrides={"federation.min_train_clients": 2,
                                 "federation.min_available_clients": 3,
                                 "federation.num_rounds": 2, **settings})
    log = MetricsLog(tmp_path / "metrics.jsonl")
    recorder = RoundRecorder(log, parallel_slots=3)
    strategy = InstrumentedStrategy(build_strategy(cfg), recorder)
    grid = PollingGrid(federation, poll_interval=0.0)  # type: ignore[arg-type]
    plan = RoundPlan(True, 1, 2, 0.01, ConfigRecord({}), ConfigRecord({}))

    def evaluate(number: int, arrays: ArrayRecord) -> None:
        recorder.close(number, {"w": float(arrays["w"].numpy()[0])}, 0.0)

    drive_rounds(strategy, grid, ArrayRecord({"w": Array(np.zeros(2, np.float32))}), plan,
                 evaluate, lambda number, arrays: None, recorder, QuorumPolicy.from_config(cfg))
    return log.records


def test_a_round_at_quorum_counts_and_names_the_late_institution(tmp_path: Path) -> None:
    records = _run(tmp_path, _Federation(3, {1: {3}}))
    assert records[1]["server_eval"]["w"] == pytest.approx(1.5)  # mean of nodes 1 and 2
    late = [f for f in records[1]["failures"] if f["phase"] == "train"]
    assert [f["node_id"] for f in late] == [3] and "late" in late[0]["reason"]
    assert records[2]["server_eval"]["w"] == pytest.approx(1.5 + 2.0)  # all three in round 2


def test_a_round_below_quorum_is_retried_then_counts(tmp_path: Path) -> None:
    federation = _Federation(3, {1: {2, 3}})
    records = _run(tmp_path, federation, **{"federation.below_quorum": "retry"})
    assert federation.train_sends == 3 + 3 + 3  # round 1 twice, round 2 once
    assert records[1]["server_eval"]["w"] == pytest.approx(2.0)  # the retry: all three
    quorum = [f["reason"] for f in records[1]["failures"] if f["phase"] == "quorum"]
    assert quorum == ["1 of 3 institutions replied in time, quorum 2 (attempt 1 of 2)"]
    assert records[2]["server_eval"]["w"] == pytest.approx(4.0)


def test_a_round_below_quorum_after_its_retries_is_skipped_and_the_run_goes_on(
        tmp_path: Path) -> None:
    records = _run(tmp_path, _Federation(3, {1: {2, 3}, 2: {1, 2, 3}}),
                   **{"federation.below_quorum": "retry"})
    assert records[1]["server_eval"]["w"] == 0.0  # the global stayed as it was
    assert len([f for f in records[1]["failures"] if f["phase"] == "quorum"]) == 2
    assert records[2]["server_eval"]["w"] == pytest.approx(2.0)


def test_skip_policy_sends_once_and_keeps_the_global(tmp_path: Path) -> None:
    federation = _Federation(3, {1: {1, 2, 3}})
    records = _run(tmp_path, federation, **{"federation.below_quorum": "skip"})
    assert federation.train_sends == 3 + 3
    assert records[1]["server_eval"]["w"] == 0.0
    assert [r["round"] for r in records] == [0, 1, 2]


def test_stop_policy_ends_the_run_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="0 of 3 institutions replied in time, quorum 3"):
        _run(tmp_path, _Federation(3, {1: {1, 2, 3}}),
             **{"federation.below_quorum": "stop", "federation.quorum": 3})


def test_a_quorum_no_round_can_reach_is_refused_with_the_config() -> None:
    with pytest.raises(ConfigError, match="federation.quorum=4 exceeds"):
        load_config(overrides={"federation.quorum": 4, "federation.min_available_clients": 3})

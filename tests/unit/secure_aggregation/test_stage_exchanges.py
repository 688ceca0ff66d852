"""How the strategy runs its stage exchanges (issue #14): what each stage message carries of
the train config, which replies it takes (only from the nodes it asked, at that stage), how a
failed reply is recorded, and that a round it did not configure is never aggregated."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.app.message.message import make_message
from flwr.serverapp import Grid as FlowerGrid
from flwr.serverapp.strategy import FedAvg
from tests.unit.secure_aggregation.conftest import (
    RUN,
    Forgery,
    Grid,
    TamperingGrid,
    Updates,
    expected_mean,
    make_strategy,
    run_round,
)

from fedpeft.common.config import to_wire
from fedpeft.common.crypto.secagg import quantization_bound
from fedpeft.common.wire import secagg as wire
from fedpeft.common.wire.names import ARRAYS, CONFIG, NUM_EXAMPLES, NUM_ROUNDS, RUN_CONFIG
from fedpeft.server.strategies import InstrumentedStrategy, SecureAggregationStrategy

STAGES = (wire.SETUP, wire.SHARE, wire.CONFIRM, wire.UNMASK)
STRANGER = 999
_ids = itertools.count(10_000)


def _reply_from(node: int, kind: str, record: ConfigRecord) -> Message:
    return make_message(Metadata(
        run_id=RUN, message_id=f"s{next(_ids)}", src_node_id=node, dst_node_id=0,
        reply_to_message_id="", group_id="1", created_at=time.time(), ttl=60.0,
        message_type=kind), RecordDict({wire.RECORD: record}))


class _RecordingGrid(Grid):
    """Keeps every message the server sends, and the timeout of each exchange."""

    def __init__(self, updates: Updates, vanish: dict[str, set[int]] | None = None) -> None:
        super().__init__(updates, vanish)
        self.messages: list[Message] = []
        self.timeouts: dict[str, float | None] = {}

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> list[Message]:
        messages = list(messages)
        self.messages += messages
        self.timeouts[messages[0].metadata.message_type] = timeout
        return super().send_and_receive(messages, timeout=timeout)


class _UninvitedGrid(Grid):
    """Before the real replies of each stage come, in front, one from a node outside the round
    and one from `late`, a node of the round that was not asked at this stage (it vanished
    before the train message but answers the later stages anyway)."""

    def __init__(self, updates: Updates, late: int) -> None:
        super().__init__(updates, vanish={"train": {late}})
        self.late = late

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> list[Message]:
        messages = list(messages)
        replies = super().send_and_receive(messages, timeout=timeout)
        kind = messages[0].metadata.message_type
        if kind not in STAGES:
            return replies
        uninvited = [_reply_from(STRANGER, kind, ConfigRecord({wire.IDS: [1]}))]
        if kind in (wire.CONFIRM, wire.UNMASK):
            uninvited.append(_reply_from(self.late, kind, ConfigRecord({wire.IDS: [1]})))
        return uninvited + replies


def test_replies_from_nodes_not_asked_at_that_stage_are_ignored(tmp_path: Path) -> None:
    strategy, recorder, updates, current = make_strategy(tmp_path, 5, 10)
    late = list(updates)[0]
    arrays, _ = run_round(strategy, _UninvitedGrid(updates, late), current)
    assert arrays is not None
    survivors = [node for node in updates if node != late]
    np.testing.assert_allclose(arrays["w"].numpy(), expected_mean(updates, survivors, current),
                               atol=quantization_bound(2.0, 20) + 1e-6)
    record = recorder.close(1, {}, 0.0)
    assert record["failures"] == []
    assert record["secure_aggregation"]["survivors"] == 4


def test_a_failed_stage_reply_without_a_reason_is_recorded_as_such(tmp_path: Path) -> None:
    strategy, recorder, updates, current = make_strategy(tmp_path, 5, 10)
    node = list(updates)[3]
    crash: Forgery = lambda reply: make_message(reply.metadata, error=Error(code=1))  # noqa: E731
    arrays, _ = run_round(strategy, TamperingGrid(updates, {(wire.SHARE, node): crash}), current)
    assert arrays is not None
    assert recorder.close(1, {}, 0.0)["failures"] == [
        {"node_id": node, "phase": wire.SHARE, "reason": "no reason given"}]


def test_stage_messages_carry_only_the_signed_run_config(tmp_path: Path) -> None:
    strategy, _, updates, current = make_strategy(tmp_path, 4, 10)
    cfg = strategy.inner.cfg  # type: ignore[attr-defined]
    grid = _RecordingGrid(updates)
    config = ConfigRecord({RUN_CONFIG: to_wire(cfg), NUM_ROUNDS: 3, "lr": 0.5})
    messages = list(strategy.configure_train(
        1, ArrayRecord({"w": Array(current)}), config, grid))  # type: ignore[arg-type]
    assert strategy.aggregate_train(1, grid.send_and_receive(messages))[0] is not None
    stage = [m for m in grid.messages if m.metadata.message_type in STAGES]
    assert {m.metadata.message_type for m in stage} == set(STAGES)
    for message in stage:
        assert dict(message.content[CONFIG]) == {RUN_CONFIG: to_wire(cfg), NUM_ROUNDS: 3}
    # every stage waits for the institutions as long as a round may take
    assert {grid.timeouts[kind] for kind in STAGES} == {cfg.federation.round_timeout}


def test_without_a_signed_run_config_stage_messages_carry_the_strategys_own(
        tmp_path: Path) -> None:
    strategy, _, updates, current = make_strategy(tmp_path, 4, 10)
    grid = _RecordingGrid(updates)
    assert run_round(strategy, grid, current)[0] is not None
    expected = {RUN_CONFIG: to_wire(strategy.inner.cfg)}  # type: ignore[attr-defined]
    stage = [m for m in grid.messages if m.metadata.message_type in STAGES]
    assert stage and all(dict(m.content[CONFIG]) == expected for m in stage)


class _LabelledFedAvg(FedAvg):
    """FedAvg whose train messages have their own time to live and group id; nothing in round
    2 (as when too few institutions are available)."""

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: FlowerGrid) -> Iterable[Message]:
        if server_round == 2:
            return []
        return [Message(m.content, dst_node_id=m.metadata.dst_node_id,
                        message_type=m.metadata.message_type, ttl=321.0, group_id="cohort-a")
                for m in super().configure_train(server_round, arrays, config, grid)]


def test_train_messages_keep_the_inner_strategys_metadata_and_the_globals_dtype(
        tmp_path: Path) -> None:
    strategy, recorder, updates, current = make_strategy(tmp_path, 4, 10)
    outer = strategy.inner
    assert isinstance(outer, SecureAggregationStrategy)
    wrapped = InstrumentedStrategy(SecureAggregationStrategy(
        _LabelledFedAvg(min_available_nodes=2), outer.cfg, wire.UNSEALED_FEDERATION, RUN,
        recorder), recorder)
    grid = Grid(updates)
    messages = list(wrapped.configure_train(
        1, ArrayRecord({"w": Array(current)}), ConfigRecord({}), grid))  # type: ignore[arg-type]
    assert {(m.metadata.message_type, m.metadata.ttl, m.metadata.group_id)
            for m in messages} == {("train", 321.0, "cohort-a")}
    replies = grid.send_and_receive(messages)
    arrays, metrics = wrapped.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    assert arrays["w"].numpy().dtype == np.float32
    np.testing.assert_allclose(arrays["w"].numpy(), expected_mean(updates, updates, current),
                               atol=quantization_bound(2.0, 20) + 1e-6)
    # a round the inner strategy does not configure is not aggregated with round 1's state
    assert list(wrapped.configure_train(
        2, arrays, ConfigRecord({}), grid)) == []  # type: ignore[arg-type]
    # (asked of the secure-aggregation layer itself: the outer layer stops such a round first)
    assert wrapped.inner.aggregate_train(2, replies) == (None, None)


def test_nothing_is_aggregated_before_a_round_is_configured(tmp_path: Path) -> None:
    strategy, _, _, _ = make_strategy(tmp_path, 4, 10)
    assert strategy.inner.aggregate_train(1, []) == (None, None)


def test_an_update_sent_without_metrics_is_still_summed(tmp_path: Path) -> None:
    strategy, recorder, updates, current = make_strategy(tmp_path, 4, 10)
    node = list(updates)[2]

    def no_metrics(reply: Message) -> Message:
        return make_message(reply.metadata,
                            RecordDict({ARRAYS: reply.content.array_records[ARRAYS]}))

    arrays, metrics = run_round(strategy, TamperingGrid(updates, {("train", node): no_metrics}),
                                current)
    assert arrays is not None and metrics is not None
    np.testing.assert_allclose(arrays["w"].numpy(), expected_mean(updates, updates, current),
                               atol=quantization_bound(2.0, 20) + 1e-6)
    assert metrics[NUM_EXAMPLES] == sum(weight for _, weight in updates.values())
    assert recorder.close(1, {}, 0.0)["failures"] == []
    assert isinstance(metrics, MetricRecord)


class _BrokenFirstRepliesGrid(Grid):
    """At `stage`, the first reply the server reads is a failure without a reason and the
    second has no secure-aggregation record; the replies after them are honest."""

    def __init__(self, updates: Updates, stage: str) -> None:
        super().__init__(updates)
        self.stage = stage
        self.broken: list[int] = []

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> list[Message]:
        replies = super().send_and_receive(messages, timeout=timeout)
        if replies and replies[0].metadata.message_type == self.stage:
            first, second = replies[0], replies[1]
            self.broken = [first.metadata.src_node_id, second.metadata.src_node_id]
            replies[0] = make_message(first.metadata, error=Error(code=1, reason="crashed"))
            replies[1] = make_message(second.metadata, RecordDict())
        return replies


@pytest.mark.parametrize("stage", [wire.SHARE, wire.CONFIRM, wire.UNMASK])
def test_the_replies_after_a_failed_or_empty_one_are_still_read(
        tmp_path: Path, stage: str) -> None:
    """Six institutions, two dropouts allowed: the two broken replies come first, the other
    four are read, recorded under this round, and the round completes."""
    strategy, recorder, updates, current = make_strategy(tmp_path, 6, 10, max_dropouts=2)
    grid = _BrokenFirstRepliesGrid(updates, stage)
    arrays, metrics = run_round(strategy, grid, current)
    assert arrays is not None and metrics is not None
    assert metrics["loss"] == 1.0  # the institutions' clear metrics, averaged
    first, second = grid.broken
    assert recorder.close(1, {}, 0.0)["failures"] == [
        {"node_id": first, "phase": stage, "reason": "crashed"},
        {"node_id": second, "phase": "secure-aggregation",
         "reason": f"{stage} reply has no secagg record"}]


def test_after_a_round_aborted_in_the_key_exchange_nothing_is_aggregated(
        tmp_path: Path) -> None:
    strategy, _, updates, current = make_strategy(tmp_path, 4, 10)
    nodes = list(updates)
    grid = Grid(updates, vanish={wire.SHARE: set(nodes[:2])})
    messages = list(strategy.configure_train(
        1, ArrayRecord({"w": Array(current)}), ConfigRecord({}), grid))  # type: ignore[arg-type]
    assert messages == []
    assert strategy.inner.aggregate_train(1, []) == (None, None)

"""The coordinator's grid: replies are collected as they arrive, the unanswered are given up
after the deadline, and a stop request ends the wait at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import pytest
from flwr.app import Message, Metadata, RecordDict
from flwr.app.message.message import make_message

from fedpeft.common.errors import RunInterrupted
from fedpeft.server.polling_grid import MAX_AWAITED_LATE, LateReply, PollingGrid


def _reply(to: str) -> Message:
    meta = Metadata(run_id=1, message_id=f"r-{to}", src_node_id=1, dst_node_id=0,
                    reply_to_message_id=to, group_id="1", created_at=time.time(), ttl=60.0,
                    message_type="train")
    return make_message(meta, RecordDict())


class _Link:
    """A grid whose replies arrive on the pulls listed in `schedule` (pull index -> ids)."""

    def __init__(self, ids: list[str], schedule: dict[int, list[str]]) -> None:
        self.ids, self.schedule, self.pulls = ids, schedule, 0

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        list(messages)
        return list(self.ids)

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        wanted = set(message_ids)
        arrived = [_reply(i) for i in self.schedule.get(self.pulls, []) if i in wanted]
        self.pulls += 1
        return arrived


def test_all_replies_are_collected_across_pulls() -> None:
    link = _Link(["a", "b", "c"], {0: ["a"], 2: ["b", "c"]})
    grid = PollingGrid(link, poll_interval=0.001)  # type: ignore[arg-type]
    replies = grid.send_and_receive([], timeout=30)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["a", "b", "c"]
    assert link.pulls == 3  # stopped pulling as soon as every reply was in


def test_unanswered_messages_are_given_up_at_the_deadline() -> None:
    link = _Link(["a", "b"], {0: ["a"]})
    grid = PollingGrid(link, poll_interval=0.001)  # type: ignore[arg-type]
    replies = grid.send_and_receive([], timeout=0.05)
    assert [r.metadata.reply_to_message_id for r in replies] == ["a"]


def test_a_stop_request_ends_the_wait() -> None:
    stop = threading.Event()
    link = _Link(["a"], {})
    grid = PollingGrid(link, stop=stop, poll_interval=0.001)  # type: ignore[arg-type]
    threading.Timer(0.05, stop.set).start()
    with pytest.raises(RunInterrupted, match="fedpeft resume"):
        grid.send_and_receive([], timeout=None)
    pulls = link.pulls
    with pytest.raises(RunInterrupted, match="stop requested"):
        grid.send_and_receive([], timeout=None)
    assert link.pulls == pulls  # nothing more is sent once stopped


def _message(node: int) -> Message:
    meta = Metadata(run_id=1, message_id="", src_node_id=0, dst_node_id=node,
                    reply_to_message_id="", group_id="", created_at=time.time(), ttl=60.0,
                    message_type="train")
    return make_message(meta, RecordDict())


class _Held:
    """Messages m1, m2, ... in push order; a reply is pulled once its id is in `ready`."""

    def __init__(self) -> None:
        self.pushed = 0
        self.ready: set[str] = set()
        self.asked: list[set[str]] = []

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for _ in messages:
            self.pushed += 1
            ids.append(f"m{self.pushed}")
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        asked = set(message_ids)
        self.asked.append(asked)
        arrived = sorted(asked & self.ready)
        self.ready -= asked
        return [_reply(i) for i in arrived]


def test_a_late_reply_is_dropped_and_reported_in_the_round_it_arrives() -> None:
    link = _Held()
    late: list[LateReply] = []
    grid = PollingGrid(link, poll_interval=0.001, on_late=late.append)  # type: ignore[arg-type]
    grid.begin_round(1)
    link.ready = {"m1"}
    first = grid.send_and_receive([_message(7), _message(8)], timeout=0.05)
    assert [r.metadata.reply_to_message_id for r in first] == ["m1"]
    assert late == []  # given up, not yet arrived

    grid.begin_round(2)
    link.ready = {"m2", "m3"}  # node 8's round-1 reply turns up with round 2's
    second = grid.send_and_receive([_message(7)], timeout=5)
    assert [r.metadata.reply_to_message_id for r in second] == ["m3"]  # never handed on
    assert late == [LateReply(node_id=8, message_type="train", sent_in_round=1,
                              arrived_in_round=2, error=None)]
    assert "round 1" in late[0].describe() and "dropped" in late[0].describe()

    link.ready = {"m4"}
    grid.send_and_receive([_message(7)], timeout=5)
    assert "m2" not in link.asked[-1]  # pulled once: no longer awaited
    assert len(late) == 1


def test_awaited_late_replies_are_bounded() -> None:
    link = _Held()
    grid = PollingGrid(link, poll_interval=0.001)  # type: ignore[arg-type]
    grid.send_and_receive([_message(n) for n in range(MAX_AWAITED_LATE + 5)], timeout=0.0)
    link.ready = {"x"}
    grid.send_and_receive([_message(1)], timeout=0.0)
    awaited = link.asked[-1] - {f"m{MAX_AWAITED_LATE + 6}"}
    assert len(awaited) == MAX_AWAITED_LATE
    assert "m1" not in awaited and f"m{MAX_AWAITED_LATE + 5}" in awaited  # oldest forgotten

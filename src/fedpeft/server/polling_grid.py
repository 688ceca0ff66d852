"""A Grid that waits for replies in short steps and can be told to stop.

Flower's deployed grid sleeps 3 s between pulls in `send_and_receive`, so every message
exchange (two per round, five under secure aggregation) ends up to 3 s after its last reply
arrived. This grid pushes the messages and pulls after 0.1 s, backing off to 0.5 s while nothing
arrives. Between pulls it checks `stop`: a SIGTERM or SIGINT then ends the run within a poll
interval, at any point of a round, and the run resumes from its last checkpoint (the round
boundary before).
Every other call goes to the wrapped grid unchanged.

A message still unanswered at its deadline is given up for its exchange, but a reply may yet
come (an institution's network was partitioned, its process stalled): the grid keeps pulling
for it during later exchanges, so the SuperLink hands it over and deletes it instead of keeping
it, and each one that turns up is passed to `on_late` (the run records it in the round in
which it arrived) and dropped: it is never returned to a strategy, so never aggregated.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=no-name-in-module
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedpeft.common.errors import RunInterrupted

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 0.1
"""Seconds before the first pull and after each pull that brought replies."""
MAX_POLL_INTERVAL = 0.5
"""Each pull that brings nothing waits 1.5 times longer, up to this: a reply is noticed within
0.5 s (Flower's grid: 3 s), and a long round costs the SuperLink two pulls a second, not ten."""


MAX_AWAITED_LATE = 1000
"""Given-up messages whose late replies are still awaited; beyond this the oldest are forgotten
(an institution gone for good would otherwise add one to every later pull)."""


@dataclass(frozen=True)
class LateReply:
    """A reply that arrived after its exchange's deadline (and was dropped)."""

    node_id: int
    """The institution the message was sent to."""
    message_type: str
    sent_in_round: int
    """The round whose exchange sent the message (`begin_round`)."""
    arrived_in_round: int
    error: str | None
    """The reply's error (e.g. the SuperLink's own "node unavailable"), None for a real reply."""

    def describe(self) -> str:
        what = "an error reply" if self.error is not None else "its reply"
        text = (f"{what} to the {self.message_type} message of round {self.sent_in_round} "
                "arrived after that exchange's deadline (federation.round_timeout): dropped, "
                "never aggregated")
        return text if self.error is None else f"{text} ({self.error})"


class PollingGrid(Grid):
    """Forwards to `inner`; `send_and_receive` polls every `poll_interval` to
    `max_poll_interval` seconds; late replies go to `on_late` (see the module docstring)."""

    def __init__(self, inner: Grid, stop: threading.Event | None = None,
                 poll_interval: float = DEFAULT_POLL_INTERVAL,
                 max_poll_interval: float = MAX_POLL_INTERVAL,
                 on_late: Callable[[LateReply], None] | None = None) -> None:
        self.inner = inner
        self.stop = stop or threading.Event()
        self.poll_interval = poll_interval
        self.max_poll_interval = max(poll_interval, max_poll_interval)
        self.on_late = on_late
        self.round = 0
        self._late: dict[str, tuple[int, int, str]] = {}
        """message id -> (round sent, destination node, message type), oldest first"""

    def begin_round(self, server_round: int) -> None:
        """Messages sent from now on belong to `server_round` (for late-reply records)."""
        self.round = server_round

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def check_stop(self) -> None:
        """RunInterrupted if a stop was requested."""
        if self.stop.is_set():
            raise RunInterrupted("stop requested (SIGTERM or SIGINT): the run ends here and "
                                 "resumes from its last complete round with `fedpeft resume`")

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Replies received before `timeout` seconds; the unanswered are logged as late."""
        self.check_stop()
        messages = list(messages)
        ids = list(self.inner.push_messages(messages))
        sent = {mid: (m.metadata.dst_node_id, m.metadata.message_type)
                for mid, m in zip(ids, messages, strict=False)}
        pending = set(ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        interval = self.poll_interval
        while pending:
            self.check_stop()
            arrived = list(self.inner.pull_messages(pending | self._late.keys()))
            arrived = self._drop_late(arrived)
            replies.extend(arrived)
            pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            interval = (self.poll_interval if arrived
                        else min(self.max_poll_interval, interval * 1.5))
            self.stop.wait(interval)
        if pending:
            nodes = sorted(sent[mid][0] for mid in pending if mid in sent)
            logger.warning("%d of %d messages unanswered after %.0f s (federation.round_timeout)"
                           ": given up (node ids %s)", len(pending), len(pending) + len(replies),
                           timeout or 0.0, ", ".join(map(str, nodes)) or "unknown")
            for mid in ids:  # in push order, so the oldest are forgotten first
                if mid and mid in pending:
                    node, kind = sent.get(mid, (0, ""))
                    self._late[mid] = (self.round, node, kind)
            for mid in list(self._late)[:max(0, len(self._late) - MAX_AWAITED_LATE)]:
                del self._late[mid]
        return replies

    def _drop_late(self, arrived: list[Message]) -> list[Message]:
        """`arrived` without the replies to given-up messages, each reported to `on_late`."""
        current = []
        for reply in arrived:
            given_up = self._late.pop(reply.metadata.reply_to_message_id, None)
            if given_up is None:
                current.append(reply)
                continue
            sent_in, node, kind = given_up
            late = LateReply(node, kind, sent_in, self.round,
                             (reply.error.reason or "no reason given") if reply.has_error()
                             else None)
            logger.warning("node %d: %s", node, late.describe())
            if self.on_late is not None:
                self.on_late(late)
        return current

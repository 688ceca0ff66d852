"""A Grid that waits for replies in short steps and can be told to stop.

Flower's deployed grid sleeps 3 s between pulls in `send_and_receive`, so every message
exchange (two per round, five under secure aggregation) ends up to 3 s after its last reply
arrived. This grid pushes the messages and pulls after 0.1 s, backing off to 0.5 s while nothing
arrives. Between pulls it checks `stop`: a SIGTERM or SIGINT then ends the run within a poll
interval, at any point of a round, and the run resumes from its last checkpoint (the round
boundary before).
Every other call goes to the wrapped grid unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

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


class PollingGrid(Grid):
    """Forwards to `inner`; `send_and_receive` polls every `poll_interval` to
    `max_poll_interval` seconds."""

    def __init__(self, inner: Grid, stop: threading.Event | None = None,
                 poll_interval: float = DEFAULT_POLL_INTERVAL,
                 max_poll_interval: float = MAX_POLL_INTERVAL) -> None:
        self.inner = inner
        self.stop = stop or threading.Event()
        self.poll_interval = poll_interval
        self.max_poll_interval = max(poll_interval, max_poll_interval)

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
        pending = set(self.inner.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        interval = self.poll_interval
        while pending:
            self.check_stop()
            arrived = list(self.inner.pull_messages(pending))
            replies.extend(arrived)
            pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            interval = (self.poll_interval if arrived
                        else min(self.max_poll_interval, interval * 1.5))
            self.stop.wait(interval)
        if pending:
            logger.warning("%d of %d messages unanswered after %.0f s (federation.round_timeout)",
                           len(pending), len(pending) + len(replies), timeout or 0.0)
        return replies

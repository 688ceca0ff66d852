"""What a round record says the protocol cost the server (issue #14): `server_s` is the server's
own work, never the time it waited for the institutions' stage replies, and the protocol bytes
are exactly the secure-aggregation records of the stage messages and of their replies.

Time is a fake clock (no wall-clock measurement): every read of it is one tick of server work,
and the grid's institutions take 1000 ticks to answer each exchange.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from flwr.app import Message
from tests.unit.secure_aggregation.conftest import Grid, Updates, make_strategy, run_round

from fedpeft.common.wire import secagg as wire
from fedpeft.server.strategies import secure_aggregation

WAIT = 1000.0
STAGES = (wire.SETUP, wire.SHARE, wire.CONFIRM, wire.UNMASK)


class _Clock:
    """`time` as the strategy module sees it: perf_counter advances one tick per read."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


class _SlowGrid(Grid):
    """Institutions that take WAIT ticks per exchange; counts the secure-aggregation bytes of
    each stage message and of each reply to one."""

    def __init__(self, updates: Updates, clock: _Clock,
                 vanish: dict[str, set[int]] | None = None) -> None:
        super().__init__(updates, vanish)
        self.clock = clock
        self.sent = self.received = 0

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> list[Message]:
        messages = list(messages)
        self.clock.now += WAIT
        replies = super().send_and_receive(messages, timeout=timeout)
        for message in messages:
            if message.metadata.message_type in STAGES:
                self.sent += message.content.config_records[wire.RECORD].count_bytes()
        for reply in replies:
            if reply.metadata.message_type in STAGES:
                self.received += reply.content.config_records[wire.RECORD].count_bytes()
        return replies


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(secure_aggregation, "time", fake)
    return fake


def test_server_time_excludes_the_wait_for_the_institutions(
        tmp_path: Path, clock: _Clock) -> None:
    strategy, recorder, updates, current = make_strategy(tmp_path, 4, 10)
    grid = _SlowGrid(updates, clock)
    arrays, _ = run_round(strategy, grid, current)
    assert arrays is not None
    facts = recorder.close(1, {}, 0.0)["secure_aggregation"]
    # configure_train reads the clock 6 times (start, around each of 2 exchanges, end) and
    # aggregate_train 6 times: 3 ticks of work each; the 4 waits of 1000 ticks are not counted
    assert facts["server_s"] == 6.0
    assert facts["protocol_bytes_sent"] == grid.sent > 0
    assert facts["protocol_bytes_received"] == grid.received > 0


def test_an_aborted_round_records_the_server_time_until_the_abort(
        tmp_path: Path, clock: _Clock) -> None:
    strategy, recorder, updates, current = make_strategy(tmp_path, 4, 10)
    nodes = list(updates)
    grid = _SlowGrid(updates, clock, vanish={"train": set(nodes[:2])})
    assert run_round(strategy, grid, current) == (None, None)
    facts = recorder.close(1, {}, 0.0)["secure_aggregation"]
    assert "max_dropouts" in facts["aborted"]
    # 3 ticks to configure, then 1 tick from the start of aggregate_train to the abort
    assert facts["server_s"] == 4.0
    assert facts["protocol_bytes_sent"] == grid.sent
    assert facts["protocol_bytes_received"] == grid.received


def test_a_round_aborted_in_the_key_exchange_records_its_server_time(
        tmp_path: Path, clock: _Clock) -> None:
    strategy, recorder, updates, current = make_strategy(tmp_path, 4, 10)
    nodes = list(updates)
    grid = _SlowGrid(updates, clock, vanish={wire.SHARE: set(nodes[:2])})
    assert run_round(strategy, grid, current) == (None, None)
    facts = recorder.close(1, {}, 0.0)["secure_aggregation"]
    assert "after the share exchange" in facts["aborted"]
    assert facts["server_s"] == 3.0

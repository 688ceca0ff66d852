"""`client join` after a crash: the SuperNode is started again while the SuperLink refuses it.

Flower 1.39's SuperLink holds a node online for two heartbeat intervals after its last
heartbeat and refuses to activate it meanwhile; Flower's SuperNode then exits with code 305
at once. These tests drive `serve_supernode` with a fake clock and a scripted SuperNode.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Mapping

import pytest

from fedpeft.deployment.flower_exec import FlowerCommand
from fedpeft.deployment.supernode import (
    CONNECTION_ERROR_EXIT,
    REJOIN_RETRY_S,
    REJOIN_WINDOW_S,
    serve_supernode,
)

COMMAND = FlowerCommand(["flower-supernode"])


class _SuperNode:
    """Exits with the scripted codes in turn (then the last one); each start takes `takes` s."""

    def __init__(self, codes: list[int], takes: float = 2.0) -> None:
        self.codes, self.takes = codes, takes
        self.now = 0.0
        self.starts = 0

    def run(self, command: FlowerCommand, env: Mapping[str, str]) -> int:
        assert command is COMMAND and env == {"FLWR_HOME": "x"}
        self.now += self.takes
        self.starts += 1
        return self.codes[min(self.starts, len(self.codes)) - 1]

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def serve(self, max_wait: float | None = None) -> int:
        return serve_supernode(COMMAND, {"FLWR_HOME": "x"}, max_wait, run=self.run,
                               clock=lambda: self.now, sleep=self.sleep)


def test_a_refused_supernode_is_started_again_until_it_is_accepted() -> None:
    node = _SuperNode([CONNECTION_ERROR_EXIT] * 4 + [0])
    assert node.serve() == 0
    assert node.starts == 5


def test_another_exit_code_ends_at_once() -> None:
    node = _SuperNode([1])
    assert node.serve() == 1
    assert node.starts == 1


def test_a_key_refused_for_good_gives_up_after_the_window(
        caplog: pytest.LogCaptureFixture) -> None:
    node = _SuperNode([CONNECTION_ERROR_EXIT])
    with caplog.at_level(logging.ERROR):
        assert node.serve() == CONNECTION_ERROR_EXIT
    # no start after the window; the last one began within it
    assert REJOIN_WINDOW_S - REJOIN_RETRY_S <= node.now < REJOIN_WINDOW_S + node.takes
    assert node.starts == pytest.approx(REJOIN_WINDOW_S / (node.takes + REJOIN_RETRY_S), abs=1)
    assert "fedpeft federation register" in caplog.text


def test_max_wait_bounds_the_retries() -> None:
    node = _SuperNode([CONNECTION_ERROR_EXIT])
    assert node.serve(max_wait=10.0) == CONNECTION_ERROR_EXIT
    assert node.starts == 2  # at 0 and 5 s; a third would start at 10 s, not before the limit


def test_flowers_exit_code_305_is_recognised_as_a_parent_sees_it() -> None:
    """Flower calls sys.exit(305); the parent's exit status is taken modulo 256."""
    done = subprocess.run([sys.executable, "-c", "import sys; sys.exit(305)"], check=False)
    assert done.returncode == CONNECTION_ERROR_EXIT

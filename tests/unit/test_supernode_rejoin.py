"""`client join` after a crash: the SuperNode is started again while the SuperLink refuses it.

Flower 1.39's SuperLink holds a node online for two heartbeat intervals after its last
heartbeat and refuses to activate it meanwhile; Flower's SuperNode then prints why and exits
with status 1 (as after any error) at once. These tests drive `serve_supernode` with a fake
clock and a scripted SuperNode.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping

import pytest

from fedpeft.deployment.flower_exec import FlowerCommand, run_in_foreground
from fedpeft.deployment.supernode import (
    REFUSED,
    REJOIN_RETRY_S,
    REJOIN_WINDOW_S,
    serve_supernode,
)

REFUSED_OUTPUT = ["Exit Code: 305", f"{REFUSED}.", "[code: 2004] Failed to activate SuperNode."]
ACCEPTED, REFUSED_RUN, OTHER_ERROR = (0, []), (1, REFUSED_OUTPUT), (1, ["Exit Code: 600"])

COMMAND = FlowerCommand(["flower-supernode"])


class _SuperNode:
    """Runs the scripted (exit status, output lines) in turn (then the last); each start
    takes `takes` s."""

    def __init__(self, runs: list[tuple[int, list[str]]], takes: float = 2.0) -> None:
        self.runs, self.takes = runs, takes
        self.now = 0.0
        self.starts = 0

    def run(self, command: FlowerCommand, env: Mapping[str, str],
            on_line: Callable[[str], None]) -> int:
        assert command is COMMAND and env == {"FLWR_HOME": "x"}
        self.now += self.takes
        self.starts += 1
        code, lines = self.runs[min(self.starts, len(self.runs)) - 1]
        for line in lines:
            on_line(line + "\n")
        return code

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def serve(self, max_wait: float | None = None) -> int:
        return serve_supernode(COMMAND, {"FLWR_HOME": "x"}, max_wait, run=self.run,
                               clock=lambda: self.now, sleep=self.sleep)


def test_a_refused_supernode_is_started_again_until_it_is_accepted() -> None:
    node = _SuperNode([REFUSED_RUN] * 4 + [ACCEPTED])
    assert node.serve() == 0
    assert node.starts == 5


def test_another_error_ends_at_once() -> None:
    node = _SuperNode([OTHER_ERROR])
    assert node.serve() == 1
    assert node.starts == 1


def test_a_key_refused_for_good_gives_up_after_the_window(
        caplog: pytest.LogCaptureFixture) -> None:
    node = _SuperNode([REFUSED_RUN])
    with caplog.at_level(logging.ERROR):
        assert node.serve() == 1
    # no start after the window; the last one began within it
    assert REJOIN_WINDOW_S - REJOIN_RETRY_S <= node.now < REJOIN_WINDOW_S + node.takes
    assert node.starts == pytest.approx(REJOIN_WINDOW_S / (node.takes + REJOIN_RETRY_S), abs=1)
    assert "fedpeft federation register" in caplog.text


def test_max_wait_bounds_the_retries() -> None:
    node = _SuperNode([REFUSED_RUN])
    assert node.serve(max_wait=10.0) == 1
    assert node.starts == 2  # at 0 and 5 s; a third would start at 10 s, not before the limit


def test_the_output_is_passed_through_and_read(capfd: pytest.CaptureFixture[str]) -> None:
    """A real child: its output reaches stdout and each line the callback, its status is kept."""
    lines: list[str] = []
    script = f"import sys; print({REFUSED_OUTPUT[1]!r}); sys.stdout.flush(); sys.exit(1)"
    code = run_in_foreground(FlowerCommand([sys.executable, "-c", script]), {},
                             on_line=lines.append)
    assert code == 1
    assert lines == [REFUSED_OUTPUT[1] + "\n"]
    assert REFUSED in capfd.readouterr().out


def test_a_grandchild_holding_the_output_open_does_not_hold_the_return() -> None:
    """Flower's SuperNode may exit while its SuperExec, which inherited its stdout, lives on:
    the exit status is returned without waiting for the pipe to close."""
    lines: list[str] = []
    script = ("import subprocess, sys; "
              "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"print(g.pid); print({REFUSED_OUTPUT[1]!r}); sys.stdout.flush(); sys.exit(1)")
    code = run_in_foreground(FlowerCommand([sys.executable, "-c", script]), {},
                             on_line=lines.append)
    grandchild = int(lines[0])
    try:
        assert code == 1
        assert any(REFUSED in line for line in lines)
    finally:
        os.kill(grandchild, signal.SIGKILL)

"""Flower's task identity, pinned for unit tests that build Flower messages by hand.

Outgoing Flower messages stamp the process's run id (and its task and node ids) from
`TaskIdentity`, which a test process does not have. Each test module keeps its own run id and
its own autouse fixture calling `pin_task_identity`, so that the messages it builds belong to
that run, as Flower's own would. Imported as `from tests.unit.flower_identity import
pin_task_identity` (pytest's importlib mode makes `tests.unit` a package).
"""

from __future__ import annotations

import pytest
from flwr.supercore.task_identity import TaskIdentity


def pin_task_identity(monkeypatch: pytest.MonkeyPatch, run_id: int) -> None:
    """Make this process Flower's task 1 of run `run_id` on node 0 until the test ends."""
    monkeypatch.setattr(TaskIdentity, "_run_id", run_id)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)

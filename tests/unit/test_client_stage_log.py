"""An institution logs the protection stages its updates go through, once per run."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from flwr.app import Context, RecordDict

from fedpeft.client.rounds import _log_stages_once
from fedpeft.client.stages.ledger import Recording
from fedpeft.client.stages.masking import Masking
from fedpeft.client.stages.privacy import Privacy
from fedpeft.client.stages.sealing import Sealing


def test_stage_chain_is_logged_once_per_run(caplog: pytest.LogCaptureFixture) -> None:
    context = Context(run_id=1, node_id=2, node_config={}, state=RecordDict(), run_config={})
    rnd = SimpleNamespace(context=context, name="bank-a")
    stages = [Privacy(masked=True), Masking(), Sealing(None), Recording(None)]  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="fedpeft.client.rounds"):
        for _ in range(3):  # three rounds of the same run, state kept by Flower
            _log_stages_once(rnd, stages)  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == [
        "bank-a: protection stages for this run: "
        "Privacy(masked=True) -> Masking() -> Sealing() -> Recording()"
    ]


def test_plaintext_run_says_so(caplog: pytest.LogCaptureFixture) -> None:
    context = Context(run_id=1, node_id=2, node_config={}, state=RecordDict(), run_config={})
    with caplog.at_level(logging.INFO, logger="fedpeft.client.rounds"):
        _log_stages_once(SimpleNamespace(context=context, name="b"), [])  # type: ignore[arg-type]
    assert caplog.records[0].getMessage().endswith("none (plaintext update)")

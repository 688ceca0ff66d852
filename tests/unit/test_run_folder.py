"""Run folders are published only when complete and never overwrite an earlier run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from fedpeft.common.errors import ConfigError
from fedpeft.common.runs.folder import RunFolder
from fedpeft.common.runs.metrics_log import MetricsLog, read_metrics


def test_finish_publishes_under_final_name(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "r1")
    assert folder.path == tmp_path / "r1.partial"
    folder.attach_log()
    logging.getLogger("fedpeft.test").info("hello run log")
    MetricsLog(folder.metrics_path).append({"round": 0, "server_eval": {"loss": float("nan")}})
    final = folder.finish({"rounds": 1})
    assert final == tmp_path / "r1"
    assert not (tmp_path / "r1.partial").exists()
    assert json.loads((final / "summary.json").read_text())["status"] == "completed"
    assert "hello run log" in (final / "run.log").read_text()
    assert read_metrics(final / "metrics.jsonl") == [{"round": 0, "server_eval": {"loss": None}}]


def test_fail_keeps_files_marked_failed(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "r2")
    (folder.path / "partial.txt").write_text("x")
    target = folder.fail(ValueError("boom"))
    assert target == tmp_path / "r2.failed"
    assert (target / "partial.txt").read_text() == "x"
    assert "boom" in (target / "error.txt").read_text()
    assert not (tmp_path / "r2").exists()


@pytest.mark.parametrize("existing", ["r3", "r3.partial", "r3.failed"])
def test_refuses_existing_run_name(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).mkdir()
    (tmp_path / existing / "keep.txt").write_text("earlier run")
    with pytest.raises(ConfigError, match="already exists"):
        RunFolder.create(tmp_path, "r3")
    assert (tmp_path / existing / "keep.txt").read_text() == "earlier run"

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


def test_failed_run_reopens_as_partial_keeping_its_error(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "r5")
    folder.fail(RuntimeError("stopped"))
    reopened = RunFolder.reopen(tmp_path / "r5.failed")
    assert reopened.path == tmp_path / "r5.partial"
    assert not (tmp_path / "r5.failed").exists()
    assert "stopped" in (reopened.path / "error-before-resume-1.txt").read_text()
    assert reopened.finish({}) == tmp_path / "r5"


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: RunFolder.create(p, "r6").finish({}), "the run is complete"),
    (lambda p: None, "no such run folder"),
])
def test_resume_refuses_complete_or_missing_runs(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    make(tmp_path)
    target = tmp_path / "r6" if "complete" in message else tmp_path / "r6.partial"
    with pytest.raises(ConfigError, match=message):
        RunFolder.reopen(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["r6"] if "complete" in message else [])


def test_a_run_still_going_cannot_be_reopened(tmp_path: Path) -> None:
    running = RunFolder.create(tmp_path, "r7")
    with pytest.raises(ConfigError, match="still going in another process"):
        RunFolder.reopen(running.path)
    assert running.path.is_dir()


def test_a_full_disk_still_marks_the_run_failed_and_resumable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = RunFolder.create(tmp_path, "r8")

    def disk_full(self: Path, *args: object, **kwargs: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    assert folder.fail(OSError(28, "No space left on device")) == tmp_path / "r8.failed"
    monkeypatch.undo()
    assert RunFolder.reopen(tmp_path / "r8.failed").path == tmp_path / "r8.partial"

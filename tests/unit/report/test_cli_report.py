"""`fedpeft report RUN` through the real `fedpeft` app: the two paths printed, and exit code 2
with one line for a bad path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedpeft.cli import main as cli_main
from fedpeft.common.errors import DataError

runner = CliRunner()


def test_report_prints_both_paths(make_run) -> None:
    run = make_run()
    result = runner.invoke(cli_main.app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert f"report (Markdown): {run / 'report.md'}" in result.output
    assert f"report (HTML):     {run / 'report.html'}" in result.output


def test_a_missing_run_folder_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-run"
    result = runner.invoke(cli_main.app, ["report", str(missing)])
    assert isinstance(result.exception, DataError)

    monkeypatch.setattr(sys, "argv", ["fedpeft", "report", str(missing)])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing}: run folder not found"]
    assert not missing.exists()

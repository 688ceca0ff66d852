"""What a new user meets first: `fedpeft data demo` writes the files its help names, and
piped output keeps each path on one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from fedpeft.cli.main import app

runner = CliRunner()


def test_data_demo_writes_the_files_its_help_names(tmp_path: Path) -> None:
    help_text = runner.invoke(app, ["data", "demo", "--help"], env={"COLUMNS": "200"}).output
    assert "Write the built-in dataset as OUT/bank-support-train.csv and OUT/bank-support-test.csv" in help_text
    assert "Folder for bank-support-train.csv and bank-support-test.csv." in help_text

    # A deep folder: the printed paths are longer than a console's default 80 columns.
    out = tmp_path / ("a-rather-long-folder-name-for-demo-data" * 2) / "demo"
    result = runner.invoke(app, ["data", "demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["bank-support-test.csv", "bank-support-train.csv"]
    assert list(pd.read_csv(out / "bank-support-train.csv").columns) == ["text", "label", "site"]
    # Not a terminal: each path whole on the line, so it can be copied from a log.
    [line] = [line for line in result.output.splitlines() if line.startswith("written:")]
    assert line == f"written: {out / 'bank-support-train.csv'}, {out / 'bank-support-test.csv'}"

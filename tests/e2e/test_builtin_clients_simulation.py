"""`fedpeft simulate --clients 3` on the built-in data, through the real command: three
institutions made of whole banks take part, the report counts three, TensorBoard has the
round, and `fedpeft runs list` shows the completed run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedpeft.common.runs.metrics_log import read_metrics
from fedpeft.deployment.federation_files import credential_name
from fedpeft.report import read_run

pytestmark = pytest.mark.e2e

EXPECTED = ["Alder Federal Bank + Dunmore Savings & Loan",
            "Brightwater Credit Union + Eastgate Commercial Bank", "Corvid"]


def _fedpeft(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedpeft.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900, check=False)


def test_three_clients_on_the_builtin_data(tiny_bert_dir: str, tmp_path: Path) -> None:
    result = _fedpeft("simulate", "--clients", "3", "--rounds", "1", "--model", tiny_bert_dir,
                      "--out", str(tmp_path / "runs"), "--name", "three",
                      "--set", "model.max_seq_length=16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fedpeft simulate: 3 institutions" in result.stdout
    run = tmp_path / "runs" / "three"
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["institutions"] == EXPECTED
    assert sum(summary["train_rows"]) == 820  # every bank's rows, none twice
    [round_one] = [r for r in read_metrics(run / "metrics.jsonl") if r["round"] == 1]
    # Three institutions were asked to train (on a loaded shared machine Ray may kill one:
    # it is then a recorded failure, not a missing institution).
    trained = {c["name"] for c in round_one["clients"] if "train" in c}
    failed = [f for f in round_one["failures"] if f["phase"] == "train"]
    assert trained <= {credential_name(name) for name in EXPECTED}
    assert len(trained) + len(failed) == 3
    # Counted once, under the summary's names (the key names the rounds carry are mapped).
    assert read_run(run).institutions[:3] == tuple(EXPECTED)

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("test/accuracy")] == [0, 1]

    listed = _fedpeft("runs", "list", str(tmp_path / "runs"), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if line.startswith("│ three ")]
    assert [cell.strip() for cell in row.strip("│").split("│")][1:4] == ["federated", "completed", "1/1"]

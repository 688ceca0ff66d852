"""`fedpeft runs list` and `fedpeft runs compare` on real run folders, healthy and damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedpeft.cli.main import app
from fedpeft.common.runs.catalog import list_runs, read_snapshot

from .conftest import EPSILONS, round_record, tear_last_line, tear_middle_line

runner = CliRunner()


def _row(output: str, name: str) -> list[str]:
    [line] = [line for line in output.splitlines() if line.startswith(f"│ {name} ")]
    return [cell.strip() for cell in line.strip("│").split("│")]


def test_list_shows_each_run_with_status_rounds_metrics_and_epsilon(write_run, runs_dir: Path) -> None:
    write_run("fed-dp", dp=True)
    write_run("central", kind="centralized")
    write_run("broken", state="failed", rounds=1)
    running = write_run("live", state="running", rounds=2)
    tear_last_line(running)  # the writer is mid-line: not a problem, just not there yet

    result = runner.invoke(app, ["runs", "list", str(runs_dir)])
    assert result.exit_code == 0, result.output
    final = round_record(3, dp=True)["server_eval"]
    assert _row(result.output, "fed-dp")[:8] == [
        "fed-dp", "federated", "completed", "3/3", f"{final['accuracy']:.4f}",
        f"{final['macro_f1']:.4f}", f"{final['loss']:.4f}", f"{EPSILONS[-1]:.3f} / 5"]
    assert _row(result.output, "central")[1:4] == ["centralized", "completed", "3/3"]
    failed = _row(result.output, "broken")
    assert failed[2:4] == ["failed", "1/3"]
    assert failed[-1] == "RuntimeError: institution bank-c refused the global adapter"
    live = _row(result.output, "live")
    assert live[1:4] == ["federated", "running", "2/3"] and live[-1] == ""


def test_list_marks_damaged_folders_instead_of_failing(write_run, runs_dir: Path) -> None:
    tear_middle_line(write_run("torn"))
    (write_run("no-summary") / "summary.json").unlink()
    garbage = write_run("garbage")
    (garbage / "summary.json").write_text("{not json", encoding="utf-8")

    result = runner.invoke(app, ["runs", "list", str(runs_dir)])
    assert result.exit_code == 0, result.output
    torn = _row(result.output, "torn")
    assert torn[2] == "completed" and torn[3] == "3/3"
    assert torn[-1] == f"{runs_dir / 'torn' / 'metrics.jsonl'} line 2: not JSON (cut or edited)"
    missing = _row(result.output, "no-summary")
    assert missing[2] == "unreadable"
    assert "summary.json: missing or without status" in missing[-1]
    assert "summary.json: not valid JSON" in _row(result.output, "garbage")[-1]


def test_list_of_a_missing_folder_is_a_one_line_data_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["runs", "list", str(tmp_path / "nowhere")])
    assert result.exit_code != 0
    assert "runs folder not found" in str(result.exception)


def test_compare_federated_centralized_and_local(write_run, tmp_path: Path) -> None:
    runs = [write_run("fed", dp=True, lr=1e-3), write_run("central", kind="centralized", lr=2e-3),
            write_run("local", kind="local", lr=5e-4)]
    plot = tmp_path / "out" / "compare.png"
    result = runner.invoke(app, ["runs", "compare", *map(str, runs), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert f"plot: {plot}" in result.output
    # The sweep's varied setting gets a column; the run names do not.
    assert "training.learning_rate" in result.output and "output.run_name" not in result.output
    central = _row(result.output, "central")
    assert central[1] == "centralized"
    assert central[4] == f"{round_record(3, dp=False, lr=2e-3)['server_eval']['accuracy']:.4f}"
    assert central[-1] == "0.002"


def test_compare_refuses_a_folder_with_nothing_readable(write_run, tmp_path: Path) -> None:
    good = write_run("good")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["runs", "compare", str(good), str(empty)])
    assert result.exit_code != 0
    assert str(result.exception) == f"{empty}: nothing to compare ({empty / 'metrics.jsonl'}: not found)"


def test_compare_still_plots_a_torn_run_and_names_the_bad_line(write_run, tmp_path: Path) -> None:
    torn = write_run("torn")
    tear_middle_line(torn)
    plot = tmp_path / "c.png"
    result = runner.invoke(app, ["runs", "compare", str(torn), str(write_run("ok")), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert plot.is_file()
    assert f"torn: {torn / 'metrics.jsonl'} line 2: not JSON (cut or edited)" in result.output


def test_snapshot_reads_the_records_a_running_writer_has_finished(write_run) -> None:
    live = write_run("live", state="running", rounds=1)
    tear_last_line(live)
    snapshot = read_snapshot(live)
    assert snapshot.status == "running" and snapshot.problems == []
    assert [r["round"] for r in snapshot.records] == [0, 1]
    assert [s.name for s in list_runs(live.parent)] == ["live"]


@pytest.mark.parametrize("content", ["[1, 2]", '{"round": "x"}'])
def test_snapshot_notes_records_without_a_round(write_run, content: str) -> None:
    run = write_run("odd")
    with (run / "metrics.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(content + "\n")
    snapshot = read_snapshot(run)
    assert snapshot.problems == [f"{run / 'metrics.jsonl'} line 5: no round number"]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"

"""Faults injected into real `fedpeft simulate` processes, each followed by `fedpeft resume`.

In the style of NVIDIA FLARE's integration tests: a trigger (a round's line appearing in
`metrics.jsonl`) fires an action (kill -9, SIGINT, a full disk). Every scenario must end with
a completed run whose ledger verifies, whose metrics hold every round exactly once, and whose
privacy account went on from where it stopped. Each process is started in its own session and
stopped by its process (group) id.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from fedpeft.common.privacy import epsilon_for
from fedpeft.common.runs.metrics_log import read_metrics

from .harness import FEDPEFT, Processes, processes, read_jsonl, wait_for

pytestmark = pytest.mark.e2e

ROUNDS = 4
NOISE = 0.8
WORDS = {"card": "card plastic contactless pin atm chip",
         "loan": "loan mortgage interest repayment borrow rate",
         "fraud": "fraud stolen scam suspicious unauthorised phishing"}


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("toy")
    rows = [{"text": " ".join(WORDS[label].split()[(i + j) % 6] for j in range(5)),
             "label": label} for i in range(60) for label in [list(WORDS)[i % 3]]]
    pd.DataFrame(rows).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(rows[:21]).to_csv(folder / "test.csv", index=False)
    return folder / "train.csv", folder / "test.csv"


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    with processes(tmp_path / "logs", {**os.environ, "OMP_NUM_THREADS": "1"}) as started:
        yield started


def _simulate_args(model: str, files: tuple[Path, Path], out: Path, name: str) -> list[str]:
    return ["simulate", "--model", model, "--data", str(files[0]), "--test-data", str(files[1]),
            "--partition", "iid", "--clients", "2", "--rounds", str(ROUNDS), "--out", str(out),
            "--name", name, "--strategy", "fedadam",
            "--set", "model.max_seq_length=16", "--set", "training.batch_size=8",
            "--set", "strategy.server_learning_rate=0.1",
            "--set", "privacy.enabled=true", "--set", f"privacy.noise_multiplier={NOISE}"]


def _wait_for_round(process: subprocess.Popen[bytes], metrics: Path, number: int,
                    log: Path, timeout: float = 900) -> None:
    """Return as soon as round `number`'s line is in `metrics` (the fault's trigger)."""
    wait_for(lambda: any(r["round"] == number for r in read_jsonl(metrics)), timeout,
             f"round {number} in {metrics}", (log,), alive=process)


def _fedpeft(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDPEFT, *args], capture_output=True,
                          text=True, timeout=1200, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _assert_completed(run: Path) -> list[dict]:
    """Completed, every round once, ledger verifies with its resumption, epsilon continued."""
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert not (run / "checkpoint").exists()  # keys kept for resuming are gone
    records = read_metrics(run / "metrics.jsonl")
    assert [r["round"] for r in records] == list(range(ROUNDS + 1))
    # The account went on from the checkpoint: every round that released an aggregate (a round
    # below quorum releases none) charged the next round, never starting again at zero; a
    # round released after the checkpoint and run again after the crash counts twice.
    lines = [json.loads(line) for line in (run / "ledger.jsonl").read_text().splitlines()]
    recharged = [n for line in lines if line["kind"] == "run-resumed"
                 for n in line["body"]["superseded_releases_charged"]]
    charged = [r["privacy"] for r in records[1:] if "privacy" in r]
    counts = [p["rounds_charged"] for p in charged]
    assert counts == sorted(set(counts)) and counts[-1] == len(charged) + len(recharged)
    assert [p["epsilon"] for p in charged] == pytest.approx(
        [epsilon_for(NOISE, 1.0, p["rounds_charged"], 1e-5) for p in charged])
    assert records[-1]["privacy"]["rounds_charged"] >= 2
    verified = _fedpeft("audit", "verify", str(run / "ledger.jsonl"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    kinds = [json.loads(line)["kind"] for line in (run / "ledger.jsonl").read_text().splitlines()]
    assert kinds.count("run-resumed") >= 1 and kinds[-1] == "run-end"
    rounds_signed = [json.loads(line)["body"]["round"]
                     for line in (run / "ledger.jsonl").read_text().splitlines()
                     if json.loads(line)["kind"] == "round"]
    assert set(rounds_signed) == set(range(1, ROUNDS + 1))
    return records


def test_kill_9_after_a_round_then_resume(tiny_bert_dir: str, toy_files: tuple[Path, Path],
                                          tmp_path: Path, procs: Processes) -> None:
    out = tmp_path / "runs"
    run = procs.start("k9", [*FEDPEFT, *_simulate_args(tiny_bert_dir, toy_files, out, "k9")])
    _wait_for_round(run, out / "k9.partial" / "metrics.jsonl", 2, procs.log_path("k9"))
    procs.kill(run)
    assert (out / "k9.partial" / "checkpoint" / "state.npz").is_file()

    resumed = _fedpeft("resume", str(out / "k9.partial"))
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    _assert_completed(out / "k9")

    again = _fedpeft("resume", str(out / "k9"))
    assert again.returncode == 2
    assert [line for line in again.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {out / 'k9'}: the run is complete; there is nothing to resume"]


def test_sigint_stops_the_run_within_seconds_and_it_resumes(
        tiny_bert_dir: str, toy_files: tuple[Path, Path], tmp_path: Path,
        procs: Processes) -> None:
    out = tmp_path / "runs"
    run = procs.start("int", [*FEDPEFT, *_simulate_args(tiny_bert_dir, toy_files, out, "int")])
    _wait_for_round(run, out / "int.partial" / "metrics.jsonl", 1, procs.log_path("int"))
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=60) != 0
    stopped = out / "int.failed"
    assert "RunInterrupted" in (stopped / "error.txt").read_text()

    # A config edited since the checkpoint is refused with one line, and nothing changes.
    edited = tmp_path / "edited.failed"
    shutil.copytree(stopped, edited)
    config = edited / "config.toml"
    config.write_text(config.read_text().replace(f"num_rounds = {ROUNDS}", "num_rounds = 9"))
    before = sorted(p.name for p in edited.rglob("*"))
    refused = _fedpeft("resume", str(edited))
    assert refused.returncode == 2
    assert "the config differs from the one the run was checkpointed with" in refused.stderr
    assert sorted(p.name for p in edited.rglob("*")) == before

    resumed = _fedpeft("resume", str(stopped))
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    final = out / "int"
    _assert_completed(final)
    assert (final / "error-before-resume-1.txt").is_file()


def test_full_disk_while_writing_the_run_folder_then_resume(
        tiny_bert_dir: str, toy_files: tuple[Path, Path], tmp_path: Path,
        procs: Processes) -> None:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True, check=False).returncode == 0
    if not mounted:
        pytest.skip("needs root to mount a small filesystem")
    try:
        out = mount / "runs"
        run = procs.start("full", [*FEDPEFT,
                                   *_simulate_args(tiny_bert_dir, toy_files, out, "full")])
        _wait_for_round(run, out / "full.partial" / "metrics.jsonl", 1, procs.log_path("full"))
        filler = mount / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # every free byte: the next write fails
        try:
            while os.write(fd, b"\0" * 4096) > 0:
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        assert run.wait(timeout=600) != 0
        filler.unlink()
        stopped = next(out.glob("full.*"))
        resumed = _fedpeft("resume", str(stopped))
        assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
        _assert_completed(out / "full")
    finally:
        procs.stop_all()
        subprocess.run(["umount", "-l", str(mount)], check=False)

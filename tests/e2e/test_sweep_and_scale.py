"""`fedpeft sweep` end to end, and a 100-institution federation with partial participation.

Both run Flower's Simulation Engine for real with a tiny random BERT on toy data.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedpeft.common.config import load_config
from fedpeft.common.runs.metrics_log import read_metrics
from fedpeft.simulation.federated import simulate

pytestmark = pytest.mark.e2e

WORDS = {
    "card": "card plastic contactless pin atm chip",
    "loan": "loan mortgage interest repayment borrow rate",
    "fraud": "fraud stolen scam suspicious unauthorised phishing",
}


def _toy_csv(path: Path, count: int, seed: int) -> str:
    rng = random.Random(seed)
    labels = list(WORDS)
    rows = [{"text": " ".join(rng.choice(WORDS[labels[i % 3]].split()) for _ in range(5)),
             "label": labels[i % 3]} for i in range(count)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_sweep_runs_each_trial_and_ranks_by_validation(tiny_bert_dir: str, tmp_path: Path) -> None:
    train, test = _toy_csv(tmp_path / "train.csv", 60, 1), _toy_csv(tmp_path / "test.csv", 15, 2)
    sets = {"model.name": tiny_bert_dir, "model.max_seq_length": 16, "data.train": train,
            "data.test": test, "data.partition": "iid", "simulation.num_clients": 2,
            "federation.num_rounds": 2, "training.local_steps": 3, "training.batch_size": 8,
            "data.validation_fraction": 0.2}
    args = [item for key, value in sets.items() for item in ("--set", f"{key}={value}")]
    result = subprocess.run(
        [sys.executable, "-m", "fedpeft.cli.main", "sweep", "--grid",
         "training.learning_rate=0.0001,0.05", "--out", str(tmp_path / "runs"), "--name", "sw",
         *args], capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "runs" / "sw" / "sweep.json").read_text())
    trials = written["trials"]
    assert [t["rank"] for t in trials] == [1, 2]
    assert all(t["status"] == "completed" for t in trials)
    for trial in trials:
        folder = Path(trial["run_folder"])
        assert (folder / "summary.json").is_file() and (folder / "adapter").is_dir()
        last = read_metrics(folder / "metrics.jsonl")[-1]
        assert trial["validation"] == pytest.approx(last["client_eval"]["macro_f1"])
        assert trial["test"] == pytest.approx(last["server_eval"]["macro_f1"])
    assert trials[0]["validation"] >= trials[1]["validation"]
    assert "sweep ranked by validation macro_f1" in result.stdout


def test_hundred_institutions_with_ten_percent_sampled(tiny_bert_dir: str, tmp_path: Path) -> None:
    cfg = load_config(overrides={
        "model.name": tiny_bert_dir, "model.max_seq_length": 16,
        "data.train": _toy_csv(tmp_path / "train.csv", 1200, 1),
        "data.test": _toy_csv(tmp_path / "test.csv", 30, 2), "data.partition": "iid",
        "simulation.num_clients": 100, "federation.num_rounds": 2,
        "federation.fraction_train": 0.1, "federation.fraction_evaluate": 0.05,
        "training.local_steps": 2, "training.batch_size": 8, "training.learning_rate": 0.05,
        "output.dir": str(tmp_path / "runs"), "output.run_name": "hundred"})
    report = simulate(cfg)
    assert len(report.summary["institutions"]) == 100
    assert min(report.summary["train_rows"]) >= 10  # data.min_partition_size
    records = read_metrics(report.path / "metrics.jsonl")
    assert [r["round"] for r in records] == [0, 1, 2]
    trained = [{c["name"] for c in r["clients"] if "train" in c} for r in records[1:]]
    assert [len(names) for names in trained] == [10, 10]  # 10% of 100 trained each round
    assert trained[0] != trained[1]  # a fresh sample every round
    assert all(not r["failures"] for r in records[1:])
    assert json.loads((report.path / "summary.json").read_text())["status"] == "completed"

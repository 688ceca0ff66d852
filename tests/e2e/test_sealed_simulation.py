"""A simulated federation seals its updates by default, through the same code as a deployment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedpeft.common.config import load_config
from fedpeft.common.runs.metrics_log import read_metrics
from fedpeft.simulation.federated import simulate

pytestmark = pytest.mark.e2e


def test_simulation_seals_by_default(write_words_csv, tiny_bert_dir: str,
                                     tmp_path: Path) -> None:
    train, test = write_words_csv(seed=0, per_label=15, test_rows=10)
    cfg = load_config(overrides={
        "model.name": tiny_bert_dir, "model.max_seq_length": 16, "data.train": train,
        "data.test": test, "data.partition": "iid", "simulation.num_clients": 2,
        "federation.num_rounds": 2, "training.local_steps": 2, "training.batch_size": 8,
        "output.dir": str(tmp_path / "runs"), "output.run_name": "sealed",
    })
    assert cfg.security.seal_updates  # on unless switched off
    report = simulate(cfg)

    security = report.summary["security"]
    assert security["sealed_updates"] is True
    assert sorted(security["institutions"]) == ["institution-0", "institution-1"]
    assert all(len(fp) == 64 for fp in security["institutions"].values())
    assert len(security["server_signing"]) == 64 and len(security["server_encryption"]) == 64
    records = read_metrics(report.path / "metrics.jsonl")
    for record in records[1:]:
        assert not record["failures"]
        assert sorted(c["name"] for c in record["clients"]) == ["institution-0", "institution-1"]
        assert all(c["train"]["seal-s"] > 0 for c in record["clients"])
        assert record["time"]["server_sealing_s"] > 0
    # The run's config file names no key folder; the keys were made inside the run's private
    # checkpoint folder (a resumed run signs with them again) and left with it when the run
    # completed: no private key stays behind in the run folder.
    assert "credentials_dir" not in (report.path / "config.toml").read_text()
    assert not (report.path / "checkpoint").exists()
    assert not [p for p in report.path.rglob("*") if p.is_file() and "PRIVATE KEY" in
                p.read_bytes()[:200].decode("latin-1")]


def test_simulation_without_sealing_warns(write_words_csv, tiny_bert_dir: str, tmp_path: Path,
                                          caplog) -> None:
    train, test = write_words_csv(seed=0, per_label=15, test_rows=10)
    cfg = load_config(overrides={
        "model.name": tiny_bert_dir, "model.max_seq_length": 16, "data.train": train,
        "data.test": test, "data.partition": "iid", "simulation.num_clients": 2,
        "federation.num_rounds": 1, "training.local_steps": 1, "training.batch_size": 8,
        "output.dir": str(tmp_path / "runs"), "output.run_name": "plain",
        "security.seal_updates": False,
    })
    with caplog.at_level("WARNING"):
        report = simulate(cfg)
    assert report.summary["security"]["sealed_updates"] is False
    assert "seal_updates = false" in caplog.text
    assert json.loads((report.path / "summary.json").read_text())["status"] == "completed"

"""Secure aggregation in the Simulation Engine: the round completes, the model improves, and
the aggregator never holds an institution's update in the clear."""

from __future__ import annotations

from pathlib import Path

import pytest
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from fedpeft.common.config import load_config
from fedpeft.common.runs.metrics_log import read_metrics
from fedpeft.simulation.federated import simulate

pytestmark = pytest.mark.e2e

WORDS = {"card": "card pin atm chip contactless", "fraud": "fraud stolen scam phishing theft"}


@pytest.mark.parametrize("mode", ["fedavg", "ffa"])
def test_secure_aggregation_simulation_learns(write_words_csv, tiny_bert_dir: str,
                                              tmp_path: Path, mode: str) -> None:
    train, test = write_words_csv(seed=1, per_label=40, test_rows=40, words=WORDS,
                                  words_per_row=5, shuffle=True)
    cfg = load_config(overrides={
        "model.name": tiny_bert_dir, "model.max_seq_length": 16, "data.train": train,
        "data.test": test, "data.partition": "iid", "simulation.num_clients": 3,
        "federation.num_rounds": 3, "training.local_steps": 6, "training.batch_size": 8,
        "training.learning_rate": 0.02, "secure_aggregation.enabled": True,
        "lora.mode": mode, "federation.fraction_evaluate": 0.0,
        "output.dir": str(tmp_path / "runs"), "output.run_name": f"secagg-{mode}",
    })
    report = simulate(cfg)

    records = read_metrics(report.path / "metrics.jsonl")
    assert len(records) == 4
    for record in records[1:]:
        assert record["failures"] == []
        info = record["secure_aggregation"]
        assert info["participants"] == 3 and info["survivors"] == 3 and info["dropped"] == 0
        assert info["total_weight"] > 0 and info["protocol_bytes_sent"] > 0
        # Example counts travel masked: no institution reports its own in the clear.
        assert all("num-examples" not in c["train"] for c in record["clients"])
    first, last = records[0]["server_eval"], records[-1]["server_eval"]
    assert last["loss"] < first["loss"]
    assert report.summary["security"]["secure_aggregation"] is True
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    PeftModel.from_pretrained(model, report.path / "adapter")


@pytest.mark.parametrize("mode", ["ffa", "stacking"])
def test_heterogeneous_ranks_simulation_learns(write_words_csv, tiny_bert_dir: str,
                                               tmp_path: Path, mode: str) -> None:
    """Institutions of ranks 8, 4 and 2 in one federation (masked where the mode allows)."""
    train, test = write_words_csv(seed=1, per_label=40, test_rows=40, words=WORDS,
                                  words_per_row=5, shuffle=True)
    cfg = load_config(overrides={
        "model.name": tiny_bert_dir, "model.max_seq_length": 16, "data.train": train,
        "data.test": test, "data.partition": "iid", "simulation.num_clients": 3,
        "federation.num_rounds": 3, "training.local_steps": 6, "training.batch_size": 8,
        "training.learning_rate": 0.02, "lora.mode": mode, "lora.ranks": [8, 4, 2],
        "secure_aggregation.enabled": mode == "ffa", "federation.fraction_evaluate": 0.0,
        "output.dir": str(tmp_path / "runs"), "output.run_name": f"ranks-{mode}",
    })
    report = simulate(cfg)
    records = read_metrics(report.path / "metrics.jsonl")
    assert all(record["failures"] == [] for record in records[1:])
    assert records[-1]["server_eval"]["loss"] < records[0]["server_eval"]["loss"]
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    PeftModel.from_pretrained(model, report.path / "adapter")

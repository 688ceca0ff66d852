"""Whole simulated federations and baselines with tiny random models on toy data.

Each test runs Flower's Simulation Engine for real (Ray actors as institutions) and checks
what a user relies on: the metric improved, and the run folder holds a loadable adapter, the
per-round metrics, plots and the effective config.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from fedpeft.common.config import DEFAULT_MODEL, RunConfig, load_config
from fedpeft.common.runs.metrics_log import read_metrics
from fedpeft.simulation.baselines import run_baseline
from fedpeft.simulation.federated import simulate

pytestmark = pytest.mark.e2e

WORDS = {
    "card": "card plastic contactless pin atm chip",
    "loan": "loan mortgage interest repayment borrow rate",
    "fraud": "fraud stolen scam suspicious unauthorised phishing",
}


def _toy_rows(count: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        label = list(WORDS)[index % len(WORDS)]
        words = WORDS[label].split()
        rows.append({"text": " ".join(rng.choice(words) for _ in range(5)), "label": label,
                     "site": f"site-{index % 3}"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("toy-data")
    _toy_rows(90, seed=1).to_csv(folder / "train.csv", index=False)
    _toy_rows(30, seed=2).to_csv(folder / "test.csv", index=False)
    return str(folder / "train.csv"), str(folder / "test.csv")


def _config(model_dir: str, files: tuple[str, str], out: Path, **overrides: object) -> RunConfig:
    settings = {
        "model.name": model_dir, "model.max_seq_length": 16,
        "data.train": files[0], "data.test": files[1], "data.partition": "iid",
        "simulation.num_clients": 2, "federation.num_rounds": 3,
        "training.learning_rate": 0.05, "training.lr_scheduler": "constant",
        "training.batch_size": 8, "training.local_epochs": 5, "peft.lora_dropout": 0.0,
        "output.dir": str(out), "output.run_name": "run",
    }
    settings.update({key.replace("__", "."): value for key, value in overrides.items()})
    return load_config(overrides=settings)


def _assert_run_folder(path: Path, rounds: int) -> list[dict]:
    for name in ("config.toml", "metrics.jsonl", "run.log", "summary.json",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                 "best/adapter_config.json", "plots/server_eval.png"):
        assert (path / name).is_file(), name
    assert json.loads((path / "summary.json").read_text())["status"] == "completed"
    records = read_metrics(path / "metrics.jsonl")
    assert [r["round"] for r in records] == list(range(rounds + 1))
    return records


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedadam", "fedyogi", "fedavgm"])
def test_each_strategy_improves_accuracy(strategy: str, tiny_bert_dir: str, toy_files,
                                         tmp_path: Path) -> None:
    # Adam-style server steps move each weight by about eta per round: give them room.
    extra = {"strategy__server_learning_rate": 0.3} if strategy in ("fedadam", "fedyogi") else {}
    report = simulate(_config(tiny_bert_dir, toy_files, tmp_path, strategy__name=strategy, **extra))
    records = _assert_run_folder(report.path, rounds=3)
    first, last = records[0]["server_eval"], records[-1]["server_eval"]
    assert last["accuracy"] >= first["accuracy"] + 0.3, (first, last)
    round_one = records[1]
    assert len(round_one["clients"]) == 2
    assert round_one["bytes"]["sent"] > 0 and round_one["bytes"]["received"] > 0
    assert report.summary["adapter_bytes"] * 10 < report.summary["full_model_bytes"]


def test_final_adapter_loads_with_peft_and_matches_server_metric(tiny_bert_dir: str, toy_files,
                                                                 tmp_path: Path) -> None:
    report = simulate(_config(tiny_bert_dir, toy_files, tmp_path))
    labels = json.loads((report.path / "adapter" / "fedpeft_labels.json").read_text())["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, str(report.path / "adapter")).eval()
    test = pd.read_csv(toy_files[1])
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    batch = tokenizer(list(test["text"]), padding=True, truncation=True, max_length=16,
                      return_tensors="pt")
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1).tolist()
    hits = sum(labels[p] == t for p, t in zip(predicted, test["label"], strict=True))
    accuracy = hits / len(test)
    assert accuracy == pytest.approx(report.summary["final"]["accuracy"], abs=1e-6)


def test_ia3_improves_accuracy(tiny_bert_dir: str, toy_files, tmp_path: Path) -> None:
    report = simulate(_config(tiny_bert_dir, toy_files, tmp_path, peft__method="ia3",
                              training__learning_rate=0.3))
    records = _assert_run_folder(report.path, rounds=3)
    assert records[-1]["server_eval"]["accuracy"] >= records[0]["server_eval"]["accuracy"] + 0.3
    adapter_config = json.loads((report.path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "IA3"


@pytest.fixture
def colour_files(tmp_path: Path) -> tuple[str, str]:
    prompts = ["what colour is the sky?", "what colour is grass?", "what colour is snow?"]
    frame = pd.DataFrame({"prompt": prompts * 12, "response": ["blue", "green", "white"] * 12})
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.head(9).to_csv(tmp_path / "test.csv", index=False)
    return str(tmp_path / "train.csv"), str(tmp_path / "test.csv")


def test_prompt_tuning_on_the_packaged_minilm(toy_files, tmp_path: Path) -> None:
    # A random tiny encoder gives soft prompts nothing to steer; the pretrained default does.
    report = simulate(_config(DEFAULT_MODEL, toy_files, tmp_path, peft__method="prompt_tuning",
                              federation__num_rounds=2))
    records = _assert_run_folder(report.path, rounds=2)
    assert records[-1]["server_eval"]["accuracy"] >= records[0]["server_eval"]["accuracy"] + 0.3
    adapter_config = json.loads((report.path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "PROMPT_TUNING"


def test_causal_lm_federation_lowers_test_loss(tiny_gpt2_dir: str, colour_files,
                                               tmp_path: Path) -> None:
    cfg = _config(tiny_gpt2_dir, colour_files, tmp_path / "runs", model__task="causal-lm",
                  training__learning_rate=0.02)
    report = simulate(cfg)
    records = _assert_run_folder(report.path, rounds=3)
    assert records[-1]["server_eval"]["loss"] < records[0]["server_eval"]["loss"] - 0.5
    assert "perplexity" in records[-1]["server_eval"]


def test_baselines_write_the_same_kind_of_run_folder(tiny_bert_dir: str, toy_files,
                                                     tmp_path: Path) -> None:
    central = run_baseline("centralized", _config(tiny_bert_dir, toy_files, tmp_path / "c"))
    records = _assert_run_folder(central.path, rounds=3)
    assert records[-1]["server_eval"]["accuracy"] >= records[0]["server_eval"]["accuracy"] + 0.3
    local = run_baseline("local", _config(tiny_bert_dir, toy_files, tmp_path / "l"))
    assert (local.path / "metrics.jsonl").is_file()
    names = sorted(local.summary["per_institution"])
    assert names == ["institution-0", "institution-1"]
    for name in names:
        assert (local.path / "adapter" / name / "adapter_model.safetensors").is_file()

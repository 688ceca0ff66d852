"""Base model loading: heads, pad tokens, the per-process cache, the packaged MiniLM."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from fedpeft.common.config.models import DEFAULT_MODEL
from fedpeft.common.errors import ConfigError
from fedpeft.common.modeling.loader import load_base_model
from fedpeft.common.training.learner import Learner


def test_classification_head_and_labels(tiny_bert_dir, tiny_config, caplog, capfd) -> None:
    caplog.set_level(logging.INFO, logger="fedpeft")
    model, tokenizer = load_base_model(tiny_config(tiny_bert_dir).model, 0,
                                       ["billing", "fraud", "login"])
    assert model.config.num_labels == 3
    assert model.config.id2label == {0: "billing", 1: "fraud", 2: "login"}
    assert model.config.pad_token_id == tokenizer.pad_token_id == 0
    # transformers' load report is turned into one line of our log, not a table on stderr
    assert "newly initialised" in caplog.text and "classifier.weight" in caplog.text
    assert "LOAD REPORT" not in capfd.readouterr().err


def test_each_call_returns_its_own_model(tiny_bert_dir, tiny_config) -> None:
    cfg = tiny_config(tiny_bert_dir)
    first, _ = load_base_model(cfg.model, 0, ["a", "b"])
    second, _ = load_base_model(cfg.model, 0, ["a", "b"])
    with torch.no_grad():
        first.classifier.weight.add_(1.0)
    assert not torch.equal(first.classifier.weight, second.classifier.weight)


def test_classification_needs_label_names(tiny_bert_dir, tiny_config) -> None:
    with pytest.raises(ConfigError, match="data.labels"):
        load_base_model(tiny_config(tiny_bert_dir).model, 0, None)


def test_missing_pad_token_becomes_eos(tiny_gpt2_dir, tiny_config, tmp_path: Path) -> None:
    # GPT-2 style: a copy of the tiny GPT-2 whose tokenizer has no pad token
    folder = tmp_path / "no-pad"
    for item in Path(tiny_gpt2_dir).iterdir():
        (folder / item.name).parent.mkdir(exist_ok=True)
        (folder / item.name).write_bytes(item.read_bytes())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(folder)
    model, loaded = load_base_model(tiny_config(str(folder), "causal-lm").model, 0, None)
    assert loaded.pad_token == loaded.eos_token == "[SEP]"
    assert model.config.pad_token_id == loaded.eos_token_id


def test_gradient_checkpointing_is_enabled_when_configured(tiny_llama_dir, tiny_config) -> None:
    cfg = tiny_config(tiny_llama_dir, "causal-lm", model={"gradient_checkpointing": True})
    model, _ = load_base_model(cfg.model, 0, None)
    assert any(getattr(module, "gradient_checkpointing", False) for module in model.modules())


def test_packaged_minilm_with_lora_q_v(tiny_config) -> None:
    labels = ["billing", "fraud", "login"]
    cfg = tiny_config(DEFAULT_MODEL, peft={"r": 8, "target_modules": ["query", "value"]})
    learner = Learner(cfg, labels)
    trainable, total = learner.model.get_nb_trainable_parameters()
    hidden, layers = 384, 6
    lora = layers * 2 * (hidden * 8 + 8 * hidden)  # A and B for query and value per layer
    head = hidden * len(labels) + len(labels)
    assert trainable == lora + head == 74_883
    assert total > 22_000_000

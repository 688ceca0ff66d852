"""Tokenization and collation: response-only loss masking, truncation, dropped prompts."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from transformers import AutoTokenizer

from fedpeft.common.errors import DataError
from fedpeft.common.training.batches import IGNORE_INDEX, collate, encode


@pytest.fixture(scope="module")
def tokenizer(tiny_gpt2_dir):
    return AutoTokenizer.from_pretrained(tiny_gpt2_dir)


def test_labels_are_masked_exactly_on_prompt_and_padding(tokenizer) -> None:
    table = pd.DataFrame({"prompt": ["what colour is the sky", "hi"],
                          "response": ["blue", "hello there"]})
    examples = encode(table, tokenizer, "causal-lm", max_length=32)
    batch = collate(examples, tokenizer.pad_token_id)
    for row, (prompt, response) in enumerate(zip(table["prompt"], table["response"], strict=True)):
        prompt_ids = tokenizer(prompt)["input_ids"]
        target = tokenizer(response,
                           add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        length = len(prompt_ids) + len(target)
        labels = batch["labels"][row].tolist()
        assert labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
        assert labels[len(prompt_ids): length] == target
        assert labels[length:] == [IGNORE_INDEX] * (batch["labels"].shape[1] - length)
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (len(labels) - length)
        assert batch["input_ids"][row, :length].tolist() == prompt_ids + target


def test_truncation_keeps_max_length_and_the_prompt(tokenizer) -> None:
    table = pd.DataFrame({"prompt": ["question"], "response": ["word " * 50]})
    (example,) = encode(table, tokenizer, "causal-lm", max_length=10)
    assert len(example.input_ids) == len(example.labels) == 10
    prompt_len = len(tokenizer("question")["input_ids"])
    assert example.labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert IGNORE_INDEX not in example.labels[prompt_len:]


def test_prompts_filling_max_length_are_dropped_and_logged(tokenizer, caplog) -> None:
    table = pd.DataFrame({"prompt": ["short", "long " * 40], "response": ["ok", "never seen"]})
    with caplog.at_level(logging.WARNING):
        examples = encode(table, tokenizer, "causal-lm", max_length=8)
    assert len(examples) == 1
    assert "dropped 1 of 2 examples" in caplog.text


def test_all_prompts_too_long_is_a_data_error(tokenizer) -> None:
    table = pd.DataFrame({"prompt": ["long " * 40], "response": ["x"]})
    with pytest.raises(DataError, match="model.max_seq_length=8"):
        encode(table, tokenizer, "causal-lm", max_length=8)


def test_classification_batch(tokenizer) -> None:
    table = pd.DataFrame({"text": ["card blocked", "a much longer message " * 20], "label": [2, 0]})
    batch = collate(encode(table, tokenizer, "classification", max_length=16),
                    tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, 16)
    assert batch["labels"].tolist() == [2, 0]
    assert batch["attention_mask"][0].sum() == len(tokenizer("card blocked")["input_ids"])

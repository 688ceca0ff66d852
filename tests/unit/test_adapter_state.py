"""The per-round payload: adapter state round trips and refusals, ArrayRecord transport."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from fedpeft.common.adapter.state import (
    from_array_record,
    full_model_nbytes,
    load_adapter_state,
    state_nbytes,
    to_array_record,
)
from fedpeft.common.errors import ModelError
from fedpeft.common.training.learner import Learner

LABELS = ["neg", "pos"]
IDS = torch.tensor([[101, 2204, 2307, 2986, 102], [101, 2919, 9643, 102, 0]])


def _logits(learner: Learner) -> torch.Tensor:
    with torch.no_grad():
        return learner.model(input_ids=IDS, attention_mask=(IDS != 0).long()).logits


def _perturbed(state: dict[str, np.ndarray], seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v + rng.normal(0, 0.1, v.shape)).astype(np.float32) for k, v in state.items()}


@pytest.fixture
def bert_learner(tiny_bert_dir, tiny_config) -> Learner:
    return Learner(tiny_config(tiny_bert_dir), LABELS)


def test_state_is_float32_contiguous_copies_with_the_head(bert_learner: Learner) -> None:
    state = bert_learner.get_state()
    assert any("classifier" in key for key in state)
    assert any("lora_A" in key for key in state) and any("lora_B" in key for key in state)
    for array in state.values():
        assert array.dtype == np.float32 and array.flags.c_contiguous
    key = next(iter(state))
    before = state[key].copy()
    with torch.no_grad():
        for p in bert_learner.model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    np.testing.assert_array_equal(state[key], before)  # not a view of live parameters


@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_round_trip_to_a_fresh_learner_gives_identical_outputs(tiny_bert_dir, tiny_config,
                                                               method) -> None:
    cfg = tiny_config(tiny_bert_dir, peft={"method": method, "num_virtual_tokens": 3})
    source, target = Learner(cfg, LABELS), Learner(cfg, LABELS)
    source.set_state(_perturbed(source.get_state()))
    assert not torch.allclose(_logits(source), _logits(target))
    target.set_state(source.get_state())
    torch.testing.assert_close(_logits(target), _logits(source), rtol=0, atol=0)
    assert target.get_state().keys() == source.get_state().keys()


def test_wrong_shape_is_refused_before_anything_changes(bert_learner: Learner) -> None:
    good = _perturbed(bert_learner.get_state())
    bert_learner.set_state(good)
    reference = _logits(bert_learner)
    bad = _perturbed(good, seed=2)
    last = list(bad)[-1]
    bad[last] = np.zeros((3, *bad[last].shape[1:]), dtype=np.float32)
    shape = tuple(good[last].shape)
    message = f"{last!r} has shape {tuple(bad[last].shape)}, the model expects {shape}"
    with pytest.raises(ModelError, match=re.escape(message)):
        load_adapter_state(bert_learner.model, bad)
    torch.testing.assert_close(_logits(bert_learner), reference, rtol=0, atol=0)


def test_missing_and_unexpected_keys_are_refused(bert_learner: Learner) -> None:
    state = bert_learner.get_state()
    first = next(iter(state))
    with pytest.raises(ModelError, match=rf"key {first!r} is missing"):
        load_adapter_state(bert_learner.model, {k: v for k, v in state.items() if k != first})
    with pytest.raises(ModelError, match=r"unexpected key 'extra.weight'"):
        load_adapter_state(bert_learner.model, {**state, "extra.weight": np.zeros(2, np.float32)})


def test_array_record_round_trip_keeps_keys_order_dtypes_values(bert_learner: Learner) -> None:
    state = _perturbed(bert_learner.get_state())
    back = from_array_record(to_array_record(state))
    assert list(back) == list(state)
    for key, array in state.items():
        assert back[key].dtype == np.float32 and back[key].shape == array.shape
        np.testing.assert_array_equal(back[key], array)


def test_sizes(bert_learner: Learner) -> None:
    state = bert_learner.get_state()
    trainable, total = bert_learner.model.get_nb_trainable_parameters()
    assert state_nbytes(state) == 4 * trainable
    # all base and adapter parameters (peft counts the head's original and trained copy once)
    assert full_model_nbytes(bert_learner.model) >= 4 * total > state_nbytes(state)

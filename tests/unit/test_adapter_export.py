"""Saved adapters load with plain peft; merged exports load with plain transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from fedpeft.common.adapter.export import export_merged, save_adapter
from fedpeft.common.errors import ConfigError
from fedpeft.common.training.learner import Learner

LABELS = ["billing", "fraud", "login"]
IDS = torch.tensor([[101, 2204, 2307, 2986, 102], [101, 2919, 9643, 102, 0]])


def _trained_looking(learner: Learner) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: (v + rng.normal(0, 0.2, v.shape)).astype(np.float32)
            for k, v in learner.get_state().items()}


def _logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=(IDS != 0).long()).logits


def test_saved_adapter_loads_with_peft_and_gives_identical_logits(tiny_bert_dir, tiny_config,
                                                                  tmp_path) -> None:
    learner = Learner(tiny_config(tiny_bert_dir), LABELS)
    untouched = learner.get_state()
    best = _trained_looking(learner)
    out = save_adapter(learner, best, tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {
        p.name for p in out.iterdir()}
    for key, value in learner.get_state().items():  # the learner keeps its own adapter
        np.testing.assert_array_equal(value, untouched[key])

    learner.set_state(best)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=len(LABELS))
    loaded = PeftModel.from_pretrained(base, out)
    torch.testing.assert_close(_logits(loaded), _logits(learner.model), rtol=0, atol=0)


@pytest.mark.parametrize(("fixture", "task", "model_cls"), [
    ("tiny_bert_dir", "classification", AutoModelForSequenceClassification),
    ("tiny_llama_dir", "causal-lm", AutoModelForCausalLM),
])
def test_merged_export_matches_the_adapter_model(request, tiny_config, tmp_path, fixture, task,
                                                 model_cls) -> None:
    labels = LABELS if task == "classification" else None
    learner = Learner(tiny_config(request.getfixturevalue(fixture), task), labels)
    state = _trained_looking(learner)
    learner.set_state(state)
    adapter = save_adapter(learner, state, tmp_path / "adapter")
    merged_dir = export_merged(adapter, tmp_path / "merged")
    merged = model_cls.from_pretrained(merged_dir)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    if task == "classification":
        assert merged.config.id2label == dict(enumerate(LABELS))
    torch.testing.assert_close(_logits(merged), _logits(learner.model), rtol=1e-5, atol=1e-5)


def test_prompt_tuning_cannot_be_merged(tiny_bert_dir, tiny_config, tmp_path) -> None:
    learner = Learner(tiny_config(tiny_bert_dir, peft={"method": "prompt_tuning"}), LABELS)
    adapter = save_adapter(learner, learner.get_state(), tmp_path / "adapter")
    with pytest.raises(ConfigError,
                       match="'prompt_tuning' adds virtual tokens and cannot be merged"):
        export_merged(adapter, tmp_path / "merged")

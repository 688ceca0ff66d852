"""FLoRA stacking on tiny learners: the global lives in the base weights, saves as plain peft."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from fedpeft.common.adapter.export import save_adapter
from fedpeft.common.adapter.state import adapter_state
from fedpeft.common.lora.keys import is_lora, lora_a_key, lora_b_key, lora_modules
from fedpeft.common.training.learner import Learner

LABELS = ["neg", "pos"]
TOY = pd.DataFrame({"text": ["good great fine nice"] * 4 + ["bad awful terrible poor"] * 4,
                    "label": [0] * 4 + [1] * 4})
STEPS = {"local_steps": 2, "learning_rate": 0.05, "lr_scheduler": "constant", "batch_size": 4}
IDS = torch.tensor([[101, 2204, 2307, 2986, 102], [101, 2919, 9643, 102, 0]])


def _stacking(tiny_config, model_dir: str, task: str = "classification", rank: int | None = None):
    cfg = tiny_config(model_dir, task, peft={"r": 4}, training=STEPS, lora={"mode": "stacking"})
    return Learner(cfg, LABELS if task == "classification" else None, rank)


def _random_global(learner: Learner, seed: int = 0) -> dict[str, np.ndarray]:
    """A stacked global whose layers have different ranks (1, 2, 3, ...), as after compaction."""
    rng = np.random.default_rng(seed)
    own = learner.get_state()
    state = {key: rng.normal(0, 0.3, value.shape).astype(np.float32)
             for key, value in own.items() if not is_lora(key)}
    for index, module in enumerate(lora_modules(own)):
        rank = index % 3 + 1
        in_features = own[lora_a_key(module)].shape[1]
        out_features = own[lora_b_key(module)].shape[0]
        state[lora_a_key(module)] = rng.normal(0, 0.3, (rank, in_features)).astype(np.float32)
        state[lora_b_key(module)] = rng.normal(0, 0.3, (out_features, rank)).astype(np.float32)
    return state


def _logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=(IDS != 0).long()).logits


def test_adopting_a_global_puts_its_product_in_the_base_weights_once(tiny_bert_dir,
                                                                      tiny_config) -> None:
    learner = _stacking(tiny_config, tiny_bert_dir)
    layers = {name: layer for name, layer in learner.model.named_modules()
              if hasattr(layer, "lora_A")}
    pristine = {name: layer.get_base_layer().weight.detach().clone()
                for name, layer in layers.items()}
    state = _random_global(learner)
    learner.set_state(_random_global(learner, seed=1))
    learner.set_state(state)  # replaces the first global, does not add to it
    for name, layer in layers.items():
        delta = torch.from_numpy(state[lora_b_key(name)] @ state[lora_a_key(name)])
        torch.testing.assert_close(layer.get_base_layer().weight - pristine[name], delta,
                                   rtol=1e-5, atol=1e-6)
        assert not layer.lora_B["default"].weight.any()  # its own LoRA adds nothing yet
    heads = {k: v for k, v in adapter_state(learner.model).items() if not is_lora(k)}
    for key, value in heads.items():
        np.testing.assert_array_equal(value, state[key])


def test_each_round_trains_a_fresh_lora_and_sends_it_scaled(tiny_bert_dir, tiny_config) -> None:
    learner = _stacking(tiny_config, tiny_bert_dir)
    state = _random_global(learner)
    learner.set_state(state)
    learner.train(TOY, server_round=3, num_rounds=3)
    sent = learner.get_state()
    own = adapter_state(learner.model)
    for module in lora_modules(own):
        np.testing.assert_allclose(sent[lora_b_key(module)], 4.0 * own[lora_b_key(module)])  # 16/4
        np.testing.assert_array_equal(sent[lora_a_key(module)], own[lora_a_key(module)])
    learner.set_state(state)
    learner.train(TOY, server_round=3, num_rounds=3)  # nothing carries over from the last one
    again = learner.get_state()
    for key, value in sent.items():
        np.testing.assert_array_equal(again[key], value)
    assert sent[lora_a_key(lora_modules(sent)[0])].shape == (4, 32)
    assert _stacking(tiny_config, tiny_bert_dir, rank=2).get_state()[
        lora_a_key(lora_modules(sent)[0])].shape == (2, 32)


def test_stacked_global_saves_as_peft_lora_with_the_learners_logits(tiny_bert_dir, tiny_config,
                                                                    tmp_path) -> None:
    learner = _stacking(tiny_config, tiny_bert_dir)
    state = _random_global(learner)
    learner.set_state(state)
    out = save_adapter(learner, state, tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["lora_alpha"] == config["r"] and config["alpha_pattern"]  # scale 1 everywhere
    assert set(config["rank_pattern"].values()) | {config["r"]} == {1, 2, 3}
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    loaded = PeftModel.from_pretrained(base, out)
    torch.testing.assert_close(_logits(loaded), _logits(learner.model), rtol=1e-5, atol=1e-5)


def test_stacking_on_gpt2_conv1d_layers(tiny_gpt2_dir, tiny_config, tmp_path) -> None:
    learner = _stacking(tiny_config, tiny_gpt2_dir, "causal-lm")
    state = _random_global(learner)
    learner.set_state(state)
    out = save_adapter(learner, state, tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir), out)
    torch.testing.assert_close(_logits(loaded), _logits(learner.model), rtol=1e-5, atol=1e-5)

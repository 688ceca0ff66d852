"""PEFT config building across methods and architectures, and its user-facing errors."""

from __future__ import annotations

import pytest
import torch
from peft import IA3Config, LoHaConfig, LoraConfig, PromptTuningConfig, TaskType

from fedpeft.common.errors import ConfigError, ModelError
from fedpeft.common.modeling.loader import load_base_model
from fedpeft.common.modeling.peft_builder import apply_peft, available_methods, build_peft_config

# (method, config class, our settings, what the config must then hold)
METHODS = [
    ("lora", LoraConfig, {"r": 4, "lora_alpha": 8.0}, {"r": 4, "lora_alpha": 8.0}),
    ("ia3", IA3Config, {}, {}),
    ("prompt_tuning", PromptTuningConfig, {"num_virtual_tokens": 3}, {"num_virtual_tokens": 3}),
    ("loha", LoHaConfig, {"r": 2, "lora_alpha": 4.0}, {"r": 2, "alpha": 4.0}),
]
MODELS = [("tiny_bert_dir", "classification"), ("tiny_gpt2_dir", "causal-lm"),
          ("tiny_llama_dir", "causal-lm")]


def _base(request: pytest.FixtureRequest, tiny_config, fixture: str, task: str, **peft):
    cfg = tiny_config(request.getfixturevalue(fixture), task, peft=peft)
    labels = ["neg", "pos"] if task == "classification" else None
    return cfg, load_base_model(cfg.model, cfg.training.seed, labels)[0]


@pytest.mark.parametrize(("fixture", "task"), MODELS)
@pytest.mark.parametrize(("method", "config_cls", "settings", "expected"), METHODS)
def test_builds_and_applies_each_method(request, tiny_config, fixture, task, method, config_cls,
                                        settings, expected) -> None:
    if method == "loha" and fixture == "tiny_gpt2_dir":
        pytest.skip("peft's LoHa does not support GPT-2's Conv1D (see the error test below)")
    cfg, base = _base(request, tiny_config, fixture, task, method=method, **settings)
    peft_config = build_peft_config(cfg, base)
    assert isinstance(peft_config, config_cls)
    expected_task = TaskType.SEQ_CLS if task == "classification" else TaskType.CAUSAL_LM
    assert peft_config.task_type == expected_task
    for field, value in expected.items():
        assert getattr(peft_config, field) == value
    model = apply_peft(cfg, base)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable, "the method must leave something to train"
    ids = torch.tensor([[101, 2204, 2307, 102]])
    assert torch.isfinite(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits).all()


def test_bert_lora_defaults_to_query_value_and_trains_the_head(request, tiny_config) -> None:
    cfg, base = _base(request, tiny_config, "tiny_bert_dir", "classification")
    model = apply_peft(cfg, base)
    assert model.peft_config["default"].target_modules == {"query", "value"}
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[-1]
               for name, p in model.named_parameters() if p.requires_grad and "lora_" in name}
    assert adapted == {"query", "value"}
    assert any("classifier" in name for name, p in model.named_parameters() if p.requires_grad)


def test_prompt_tuning_takes_dimensions_from_the_model(request, tiny_config) -> None:
    cfg, base = _base(request, tiny_config, "tiny_bert_dir", "classification",
                      method="prompt_tuning", num_virtual_tokens=5)
    model = apply_peft(cfg, base)
    config = model.peft_config["default"]
    assert (config.num_virtual_tokens, config.token_dim) == (5, base.config.hidden_size)


def test_options_are_passed_through(request, tiny_config) -> None:
    cfg, base = _base(request, tiny_config, "tiny_bert_dir", "classification",
                      options={"use_rslora": True, "bias": "lora_only"})
    config = build_peft_config(cfg, base)
    assert config.use_rslora is True and config.bias == "lora_only"


def test_unknown_option_names_the_key_and_method(request, tiny_config) -> None:
    cfg, base = _base(request, tiny_config, "tiny_bert_dir", "classification",
                      method="ia3", options={"rank": 4})
    with pytest.raises(ConfigError, match=r"peft.options.rank: not a setting of peft method 'ia3'"):
        build_peft_config(cfg, base)


def test_unknown_method_lists_available_ones(request, tiny_config) -> None:
    cfg, base = _base(request, tiny_config, "tiny_bert_dir", "classification", method="lorax")
    with pytest.raises(ConfigError,
                       match=r"peft.method='lorax' is not a peft method \(available: .*lora"):
        build_peft_config(cfg, base)
    assert {"lora", "ia3", "prompt_tuning", "loha"} <= set(available_methods())


def test_unknown_target_module_names_it_and_lists_linear_modules(request, tiny_config) -> None:
    cfg, base = _base(request, tiny_config, "tiny_bert_dir", "classification",
                      target_modules=["query", "q_proj"])
    with pytest.raises(ModelError,
                       match=r"no module named 'q_proj' in bert \(Linear modules: .*query"):
        build_peft_config(cfg, base)


def test_suffix_target_modules_are_accepted(request, tiny_config) -> None:
    cfg, base = _base(request, tiny_config, "tiny_bert_dir", "classification",
                      target_modules=["attention.self.key", "output.dense"])
    assert build_peft_config(cfg, base).target_modules == {"attention.self.key", "output.dense"}


def test_method_unsupported_by_architecture_is_a_model_error(request, tiny_config) -> None:
    cfg, base = _base(request, tiny_config, "tiny_gpt2_dir", "causal-lm", method="loha")
    with pytest.raises(ModelError, match=r"peft.method='loha' cannot be applied to gpt2"):
        apply_peft(cfg, base)


def test_conflicting_method_settings_are_a_config_error_naming_what_fedpeft_passed(
        request, tiny_config) -> None:
    cfg, base = _base(request, tiny_config, "tiny_bert_dir", "classification", method="oft")
    with pytest.raises(ConfigError, match=r"peft.method='oft': .*fedpeft passed r=8"):
        build_peft_config(cfg, base)
    cfg, base = _base(request, tiny_config, "tiny_bert_dir", "classification", method="oft",
                      options={"oft_block_size": 0})
    assert build_peft_config(cfg, base).r == 8

"""FFA-LoRA on tiny BERT learners: frozen shared A, B-only exchange, heterogeneous ranks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from fedpeft.common.adapter.export import save_adapter
from fedpeft.common.adapter.state import adapter_state, state_nbytes
from fedpeft.common.errors import ModelError
from fedpeft.common.lora.keys import is_lora, is_lora_a, is_lora_b, lora_b_key, lora_modules
from fedpeft.common.training.learner import Learner

LABELS = ["neg", "pos"]
TOY = pd.DataFrame({"text": ["good great fine nice"] * 4 + ["bad awful terrible poor"] * 4,
                    "label": [0] * 4 + [1] * 4})
STEPS = {"local_steps": 2, "learning_rate": 0.05, "lr_scheduler": "constant", "batch_size": 4}
IDS = torch.tensor([[101, 2204, 2307, 2986, 102], [101, 2919, 9643, 102, 0]])


@pytest.fixture
def make(tiny_bert_dir, tiny_config):
    def learner(mode: str = "ffa", rank: int | None = None, seed: int = 0) -> Learner:
        cfg = tiny_config(tiny_bert_dir, peft={"r": 4}, training=STEPS,
                          lora={"mode": mode, "frozen_a_seed": seed})
        return Learner(cfg, LABELS, rank)
    return learner


def _factors(learner: Learner, name: str) -> dict[str, torch.Tensor]:
    """The model's own A, B and scaling of each LoRA layer (what its forward pass uses)."""
    out = {}
    for module, layer in learner.model.named_modules():
        if module.endswith(name) and hasattr(layer, "lora_A"):
            out[module] = (layer.lora_A["default"].weight.detach().double(),
                           layer.lora_B["default"].weight.detach().double(),
                           float(layer.scaling["default"]))
    return out


def _logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=(IDS != 0).long()).logits


def test_ffa_sends_no_lora_a_and_half_the_lora_bytes(make) -> None:
    fedavg, ffa = make("fedavg").get_state(), make("ffa").get_state()
    assert list(ffa) == [key for key in fedavg if not is_lora_a(key)]
    lora_bytes = {name: state_nbytes({k: v for k, v in state.items() if is_lora(k)})
                  for name, state in (("fedavg", fedavg), ("ffa", ffa))}
    assert lora_bytes["ffa"] * 2 == lora_bytes["fedavg"]  # square q/v layers: A and B alike
    assert all(value.dtype == np.float32 for value in ffa.values())


def test_frozen_a_is_shared_by_seed_and_never_trained(make) -> None:
    first, second, other = make(seed=3), make(seed=3), make(seed=4)
    a_first = {k: v for k, v in adapter_state(first.model).items() if is_lora_a(k)}
    a_second = {k: v for k, v in adapter_state(second.model).items() if is_lora_a(k)}
    a_other = {k: v for k, v in adapter_state(other.model).items() if is_lora_a(k)}
    for key, value in a_first.items():
        np.testing.assert_array_equal(value, a_second[key])
        assert not np.allclose(value, a_other[key])
    assert len({v.tobytes() for v in a_first.values()}) == len(a_first)  # one A per layer
    before = first.get_state()
    first.train(TOY, server_round=1, num_rounds=1)
    after = adapter_state(first.model)
    for key, value in a_first.items():
        np.testing.assert_array_equal(after[key], value)
    assert any(not np.array_equal(after[k], before[k]) for k in before if is_lora_b(k))
    assert not any(p.requires_grad for n, p in first.model.named_parameters() if "lora_A" in n)


def test_heterogeneous_ranks_aggregate_exactly(make) -> None:
    server, small, full = make(), make(rank=2), make(rank=4)
    shapes = {key: value.shape for key, value in server.get_state().items()}
    weights = {small: 1.0, full: 3.0}
    updates = {}
    for learner in weights:
        learner.set_state(server.get_state())
        learner.train(TOY, server_round=1, num_rounds=1)
        updates[learner] = learner.get_state()
        assert {key: value.shape for key, value in updates[learner].items()} == shapes
    # the server's plain weighted average of the padded updates (what FedAvg computes)
    total = sum(weights.values())
    new = {key: sum(w / total * updates[lr][key] for lr, w in weights.items()) for key in shapes}
    server.set_state(new)
    for module, (a_global, b_global, scaling) in _factors(server, "query").items():
        exact = torch.zeros_like(b_global @ a_global)
        for learner, weight in weights.items():  # each institution's own B_i A_i, own scaling
            a, b, own_scaling = _factors(learner, "query")[module]
            exact += weight / total * own_scaling * (b @ a)
        torch.testing.assert_close(scaling * (b_global @ a_global), exact, rtol=1e-6, atol=1e-7)
    small.set_state(new)
    for module in lora_modules(new):
        np.testing.assert_array_equal(adapter_state(small.model)[lora_b_key(module)],
                                      new[lora_b_key(module)][:, :2])
    small_a = {k: v for k, v in adapter_state(small.model).items() if is_lora_a(k)}
    full_a = {k: v for k, v in adapter_state(full.model).items() if is_lora_a(k)}
    for key, value in small_a.items():  # a lower rank uses the first rows of the shared A
        np.testing.assert_array_equal(value, full_a[key][:2])


def test_ffa_global_saves_as_a_peft_lora_with_the_same_logits(make, tiny_bert_dir,
                                                              tmp_path) -> None:
    server = make()
    rng = np.random.default_rng(0)
    state = {k: (v + rng.normal(0, 0.3, v.shape)).astype(np.float32)
             for k, v in server.get_state().items()}
    server.set_state(state)
    out = save_adapter(server, state, tmp_path / "adapter")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    loaded = PeftModel.from_pretrained(base, out)
    torch.testing.assert_close(_logits(loaded), _logits(server.model), rtol=0, atol=1e-6)


def test_ffa_refuses_a_fedavg_global(make) -> None:
    with pytest.raises(ModelError, match="unexpected key '.*lora_A.weight'"):
        make().set_state(make("fedavg").get_state())

"""One federated round per mode, in process and without Flower: two institutions train, the
server aggregates their updates, and the server's learner adopts and evaluates the result."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fedpeft.common.lora.keys import is_lora
from fedpeft.common.lora.stacking_math import stack
from fedpeft.common.training.learner import Learner

LABELS = ["neg", "pos"]
BANKS = [
    pd.DataFrame({"text": ["good great fine", "bad awful poor"] * 3, "label": [0, 1] * 3}),
    pd.DataFrame({"text": ["nice fine good", "terrible bad poor"] * 2, "label": [0, 1] * 2}),
]
STEPS = {"local_steps": 2, "learning_rate": 0.05, "lr_scheduler": "constant", "batch_size": 4}
RANKS = {"fedavg": [None, None], "ffa": [2, 4], "stacking": [2, 4]}


def _updates(layer_names: list[str], learner: Learner) -> dict[str, torch.Tensor]:
    """scaling * B @ A of each LoRA layer as the learner's forward pass applies it."""
    layers = dict(learner.model.named_modules())
    return {name: float(layers[name].scaling["default"])
            * (layers[name].lora_B["default"].weight @ layers[name].lora_A["default"].weight)
            .detach().double() for name in layer_names}


def _base_weights(learner: Learner, layer_names: list[str]) -> dict[str, torch.Tensor]:
    layers = dict(learner.model.named_modules())
    return {name: layers[name].get_base_layer().weight.detach().double().clone()
            for name in layer_names}


@pytest.mark.parametrize("mode", ["fedavg", "ffa", "stacking"])
def test_one_round(mode: str, tiny_bert_dir, tiny_config) -> None:
    cfg = tiny_config(tiny_bert_dir, peft={"r": 4}, training=STEPS, lora={"mode": mode})
    server = Learner(cfg, LABELS)
    layer_names = [name for name, layer in server.model.named_modules() if hasattr(layer, "lora_A")]
    global_state = server.get_state()
    pristine = _base_weights(server, layer_names)
    replies = []
    for rank, data in zip(RANKS[mode], BANKS, strict=True):
        institution = Learner(cfg, LABELS, rank)
        institution.set_state(global_state)
        result = institution.train(data, server_round=1, num_rounds=1)
        replies.append((institution.get_state(), float(result.num_examples),
                        _updates(layer_names, institution)))
    total = sum(weight for _, weight, _ in replies)
    if mode == "stacking":
        new_global = stack(global_state, [(state, weight) for state, weight, _ in replies])
    else:  # FedAvg's arithmetic: the example-weighted mean, key by key
        new_global = {key: sum(weight / total * state[key] for state, weight, _ in replies)
                      for key in global_state}
    server.set_state(new_global)
    metrics = server.evaluate(BANKS[0])
    assert set(metrics) == {"loss", "accuracy", "macro_f1"}
    heads = [key for key in new_global if not is_lora(key)]
    for key in heads:
        np.testing.assert_allclose(new_global[key], sum(w / total * s[key] for s, w, _ in replies),
                                   rtol=1e-6, atol=1e-7)
    if mode == "fedavg":
        return
    # ffa and stacking are exact: the server's model carries the weighted mean of the products
    served = _updates(layer_names, server)
    merged = _base_weights(server, layer_names)
    for name in layer_names:
        exact = sum(weight / total * products[name] for _, weight, products in replies)
        applied = served[name] if mode == "ffa" else merged[name] - pristine[name]
        torch.testing.assert_close(applied, exact, rtol=1e-5, atol=1e-6)

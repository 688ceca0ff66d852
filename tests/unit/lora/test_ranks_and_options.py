"""Which rank an institution trains at, what the modes refuse, and fedavg left as it was."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedpeft.client import learner_cache
from fedpeft.client.ranks import institution_rank
from fedpeft.common.adapter.state import adapter_state
from fedpeft.common.config import validate_config
from fedpeft.common.config.models import RunConfig
from fedpeft.common.errors import ConfigError
from fedpeft.common.training.learner import Learner


def _tree(mode: str = "ffa", ranks: list[int] | None = None, **sections: Any) -> dict[str, Any]:
    return {"peft": {"r": 8, **sections.pop("peft", {})},
            "lora": {"mode": mode, "ranks": ranks}, **sections}


def _cfg(mode: str = "ffa", ranks: list[int] | None = None, **sections: Any) -> RunConfig:
    return validate_config(_tree(mode, ranks, **sections))


def test_node_config_rank_wins_then_the_simulated_round_robin() -> None:
    cfg = _cfg(ranks=[2, 4, 8])
    assert institution_rank(cfg, {"lora-rank": 3, "partition-id": 0}) == 3
    assert institution_rank(cfg, {"lora-rank": " 5 "}) == 5
    assert [institution_rank(cfg, {"partition-id": i}) for i in range(4)] == [2, 4, 8, 2]
    assert institution_rank(_cfg(), {"partition-id": 1}) is None
    assert institution_rank(cfg, {"data-path": "/data/train.csv"}) is None
    assert institution_rank(_cfg("fedavg"), {"partition-id": 1}) is None


@pytest.mark.parametrize(("cfg", "node_config", "message"), [
    (_cfg(), {"lora-rank": 9}, "node config lora-rank=9 exceeds peft.r=8"),
    (_cfg(), {"lora-rank": 0}, "node config lora-rank=0: a LoRA rank must be >= 1"),
    (_cfg(), {"lora-rank": "four"}, "node config lora-rank='four' is not an integer"),
    (_cfg(), {"lora-rank": True}, "node config lora-rank=True is not an integer"),
    (_cfg("fedavg"), {"lora-rank": 4}, "node config lora-rank=4: lora.mode='fedavg'"),
])
def test_bad_ranks_are_refused_naming_key_and_value(cfg, node_config, message) -> None:
    with pytest.raises(ConfigError, match=message):
        institution_rank(cfg, node_config)


@pytest.mark.parametrize(("options", "message"), [
    ({"r": 16}, "peft.options.r: lora.mode='ffa' derives"),
    ({"rank_pattern": {"query": 2}}, "peft.options.rank_pattern"),
    ({"init_lora_weights": "pissa"}, "init_lora_weights='pissa'"),
])
def test_options_that_break_exactness_are_refused(options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        _cfg(peft={"options": options})
    _cfg("fedavg", peft={"options": options})  # fedavg: peft's business


def test_stacking_refuses_a_quantized_base() -> None:
    with pytest.raises(ConfigError, match="model.quantization='4bit': lora.mode='stacking'"):
        _cfg("stacking", model={"quantization": "4bit", "device": "cuda"})


def test_learner_cache_keys_on_mode_and_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, int | None]] = []

    class _Fake:
        def __init__(self, cfg: RunConfig, labels: list[str] | None, rank: int | None) -> None:
            built.append((cfg.lora.mode, rank))

    monkeypatch.setattr(learner_cache, "Learner", _Fake)
    learner_cache._learner.cache_clear()
    try:
        ffa = _cfg(ranks=[2])
        first = learner_cache.learner_for(ffa, None, 2)
        later = ffa.model_copy(update={"federation": ffa.federation.model_copy(
            update={"num_rounds": 9})})
        assert learner_cache.learner_for(later, None, 2) is first  # rounds do not shape a model
        learner_cache.learner_for(ffa, None, 4)
        learner_cache.learner_for(_cfg("stacking"), None, 2)
        learner_cache.learner_for(_cfg("fedavg"), None)
    finally:
        learner_cache._learner.cache_clear()
    assert built == [("ffa", 2), ("ffa", 4), ("stacking", 2), ("fedavg", None)]


def test_fedavg_learner_exchanges_peft_s_own_state(tiny_bert_dir, tiny_config) -> None:
    cfg = tiny_config(tiny_bert_dir)
    learner = Learner(cfg, ["neg", "pos"])
    state, reference = learner.get_state(), adapter_state(learner.model)
    assert list(state) == list(reference)
    for key, value in reference.items():
        np.testing.assert_array_equal(state[key], value)
    learner.set_state({key: value + 1 for key, value in state.items()})
    for key, value in learner.get_state().items():
        np.testing.assert_array_equal(value, state[key] + 1)
    with pytest.raises(ConfigError, match="rank=2: lora.mode='fedavg'"):
        Learner(cfg, ["neg", "pos"], rank=2)

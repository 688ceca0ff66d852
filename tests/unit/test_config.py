"""Config: defaults, TOML + overrides, and one-line errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedpeft.cli.options import build_config, parse_sets
from fedpeft.common.config import from_wire, load_config, to_toml, to_wire
from fedpeft.common.errors import ConfigError


def test_defaults_are_valid_and_round_trip_through_toml(tmp_path: Path) -> None:
    cfg = load_config()
    assert cfg.peft.method == "lora"
    assert cfg.data.effective_partition == "column:site"
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg


def test_wire_round_trip() -> None:
    cfg = load_config(overrides={"training.learning_rate": 1e-3, "data.labels": ["a", "b"]})
    assert from_wire(to_wire(cfg)) == cfg


def test_file_then_flags_then_sets(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[federation]\nnum_rounds = 9\n[training]\nbatch_size = 4\n')
    cfg = build_config(path, rounds=3,
                       sets=["training.batch_size=8", "peft.target_modules=[\"query\"]"])
    assert cfg.federation.num_rounds == 3
    assert cfg.training.batch_size == 8
    assert cfg.peft.target_modules == ["query"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"training.batch_size": 0}, "training.batch_size"),
        ({"training.learning_rate": -1}, "training.learning_rate"),
        ({"training.bogus": 1}, "training.bogus"),
        ({"data.partition": "dirichlet:-1"}, "data.partition"),
        ({"data.partition": "shards"}, "data.partition"),
        ({"strategy.name": "krum"}, "strategy.name"),
        ({"model.task": "vision"}, "model.task"),
        ({"output.run_name": "../escape"}, "output.run_name"),
        ({"federation.min_train_clients": 5}, "min_train_clients"),
    ],
)
def test_bad_values_name_the_field(overrides: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[training\nbatch_size = 2\n")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_causal_lm_refuses_label_skew_partition() -> None:
    with pytest.raises(ConfigError, match="causal-lm"):
        load_config(overrides={"model.task": "causal-lm", "data.partition": "dirichlet:0.5"})


def test_set_syntax_errors() -> None:
    with pytest.raises(ConfigError, match="FIELD=VALUE"):
        parse_sets(["training.learning_rate"])
    assert parse_sets(["a.b=1e-4", "a.c=true", "a.d=word"]) == {"a.b": 1e-4, "a.c": True,
                                                                "a.d": "word"}


def test_fit_to_clients_lowers_minimums_only() -> None:
    cfg = load_config(overrides={"federation.min_available_clients": 4,
                                 "federation.min_train_clients": 3})
    fitted = cfg.fit_to_clients(1)
    assert fitted.federation.min_available_clients == 1
    assert fitted.federation.min_train_clients == 1
    assert cfg.fit_to_clients(10).federation == cfg.federation

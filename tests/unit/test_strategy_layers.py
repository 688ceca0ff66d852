"""The run's log names every protection layer in force, not only Flower's inner strategy."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from flwr.common.logger import FLOWER_LOGGER

from fedpeft.common.config import load_config
from fedpeft.common.runs.metrics_log import MetricsLog
from fedpeft.server.round_recorder import RoundRecorder
from fedpeft.server.run_loop import _strategy
from fedpeft.simulation.credentials import ephemeral_credentials, with_credentials

_GRID = SimpleNamespace(run=SimpleNamespace(run_id=7))


def _layers(tmp_path: Path, **overrides: object) -> str:
    cfg = load_config(overrides={"security.seal_updates": False, **overrides})
    recorder = RoundRecorder(MetricsLog(tmp_path / "metrics.jsonl"), parallel_slots=1)
    return repr(_strategy(_GRID, cfg, recorder).strategy)  # type: ignore[arg-type]


def test_plain_run_names_the_recorder_and_flower_strategy(tmp_path: Path) -> None:
    assert _layers(tmp_path, **{"strategy.name": "fedprox"}) == "Instrumented(FedProx)"


def test_masking_and_privacy_name_their_settings(tmp_path: Path) -> None:
    layers = _layers(tmp_path, **{"secure_aggregation.enabled": True, "privacy.enabled": True,
                                  "privacy.target_epsilon": 8.0})
    assert layers == (
        "Instrumented(SecureAggregation(k=auto, max_dropouts=1, clip_range=6, "
        "quantization_bits=20, ring_bits=48)(Private(fixed clipping, clip_norm=1, "
        "noise_multiplier=1, noise=distributed, target_epsilon=8)(FedAvg)))"
    )


def test_stacking_layer_is_named(tmp_path: Path) -> None:
    assert _layers(tmp_path, **{"lora.mode": "stacking"}) == "Instrumented(Stacking(FedAvg))"


def test_sealed_chain_summary_logs_every_layer(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    with ephemeral_credentials(["a", "b"]) as (folder, federation_id):
        cfg = with_credentials(load_config(overrides={"privacy.enabled": True}), folder,
                               federation_id)
        recorder = RoundRecorder(MetricsLog(tmp_path / "metrics.jsonl"), parallel_slots=1)
        strategy = _strategy(_GRID, cfg, recorder).strategy  # type: ignore[arg-type]
    expected = ("Instrumented(Sealed(Private(fixed clipping, clip_norm=1, noise_multiplier=1, "
                "noise=central)(FedAvg)))")
    assert repr(strategy) == expected
    FLOWER_LOGGER.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=FLOWER_LOGGER.name):
            strategy.summary()
    finally:
        FLOWER_LOGGER.removeHandler(caplog.handler)
    lines = [record.getMessage() for record in caplog.records]
    assert f"\t├──> Layers: {expected}" in lines
    assert any("Sampling" in line for line in lines)  # FedAvg's own summary follows

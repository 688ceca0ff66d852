"""A server optimizer behind the privacy layer under secure aggregation (issue #14): FedAdam's
step depends on the round number, which must reach it through both wrappers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tests.unit.secure_aggregation.conftest import RUN, Grid, run_round

from fedpeft.common.config import load_config
from fedpeft.common.runs.metrics_log import MetricsLog
from fedpeft.common.wire import secagg as wire
from fedpeft.server.round_recorder import RoundRecorder
from fedpeft.server.strategies import PrivateStrategy, SecureAggregationStrategy, build_strategy


def test_fedadam_steps_on_the_unmasked_noised_mean(tmp_path: Path) -> None:
    cfg = load_config(overrides={
        "secure_aggregation.enabled": True, "secure_aggregation.clip_range": 2.0,
        "security.seal_updates": False, "strategy.name": "fedadam",
        "federation.min_train_clients": 4, "federation.min_available_clients": 4,
        "privacy.enabled": True, "privacy.noise_multiplier": 0.0, "privacy.clip_norm": 1.0,
    })
    recorder = RoundRecorder(MetricsLog(tmp_path / "metrics.jsonl"), parallel_slots=2)
    strategy = SecureAggregationStrategy(
        PrivateStrategy(build_strategy(cfg), cfg, masked=True, recorder=recorder),
        cfg, wire.UNSEALED_FEDERATION, RUN, recorder)
    current = np.zeros(10, dtype=np.float32)
    updates = {100 + i: (np.full(10, 0.05), 1) for i in range(4)}
    arrays, _ = run_round(strategy, Grid(updates), current)
    assert arrays is not None
    assert np.all(arrays["w"].numpy() > 0)  # FedAdam moves every value toward the mean change
    assert recorder.close(1, {}, 0.0)["privacy"]["noise"] == "distributed"

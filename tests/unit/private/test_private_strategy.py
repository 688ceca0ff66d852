"""Client-level DP at the aggregator: bad updates are refused before aggregation, the rest are
clipped and averaged with equal weights, noise has the configured scale, epsilon is charged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord
from tests.unit.private.conftest import CURRENT, Grid, configure, make_strategy, reply

from fedpeft.common.config import load_config
from fedpeft.common.privacy import epsilon_for
from fedpeft.common.wire.names import CONFIG, DP_CLIP_NORM
from fedpeft.server.strategies import PrivateStrategy, build_strategy


def test_nan_and_out_of_range_updates_are_refused_and_the_round_completes(tmp_path: Path) -> None:
    strategy, recorder = make_strategy(tmp_path)
    messages = configure(strategy, 5)
    assert all(m.content[CONFIG][DP_CLIP_NORM] == 1.0 for m in messages)
    rng = np.random.default_rng(0)
    good = {n: rng.normal(0, 0.05, 64) for n in (1, 2, 3)}
    poisoned = CURRENT.astype(np.float64).copy()
    poisoned[5] = np.nan
    replies = [reply(n, CURRENT + d) for n, d in good.items()]
    replies.append(reply(4, poisoned))
    replies.append(reply(5, CURRENT + 10.0))  # norm 80, far outside 1.5 x the bound
    arrays, _ = strategy.aggregate_train(1, replies)

    assert arrays is not None
    expected = CURRENT + np.mean([d.astype(np.float32) for d in good.values()], axis=0)
    np.testing.assert_allclose(arrays["w"].numpy(), expected, atol=1e-6)  # equal weights
    record = recorder.close(1, {"accuracy": 0.5}, 0.0)
    refused = {f["node_id"]: f["reason"] for f in record["failures"] if f["phase"] == "validation"}
    assert set(refused) == {4, 5}
    assert "NaN" in refused[4] and "'w'" in refused[4]
    assert "norm" in refused[5]
    assert record["privacy"]["epsilon"] == float("inf")  # noise multiplier 0: no guarantee


def test_every_update_is_clipped_to_the_bound(tmp_path: Path) -> None:
    strategy, _ = make_strategy(tmp_path, **{"privacy.max_norm_factor": 100.0})
    configure(strategy, 2)
    big = np.full(64, 1.0)  # norm 8: allowed in by the factor, clipped to 1
    arrays, _ = strategy.aggregate_train(1, [reply(1, CURRENT + big), reply(2, CURRENT + big)])
    assert arrays is not None
    assert np.linalg.norm(arrays["w"].numpy() - CURRENT) == pytest.approx(1.0, rel=1e-5)


def test_central_noise_has_the_configured_scale_and_epsilon_is_charged(tmp_path: Path) -> None:
    sigma, clip = 2.0, 0.5
    strategy, recorder = make_strategy(tmp_path, **{"privacy.noise_multiplier": sigma,
                                                "privacy.clip_norm": clip})
    size = 200_000
    configure(strategy, 4, np.zeros(size, dtype=np.float32))
    replies = [reply(n, np.zeros(size)) for n in (1, 2, 3, 4)]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    noise = arrays["w"].numpy()
    # Sum noise sigma*C, divided by 4 institutions: std of the mean is sigma*C/4.
    assert noise.std() == pytest.approx(sigma * clip / 4, rel=0.01)
    assert abs(noise.mean()) < 5 * sigma * clip / 4 / np.sqrt(size)
    record = recorder.close(1, {}, 0.0)
    assert record["privacy"]["epsilon"] == pytest.approx(epsilon_for(sigma, 1.0, 1, 1e-5))
    assert record["privacy"]["noise"] == "central"


def test_adaptive_clipping_moves_the_bound(tmp_path: Path) -> None:
    strategy, recorder = make_strategy(tmp_path, **{"privacy.clipping": "adaptive",
                                                "privacy.noise_multiplier": 0.1,
                                                "privacy.clipped_count_stddev": 0.2})
    configure(strategy, 5)
    # Every update fitted under the bound: the bound shrinks toward the median norm.
    strategy.aggregate_train(1, [reply(n, CURRENT + 0.01) for n in range(1, 6)])
    record = recorder.close(1, {}, 0.0)
    assert record["privacy"]["next_clip_norm"] < 1.0


# -- issue #14: what the mutation run found untested ---------------------------------------
def test_the_settings_line_names_clipping_noise_and_target(tmp_path: Path) -> None:
    strategy, _ = make_strategy(tmp_path)
    assert strategy.inner.settings() == (  # type: ignore[attr-defined]
        "fixed clipping, clip_norm=1, noise_multiplier=0, noise=central")
    cfg = load_config(overrides={"privacy.enabled": True, "privacy.noise_multiplier": 1.0,
                                 "privacy.target_epsilon": 50.0})
    masked = PrivateStrategy(build_strategy(cfg), cfg, masked=True)
    assert masked.settings().endswith("noise=distributed, target_epsilon=50")


def test_the_round_record_states_every_privacy_fact(tmp_path: Path) -> None:
    strategy, recorder = make_strategy(tmp_path, **{"federation.fraction_train": 0.5})
    messages = configure(strategy, 4)
    assert len(messages) == 2
    replies = [reply(m.metadata.dst_node_id, CURRENT + 0.01) for m in messages]
    strategy.aggregate_train(1, replies)
    privacy = recorder.close(1, {}, 0.0)["privacy"]
    assert privacy == {"epsilon": float("inf"), "delta": 1e-5, "noise_multiplier": 0.0,
                       "clip_norm": 1.0, "clipping": "fixed", "noise": "central",
                       "sampling_rate": 0.5, "rounds_charged": 1}


def test_a_round_past_the_target_epsilon_is_not_run_and_is_recorded(tmp_path: Path) -> None:
    one_round = epsilon_for(1.0, 1.0, 1, 1e-5)
    strategy, recorder = make_strategy(tmp_path, **{"privacy.noise_multiplier": 1.0,
                                                "privacy.target_epsilon": one_round * 1.01})
    messages = configure(strategy, 3)
    strategy.aggregate_train(1, [reply(m.metadata.dst_node_id, CURRENT) for m in messages])
    arrays = ArrayRecord({"w": Array(CURRENT)})
    assert list(strategy.configure_train(2, arrays, ConfigRecord({}), Grid(3))) == []  # type: ignore[arg-type]
    record = recorder.close(2, {}, 0.0)
    assert record["failures"] == [{"node_id": None, "phase": "privacy",
                                   "reason": "privacy budget exhausted: round not run"}]


def test_the_adapted_clip_norm_is_the_one_sent_next_round(tmp_path: Path) -> None:
    strategy, recorder = make_strategy(tmp_path, **{"privacy.clipping": "adaptive",
                                                "privacy.noise_multiplier": 0.1,
                                                "privacy.clipped_count_stddev": 0.2})
    configure(strategy, 5)
    strategy.aggregate_train(1, [reply(n, CURRENT + 0.01) for n in range(1, 6)])
    adapted = recorder.close(1, {}, 0.0)["privacy"]["next_clip_norm"]
    arrays = ArrayRecord({"w": Array(CURRENT)})
    messages = list(strategy.configure_train(2, arrays, ConfigRecord({}), Grid(5)))  # type: ignore[arg-type]
    assert {m.content[CONFIG][DP_CLIP_NORM] for m in messages} == {adapted}


def test_the_refusal_bound_scales_with_a_clip_norm_below_one(tmp_path: Path) -> None:
    """clip_norm 0.5, factor 1.5: an update of norm 2 is refused, not clipped in."""
    strategy, recorder = make_strategy(tmp_path, **{"privacy.clip_norm": 0.5,
                                                "privacy.max_norm_factor": 1.5})
    configure(strategy, 2)
    step = np.zeros(64)
    step[0] = 2.0
    strategy.aggregate_train(1, [reply(1, CURRENT + 0.01), reply(2, CURRENT + step)])
    refused = [f["node_id"] for f in recorder.close(1, {}, 0.0)["failures"]]
    assert refused == [2]

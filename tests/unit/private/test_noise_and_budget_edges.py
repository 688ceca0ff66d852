"""The private strategy's arithmetic at its edges (issue #14): the update noise and the
clipped-count noise with the multipliers adaptive clipping splits them into, a round exactly at
the target epsilon, the sampling rate of a lone institution, and a server optimizer (FedAdam,
whose step depends on the round number) behind the privacy layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.unit.private.conftest import CURRENT, configure, make_strategy, reply

from fedpeft.common.privacy import AdaptiveClipping, central_noise_std, epsilon_for
from fedpeft.server.strategies import private


class _OneSigma:
    """A stand-in for the noise generator whose every draw is exactly one std above the mean,
    so the noise each mechanism adds can be predicted to the last bit."""

    def normal(self, loc: float = 0.0, scale: float = 1.0,
               size: tuple[int, ...] | None = None) -> np.ndarray | float:
        return loc + scale * (np.ones(size) if size is not None else 1.0)


def test_adaptive_clipping_splits_the_noise_between_the_updates_and_the_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(private, "noise_rng", _OneSigma)
    sigma = 0.1  # the count's noise defaults to participants / 20 = 0.2, so 0.1 < 2 x 0.2
    strategy, recorder = make_strategy(tmp_path, **{"privacy.clipping": "adaptive",
                                                    "privacy.noise_multiplier": sigma,
                                                    "privacy.max_norm_factor": 100.0})
    configure(strategy, 4)
    replies = [reply(n, CURRENT + 0.01) for n in (1, 2, 3)]  # each fits: norm 0.08 < 1
    replies.append(reply(4, CURRENT + 0.5, **{"dp-unclipped": 0.0}))  # norm 4: clipped to 1
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    privacy = strategy.inner.privacy  # type: ignore[attr-defined]
    clipping = AdaptiveClipping(1.0, privacy.target_quantile, privacy.clip_learning_rate)
    updates_sigma = clipping.update_noise_multiplier(sigma, 4)
    assert updates_sigma > sigma  # the count's noise takes a share of the budget
    noise = central_noise_std(updates_sigma, 1.0)  # one sigma on every value of the sum
    total = 3 * np.float32(0.01) + np.full(64, 0.5 / 4.0)  # node 4 clipped: 0.5 * 8 -> 1
    expected = (CURRENT + (total + noise) / 4).astype(np.float32)
    np.testing.assert_allclose(arrays["w"].numpy(), expected, rtol=1e-6)
    next_clip = clipping.update(3.0 + 4 / 20, 4)  # 3 fitted, plus one sigma of count noise
    assert recorder.close(1, {}, 0.0)["privacy"]["next_clip_norm"] == pytest.approx(next_clip)


def test_a_round_that_reaches_the_target_epsilon_exactly_is_still_run(tmp_path: Path) -> None:
    one_round = epsilon_for(1.0, 1.0, 1, 1e-5)
    at_target, _ = make_strategy(tmp_path, **{"privacy.noise_multiplier": 1.0,
                                              "privacy.target_epsilon": one_round})
    assert at_target.inner.accountant.epsilon_after_next(1.0) == one_round  # type: ignore[attr-defined]
    assert not at_target.inner.exhausted(1.0)  # type: ignore[attr-defined]
    assert len(configure(at_target, 3)) == 3


def test_a_lone_available_institution_is_sampled_with_rate_one(tmp_path: Path) -> None:
    strategy, recorder = make_strategy(tmp_path, **{"federation.min_train_clients": 1,
                                                    "federation.min_available_clients": 1})
    (message,) = configure(strategy, 1)
    strategy.aggregate_train(1, [reply(message.metadata.dst_node_id, CURRENT + 0.01)])
    assert recorder.close(1, {}, 0.0)["privacy"]["sampling_rate"] == 1.0


def test_fedadam_behind_the_privacy_layer_takes_its_step_for_the_round(tmp_path: Path) -> None:
    strategy, _ = make_strategy(tmp_path, **{"strategy.name": "fedadam"})
    configure(strategy, 2)
    arrays, _ = strategy.aggregate_train(1, [reply(1, CURRENT + 0.01), reply(2, CURRENT + 0.01)])
    assert arrays is not None
    step = arrays["w"].numpy() - CURRENT
    assert np.all(step > 0)  # FedAdam moves every value toward the (positive) mean change

"""What one private round leaves behind (issue #14): failed replies are left out, a round
with nothing accepted charges no privacy, the new global keeps the global's dtype, the train
metrics are the accepted replies' (with equal weights), and adaptive clipping moves the bound
by exactly the fraction of updates that fitted it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Error
from flwr.app.message.message import make_message
from tests.unit.private.conftest import CURRENT, configure, make_strategy, reply

from fedpeft.common.privacy import AdaptiveClipping
from fedpeft.common.wire.names import DP_UNCLIPPED


def test_failed_replies_are_left_out_and_the_others_averaged(tmp_path: Path) -> None:
    strategy, recorder = make_strategy(tmp_path)
    configure(strategy, 3)
    failed = make_message(reply(1, CURRENT).metadata, error=Error(code=0, reason="gone"))
    arrays, _ = strategy.aggregate_train(1, [failed, reply(2, CURRENT + 0.01),
                                            reply(3, CURRENT - 0.03)])
    assert arrays is not None
    np.testing.assert_allclose(arrays["w"].numpy(), CURRENT - 0.01, atol=1e-6)
    assert arrays["w"].numpy().dtype == np.float32
    assert recorder.close(1, {}, 0.0)["privacy"]["rounds_charged"] == 1


def test_a_round_of_failed_replies_only_charges_nothing(tmp_path: Path) -> None:
    strategy, recorder = make_strategy(tmp_path)
    configure(strategy, 2)
    failed = [make_message(reply(n, CURRENT).metadata, error=Error(code=0, reason="gone"))
              for n in (1, 2)]
    # (the outer InstrumentedStrategy stops such a round; the privacy layer alone returns)
    assert strategy.inner.aggregate_train(1, failed) == (None, None)
    assert "privacy" not in recorder.close(1, {}, 0.0)
    assert strategy.inner.accountant.rounds == 0  # type: ignore[attr-defined]


def test_a_round_whose_updates_are_all_refused_charges_nothing(tmp_path: Path) -> None:
    strategy, recorder = make_strategy(tmp_path)
    configure(strategy, 2)
    replies = [reply(1, CURRENT + 10.0), reply(2, CURRENT + 10.0)]  # norm 80 > 1.5 x 1.0
    assert strategy.aggregate_train(1, replies) == (None, None)
    record = recorder.close(1, {}, 0.0)
    assert "privacy" not in record
    assert [(f["node_id"], f["phase"]) for f in record["failures"]] == [
        (1, "validation"), (2, "validation")]
    assert strategy.inner.accountant.rounds == 0  # type: ignore[attr-defined]


def test_the_train_metrics_are_the_accepted_replies_with_equal_weights(tmp_path: Path) -> None:
    strategy, recorder = make_strategy(tmp_path)
    configure(strategy, 3)
    replies = [reply(1, CURRENT, loss=0.2), reply(2, CURRENT, loss=0.5),
               reply(3, CURRENT + 10.0, loss=9.0)]  # refused: its loss is not in the mean
    strategy.aggregate_train(1, replies)
    train = recorder.close(1, {}, 0.0)["train"]
    # the loss is example-weighted (10 and 20 examples); the weight is one per update
    assert train["loss"] == pytest.approx((0.2 * 10 + 0.5 * 20) / 30)
    assert train["num-examples"] == 2


def test_adaptive_clipping_moves_the_bound_by_the_fraction_that_fitted(tmp_path: Path) -> None:
    """Without count noise: of four accepted updates one fitted the bound by its own report,
    one reports a list instead of a number, one reports nothing and one was over the bound (the
    server clipped it, whatever it reported): one in four fitted."""
    overrides = {"privacy.clipping": "adaptive", "privacy.clipped_count_stddev": 0.0,
                 "privacy.max_norm_factor": 100.0}
    strategy, recorder = make_strategy(tmp_path, **overrides)
    configure(strategy, 4)
    fitted = reply(1, CURRENT + 0.01)
    listed = reply(2, CURRENT + 0.01)
    listed.content.metric_records["metrics"][DP_UNCLIPPED] = [1.0]
    silent = reply(3, CURRENT + 0.01)
    del silent.content.metric_records["metrics"][DP_UNCLIPPED]
    over = reply(4, CURRENT + 1.0)  # norm 8 > 1: clipped by the server
    strategy.aggregate_train(1, [fitted, listed, silent, over])
    privacy = strategy.inner.privacy  # type: ignore[attr-defined]
    expected = AdaptiveClipping(privacy.clip_norm, privacy.target_quantile,
                                privacy.clip_learning_rate, 0.0).update(1.0, 4)
    assert recorder.close(1, {}, 0.0)["privacy"]["next_clip_norm"] == pytest.approx(expected)
    assert expected != pytest.approx(privacy.clip_norm)

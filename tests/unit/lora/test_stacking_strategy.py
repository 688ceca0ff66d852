"""The stacking strategy wrapper against hand-built replies (as in test_aggregation.py)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from tests.unit.flower_identity import pin_task_identity

from fedpeft.common.adapter.state import from_array_record, to_array_record
from fedpeft.common.config import load_config
from fedpeft.common.lora.stacking_math import dense_delta, stack
from fedpeft.common.wire.names import INSTITUTION
from fedpeft.server.strategies import build_strategy
from fedpeft.server.strategies.stacking import StackingStrategy

A, B, HEAD = "m.q.lora_A.weight", "m.q.lora_B.weight", "m.head.weight"


def _state(rank: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {A: rng.normal(size=(rank, 6)).astype(np.float32),
            B: rng.normal(size=(5, rank)).astype(np.float32),
            HEAD: rng.normal(size=(2, 6)).astype(np.float32)}


def _meta(node: int) -> Metadata:
    return Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
                    reply_to_message_id="out", group_id="1", created_at=time.time(), ttl=60.0,
                    message_type="train")


def _reply(node: int, state: dict[str, np.ndarray], examples: int, loss: float) -> Message:
    return make_message(_meta(node), RecordDict({
        "arrays": to_array_record(state),
        "metrics": MetricRecord({"num-examples": examples, "loss": loss, "compute-s": 1.0}),
        INSTITUTION: ConfigRecord({"name": f"bank-{node}"}),
    }))


class _Grid:
    def get_node_ids(self) -> list[int]:
        return [1, 2]


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_task_identity(monkeypatch, 1)


def test_updates_of_different_ranks_are_stacked_onto_the_global(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fedpeft.server.strategies.stacking"):
        strategy = StackingStrategy(build_strategy(load_config()), max_update_rank=8,
                                max_stacked_rank=512)
    assert "sees each institution's own adapter" in caplog.records[0].getMessage()
    initial = _state(2, 0)
    messages = list(strategy.configure_train(1, to_array_record(initial), ConfigRecord({}),
                                             _Grid()))  # type: ignore[arg-type]
    assert sorted(m.metadata.dst_node_id for m in messages) == [1, 2]
    good = [(_state(1, 1), 1), (_state(3, 2), 3)]
    replies = [_reply(node, state, examples, loss)
               for node, (state, examples), loss in zip((1, 2), good, (0.5, 1.0), strict=True)]
    failed = make_message(_meta(3), error=Error(code=0, reason="out of memory"))
    misshapen = _reply(4, {**_state(1, 3), HEAD: np.zeros((3, 6), np.float32)}, 100, 9.0)
    with caplog.at_level(logging.WARNING, logger="fedpeft.server.strategies.stacking"):
        arrays, metrics = strategy.aggregate_train(1, [*replies, failed, misshapen])
    assert "skipped the update of node 4" in caplog.records[-1].getMessage()
    new = from_array_record(arrays)
    expected = stack(initial, [(state, float(n)) for state, n in good])
    assert new[A].shape == (5, 6)  # 2 + 1 + 3 stacked > min(in, out) = 5: compacted
    np.testing.assert_allclose(dense_delta(new[A], new[B]), dense_delta(expected[A], expected[B]),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        dense_delta(new[A], new[B]),
        dense_delta(initial[A], initial[B]) + sum(n / 4 * dense_delta(s[A], s[B]) for s, n in good),
        rtol=1e-5, atol=1e-5)
    assert metrics["loss"] == pytest.approx((0.5 * 1 + 1.0 * 3) / 4)
    assert metrics["num-examples"] == 4 and "compute-s" not in metrics


def test_no_usable_update_leaves_the_global_to_the_caller() -> None:
    strategy = StackingStrategy(build_strategy(load_config()), max_update_rank=8,
                                max_stacked_rank=512)
    list(strategy.configure_train(1, to_array_record(_state(2, 0)), ConfigRecord({}),
                                  _Grid()))  # type: ignore[arg-type]
    failed = make_message(_meta(3), error=Error(code=0, reason="out of memory"))
    assert strategy.aggregate_train(1, [failed]) == (None, None)


def test_an_update_above_peft_r_is_skipped() -> None:
    """An institution sending rank-9 factors when the federation's rank is 8."""
    strategy = StackingStrategy(build_strategy(load_config()), max_update_rank=8,
                                max_stacked_rank=512)
    initial = _state(2, 0)
    list(strategy.configure_train(1, to_array_record(initial), ConfigRecord({}),
                                  _Grid()))  # type: ignore[arg-type]
    arrays, _ = strategy.aggregate_train(1, [_reply(1, _state(1, 1), 1, 0.5),
                                             _reply(2, _state(9, 2), 9, 0.5)])
    expected = stack(initial, [(_state(1, 1), 1.0)])
    new = from_array_record(arrays)
    np.testing.assert_allclose(dense_delta(new[A], new[B]), dense_delta(expected[A], expected[B]),
                               rtol=1e-6, atol=1e-6)


def test_a_round_that_would_pass_the_stacked_rank_cap_stops_the_run() -> None:
    from fedpeft.common.errors import RunError

    strategy = StackingStrategy(build_strategy(load_config()), max_update_rank=8,
                                max_stacked_rank=4)
    list(strategy.configure_train(1, to_array_record(_state(2, 0)), ConfigRecord({}),
                                  _Grid()))  # type: ignore[arg-type]
    with pytest.raises(RunError, match="rank to 5, above lora.max_stacked_rank=4"):
        strategy.aggregate_train(1, [_reply(1, _state(1, 1), 1, 0.5),
                                     _reply(2, _state(2, 2), 3, 0.5)])


def test_a_stacked_rank_cap_below_peft_r_is_refused_with_the_config() -> None:
    from fedpeft.common.errors import ConfigError

    with pytest.raises(ConfigError, match="lora.max_stacked_rank=4 is below peft.r=8"):
        load_config(overrides={"lora.mode": "stacking", "lora.max_stacked_rank": 4})

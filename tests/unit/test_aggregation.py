"""Aggregation arithmetic against hand-computed values, and what each round records."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.app.message.message import make_message
from tests.unit.flower_identity import pin_task_identity

from fedpeft.common.config import load_config
from fedpeft.common.errors import ConfigError, RunError
from fedpeft.common.runs.metrics_log import MetricsLog, read_metrics
from fedpeft.common.wire.names import INSTITUTION
from fedpeft.server.round_recorder import RoundRecorder
from fedpeft.server.strategies import InstrumentedStrategy, build_strategy


def _meta(node: int) -> Metadata:
    return Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
                    reply_to_message_id="out", group_id="1", created_at=time.time(), ttl=60.0,
                    message_type="train")


def _reply(node: int, weights: list[float], examples: int, loss: float, compute: float) -> Message:
    return make_message(_meta(node), RecordDict({
        "arrays": ArrayRecord({"w": Array(np.asarray(weights, dtype=np.float32))}),
        "metrics": MetricRecord({"num-examples": examples, "loss": loss, "compute-s": compute}),
        INSTITUTION: ConfigRecord({"name": f"bank-{node}"}),
    }))


def _failed(node: int) -> Message:
    return make_message(_meta(node), error=Error(code=0, reason=f"node {node} out of memory"))


class _Grid:
    """Just enough of a Grid for a strategy to sample nodes."""

    def get_node_ids(self) -> list[int]:
        return [1, 2]


@pytest.fixture
def recorder(tmp_path: Path) -> RoundRecorder:
    return RoundRecorder(MetricsLog(tmp_path / "metrics.jsonl"), parallel_slots=2)


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_task_identity(monkeypatch, 1)


def _start_round(strategy: InstrumentedStrategy, initial: list[float]) -> None:
    arrays = ArrayRecord({"w": Array(np.asarray(initial, dtype=np.float32))})
    list(strategy.configure_train(1, arrays, ConfigRecord({}), _Grid()))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["fedavg", "fedprox"])
def test_weighted_average_by_examples(name: str, recorder: RoundRecorder) -> None:
    strategy = InstrumentedStrategy(build_strategy(load_config(overrides={"strategy.name": name})),
                                    recorder)
    _start_round(strategy, [0.0, 0.0])
    arrays, metrics = strategy.aggregate_train(1,
                                               [_reply(1, [1, 2], 1, 0.5, 3.0),
                                                _reply(2, [4, 8], 3, 1.0, 5.0)])
    # (1*1 + 4*3) / 4 = 3.25 and (2*1 + 8*3) / 4 = 6.5
    np.testing.assert_allclose(arrays["w"].numpy(), [3.25, 6.5])
    assert metrics["loss"] == pytest.approx((0.5 * 1 + 1.0 * 3) / 4)
    assert metrics["num-examples"] == 4
    assert "compute-s" not in metrics  # hardware timing is not averaged across institutions


def test_fedadam_server_step(recorder: RoundRecorder) -> None:
    cfg = load_config(overrides={"strategy.name": "fedadam", "strategy.server_learning_rate": 0.1})
    strategy = InstrumentedStrategy(build_strategy(cfg), recorder)
    _start_round(strategy, [1.0, 1.0])
    arrays, _ = strategy.aggregate_train(1,
                                         [_reply(1, [2, 0], 1, 0.5, 1.0),
                                          _reply(2, [2, 0], 1, 0.5, 1.0)])
    # delta = [1, -1]; m = 0.1*delta; v = 0.01*delta^2; eta_t = 0.1*sqrt(1-0.99^2)/(1-0.9^2)
    eta_t = 0.1 * math.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    step = eta_t * 0.1 / (0.1 + 1e-3)
    np.testing.assert_allclose(arrays["w"].numpy(), [1 + step, 1 - step], rtol=1e-5)


def test_fedavgm_first_round_applies_momentum_buffer(recorder: RoundRecorder) -> None:
    cfg = load_config(overrides={"strategy.name": "fedavgm", "strategy.server_momentum": 0.5})
    strategy = InstrumentedStrategy(build_strategy(cfg), recorder)
    _start_round(strategy, [1.0])
    arrays, _ = strategy.aggregate_train(1,
                                         [_reply(1, [3.0], 1, 0.1, 1.0),
                                          _reply(2, [3.0], 1, 0.1, 1.0)])
    # first round: the buffer is the pseudo-gradient itself, so the step equals plain FedAvg
    np.testing.assert_allclose(arrays["w"].numpy(), [3.0])


def test_fedavgm_honours_the_configured_server_learning_rate(recorder: RoundRecorder) -> None:
    cfg = load_config(overrides={"strategy.name": "fedavgm", "strategy.server_momentum": 0.5,
                                 "strategy.server_learning_rate": 0.5})
    strategy = InstrumentedStrategy(build_strategy(cfg), recorder)
    _start_round(strategy, [1.0])
    arrays, _ = strategy.aggregate_train(
        1, [_reply(1, [3.0], 1, 0.1, 1.0), _reply(2, [3.0], 1, 0.1, 1.0)])
    # pseudo-gradient 1 - 3 = -2, buffer -2, step 0.5 * 2: halfway to the average
    np.testing.assert_allclose(arrays["w"].numpy(), [2.0])
    _start_round(strategy, [2.0])
    arrays, _ = strategy.aggregate_train(
        2, [_reply(1, [3.0], 1, 0.1, 1.0), _reply(2, [3.0], 1, 0.1, 1.0)])
    # pseudo-gradient -1, buffer 0.5 * -2 + -1 = -2, step 0.5 * 2
    np.testing.assert_allclose(arrays["w"].numpy(), [3.0])


def test_server_learning_rate_for_a_strategy_without_one_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"strategy.server_learning_rate=0.5: strategy.name="
                                          r"'fedavg' has no server learning rate"):
        load_config(overrides={"strategy.server_learning_rate": 0.5})


def test_round_record_has_clients_traffic_and_failures(recorder: RoundRecorder,
                                                       tmp_path: Path) -> None:
    strategy = InstrumentedStrategy(build_strategy(load_config()), recorder)
    _start_round(strategy, [0.0, 0.0])
    strategy.aggregate_train(1,
                             [_reply(1, [1, 2], 2, 0.5, 3.0), _reply(2, [4, 8], 2, 1.0, 5.0),
                              _failed(3)])
    record = recorder.close(1, {"accuracy": 0.9}, server_eval_s=0.5)
    assert [c["name"] for c in record["clients"]] == ["bank-1", "bank-2"]
    assert record["clients"][1]["train"]["loss"] == 1.0
    assert record["failures"][0]["node_id"] == 3
    assert "out of memory" in record["failures"][0]["reason"]
    assert record["bytes"]["sent"] > 0 and record["bytes"]["received"] > 0
    # 2 slots: compute wall time is the slower institution, 5 s
    assert record["time"]["local_compute_s"] == pytest.approx(5.0)
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["round"] == 1


def test_round_where_everyone_failed_stops_the_run(recorder: RoundRecorder) -> None:
    strategy = InstrumentedStrategy(build_strategy(load_config()), recorder)
    _start_round(strategy, [0.0])
    with pytest.raises(RunError, match="every institution failed.*out of memory"):
        strategy.aggregate_train(1, [_failed(1), _failed(2)])

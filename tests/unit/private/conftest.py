"""The private strategy's test bench: the real PrivateStrategy (inside InstrumentedStrategy,
around the configured Flower strategy) fed replies as Flower delivers them.

Test modules here import these helpers with `from tests.unit.private.conftest import ...`
(pytest's importlib mode registers a conftest under that name before the modules beside it).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from tests.unit.flower_identity import pin_task_identity

from fedpeft.common.config import load_config
from fedpeft.common.runs.metrics_log import MetricsLog
from fedpeft.common.wire.names import ARRAYS, METRICS
from fedpeft.server.round_recorder import RoundRecorder
from fedpeft.server.strategies import InstrumentedStrategy, PrivateStrategy, build_strategy

RUN = 3
CURRENT = np.linspace(-0.5, 0.5, 64).astype(np.float32)


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_task_identity(monkeypatch, RUN)


class Grid:
    def __init__(self, nodes: int) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.nodes + 1))


def reply(node: int, values: np.ndarray, **metrics: float) -> Message:
    """Node `node`'s train reply holding `values` as its adapter (float32)."""
    meta = Metadata(run_id=RUN, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
                    reply_to_message_id="out", group_id="1", created_at=time.time(), ttl=60.0,
                    message_type="train")
    return make_message(meta, RecordDict({
        ARRAYS: ArrayRecord({"w": Array(values.astype(np.float32))}),
        METRICS: MetricRecord({"num-examples": 10 * node, "loss": 0.5, "dp-unclipped": 1.0,
                               **metrics}),
    }))


def make_strategy(tmp_path: Path, **overrides: object
                  ) -> tuple[InstrumentedStrategy, RoundRecorder]:
    """Fixed clipping at 1.0 without noise unless `overrides` say otherwise; unmasked."""
    cfg = load_config(overrides={"privacy.enabled": True, "privacy.clip_norm": 1.0,
                                 "privacy.noise_multiplier": 0.0, **overrides})
    recorder = RoundRecorder(MetricsLog(tmp_path / "metrics.jsonl"), parallel_slots=2)
    private = PrivateStrategy(build_strategy(cfg), cfg, masked=False, recorder=recorder)
    return InstrumentedStrategy(private, recorder), recorder


def configure(strategy: InstrumentedStrategy, nodes: int, current: np.ndarray = CURRENT,
              server_round: int = 1) -> list[Message]:
    """Round `server_round`'s train messages with `nodes` institutions available."""
    arrays = ArrayRecord({"w": Array(current)})
    return list(strategy.configure_train(server_round, arrays, ConfigRecord({}),
                                         Grid(nodes)))  # type: ignore[arg-type]

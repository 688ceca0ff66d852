"""Server-side evaluation of each round's global adapter on the held-out test set.

It also keeps `best/` (see `fedpeft.common.runs.best`), chosen on the institutions' aggregated
validation metrics of the round, which Flower collects before it calls this evaluation.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
from flwr.app import ArrayRecord, MetricRecord

from fedpeft.common.adapter.state import from_array_record
from fedpeft.common.audit import sha256_arrays
from fedpeft.common.runs.best import BestAdapter
from fedpeft.common.training.learner import Learner
from fedpeft.server.round_recorder import RoundRecorder

logger = logging.getLogger(__name__)


class ServerEvaluator:
    """The `evaluate_fn` given to `Strategy.start`; closes each round in the recorder."""

    def __init__(self, learner: Learner, test: pd.DataFrame, recorder: RoundRecorder,
                 best_dir: Path, task: str) -> None:
        self.learner = learner
        self.test = test
        self.recorder = recorder
        self.best = BestAdapter(learner, task, best_dir)

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        started = time.perf_counter()
        state = from_array_record(arrays)
        self.learner.set_state(state)
        metrics = self.learner.evaluate(self.test)
        elapsed = time.perf_counter() - started
        if server_round > 0:
            self.best.offer(server_round, self.recorder.validation(server_round), state)
        self.recorder.annotate(server_round, "global_sha256", sha256_arrays(state))
        self.recorder.close(server_round, metrics, elapsed)
        logger.info("round %d server evaluation: %s", server_round, metrics)
        return MetricRecord(dict(metrics))

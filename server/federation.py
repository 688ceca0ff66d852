"""The coordinator's side of one federated run, the same in simulation and deployment.

Given a Flower `Grid` (in-memory in simulation, the SuperLink in deployment) it runs the
configured strategy for the configured rounds, evaluates every global adapter on the test set,
and leaves `metrics.jsonl`, `adapter/`, `best/` and `plots/` in the run folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import ConfigRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpeft.common.adapter.export import save_adapter
from fedpeft.common import secagg_wire
from fedpeft.common.adapter.state import (
    AdapterState,
    from_array_record,
    state_nbytes,
    to_array_record,
)
from fedpeft.common.config import RunConfig, to_wire
from fedpeft.common.crypto import Manifest
from fedpeft.common.protocol import NUM_ROUNDS, RUN_CONFIG
from fedpeft.common.runs.folder import RunFolder
from fedpeft.common.runs.metrics_log import MetricsLog
from fedpeft.common.runs.plots import write_plots
from fedpeft.common.training.learner import Learner
from fedpeft.server.evaluation import ServerEvaluator
from fedpeft.server.credentials import load_server_keys
from fedpeft.server.round_recorder import RoundRecorder
from fedpeft.server.strategies import (
    InstrumentedStrategy,
    SealedStrategy,
    SecureAggregationStrategy,
    build_strategy,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FederationOutcome:
    """What the run produced, for the summary table and `summary.json`."""

    records: list[dict[str, Any]]
    best_round: int | None
    best_metric: str
    best_value: float | None
    adapter_bytes: int
    wall_seconds: float
    security: dict[str, Any]
    """Whether updates were sealed, and the public-key fingerprints they were checked with."""


def _masked_manifest(state: AdapterState) -> Manifest:
    """What a masked update declares: one uint64 vector, every value plus the example count."""
    size = sum(int(array.size) for array in state.values()) + 1
    return Manifest.of({secagg_wire.MASKED_ARRAY: np.broadcast_to(np.uint64(0), (size,))})


def _strategy(grid: Grid, cfg: RunConfig, recorder: RoundRecorder) -> tuple[Strategy, dict[str, Any]]:
    """Instrumented(Sealed(SecureAggregation(Flower strategy))): the recorder sees the bytes on
    the wire, sealing wraps masked vectors, and the Flower strategy sees only their sum."""
    strategy = build_strategy(cfg)
    keys = load_server_keys(cfg.security) if cfg.security.seal_updates else None
    security: dict[str, Any] = {"sealed_updates": keys is not None,
                                "secure_aggregation": cfg.secure_aggregation.enabled,
                                "lora_mode": cfg.lora.mode}
    update_manifest: Callable[[AdapterState], Manifest | None] = Manifest.of
    if cfg.secure_aggregation.enabled:
        federation_id = (keys.federation_id if keys is not None
                         else cfg.security.federation_id or secagg_wire.UNSEALED_FEDERATION)
        strategy = SecureAggregationStrategy(strategy, cfg, federation_id, grid.run.run_id,
                                             recorder)
        update_manifest = _masked_manifest
    if keys is None:
        logger.warning(
            "security.seal_updates = false: adapters cross the network and rest in the "
            "SuperLink's database unencrypted and unsigned; use this for benchmarks only"
        )
        return InstrumentedStrategy(strategy, recorder), security
    sealed = SealedStrategy(strategy, keys, run_id=grid.run.run_id, recorder=recorder,
                            update_manifest=update_manifest)
    return InstrumentedStrategy(sealed, recorder), {**security, **keys.fingerprints}


def run_federation(
    grid: Grid,
    cfg: RunConfig,
    learner: Learner,
    test: pd.DataFrame,
    folder: RunFolder,
    parallel_slots: int,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> FederationOutcome:
    """Run all rounds on `grid`; `learner` holds the initial adapter and evaluates on `test`."""
    started = time.perf_counter()
    log = MetricsLog(folder.metrics_path)
    recorder = RoundRecorder(log, parallel_slots, on_round)
    strategy, security = _strategy(grid, cfg, recorder)
    evaluator = ServerEvaluator(learner, test, recorder, folder.best_dir, cfg.model.task)
    initial_state = learner.get_state()
    round_config = ConfigRecord({RUN_CONFIG: to_wire(cfg), NUM_ROUNDS: cfg.federation.num_rounds})
    result = strategy.start(
        grid=grid,
        initial_arrays=to_array_record(initial_state),
        num_rounds=cfg.federation.num_rounds,
        timeout=cfg.federation.round_timeout,
        train_config=round_config,
        evaluate_config=ConfigRecord(dict(round_config)),
        evaluate_fn=evaluator,
    )
    final_state = from_array_record(result.arrays)
    save_adapter(learner, final_state, folder.adapter_dir)
    write_plots(log.records, folder.plots_dir)
    return FederationOutcome(
        records=log.records,
        best_round=evaluator.best.round,
        best_metric=evaluator.best.selection.name,
        best_value=evaluator.best.value,
        adapter_bytes=state_nbytes(final_state),
        wall_seconds=time.perf_counter() - started,
        security=security,
    )

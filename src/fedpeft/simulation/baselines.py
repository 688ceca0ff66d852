"""The two baselines a federation is judged against, on the same data and test set.

- centralized: all institutions' training rows pooled in one place (what federation tries to
  approach without moving data);
- local: each institution alone on its own rows (what an institution gets without joining).

Both train for as many "rounds" as the federated run, with the same recipe (optimizer,
learning-rate schedule over that span, local work per round) and from the same initial adapter;
each is recorded in `metrics.jsonl` like a federated round. With `training.local_epochs`, a
round is that many passes over the baseline's rows. With `training.local_steps`, the local-only
institution takes those steps, as it would in the federation, and the centralized baseline
takes them once per institution a federated round trains: it sees as many examples per round as
the federation does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd

from fedpeft.common.adapter.export import save_adapter
from fedpeft.common.adapter.state import full_model_nbytes, state_nbytes
from fedpeft.common.config import LoraAggregationConfig, RunConfig, TrainingConfig
from fedpeft.common.config.plan import simulated_participants
from fedpeft.common.runs.best import BestAdapter
from fedpeft.common.runs.folder import RunFolder, open_run_folder
from fedpeft.common.runs.metrics_log import MetricsLog
from fedpeft.common.runs.plots import write_plots
from fedpeft.common.training.learner import Learner
from fedpeft.common.training.optimizers import OptimizerState
from fedpeft.simulation.federated import RunReport
from fedpeft.simulation.preparation import PreparedRun, base_summary, prepare_run

logger = logging.getLogger(__name__)

BaselineKind = Literal["centralized", "local"]
RoundCallback = Callable[[dict[str, Any]], None] | None


def _epochs(cfg: RunConfig) -> int:
    """Training passes of the baseline, in units of one federated round's local training."""
    return cfg.federation.num_rounds


def _local_splits(prepared: PreparedRun) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """Each institution's (name, local training rows, local validation rows), exactly as its
    federated client sees them."""
    cfg, data = prepared.cfg, prepared.data
    splits = []
    for index, name in enumerate(data.partition_names):
        train, validation = data.client_split(index, cfg.data.validation_fraction,
                                              cfg.training.seed)
        splits.append((name, train.frame, validation.frame))
    return splits


def _validate(learner: Learner, validation: pd.DataFrame) -> dict[str, float]:
    """Metrics on validation rows, which choose best/; none when there are none."""
    return learner.evaluate(validation) if not validation.empty else {}


def _record(log: MetricsLog, on_round: RoundCallback, record: dict[str, Any]) -> None:
    log.append(record)
    if on_round is not None:
        on_round(record)


def _pooled_training(cfg: RunConfig) -> TrainingConfig:
    """The centralized baseline's training: local_steps scaled to a federated round's examples."""
    steps = cfg.training.local_steps
    if steps is None:
        return cfg.training
    return cfg.training.model_copy(update={"local_steps": steps * simulated_participants(cfg)})


def _centralized(prepared: PreparedRun, folder: RunFolder,
                 on_round: RoundCallback) -> dict[str, Any]:
    cfg, learner, test = prepared.cfg, prepared.learner, prepared.data.test.frame
    learner.use_training(_pooled_training(cfg))
    splits = _local_splits(prepared)
    pooled = pd.concat([train for _, train, _ in splits], ignore_index=True)
    pooled_validation = pd.concat([valid for _, _, valid in splits], ignore_index=True)
    log = MetricsLog(folder.metrics_path)
    best = BestAdapter(learner, cfg.model.task, folder.best_dir)
    initial = learner.evaluate(test)
    _record(log, on_round, {"round": 0, "server_eval": initial})
    moments = None
    for epoch in range(1, _epochs(cfg) + 1):
        result = learner.train(pooled, server_round=epoch, num_rounds=_epochs(cfg),
                               optimizer_state=moments)
        moments = result.optimizer_state
        started = time.perf_counter()
        metrics = learner.evaluate(test)
        eval_s = time.perf_counter() - started
        best.offer(epoch, _validate(learner, pooled_validation), learner.get_state())
        _record(log, on_round, {
            "round": epoch, "server_eval": metrics,
            "train": {"loss": result.loss, "num-examples": result.num_examples},
            "time": {"round_s": result.compute_seconds + eval_s,
                     "local_compute_s": result.compute_seconds,
                     "server_eval_s": eval_s, "framework_s": 0.0},
        })
    state = learner.get_state()
    save_adapter(learner, state, folder.adapter_dir)
    write_plots(log.records, folder.plots_dir)
    return {"initial": initial, "final": log.records[-1]["server_eval"], **best.summary(),
            "adapter_bytes": state_nbytes(state), "train_rows_pooled": len(pooled)}


def _mean_metrics(per_client: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([m[key] for m in per_client])) for key in per_client[0]}


def _local(prepared: PreparedRun, folder: RunFolder, on_round: RoundCallback) -> dict[str, Any]:
    """Every institution trains alone from the same initial adapter; epochs are interleaved
    so each `metrics.jsonl` line compares all institutions at the same point."""
    cfg, learner, test = prepared.cfg, prepared.learner, prepared.data.test.frame
    splits = _local_splits(prepared)
    initial_state = learner.get_state()
    states = {name: initial_state for name, _, _ in splits}
    moments: dict[str, OptimizerState | None] = {name: None for name, _, _ in splits}
    bests = {name: BestAdapter(learner, cfg.model.task, folder.best_dir / name)
             for name, _, _ in splits}
    log = MetricsLog(folder.metrics_path)
    initial = learner.evaluate(test)
    _record(log, on_round, {"round": 0, "server_eval": initial})
    for epoch in range(1, _epochs(cfg) + 1):
        clients: list[dict[str, Any]] = []
        compute = 0.0
        for name, frame, validation in splits:
            learner.set_state(states[name])
            result = learner.train(frame, server_round=epoch, num_rounds=_epochs(cfg),
                                   optimizer_state=moments[name])
            states[name], moments[name] = learner.get_state(), result.optimizer_state
            metrics = learner.evaluate(test)
            bests[name].offer(epoch, _validate(learner, validation), states[name])
            compute += result.compute_seconds
            clients.append({"name": name,
                            "train": {"loss": result.loss, "num-examples": result.num_examples},
                            "test": metrics})
        _record(log, on_round, {
            "round": epoch,
            "server_eval": _mean_metrics([c["test"] for c in clients]),
            "clients": clients,
            "time": {"local_compute_s": compute},
        })
    for name, state in states.items():
        save_adapter(learner, state, folder.adapter_dir / name)
    write_plots(log.records, folder.plots_dir)
    final_clients = log.records[-1]["clients"]
    return {"initial": initial, "final": log.records[-1]["server_eval"],
            "per_institution": {c["name"]: c["test"] for c in final_clients},
            "adapter_bytes": state_nbytes(initial_state)}


def run_baseline(kind: BaselineKind, cfg: RunConfig, on_round: RoundCallback = None) -> RunReport:
    """Train the `kind` baseline and return its finished run folder."""
    if cfg.lora.mode == "stacking":
        # Stacking is a way to combine institutions; trained alone, it is plain LoRA.
        cfg = cfg.model_copy(update={"lora": LoraAggregationConfig()})
    prepared = prepare_run(cfg)
    folder = open_run_folder(prepared.cfg, kind)
    try:
        runner = _centralized if kind == "centralized" else _local
        extra = runner(prepared, folder, on_round)
        summary = {**base_summary(kind, prepared), "epochs": _epochs(prepared.cfg),
                   "full_model_bytes": full_model_nbytes(prepared.learner.model), **extra}
        return RunReport(folder.finish(summary), summary)
    except BaseException as err:
        folder.fail(err)
        raise

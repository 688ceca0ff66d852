"""The coordinator's Flower ServerApp in a deployed federation (`fedpeft.server.app:app`).

The SuperLink starts it in its own process for each run submitted with `fedpeft run`. It runs
the same `run_federation` as the simulation, on the SuperLink's grid: the rounds go to the
connected institutions' SuperNodes, and the run folder (metrics, adapter, plots) is written on
the SuperLink host, under the absolute `output.dir` the run was submitted with.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedpeft.common.adapter.state import full_model_nbytes
from fedpeft.common.config import RunConfig
from fedpeft.common.data import load_institution_data
from fedpeft.common.runs.checkpoint import read_checkpoint
from fedpeft.common.runs.folder import RunFolder, open_run_folder
from fedpeft.common.training.learner import Learner
from fedpeft.deployment.app_bundle import read_run_config
from fedpeft.server.run_checkpoint import check_resumable
from fedpeft.server.run_loop import FederationOutcome, run_federation
from fedpeft.server.stop_signals import stop_on_signals

logger = logging.getLogger(__name__)

app = ServerApp()


def _parallel_slots(grid: Grid, cfg: RunConfig) -> int:
    """Institutions train on their own machines, so every connected node is a parallel slot."""
    return max(1, cfg.federation.min_available_clients, len(list(grid.get_node_ids())))


def _summary(cfg: RunConfig, learner: Learner, test_rows: int,
             result: FederationOutcome) -> dict[str, Any]:
    return {
        "kind": "federated-deployment",
        "task": cfg.model.task,
        "model": cfg.model.name,
        "peft_method": cfg.peft.method,
        "labels": cfg.data.labels,
        "test_rows": test_rows,
        "strategy": cfg.strategy.name,
        "rounds": cfg.federation.num_rounds,
        "initial": result.records[0]["server_eval"],
        "final": result.records[-1]["server_eval"],
        **result.best,
        "adapter_bytes": result.adapter_bytes,
        "full_model_bytes": full_model_nbytes(learner.model),
        "wall_seconds": result.wall_seconds,
        **result.protection,
    }


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Load the test set and model first (a bad path fails before any folder exists), then run
    (or continue an interrupted run from its checkpoint). SIGTERM/SIGINT stop it within a poll
    interval, leaving the folder resumable with `fedpeft run --resume`."""
    run = read_run_config(dict(context.run_config))
    cfg = run.cfg
    test = load_institution_data(run.test_path, cfg.data, cfg.model.task, cfg.data.labels).frame
    learner = Learner(cfg, cfg.data.labels)
    checkpoint = None
    if run.resume is None:
        folder = open_run_folder(cfg, "run")
    else:
        checkpoint = read_checkpoint(run.resume)
        check_resumable(checkpoint, cfg, RunFolder.resolve(run.resume))
        folder = RunFolder.reopen(run.resume)
        folder.attach_log()
        logger.info("fedpeft run %s resumed after round %d", folder.name, checkpoint.round)
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            result = run_federation(grid, cfg, learner, test, folder, _parallel_slots(grid, cfg),
                                    resume=checkpoint, stop=stop)
        path = folder.finish(_summary(cfg, learner, len(test), result))
    except BaseException as err:
        folder.fail(err)
        raise
    logger.info("fedpeft run finished: %s", path)

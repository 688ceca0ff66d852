"""A whole federation on one machine with Flower's Simulation Engine.

The ServerApp runs `run_federation` (the same coordinator code a deployment runs) in this
process; each virtual institution is Flower's ClientApp in a Ray actor, reading its partition
of the dataset. Updates are sealed and globals signed exactly as in a deployment, with keys
made for the run and deleted after it (`fedpeft.simulation.credentials`). The run config
reaches the institutions inside each round's message, exactly as in a deployment.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fedpeft.client.app import app as client_app
from fedpeft.common.adapter.state import full_model_nbytes
from fedpeft.common.audit import LEDGER_FILE
from fedpeft.common.config import RunConfig, load_config
from fedpeft.common.config.plan import plan, simulated_participants
from fedpeft.common.errors import ConfigError, RunError, RunInterrupted
from fedpeft.common.runs.checkpoint import (
    Checkpoint,
    checkpoint_dir,
    private_dir,
    read_checkpoint,
)
from fedpeft.common.runs.folder import RunFolder, open_run_folder
from fedpeft.deployment.federation_files import SIMULATED_BUNDLES
from fedpeft.server.run_checkpoint import check_resumable
from fedpeft.server.run_loop import FederationOutcome, run_federation
from fedpeft.server.stop_signals import stop_on_signals
from fedpeft.simulation.credentials import run_credentials, with_credentials
from fedpeft.simulation.example_budget import rounds_within_example_budget
from fedpeft.simulation.flower_logging import quiet_flower_console
from fedpeft.simulation.preparation import PreparedRun, base_summary, prepare_run

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunReport:
    """Where the run folder is and what `summary.json` says."""

    path: Path
    summary: dict[str, Any]


def parallel_slots(cfg: RunConfig) -> int:
    """How many Ray actors run institutions at once on this machine."""
    cores = os.cpu_count() or 1
    return max(1, min(cfg.simulation.num_clients, int(cores // cfg.simulation.client_cpus)))


def _quiet_ray() -> None:
    """Ray's start-up advice about accelerator variables is noise on a terminal; opt in to
    its future behaviour (no GPU env rewriting for CPU-only actors) which is what we want."""
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def _backend_config(cfg: RunConfig) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    return {
        "client_resources": {
            "num_cpus": cfg.simulation.client_cpus,
            "num_gpus": cfg.simulation.client_gpus,
        },
        "init_args": {"num_cpus": cores, "log_to_driver": False},
    }


def _keep_institution_ledgers(keys_dir: Path, run_dir: Path) -> None:
    """Each virtual institution's own ledger, moved out of the run's temporary key folder into
    `institutions/<name>/` of the run folder before the keys are deleted."""
    for ledger in sorted((keys_dir.parent / SIMULATED_BUNDLES).glob(f"*/{LEDGER_FILE}")):
        target = run_dir / "institutions" / ledger.parent.name / LEDGER_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ledger, target)


def _within_example_budget(prepared: PreparedRun) -> RunConfig:
    """The config with num_rounds cut to what privacy.example_target_epsilon allows."""
    cfg, data = prepared.cfg, prepared.data
    rows = [len(data.client_split(index, cfg.data.validation_fraction, cfg.training.seed)[0].frame)
            for index in range(len(data.partitions))]
    allowed = rounds_within_example_budget(cfg, rows)
    planned = cfg.federation.num_rounds
    if allowed == 0:
        raise ConfigError(
            f"privacy.example_target_epsilon={cfg.privacy.example_target_epsilon:g} is passed "
            f"in the first round by the institution with {min(rows)} training rows: raise the "
            "target or privacy.example_noise_multiplier, or take fewer local steps")
    if allowed < planned:
        logger.warning("privacy.example_target_epsilon=%g allows %d of the %d planned rounds",
                       cfg.privacy.example_target_epsilon, allowed, planned)
        federation = cfg.federation.model_copy(update={"num_rounds": allowed})
        cfg = cfg.model_copy(update={"federation": federation})
    return cfg


def simulate(cfg: RunConfig, on_round: Callable[[dict[str, Any]], None] | None = None) -> RunReport:
    """Run a simulated federation and return its finished run folder."""
    _check_cpus(cfg)
    prepared = _planned(prepare_run(cfg))
    folder = open_run_folder(prepared.cfg, "sim")  # config.toml as given, without key paths
    return _simulate(prepared, folder, on_round, None)


def _planned(prepared: PreparedRun) -> PreparedRun:
    """`prepared` with its rounds cut to the example-level budget, once everything a round
    could not honour is refused: before any folder exists."""
    cfg = _within_example_budget(prepared)
    plan(cfg, simulated_participants(cfg))
    return replace(prepared, cfg=cfg)


def resume_simulation(run_dir: Path, on_round: Callable[[dict[str, Any]], None] | None = None
                      ) -> RunReport:
    """Continue the interrupted simulation in `run_dir` from its last complete round.

    Everything is checked before the folder is touched: that it is an unfinished run, that its
    checkpoint was written by this fedpeft version, and that its config.toml still gives the
    config the checkpoint was taken with. The continuation is a new Flower run (a new run id)
    whose globals and updates are signed with the run's own keys, kept in its checkpoint.
    """
    RunFolder.resolve(run_dir)
    checkpoint = read_checkpoint(run_dir)
    cfg = load_config(run_dir / "config.toml")
    _check_cpus(cfg)
    prepared = prepare_run(cfg)
    if prepared.cfg.model_dump() != cfg.model_dump():
        raise ConfigError(f"{run_dir / 'config.toml'}: no longer fits the data it names "
                          "(labels or institutions changed); resume refused")
    prepared = _planned(prepared)
    keys = checkpoint_dir(run_dir) / "keys"
    run_cfg = _with_run_keys(prepared, keys) if (keys / "federation").is_dir() else prepared.cfg
    check_resumable(checkpoint, run_cfg, RunFolder.resolve(run_dir))
    folder = RunFolder.reopen(run_dir)
    folder.attach_log()
    logger.info("fedpeft sim run %s resumed after round %d", folder.name, checkpoint.round)
    return _simulate(prepared, folder, on_round, checkpoint)


_SERVER_STOP_SECONDS = 30.0
"""How long a failing simulation waits for the coordinator's thread: it stops within a poll
interval unless it is in the middle of a server-side evaluation."""


def _stop_reason(err: BaseException) -> BaseException:
    """Ray's SIGTERM handler raises SystemExit(15); say so in error.txt."""
    if isinstance(err, SystemExit):
        return RunInterrupted(f"stopped by signal {err.code}: resume with `fedpeft resume`")
    return err


def _check_cpus(cfg: RunConfig) -> None:
    if cfg.simulation.client_cpus > (os.cpu_count() or 1):
        raise ConfigError(
            f"simulation.client_cpus={cfg.simulation.client_cpus} exceeds the "
            f"{os.cpu_count()} CPU cores of this machine"
        )


def _with_run_keys(prepared: PreparedRun, keys_dir: Path) -> RunConfig:
    folder, federation_id = run_credentials(keys_dir, prepared.data.partition_names)
    return with_credentials(prepared.cfg, folder, federation_id)


def _simulate(prepared: PreparedRun, folder: RunFolder,
              on_round: Callable[[dict[str, Any]], None] | None,
              resume: Checkpoint | None) -> RunReport:
    cfg = prepared.cfg
    outcome: list[FederationOutcome] = []
    stop = threading.Event()
    server_done = threading.Event()
    server_done.set()

    def _run(run_cfg: RunConfig) -> None:
        server_app = ServerApp()

        @server_app.main()
        def _main(grid: Grid, context: Context) -> None:
            server_done.clear()
            try:
                outcome.append(run_federation(grid, run_cfg, prepared.learner,
                                              prepared.data.test.frame, folder,
                                              parallel_slots(run_cfg), on_round, resume, stop))
            finally:
                server_done.set()

        with quiet_flower_console(), stop_on_signals(stop):
            run_simulation(server_app=server_app, client_app=client_app,
                           num_supernodes=run_cfg.simulation.num_clients,
                           backend_config=_backend_config(run_cfg))

    _quiet_ray()
    try:
        if cfg.security.seal_updates and cfg.security.credentials_dir is None:
            run_cfg = _with_run_keys(prepared, private_dir(folder.path, "keys"))
            _run(run_cfg)
            _keep_institution_ledgers(Path(str(run_cfg.security.credentials_dir)), folder.path)
        else:
            _run(cfg)
        if not outcome:
            raise RunError("the Flower simulation ended without running the server")
        result = outcome[0]
        full_bytes = full_model_nbytes(prepared.learner.model)
        summary = {
            **base_summary("federated", prepared),
            "strategy": cfg.strategy.name,
            "rounds": cfg.federation.num_rounds,
            "final": result.records[-1]["server_eval"],
            "initial": result.records[0]["server_eval"],
            **result.best,
            "adapter_bytes": result.adapter_bytes,
            "full_model_bytes": full_bytes,
            "wall_seconds": result.wall_seconds,
            **result.protection,
        }
        return RunReport(folder.finish(summary), summary)
    except BaseException as err:
        # The coordinator runs in Flower's thread, which outlives an error of the main thread
        # (Ray turns SIGTERM into SystemExit there): stop it before the folder is renamed.
        stop.set()
        server_done.wait(_SERVER_STOP_SECONDS)
        folder.fail(_stop_reason(err))
        raise

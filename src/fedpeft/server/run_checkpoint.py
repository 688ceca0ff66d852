"""The coordinator's checkpoint after every round, and the checks before a run continues from it.

After round r (round 0 is the initial evaluation) the checkpoint holds the global adapter, the
strategy chain's state (optimizer moments, the privacy accountant), the best adapter so far,
how many bytes of `metrics.jsonl` and which ledger head belong to rounds 0..r, and the digest
of the config. It is written after the round's metrics and ledger records, so those can run
at most one round ahead of it; resuming cuts the metrics back and marks the ledger record as
superseded (a ledger is never cut: its `run-resumed` record says where the run went on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.serverapp.strategy import Strategy

from fedpeft.common.adapter.state import AdapterState
from fedpeft.common.audit import canonical_sha256
from fedpeft.common.config import RunConfig
from fedpeft.common.errors import ConfigError
from fedpeft.common.runs.best import BestAdapter
from fedpeft.common.runs.checkpoint import Checkpoint, write_checkpoint
from fedpeft.common.runs.folder import RunFolder
from fedpeft.common.runs.metrics_log import MetricsLog
from fedpeft.server.audit_trail import AuditTrail
from fedpeft.server.strategy_state import capture_strategy, privacy_layer, restore_strategy

logger = logging.getLogger(__name__)


def config_digest(cfg: RunConfig) -> str:
    """What must not change between a run and its resumption: the whole config except where
    the credentials are read from (a folder that may move; the keys themselves must not)."""
    settings = cfg.model_dump(mode="json")
    settings["security"].pop("credentials_dir", None)
    return canonical_sha256(settings)


def _prefixed(prefix: str, arrays: AdapterState | None) -> dict[str, np.ndarray]:
    return {f"{prefix}/{key}": value for key, value in (arrays or {}).items()}


@dataclass
class RunCheckpointer:
    """Writes the checkpoint of `folder` after each round of the run."""

    folder: RunFolder
    cfg: RunConfig
    rounds: int
    strategy: Strategy
    log: MetricsLog
    best: BestAdapter
    trail: AuditTrail | None

    def save(self, server_round: int, state: AdapterState) -> None:
        strategy_meta, strategy_arrays = capture_strategy(self.strategy)
        ledger = (None if self.trail is None else
                  {"records": self.trail.ledger.records, "head": self.trail.ledger.head})
        meta: dict[str, Any] = {
            "round": server_round, "rounds": self.rounds,
            "config_sha256": config_digest(self.cfg),
            "metrics_bytes": self.log.nbytes, "metrics_records": len(self.log.records),
            "ledger": ledger, "strategy": strategy_meta,
            "best": {"round": self.best.round, "value": self.best.value,
                     "selected_on": self.best.selected_on},
        }
        write_checkpoint(self.folder.path, meta, {
            **_prefixed("global", state), **_prefixed("best", self.best.state), **strategy_arrays,
        })
        logger.info("checkpoint after round %d written", server_round)


def check_resumable(checkpoint: Checkpoint, cfg: RunConfig, folder: RunFolder) -> None:
    """ConfigError (one line, nothing changed) unless `cfg` is the config the run started with."""
    if checkpoint.meta["config_sha256"] != config_digest(cfg):
        raise ConfigError(
            f"{folder.config_path}: the config differs from the one the run was checkpointed "
            "with; resume with the run's own config.toml unchanged")


def restore_run(checkpoint: Checkpoint, strategy: Strategy, best: BestAdapter) -> AdapterState:
    """Put strategy state and best adapter back; returns the global adapter to go on from."""
    restore_strategy(strategy, checkpoint.meta["strategy"], checkpoint.arrays)
    saved = checkpoint.meta["best"]
    if saved["round"] is not None:
        value = None if saved["value"] is None else float(saved["value"])
        best.restore(int(saved["round"]), value, str(saved["selected_on"]),
                     checkpoint.group("best"))
    return checkpoint.group("global")


def charge_superseded(strategy: Strategy, superseded: list[dict[str, Any]]) -> list[int]:
    """Charge the run's privacy account for each round recorded after the checkpoint (its
    `metrics.jsonl` line, cut on resume, names what it was charged); the rounds charged.

    Such a round's aggregate was released (unmasked by the coordinator, evaluated, its global's
    hash signed in the ledger) before the crash, and the round is run again with fresh noise
    from the institutions, who charged both in their own ledgers (two Flower runs). Restoring
    only the checkpoint's accountant would count one release where there were two, so the
    run's epsilon would understate what the coordinator saw (found by killing a deployed
    coordinator between a round's record and its checkpoint, tests/e2e/
    test_deployment_coordinator_crash.py)."""
    layer = privacy_layer(strategy)
    charged: list[int] = []
    if layer is None:
        return charged
    for record in superseded:
        privacy = record.get("privacy")
        if isinstance(privacy, dict) and privacy.get("sampling_rate") is not None:
            epsilon = layer.accountant.step(float(privacy["sampling_rate"]))
            charged.append(int(record["round"]))
            logger.warning("round %d was released before the crash and is run again: its "
                           "release stays charged (epsilon now %.3f)", record["round"], epsilon)
    return charged

"""The coordinator's side of one federated run, the same in simulation and deployment.

Given a Flower `Grid` (in-memory in simulation, the SuperLink in deployment) it runs the
configured strategy for the configured rounds, evaluates every global adapter on the test set,
and leaves `metrics.jsonl`, `adapter/`, `best/` and `plots/` in the run folder.
"""

from __future__ import annotations

import logging
import math
import threading
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
from fedpeft.common.adapter.state import (
    AdapterState,
    from_array_record,
    state_nbytes,
    to_array_record,
)
from fedpeft.common.config import RunConfig, to_wire
from fedpeft.common.config.plan import RoundPlanner, rounds_allowed
from fedpeft.common.crypto import (
    Manifest,
    SigningPrivateKey,
    TensorSpec,
    generate_signing_key,
    load_signing_private_key,
    save_private_key,
)
from fedpeft.common.lora.stacking_math import shapes_of, update_shapes
from fedpeft.common.runs.checkpoint import Checkpoint, private_dir
from fedpeft.common.runs.folder import RunFolder
from fedpeft.common.runs.metrics_log import MetricsLog
from fedpeft.common.runs.plots import write_plots
from fedpeft.common.training.learner import Learner
from fedpeft.common.wire import secagg as secagg_wire
from fedpeft.common.wire.names import DP_EXAMPLE_EPSILON
from fedpeft.common.wire.run_record import run_config_record
from fedpeft.server.audit_trail import AuditTrail
from fedpeft.server.credentials import load_server_keys
from fedpeft.server.evaluation import ServerEvaluator
from fedpeft.server.polling_grid import PollingGrid
from fedpeft.server.quorum import QuorumPolicy
from fedpeft.server.round_driver import RoundPlan, drive_rounds
from fedpeft.server.round_recorder import LATE_REPLY, RoundRecorder
from fedpeft.server.run_checkpoint import (
    RunCheckpointer,
    charge_superseded,
    check_resumable,
    restore_run,
)
from fedpeft.server.strategies import (
    InstrumentedStrategy,
    PrivateStrategy,
    SealedStrategy,
    SecureAggregationStrategy,
    build_strategy,
)
from fedpeft.server.strategies.stacking import StackingStrategy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FederationOutcome:
    """What the run produced, for the summary table and `summary.json`."""

    records: list[dict[str, Any]]
    best: dict[str, Any]
    """`best_round`, `best_metric`, `best_value`, `best_selected_on` (see BestAdapter)."""
    adapter_bytes: int
    wall_seconds: float
    protection: dict[str, Any]
    """Summary sections `security` (sealing, masking, key fingerprints), `privacy` (the
    epsilon spent) and `ledger` (head hash and record count of the signed ledger)."""


def _masked_manifest(ring_bits: int) -> Callable[[AdapterState], Manifest]:
    """What a masked update declares: one packed vector, every value plus the example count."""
    def manifest(state: AdapterState) -> Manifest:
        values = sum(int(array.size) for array in state.values())
        size = secagg_wire.masked_manifest_size(values, ring_bits)
        return Manifest.of({secagg_wire.MASKED_ARRAY: np.broadcast_to(np.uint8(0), (size,))})
    return manifest


def _any_rank(state: AdapterState) -> None:
    """Stacking: each institution sends factors of its own rank, so no one manifest fits; the
    decrypted tensors are still checked against the manifest their sender signed."""
    return None


def _largest_stacking_update(max_rank: int) -> Callable[[AdapterState], Manifest]:
    """Stacking: the biggest update an institution may send, factors of rank peft.r (the
    largest any institution may train), for the size check before anything is opened."""
    def manifest(state: AdapterState) -> Manifest:
        shapes = update_shapes(shapes_of(state), max_rank)
        return Manifest(tensors=tuple(
            TensorSpec.model_validate({"name": key, "shape": shapes[key],
                                       "dtype": state[key].dtype.name})
            for key in sorted(state)))
    return manifest


@dataclass(frozen=True)
class _Chain:
    strategy: Strategy
    security: dict[str, Any]
    signing_key: SigningPrivateKey | None
    federation_id: str


def _strategy(grid: Grid, cfg: RunConfig, recorder: RoundRecorder) -> _Chain:
    """Instrumented(Sealed(SecureAggregation(Private(Stacking(Flower strategy))))), each layer
    only when configured: the recorder sees the bytes on the wire, sealing wraps (masked)
    updates, the privacy layer clips, noises and accounts, and the Flower strategy sees only
    the mean."""
    strategy = build_strategy(cfg)
    keys = load_server_keys(cfg.security) if cfg.security.seal_updates else None
    federation_id = (keys.federation_id if keys is not None
                     else cfg.security.federation_id or secagg_wire.UNSEALED_FEDERATION)
    security: dict[str, Any] = {"sealed_updates": keys is not None,
                                "secure_aggregation": cfg.secure_aggregation.enabled,
                                "differential_privacy": cfg.privacy.enabled,
                                "lora_mode": cfg.lora.mode}
    masked = cfg.secure_aggregation.enabled
    planner = RoundPlanner(cfg)  # one plan per round, shared by the layers that need it
    update_manifest: Callable[[AdapterState], Manifest | None] = Manifest.of
    largest_update: Callable[[AdapterState], Manifest] | None = None
    if cfg.lora.mode == "stacking":
        strategy = StackingStrategy(strategy, cfg.peft.r, cfg.lora.max_stacked_rank)
        update_manifest = _any_rank  # checked by StackingStrategy instead
        largest_update = _largest_stacking_update(cfg.peft.r)
    if cfg.privacy.enabled:
        strategy = PrivateStrategy(strategy, cfg, masked=masked, recorder=recorder,
                                   planner=planner)
    if masked:
        strategy = SecureAggregationStrategy(strategy, cfg, federation_id, grid.run.run_id,
                                             recorder, planner=planner)
        update_manifest = _masked_manifest(cfg.secure_aggregation.ring_bits)
    if keys is None:
        logger.warning(
            "security.seal_updates = false: adapters cross the network and rest in the "
            "SuperLink's database unencrypted and unsigned; use this for benchmarks only"
        )
        return _Chain(InstrumentedStrategy(strategy, recorder), security, None, federation_id)
    sealed = SealedStrategy(strategy, keys, run_id=grid.run.run_id, recorder=recorder,
                            update_manifest=update_manifest, largest_update=largest_update,
                            masked=masked, max_weight=cfg.security.max_update_weight)
    return _Chain(InstrumentedStrategy(sealed, recorder), {**security, **keys.fingerprints},
                  keys.signing_key, federation_id)


def run_federation(
    grid: Grid,
    cfg: RunConfig,
    learner: Learner,
    test: pd.DataFrame,
    folder: RunFolder,
    parallel_slots: int,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    resume: Checkpoint | None = None,
    stop: threading.Event | None = None,
) -> FederationOutcome:
    """Run all rounds on `grid` (or those after `resume`'s round); `learner` holds the initial
    adapter and evaluates on `test`. Setting `stop` ends the run with RunInterrupted."""
    started = time.perf_counter()
    rounds = rounds_allowed(cfg)
    if rounds < cfg.federation.num_rounds:
        logger.warning(
            "privacy budget: target_epsilon=%s allows %d of the %d planned rounds; the run "
            "stops after round %d and keeps that global adapter", cfg.privacy.target_epsilon,
            rounds, cfg.federation.num_rounds, rounds)
    if resume is not None:
        check_resumable(resume, cfg, folder)
    polling = PollingGrid(grid, stop)
    log = (MetricsLog(folder.metrics_path) if resume is None
           else MetricsLog.resume(folder.metrics_path, int(resume.meta["metrics_bytes"])))
    trail: AuditTrail | None = None

    def _on_round(record: dict[str, Any]) -> None:
        if trail is not None:
            trail.round(record)
        if on_round is not None:
            on_round(record)

    recorder = RoundRecorder(log, parallel_slots, _on_round,
                             signed_updates=cfg.security.seal_updates,
                             withhold_client_metrics=cfg.privacy.withholds_statistics)
    polling.on_late = lambda late: recorder.failure(late.arrived_in_round, late.node_id,
                                                    LATE_REPLY, late.describe())
    chain = _strategy(polling, cfg, recorder)
    logger.info("strategy layers: %r", chain.strategy)
    round_config, run_record = run_config_record(to_wire(cfg), chain.federation_id,
                                                 grid.run.run_id, rounds, chain.signing_key)
    evaluator = ServerEvaluator(learner, test, recorder, folder.best_dir, cfg.model.task)
    if resume is None:
        initial_state = learner.get_state()
        if cfg.audit.ledger:
            trail = AuditTrail(folder.path, chain.federation_id,
                               *_ledger_key(folder, chain, create=True))
            trail.start(cfg, grid.run.run_id, initial_state, run_record,
                        signed=chain.signing_key is not None)
    else:
        initial_state = restore_run(resume, chain.strategy, evaluator.best)
        recharged = charge_superseded(chain.strategy, log.superseded)
        logger.info("resuming after round %d of %d", resume.round, rounds)
        if cfg.audit.ledger:
            saved = resume.meta["ledger"]
            trail = AuditTrail.reopen(folder.path, *_ledger_key(folder, chain, create=False),
                                      records=int(saved["records"]), head=str(saved["head"]))
            trail.resumed(grid.run.run_id, resume.round, str(saved["head"]),
                          int(saved["records"]), run_record, recharged)
    checkpointer = RunCheckpointer(folder, cfg, rounds, chain.strategy, log, evaluator.best, trail)
    plan = RoundPlan(evaluate_initial=resume is None,
                     first_round=1 if resume is None else resume.round + 1, last_round=rounds,
                     timeout=cfg.federation.round_timeout, train_config=round_config,
                     evaluate_config=ConfigRecord(dict(round_config)))
    final = drive_rounds(chain.strategy, polling, to_array_record(initial_state), plan, evaluator,
                         lambda number, arrays: checkpointer.save(number,
                                                                  from_array_record(arrays)),
                         recorder, QuorumPolicy.from_config(cfg))
    final_state = from_array_record(final)
    save_adapter(learner, final_state, folder.adapter_dir)
    write_plots(log.records, folder.plots_dir)
    protection: dict[str, Any] = {"security": chain.security,
                                  "privacy": _privacy_summary(cfg, rounds, log.records)}
    if cfg.privacy.example_level:
        protection["example_privacy"] = _example_privacy_summary(cfg, log.records)
    if trail is not None:
        protection["ledger"] = trail.end(rounds, final_state,
                                         {"stopped_early": rounds < cfg.federation.num_rounds})
    return FederationOutcome(
        records=log.records,
        best=evaluator.best.summary(),
        adapter_bytes=state_nbytes(final_state),
        wall_seconds=time.perf_counter() - started,
        protection=protection,
    )


_LEDGER_KEY_FILE = "ledger-signing.pem"


def _ledger_key(folder: RunFolder, chain: _Chain, create: bool
                ) -> tuple[SigningPrivateKey, bool]:
    """(key, ephemeral): the server's signing key, or, without one, a key made for this run
    and kept in its checkpoint folder until it completes, so a resumed run signs on."""
    if chain.signing_key is not None:
        return chain.signing_key, False
    path = private_dir(folder.path, "keys") / _LEDGER_KEY_FILE
    if create:
        key = generate_signing_key()
        save_private_key(key, path)
        return key, True
    return load_signing_private_key(path), True


def _privacy_summary(cfg: RunConfig, rounds: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    privacy = cfg.privacy
    if not privacy.enabled:
        return {"enabled": False}
    charged = [r["privacy"] for r in records if "privacy" in r]
    return {
        "enabled": True, "epsilon": charged[-1]["epsilon"] if charged else 0.0,
        "delta": privacy.delta, "noise_multiplier": privacy.noise_multiplier,
        "clipping": privacy.clipping, "clip_norm": privacy.clip_norm,
        "target_epsilon": privacy.target_epsilon, "rounds_planned": cfg.federation.num_rounds,
        "rounds_allowed": rounds, "stopped_early": rounds < cfg.federation.num_rounds,
        "noise": "distributed" if cfg.secure_aggregation.enabled else "central",
    }


def _example_privacy_summary(cfg: RunConfig, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each institution's example-level epsilon as it last reported it, and the largest: the
    run's guarantee for a training row is the weakest institution's."""
    privacy = cfg.privacy
    latest: dict[str, float | None] = {}
    for record in records:
        for client in record.get("clients", []):
            value = (client.get("train") or {}).get(DP_EXAMPLE_EPSILON)
            if value is not None:  # JSON has no infinity (noise multiplier 0): null
                latest[client["name"]] = float(value) if math.isfinite(value) else None
    finite = [v for v in latest.values() if v is not None]
    return {"epsilon_max": max(finite) if finite else None, "per_institution": latest,
            "delta": privacy.effective_example_delta,
            "noise_multiplier": privacy.example_noise_multiplier,
            "clip_norm": privacy.example_clip_norm,
            "target_epsilon": privacy.example_target_epsilon}

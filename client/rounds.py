"""One institution's round: train or evaluate the global adapter on its local data.

The server sends the run config with every message, so an institution needs nothing but its
data path (deployment) or its partition id (simulation) in its node config. Only the adapter
tensors (and a classification head) go back, clipped and noised under differential privacy,
masked under secure aggregation, sealed to the aggregator and signed by the institution
(`fedpeft.client.sealing`), and recorded in its own ledger; the base model never leaves.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedpeft.client import secure_aggregation
from fedpeft.client.learner_cache import learner_for
from fedpeft.client.local_ledger import record_sent
from fedpeft.client.ranks import institution_rank
from fedpeft.client.local_data import LocalData, local_data
from fedpeft.client.sealing import (
    InstitutionKeys,
    institution_keys,
    open_global,
    seal_state,
    sealed_sha256,
)
from fedpeft.common import secagg_wire
from fedpeft.common.adapter.state import AdapterState, from_array_record, to_array_record
from fedpeft.common.config import PrivacyConfig, RunConfig, from_wire
from fedpeft.common.errors import DataError, SecurityError
from fedpeft.common.privacy import add_gaussian_noise, clip_update, epsilon_for
from fedpeft.common.training.learner import Learner, TrainResult
from fedpeft.common.protocol import (
    ARRAYS,
    COMPUTE_SECONDS,
    CONFIG,
    DP_CLIP_NORM,
    DP_EXAMPLE_EPSILON,
    DP_NOISE_STD,
    DP_UNCLIPPED,
    INSTITUTION,
    INSTITUTION_NAME,
    METRICS,
    NUM_EXAMPLES,
    NUM_ROUNDS,
    PARTITION_ID,
    PROXIMAL_MU,
    RUN_CONFIG,
    SEAL_SECONDS,
    SERVER_ROUND,
)

logger = logging.getLogger(__name__)

CPU_THREADS_KEY = "cpu-threads"
"""Optional node-config key: torch threads for this institution's process."""

DP_SGD_STATE = "fedpeft-dp-sgd"
"""ConfigRecord in `context.state`: the example-level DP-SGD steps this institution has taken
in the run (`steps`), with the smallest noise multiplier and largest sampling rate they were
taken at. Flower keeps a node's context for the whole run, also when every message is handled
by a fresh process, so the count survives between rounds."""


def _reply(msg: Message, name: str, metrics: dict[str, float],
           arrays: ArrayRecord | None = None) -> Message:
    content = RecordDict({
        METRICS: MetricRecord(metrics),
        INSTITUTION: ConfigRecord({INSTITUTION_NAME: name}),
    })
    if arrays is not None:
        content[ARRAYS] = arrays
    return Message(content=content, reply_to=msg)


def _cpu_threads(cfg: RunConfig, context: Context) -> int | None:
    """Torch threads: the node's own setting, or the simulation's cores per actor."""
    if CPU_THREADS_KEY in context.node_config:
        return int(context.node_config[CPU_THREADS_KEY])
    if PARTITION_ID in context.node_config:
        return max(1, int(cfg.simulation.client_cpus))
    return None


@dataclass(frozen=True)
class _Round:
    cfg: RunConfig
    config: ConfigRecord
    data: LocalData
    learner: Learner
    received: AdapterState
    """The global adapter as received, before local training."""
    keys: InstitutionKeys | None
    """None when the run exchanges plaintext adapters (security.seal_updates = false)."""

    @property
    def federation_id(self) -> str:
        if self.keys is not None:
            return self.keys.federation_id
        return self.cfg.security.federation_id or secagg_wire.UNSEALED_FEDERATION

    @property
    def name(self) -> str:
        return self.keys.name if self.keys is not None else self.data.name


def _prepare(msg: Message, context: Context) -> _Round:
    """Config, local data and a learner holding the received global adapter.

    A sealed run verifies the server's signature before anything is loaded: a refused global
    raises SecurityError (Flower replies with an error) and the learner keeps its last state.
    """
    config = msg.content[CONFIG]
    cfg = from_wire(str(config[RUN_CONFIG]))
    data = local_data(cfg, context)
    keys = institution_keys(cfg, context, data.name)
    if keys is not None:
        state = open_global(msg, keys, int(config[SERVER_ROUND]), context)
    else:
        state = from_array_record(msg.content[ARRAYS])
    learner = learner_for(cfg, _cpu_threads(cfg, context),
                          institution_rank(cfg, context.node_config))
    learner.set_state(state)
    return _Round(cfg, config, data, learner, state, keys)


def train(msg: Message, context: Context) -> Message:
    """One round of local training starting from the global adapter."""
    started = time.perf_counter()
    current = _prepare(msg, context)
    config, data, learner = current.config, current.data, current.learner
    server_round = int(config[SERVER_ROUND])
    result = learner.train(
        data.train,
        server_round=server_round,
        num_rounds=int(config[NUM_ROUNDS]),
        proximal_mu=float(config.get(PROXIMAL_MU, 0.0)),
    )
    logger.info("%s round %s: trained on %d examples, loss %.4f", current.name,
                server_round, result.num_examples, result.loss)
    privacy = current.cfg.privacy
    example_epsilon = (_example_epsilon(context, privacy, result)
                       if privacy.example_level else None)
    state = learner.get_state()
    metrics: dict[str, float] = {}
    if example_epsilon is None:
        metrics["loss"] = result.loss
    else:  # the training loss is a statistic of the rows DP-SGD protects; it stays here
        metrics[DP_EXAMPLE_EPSILON] = example_epsilon
    masked = secagg_wire.RECORD in msg.content.config_records
    weight = result.num_examples
    received = current.received
    # What the round changed: all that leaves under DP or masking (plain FedAvg sends the state).
    delta = ({key: state[key] - received[key] for key in state}
             if masked or DP_CLIP_NORM in config else {})
    if DP_CLIP_NORM in config:
        delta, fitted = _privatised(config, delta)
        weight = 1  # DP-FedAvg averages clipped updates with equal weights
        if not masked:  # the aggregator sees this update anyway; under masking it must not
            metrics[DP_UNCLIPPED] = fitted
            state = {key: (received[key] + delta[key]).astype(received[key].dtype)
                     for key in state}
    elif current.cfg.privacy.enabled:
        raise SecurityError(
            "the run asks for differential privacy but this train message has no clipping "
            "bound: refusing to send an unclipped update"
        )
    if masked:
        state, clipped = _masked(msg, context, current, delta, weight)
        metrics[secagg_wire.CLIPPED] = clipped
    elif current.cfg.secure_aggregation.enabled:
        raise SecurityError(
            "the run asks for secure aggregation but this train message has no masking "
            "parameters: refusing to send an unmasked update"
        )
    else:
        metrics[NUM_EXAMPLES] = result.num_examples
    if current.keys is None:
        arrays = to_array_record(state)
    else:
        sealing = time.perf_counter()
        arrays = seal_state(state, msg, current.keys, server_round)
        metrics[SEAL_SECONDS] = time.perf_counter() - sealing
        if current.cfg.audit.ledger:
            body = {
                "run_id": msg.metadata.run_id, "round": server_round,
                "federation_id": current.keys.federation_id,
                "sealed_sha256": sealed_sha256(arrays),
                "form": "sealed, masked" if masked else "sealed",
                "clip_norm": config.get(DP_CLIP_NORM), "noise_std": config.get(DP_NOISE_STD),
                "noise_multiplier": (current.cfg.privacy.noise_multiplier
                                     if current.cfg.privacy.enabled else None),
                "tensors": len(state), "values": int(sum(a.size for a in state.values())),
            }
            if example_epsilon is not None:  # JSON has no infinity: null, as in metrics.jsonl
                body.update({
                    "example_epsilon": example_epsilon if math.isfinite(example_epsilon) else None,
                    "example_delta": privacy.effective_example_delta,
                    "example_steps": int(context.state[DP_SGD_STATE]["steps"]),
                    "example_noise_multiplier": privacy.example_noise_multiplier,
                    "example_clip_norm": privacy.example_clip_norm,
                })
            record_sent(current.keys, body)
    metrics[COMPUTE_SECONDS] = time.perf_counter() - started
    return _reply(msg, current.name, metrics, arrays)


def _example_epsilon(context: Context, privacy: PrivacyConfig, result: TrainResult) -> float:
    """Charge this round's DP-SGD steps to the institution's running count in `context.state`
    and return its cumulative example-level epsilon at privacy.example_delta.

    Charged as soon as training returns, before sealing or masking can fail: once taken, a
    step counts whether or not its update leaves.

    Every step is charged at the smallest noise multiplier and the largest sampling rate seen
    in the run: exact when they are constant (one run config, one training table, the normal
    case), an upper bound otherwise, since the subsampled Gaussian's RDP only grows with the
    rate and shrinks with the noise.
    """
    if result.dp_steps != result.steps:
        raise SecurityError(
            "the run asks for example-level differential privacy but local training did not "
            "run DP-SGD: refusing to send the update"
        )
    record = context.state.config_records.get(DP_SGD_STATE)
    steps, sigma, rate = result.dp_steps, privacy.example_noise_multiplier, result.dp_sampling_rate
    if record is not None:
        steps += int(record["steps"])  # type: ignore[arg-type]
        sigma = min(sigma, float(record["noise-multiplier"]))  # type: ignore[arg-type]
        rate = max(rate, float(record["sampling-rate"]))  # type: ignore[arg-type]
    context.state[DP_SGD_STATE] = ConfigRecord(
        {"steps": steps, "noise-multiplier": sigma, "sampling-rate": rate})
    delta = privacy.effective_example_delta
    if delta * result.num_examples >= 1:
        logger.warning("privacy.example_delta=%g is not below 1 / %d training rows: the "
                       "example-level guarantee is weak", delta, result.num_examples)
    return epsilon_for(sigma, rate, steps, delta)


def _privatised(config: ConfigRecord, delta: AdapterState) -> tuple[AdapterState, float]:
    """The update clipped to the round's bound (plus this institution's noise share under
    secure aggregation); and 1.0 if it fitted under the bound unclipped."""
    clipped = clip_update(delta, float(config[DP_CLIP_NORM]))  # type: ignore[arg-type]
    private = clipped.delta
    if DP_NOISE_STD in config:
        private = add_gaussian_noise(private,
                                     float(config[DP_NOISE_STD]))  # type: ignore[arg-type]
    return private, 0.0 if clipped.clipped else 1.0


def _masked(msg: Message, context: Context, current: _Round, delta: AdapterState,
            weight: int) -> tuple[AdapterState, int]:
    """The update as this round's masked vector: (state with one masked array, values clipped)."""
    expected = secagg_wire.round_context(current.federation_id, msg.metadata.run_id,
                                         int(current.config[SERVER_ROUND]))
    packed, clipped = secure_aggregation.mask_update(msg, context, expected,
                                                     secagg_wire.flatten(delta), weight)
    return {secagg_wire.MASKED_ARRAY: packed}, clipped


def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the global adapter on the institution's local validation rows."""
    started = time.perf_counter()
    current = _prepare(msg, context)
    data, learner = current.data, current.learner
    if data.validation.empty:
        raise DataError(f"{data.name}: no local validation rows (data.validation_fraction is 0)")
    metrics = {**learner.evaluate(data.validation), NUM_EXAMPLES: len(data.validation),
               COMPUTE_SECONDS: time.perf_counter() - started}
    return _reply(msg, current.name, metrics)

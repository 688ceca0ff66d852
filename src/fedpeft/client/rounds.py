"""One institution's round: train or evaluate the global adapter on its local data.

The server sends the run config with every message, so an institution needs nothing but its
data path (deployment) or its partition id (simulation) in its node config. Only the adapter
tensors (and a classification head) go back, clipped and noised under differential privacy,
masked under secure aggregation, sealed to the aggregator and signed by the institution
and recorded in its own ledger, by the protection stages (`fedpeft.client.stages`); the base
model never leaves.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.typing import MetricRecordValues

from fedpeft.client import privacy_account
from fedpeft.client.admission import admit, institution_policy, record_refusal
from fedpeft.client.identity import institution_keys
from fedpeft.client.learner_cache import learner_for
from fedpeft.client.local_data import local_data
from fedpeft.client.ranks import institution_rank
from fedpeft.client.run_memory import DP_SGD_STATE
from fedpeft.client.stages.base import ClientStage, Outgoing, RoundInput
from fedpeft.client.stages.chain import chain
from fedpeft.client.stages.ledger import EVALUATION_SENT, record_event
from fedpeft.client.stages.sealing import open_global
from fedpeft.common.adapter.state import from_array_record, to_array_record
from fedpeft.common.config import PrivacyConfig, RunConfig, from_wire
from fedpeft.common.config.policy import InstitutionPolicy
from fedpeft.common.errors import DataError, SecurityError
from fedpeft.common.privacy import epsilon_for
from fedpeft.common.training.learner import ExampleBudget, TrainResult
from fedpeft.common.wire import values
from fedpeft.common.wire.names import (
    ARRAYS,
    COMPUTE_SECONDS,
    CONFIG,
    DP_EXAMPLE_EPSILON,
    INSTITUTION,
    INSTITUTION_NAME,
    METRICS,
    NUM_EXAMPLES,
    NUM_ROUNDS,
    PARTITION_ID,
    PROXIMAL_MU,
    RUN_CONFIG,
    SERVER_ROUND,
)

logger = logging.getLogger(__name__)

CPU_THREADS_KEY = "cpu-threads"
"""Optional node-config key: torch threads for this institution's process."""

STAGES_LOGGED = "fedpeft-stages-logged"
"""ConfigRecord in `context.state`: this institution has logged its protection stages for the
run (once per run, although each message may be handled by a fresh process)."""


def _log_stages_once(rnd: RoundInput, stages: list[ClientStage]) -> None:
    if STAGES_LOGGED in rnd.context.state.config_records:
        return
    named = " -> ".join(repr(stage) for stage in stages) or "none (plaintext update)"
    logger.info("%s: protection stages for this run: %s", rnd.name, named)
    rnd.context.state[STAGES_LOGGED] = ConfigRecord({"stages": named})


OPTIMIZER_STATE = "fedpeft-optimizer"
"""ArrayRecord in `context.state`: the optimizer moments this institution carries from one
round to the next under `training.optimizer_state = "keep"` (they never leave the node)."""


def _reply(msg: Message, name: str, metrics: dict[str, float],
           arrays: ArrayRecord | None = None) -> Message:
    reported: dict[str, MetricRecordValues] = dict(metrics)
    content = RecordDict({
        METRICS: MetricRecord(reported),
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


def _prepare(msg: Message, context: Context) -> RoundInput:
    """Config, local data and a learner holding the received global adapter.

    Nothing is obeyed before admission (`fedpeft.client.admission`: the server's signature
    over the run config, the institution's policy, the request's round); a deployed
    institution reads no row before it either. A sealed run then verifies the server's
    signature of the global before it is loaded: a refusal raises SecurityError (Flower
    replies with an error) and the learner keeps its last state.
    """
    config = msg.content.config_records[CONFIG]
    cfg = from_wire(values.text(config, RUN_CONFIG))
    keys = institution_keys(cfg, context, lambda: local_data(cfg, context).name)
    admit(msg, context, cfg, keys)
    data = local_data(cfg, context)
    server_round = values.integer(config, SERVER_ROUND)
    if keys is not None:
        state = open_global(msg, keys, server_round, context)
    else:
        state = from_array_record(msg.content.array_records[ARRAYS])
    learner = learner_for(cfg, _cpu_threads(cfg, context),
                          institution_rank(cfg, context.node_config))
    learner.set_state(state)
    return RoundInput(msg, context, cfg, config, data, learner, state, keys, server_round)


def train(msg: Message, context: Context) -> Message:
    """One round: prepare -> train locally -> the protection stages -> reply."""
    started = time.perf_counter()
    rnd = _prepare(msg, context)
    policy = institution_policy(context, rnd.keys)
    carried = context.state.array_records.get(OPTIMIZER_STATE)
    budgets = [check for check in (_example_budget(context, rnd.cfg.privacy, rnd.name),
                                   _lifetime_example_budget(rnd, policy)) if check is not None]
    result = rnd.learner.train(
        rnd.data.train,
        server_round=rnd.server_round,
        num_rounds=values.integer(rnd.config, NUM_ROUNDS),
        proximal_mu=values.number(rnd.config, PROXIMAL_MU, default=0.0),
        optimizer_state=from_array_record(carried) if carried is not None else None,
        example_budget=_all_of(budgets) if budgets else None,
    )
    if result.optimizer_state is not None:
        context.state[OPTIMIZER_STATE] = to_array_record(result.optimizer_state)
    logger.info("%s round %s: trained on %d examples, loss %.4f", rnd.name,
                rnd.server_round, result.num_examples, result.loss)
    out = _trained(rnd, result, context)
    _charge(rnd, policy, result)
    stages = chain(rnd)
    _log_stages_once(rnd, stages)
    if any(stage.needs_delta for stage in stages):
        received = rnd.received
        out = out.but(delta={key: out.state[key] - received[key] for key in out.state})
    for stage in stages:
        out = stage.apply(out, rnd)
    arrays = out.arrays if out.arrays is not None else to_array_record(out.state)
    metrics = {**out.metrics, COMPUTE_SECONDS: time.perf_counter() - started}
    return _reply(msg, rnd.name, metrics, arrays)


def _trained(rnd: RoundInput, result: TrainResult, context: Context) -> Outgoing:
    """The trained adapter as the first stage receives it, with the round's own metrics."""
    privacy = rnd.cfg.privacy
    # With privacy on, the loss and the count are un-noised statistics of the rows: they stay
    # here. The weight the aggregator uses travels sealed (or masked); 1 stands in for it.
    metrics: dict[str, float] = (
        {NUM_EXAMPLES: 1} if privacy.withholds_statistics
        else {NUM_EXAMPLES: result.num_examples, "loss": result.loss})
    ledger: dict[str, object] = {}
    if privacy.example_level:
        epsilon = _example_epsilon(context, privacy, result)
        metrics[DP_EXAMPLE_EPSILON] = epsilon
        ledger = {  # JSON has no infinity: null, as in metrics.jsonl
            "example_epsilon": epsilon if math.isfinite(epsilon) else None,
            "example_delta": privacy.effective_example_delta,
            "example_steps": int(context.state[DP_SGD_STATE]["steps"]),  # type: ignore[arg-type]
            "example_noise_multiplier": privacy.example_noise_multiplier,
            "example_clip_norm": privacy.example_clip_norm,
        }
    return Outgoing(state=rnd.learner.get_state(), delta=None, weight=result.num_examples,
                    metrics=metrics, ledger=ledger)


def _with_earlier_steps(context: Context, privacy: PrivacyConfig, steps: int,
                        rate: float) -> tuple[int, float, float]:
    """(steps, noise multiplier, sampling rate) to account after `steps` more DP-SGD steps at
    `rate`: the run's total, at its smallest noise and largest rate (see `_example_epsilon`)."""
    sigma = privacy.example_noise_multiplier
    record = context.state.config_records.get(DP_SGD_STATE)
    if record is not None:
        steps += int(record["steps"])  # type: ignore[arg-type]
        sigma = min(sigma, float(record["noise-multiplier"]))  # type: ignore[arg-type]
        rate = max(rate, float(record["sampling-rate"]))  # type: ignore[arg-type]
    return steps, sigma, rate


def _example_budget(context: Context, privacy: PrivacyConfig,
                    name: str) -> Callable[[int, float], None] | None:
    """The institution's own stop at privacy.example_target_epsilon: it refuses to train a
    round that would take its example-level epsilon past the target, counting the steps it
    has itself taken (kept in the node's own state, which the server never sees, and rebuilt
    from its ledger after a restart: `fedpeft.client.run_memory`). The target
    arrives in the run config like every other setting; there is no institution-side policy
    file yet that could pin it against a server that sends a higher one."""
    target = privacy.example_target_epsilon
    if not privacy.example_level or target is None:
        return None

    def check(steps: int, rate: float) -> None:
        total, sigma, worst = _with_earlier_steps(context, privacy, steps, rate)
        epsilon = epsilon_for(sigma, worst, total, privacy.effective_example_delta)
        if epsilon > target:
            raise SecurityError(
                f"{name}: privacy.example_target_epsilon={target:g} reached: this round's "
                f"{steps} DP-SGD steps would take the example-level epsilon to {epsilon:.3f}; "
                "refusing to train")
    return check


def _lifetime_example_budget(rnd: RoundInput, policy: InstitutionPolicy) -> ExampleBudget | None:
    """The policy's cap on the institution's lifetime example-level epsilon, checked when
    training knows the round's DP-SGD steps and before it takes the first."""
    keys = rnd.keys
    if keys is None or policy.max_lifetime_example_epsilon is None:
        return None

    def check(steps: int, rate: float) -> None:
        charge = privacy_account.example_charge(rnd.cfg, steps, rate)
        try:
            privacy_account.check_next_round(keys, policy, privacy_account.EXAMPLE, charge)
        except SecurityError as err:
            record_refusal(rnd.msg, keys, str(err))
            raise
    return check


def _all_of(checks: list[ExampleBudget]) -> ExampleBudget:
    def check(steps: int, rate: float) -> None:
        for each in checks:
            each(steps, rate)
    return check


def _charge(rnd: RoundInput, policy: InstitutionPolicy, result: TrainResult) -> None:
    """Charge the round to the institution's lifetime account before any stage can send it
    (a sealed run only: the account is in the institution's signed ledger)."""
    if rnd.keys is None:
        return
    charges = {privacy_account.CLIENT: privacy_account.client_charge(rnd.cfg, rnd.config),
               privacy_account.EXAMPLE: privacy_account.example_charge(
                   rnd.cfg, result.dp_steps, result.dp_sampling_rate)}
    try:
        privacy_account.charge_round(rnd.keys, policy, rnd.msg.metadata.run_id,
                                     rnd.server_round, charges)
    except SecurityError as err:
        record_refusal(rnd.msg, rnd.keys, str(err))
        raise


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
    steps, sigma, rate = _with_earlier_steps(context, privacy, result.dp_steps,
                                             result.dp_sampling_rate)
    context.state[DP_SGD_STATE] = ConfigRecord(
        {"steps": steps, "noise-multiplier": sigma, "sampling-rate": rate})
    delta = privacy.effective_example_delta
    if delta * result.num_examples >= 1:
        logger.warning("privacy.example_delta=%g is not below 1 / %d training rows: the "
                       "example-level guarantee is weak", delta, result.num_examples)
    return epsilon_for(sigma, rate, steps, delta)


def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the global adapter on the institution's local validation rows.

    With privacy on the metrics would be un-noised statistics of those rows, so the
    institution refuses (the server does not ask: `fedpeft.server.strategies.registry`).
    A sealed run's evaluation is written to the institution's ledger as `evaluation-sent`
    whatever `audit.ledger` says: it is how a restarted institution remembers it."""
    started = time.perf_counter()
    rnd = _prepare(msg, context)
    if rnd.cfg.privacy.withholds_statistics:
        raise SecurityError("the run has privacy on: this institution does not send its "
                            "un-noised validation metrics")
    data = rnd.data
    if data.validation.empty:
        raise DataError(f"{data.name}: no local validation rows (data.validation_fraction is 0)")
    metrics = {**rnd.learner.evaluate(data.validation), NUM_EXAMPLES: len(data.validation),
               COMPUTE_SECONDS: time.perf_counter() - started}
    if rnd.keys is not None:  # before the metrics leave: a restart must not forget them
        record_event(rnd.keys, EVALUATION_SENT, {
            "run_id": msg.metadata.run_id, "round": rnd.server_round,
            "federation_id": rnd.keys.federation_id, "num_examples": len(data.validation)})
    return _reply(msg, rnd.name, metrics)

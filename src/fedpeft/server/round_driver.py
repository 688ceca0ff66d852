"""The sequence of rounds, as Flower's `Strategy.start` runs it, but resumable and stoppable.

`Strategy.start` always begins at round 1 with the initial evaluation and offers no hook
between rounds. This driver makes the same calls in the same order (configure_train ->
send_and_receive -> aggregate_train -> configure_evaluate -> send_and_receive ->
aggregate_evaluate -> server evaluation), can start at any round, calls `after_round` once a
round is complete (the checkpoint), checks the grid's stop request between steps, and applies
the quorum policy to the training replies (`fedpeft.server.quorum`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp.strategy import Strategy

from fedpeft.common.errors import RunError
from fedpeft.server.polling_grid import PollingGrid
from fedpeft.server.quorum import QuorumPolicy
from fedpeft.server.round_recorder import RoundRecorder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundPlan:
    """Rounds `first_round`..`last_round`, after evaluating the initial adapter as round 0
    when `evaluate_initial` (a resumed run did that before it stopped)."""

    evaluate_initial: bool
    first_round: int
    last_round: int
    timeout: float
    train_config: ConfigRecord
    evaluate_config: ConfigRecord


def drive_rounds(
    strategy: Strategy,
    grid: PollingGrid,
    arrays: ArrayRecord,
    plan: RoundPlan,
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None],
    after_round: Callable[[int, ArrayRecord], None],
    recorder: RoundRecorder,
    quorum: QuorumPolicy,
) -> ArrayRecord:
    """Run the planned rounds from the global `arrays`; returns the last global adapter."""
    strategy.summary()
    if plan.evaluate_initial:
        evaluate_fn(0, arrays)
        after_round(0, arrays)
    for server_round in range(plan.first_round, plan.last_round + 1):
        grid.check_stop()
        grid.begin_round(server_round)
        logger.info("[ROUND %d/%d]", server_round, plan.last_round)
        aggregated = _train(strategy, grid, server_round, arrays, plan, recorder, quorum)
        if aggregated is not None:
            arrays = aggregated
        messages = strategy.configure_evaluate(server_round, arrays, plan.evaluate_config, grid)
        replies = grid.send_and_receive(messages, timeout=plan.timeout)
        strategy.aggregate_evaluate(server_round, replies)
        evaluate_fn(server_round, arrays)
        after_round(server_round, arrays)
    return arrays


def _train(strategy: Strategy, grid: PollingGrid, server_round: int, arrays: ArrayRecord,
           plan: RoundPlan, recorder: RoundRecorder, quorum: QuorumPolicy) -> ArrayRecord | None:
    """The round's training exchange, repeated below quorum as the policy says; the new
    global adapter, or None when the round leaves it unchanged."""
    for attempt in range(quorum.retries + 1):
        messages = list(strategy.configure_train(server_round, arrays, plan.train_config, grid))
        if not messages:  # a layer aborted the round before training and recorded why
            return strategy.aggregate_train(server_round, [])[0]
        replies = list(grid.send_and_receive(messages, timeout=plan.timeout))
        answered = {reply.metadata.src_node_id for reply in replies}
        for node in sorted({m.metadata.dst_node_id for m in messages} - answered):
            recorder.failure(server_round, node, "train", f"no reply within the deadline "
                             f"({plan.timeout:g} s, federation.round_timeout): dropped as late")
        good = sum(not reply.has_error() for reply in replies)
        needed = quorum.needed(len(messages))
        if good >= needed:
            return strategy.aggregate_train(server_round, replies)[0]
        recorder.replies_in(server_round, "train", replies)
        reason = (f"{good} of {len(messages)} institutions replied in time, quorum {needed} "
                  f"(attempt {attempt + 1} of {quorum.retries + 1})")
        recorder.failure(server_round, None, "quorum", reason)
        if quorum.below == "stop":
            raise RunError(f"round {server_round}: {reason}; federation.below_quorum = 'stop' "
                           "ends the run (resume it with its checkpoint)")
        logger.warning("round %d below quorum: %s", server_round, reason)
    logger.warning("round %d skipped: the global adapter stays as it was", server_round)
    return None

"""The sequence of rounds, as Flower's `Strategy.start` runs it, but resumable and stoppable.

`Strategy.start` always begins at round 1 with the initial evaluation and offers no hook
between rounds. This driver makes the same calls in the same order (configure_train ->
send_and_receive -> aggregate_train -> configure_evaluate -> send_and_receive ->
aggregate_evaluate -> server evaluation), can start at any round, calls `after_round` once a
round is complete (the checkpoint), and checks the grid's stop request between steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp.strategy import Strategy

from fedpeft.server.polling_grid import PollingGrid

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
) -> ArrayRecord:
    """Run the planned rounds from the global `arrays`; returns the last global adapter."""
    strategy.summary()
    if plan.evaluate_initial:
        evaluate_fn(0, arrays)
        after_round(0, arrays)
    for server_round in range(plan.first_round, plan.last_round + 1):
        grid.check_stop()
        logger.info("[ROUND %d/%d]", server_round, plan.last_round)
        messages = strategy.configure_train(server_round, arrays, plan.train_config, grid)
        replies = grid.send_and_receive(messages, timeout=plan.timeout)
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        if aggregated is not None:
            arrays = aggregated
        messages = strategy.configure_evaluate(server_round, arrays, plan.evaluate_config, grid)
        replies = grid.send_and_receive(messages, timeout=plan.timeout)
        strategy.aggregate_evaluate(server_round, replies)
        evaluate_fn(server_round, arrays)
        after_round(server_round, arrays)
    return arrays

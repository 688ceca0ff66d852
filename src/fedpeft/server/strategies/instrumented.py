"""A strategy wrapper that records each round without changing what the inner strategy does.

Composed around any Flower strategy (the way Flower's DP wrappers are): it forwards every call,
shows the outgoing messages and incoming replies to a `RoundRecorder`, and refuses to let a
round in which every institution failed pass silently as "no update".
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpeft.common.errors import RunError
from fedpeft.server.round_recorder import RoundRecorder
from fedpeft.server.strategies.wrapper import StrategyWrapper


class InstrumentedStrategy(StrategyWrapper):
    """Forwards to `inner`; reports traffic, timing and per-institution metrics."""

    def __init__(self, inner: Strategy, recorder: RoundRecorder) -> None:
        super().__init__(inner)
        self.recorder = recorder
        self._sent: dict[int, int] = {}
        """Train messages sent per round: none means the round was aborted before training."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self.recorder.messages_out(server_round, "train", messages)
        self._sent[server_round] = len(messages)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.recorder.replies_in(server_round, "train", replies)
        if self._sent.get(server_round, 1) == 0:
            return None, None  # aborted before training; the reason is already recorded
        if replies and all(reply.has_error() for reply in replies):
            reasons = "; ".join(
                f"node {r.metadata.src_node_id}: {r.error.reason}" for r in replies[:3]
            )
            raise RunError(f"round {server_round}: every institution failed to train ({reasons})")
        if not replies:
            raise RunError(
                f"round {server_round}: no institution replied within federation.round_timeout"
            )
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        self.recorder.aggregated(server_round, "train", metrics)
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.inner.configure_evaluate(server_round, arrays, config, grid))
        self.recorder.messages_out(server_round, "evaluate", messages)
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        replies = list(replies)
        self.recorder.replies_in(server_round, "evaluate", replies)
        metrics = self.inner.aggregate_evaluate(server_round, replies)
        self.recorder.aggregated(server_round, "evaluate", metrics)
        return metrics

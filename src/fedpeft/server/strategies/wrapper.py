"""The base of fedpeft's strategy wrappers: forward everything to the wrapped strategy.

Each wrapper (recording, sealing, masking, privacy, stacking) changes one or two steps of a
round; what it does not override reaches the Flower strategy inside unchanged. Wrappers that
compute the round's mean themselves (masking, privacy) hand it to the inner strategy as one
reply, so the inner strategy's own server step (FedAdam's, FedAvgM's, ...) still applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.app.typing import MetricRecordValues
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpeft.common.adapter.state import AdapterState, to_array_record
from fedpeft.common.wire.names import ARRAYS, METRICS


class StrategyWrapper(Strategy):
    """Forwards every step to `inner`."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    def settings(self) -> str:
        """This layer's own settings for `__repr__` ("" when it has none worth naming)."""
        return ""

    def __repr__(self) -> str:
        """Every layer in force, outermost first, e.g.
        `Instrumented(Sealed(SecureAggregation(max_dropouts=1, ...)(Private(...)(FedAvg))))`."""
        name = type(self).__name__.removesuffix("Strategy")
        inner = (repr(self.inner) if isinstance(self.inner, StrategyWrapper)
                 else type(self.inner).__name__)
        own = self.settings()
        return f"{name}({own})({inner})" if own else f"{name}({inner})"

    def summary(self) -> None:
        """Flower's start-up summary, preceded by the protection layers around its strategy
        (Flower itself names only the outermost class)."""
        log(INFO, "\t├──> Layers: %r", self)
        innermost = self.inner
        while isinstance(innermost, StrategyWrapper):
            innermost = innermost.inner
        innermost.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def aggregate_mean(
        self, server_round: int, template: Message, mean: AdapterState,
        metrics: Mapping[str, MetricRecordValues],
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Let the inner strategy aggregate one reply that holds the round's mean adapter
        (`metrics` must carry the weight, num-examples); `template` lends its metadata."""
        reply = make_message(template.metadata, RecordDict({
            ARRAYS: to_array_record(mean), METRICS: MetricRecord(dict(metrics)),
        }))
        return self.inner.aggregate_train(server_round, [reply])

"""A strategy wrapper that aggregates by FLoRA stacking (`lora.mode = "stacking"`).

Averaging LoRA factors of different ranks is impossible, and averaging A and B separately is
inexact; stacking concatenates them instead (`fedpeft.common.lora.stacking_math`), so the new
global adds exactly the example-weighted mean of the institutions' updates B_i @ A_i.

The inner Flower strategy still samples institutions and builds every outgoing message; only
`aggregate_train` is replaced, because the inner one would average arrays whose shapes differ.
It sits inside `SealedStrategy`, so the replies it sees already hold opened plaintext arrays.
Only example-weighted stacking is defined: an inner server optimiser (FedAdam, FedYogi,
FedAvgM) or robust aggregator would be bypassed, so the run config should allow stacking
with fedavg or fedprox only.

Ranks are bounded twice: an update's rank may not exceed peft.r (the largest any institution
trains), and the stacked global's may not exceed lora.max_stacked_rank. Stacking adds the
ranks of every round's updates, and the global travels to every institution each round, so
without the second bound its size would grow with rounds x institutions; a round that would
pass it stops the run with the reason instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpeft.common.adapter.state import AdapterState, from_array_record, to_array_record
from fedpeft.common.errors import FedpeftError, RunError
from fedpeft.common.lora.keys import is_lora_a
from fedpeft.common.lora.stacking_math import shapes_of, stack, update_rank
from fedpeft.common.wire.names import NUM_EXAMPLES
from fedpeft.server.strategies.reply_metrics import aggregate_client_metrics
from fedpeft.server.strategies.wrapper import StrategyWrapper

logger = logging.getLogger(__name__)


class StackingStrategy(StrategyWrapper):
    """Forwards to `inner`, except that updates are stacked onto the current global."""

    def __init__(self, inner: Strategy, max_update_rank: int, max_stacked_rank: int) -> None:
        super().__init__(inner)
        self.max_update_rank = max_update_rank
        self.max_stacked_rank = max_stacked_rank
        self._global: AdapterState | None = None
        logger.warning(
            "lora.mode = stacking: the aggregator sees each institution's own adapter "
            "(no averaging hides it); use lora.mode = ffa if that is not acceptable"
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = from_array_record(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._global is None:
            raise RuntimeError("aggregate_train before configure_train: no global to stack onto")
        global_shapes = shapes_of(self._global)
        accepted: list[Message] = []
        updates: list[tuple[AdapterState, float]] = []
        for reply in replies:
            if reply.has_error():  # InstrumentedStrategy records failures
                continue
            try:
                records = list(reply.content.array_records.values())
                metrics = list(reply.content.metric_records.values())
                if len(records) != 1 or len(metrics) != 1:
                    raise ValueError(f"{len(records)} ArrayRecords and {len(metrics)} "
                                     "MetricRecords, expected one of each")
                state = from_array_record(records[0])
                update_rank(global_shapes, shapes_of(state), self.max_update_rank)
                weight = float(metrics[0][NUM_EXAMPLES])  # type: ignore[arg-type]
            except (FedpeftError, ValueError, KeyError, TypeError) as err:
                logger.warning("round %d: skipped the update of node %d: %s", server_round,
                               reply.metadata.src_node_id, err)
                continue
            accepted.append(reply)
            updates.append((state, weight))
        if not updates:
            return None, None
        new_global = stack(self._global, updates)
        ranks = [a.shape[0] for key, a in new_global.items() if is_lora_a(key)]
        if max(ranks, default=0) > self.max_stacked_rank:
            raise RunError(
                f"round {server_round}: stacking would grow the global's LoRA rank to "
                f"{max(ranks)}, above lora.max_stacked_rank={self.max_stacked_rank}; the "
                "global adapter of the previous round is kept")
        logger.info("round %d: stacked %d updates; global LoRA ranks %d..%d", server_round,
                    len(updates), min(ranks, default=0), max(ranks, default=0))
        return (to_array_record(new_global),
                aggregate_client_metrics([reply.content for reply in accepted]))


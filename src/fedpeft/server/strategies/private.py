"""A strategy wrapper for client-level differential privacy (DP-FedAvg) with a live accountant.

Every institution clips its own update (the change of the adapter over the round) to the
round's norm bound, which this wrapper sends in the train config. Then, in one of two ways:

- without secure aggregation the aggregator sees each clipped update: it validates it (finite,
  the global's shapes, norm within `privacy.max_norm_factor` of the bound: an institution that
  ignored the bound is refused and recorded, never aggregated), clips it again so the bound
  holds whatever a client did, averages with equal weights and adds N(0, (sigma C)^2) to the sum.
  Adaptive clipping (Andrew et al. 2021) moves C toward a quantile of the update norms, from a
  noised count of the institutions whose update fitted.
- under secure aggregation (composed inside `SecureAggregationStrategy`) each institution adds
  its share of the noise before masking (`fedpeft.common.privacy.distributed_noise_std`) and
  the sum arrives already noised; this wrapper only accounts for it.

After each round the RDP accountant charges one Poisson-subsampled Gaussian step at the round's
sampling rate and the round record gets `privacy` with the cumulative epsilon.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpeft.common.adapter.state import AdapterState, from_array_record
from fedpeft.common.config import RunConfig
from fedpeft.common.config.plan import RoundPlanner
from fedpeft.common.privacy import (
    AdaptiveClipping,
    PrivacyAccountant,
    UpdateRefused,
    add_gaussian_noise,
    central_noise_std,
    clip_update,
    noise_rng,
    validate_update,
)
from fedpeft.common.wire.names import (
    ARRAYS,
    CONFIG,
    DP_CLIP_NORM,
    DP_NOISE_STD,
    DP_UNCLIPPED,
    METRICS,
    NUM_EXAMPLES,
)
from fedpeft.server.round_recorder import RoundRecorder
from fedpeft.server.strategies.reply_metrics import aggregate_client_metrics
from fedpeft.server.strategies.wrapper import StrategyWrapper

logger = logging.getLogger(__name__)


class PrivateStrategy(StrategyWrapper):
    """Forwards to `inner` the noised, equally weighted mean of the clipped updates."""

    def __init__(self, inner: Strategy, cfg: RunConfig, masked: bool,
                 recorder: RoundRecorder | None = None,
                 planner: RoundPlanner | None = None) -> None:
        super().__init__(inner)
        self.privacy = cfg.privacy
        self.planner = planner or RoundPlanner(cfg)
        self.masked = masked
        self.recorder = recorder
        self.accountant = PrivacyAccountant(self.privacy.noise_multiplier, self.privacy.delta)
        self.clip_norm = self.privacy.clip_norm
        self.adaptive = (
            AdaptiveClipping(self.privacy.clip_norm, self.privacy.target_quantile,
                             self.privacy.clip_learning_rate, self.privacy.clipped_count_stddev)
            if self.privacy.clipping == "adaptive" else None
        )
        self._current: AdapterState = {}
        self._sampling_rate = 1.0
        self._next_clip_norm = self.clip_norm

    def settings(self) -> str:
        p = self.privacy
        target = f", target_epsilon={p.target_epsilon:g}" if p.target_epsilon is not None else ""
        return (f"{p.clipping} clipping, clip_norm={self.clip_norm:g}, noise_multiplier="
                f"{p.noise_multiplier:g}, noise={'distributed' if self.masked else 'central'}"
                f"{target}")

    def exhausted(self, sampling_rate: float) -> bool:
        """Whether one more round at `sampling_rate` would exceed privacy.target_epsilon."""
        target = self.privacy.target_epsilon
        return target is not None and self.accountant.epsilon_after_next(sampling_rate) > target

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._current = from_array_record(arrays)
        config = ConfigRecord({**config, DP_CLIP_NORM: self.clip_norm})
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        available = max(1, len(list(grid.get_node_ids())))
        self._sampling_rate = min(1.0, len(messages) / available)
        if messages and self.exhausted(self._sampling_rate):
            logger.warning(
                "round %d skipped: it would take epsilon from %.3f to %.3f, past "
                "privacy.target_epsilon=%s", server_round, self.accountant.epsilon,
                self.accountant.epsilon_after_next(self._sampling_rate),
                self.privacy.target_epsilon)
            if self.recorder is not None:
                self.recorder.failure(server_round, None, "privacy",
                                      "privacy budget exhausted: round not run")
            return []
        if self.masked and messages:
            std = self.planner.for_round(server_round, len(messages)).noise_std
            assert std is not None  # privacy and secure aggregation both on: the plan has it
            for message in messages:
                message.content.config_records[CONFIG][DP_NOISE_STD] = std
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = [r for r in replies if not r.has_error()]
        if not replies:
            return None, None
        if self.masked:
            arrays, metrics = self.inner.aggregate_train(server_round, replies)
            noise = "distributed"
        else:
            arrays, metrics = self._noised_mean(server_round, replies)
            noise = "central"
        if arrays is None:
            return arrays, metrics
        epsilon = self.accountant.step(self._sampling_rate)
        info: dict[str, Any] = {
            "epsilon": epsilon, "delta": self.privacy.delta,
            "noise_multiplier": self.privacy.noise_multiplier, "clip_norm": self.clip_norm,
            "clipping": self.privacy.clipping, "noise": noise,
            "sampling_rate": self._sampling_rate, "rounds_charged": self.accountant.rounds,
        }
        if self.adaptive is not None:
            info["next_clip_norm"] = self._next_clip_norm
            self.clip_norm = self._next_clip_norm
        if self.recorder is not None:
            self.recorder.annotate(server_round, "privacy", info)
        logger.info("round %d: epsilon %.3f (delta %g)", server_round, epsilon, self.privacy.delta)
        return arrays, metrics

    def _noised_mean(self, server_round: int, replies: list[Message]
                     ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        expected = {k: (tuple(v.shape), v.dtype.name) for k, v in self._current.items()}
        bound = self.privacy.max_norm_factor * self.clip_norm
        deltas: list[AdapterState] = []
        unclipped = 0.0
        accepted: list[Message] = []
        for reply in replies:
            state = from_array_record(reply.content.array_records[ARRAYS])
            try:
                validate_update(state, expected, None)
                delta = {k: state[k] - self._current[k] for k in self._current}
                validate_update(delta, expected, bound)
            except UpdateRefused as err:
                node = reply.metadata.src_node_id
                logger.warning("round %d: refused the update of node %d: %s", server_round,
                               node, err)
                if self.recorder is not None:
                    self.recorder.failure(server_round, node, "validation", str(err))
                continue
            clipped = clip_update(delta, self.clip_norm)
            deltas.append(clipped.delta)
            # The institution clipped first, so only it knows whether its update fitted.
            reported = reply.content[METRICS].get(DP_UNCLIPPED)
            fitted = float(reported) if isinstance(reported, (int, float)) else 0.0
            unclipped += fitted if not clipped.clipped else 0.0
            accepted.append(reply)
        if not deltas:
            return None, None
        m = len(deltas)
        rng = noise_rng()
        multiplier = self.privacy.noise_multiplier
        if self.adaptive is not None:
            multiplier = self.adaptive.update_noise_multiplier(multiplier, m)
        total = {k: np.asarray(np.sum([d[k] for d in deltas], axis=0, dtype=np.float64))
                 for k in self._current}
        noised = add_gaussian_noise(total, central_noise_std(multiplier, self.clip_norm), rng)
        merged = {k: (self._current[k] + noised[k] / m).astype(self._current[k].dtype)
                  for k in self._current}
        if self.adaptive is not None:
            count = unclipped + float(rng.normal(0.0, self.adaptive.count_noise_std(m)))
            self._next_clip_norm = self.adaptive.update(count, m)
        metrics = aggregate_client_metrics([r.content for r in accepted])
        return self.aggregate_mean(server_round, accepted[0], merged,
                                   {**metrics, NUM_EXAMPLES: m})  # equal weights


"""The privacy stage: the institution's half of client-level DP-FedAvg.

The round's change is clipped to the bound the server sent (all tensors together, L2); under
secure aggregation the institution also adds its share of the Gaussian noise before masking,
since the aggregator only ever sees the masked sum. An institution whose run asks for
differential privacy refuses to send an update when the message carries no bound.
"""

from __future__ import annotations

from fedpeft.client.stages.base import ClientStage, Outgoing, RoundInput
from fedpeft.common.errors import SecurityError
from fedpeft.common.privacy import add_gaussian_noise, clip_update
from fedpeft.common.wire.names import DP_CLIP_NORM, DP_NOISE_STD, DP_UNCLIPPED


class Privacy(ClientStage):
    """Clips the round's change (and adds a noise share under masking); equal weights."""

    name = "privacy"
    needs_delta = True

    def __init__(self, masked: bool) -> None:
        self.masked = masked
        """Masking follows: the clipped change goes on as a change, and whether it fitted the
        bound stays here (the aggregator must not learn anything of one update)."""

    def apply(self, out: Outgoing, rnd: RoundInput) -> Outgoing:
        if DP_CLIP_NORM not in rnd.config:
            raise SecurityError(
                "the run asks for differential privacy but this train message has no clipping "
                "bound: refusing to send an unclipped update"
            )
        assert out.delta is not None
        if self.masked and DP_NOISE_STD not in rnd.config:
            raise SecurityError(
                "the run asks for differential privacy under secure aggregation but this train "
                "message has no noise share: refusing to send an update without noise"
            )
        clipped = clip_update(out.delta, float(rnd.config[DP_CLIP_NORM]))  # type: ignore[arg-type]
        delta = clipped.delta
        if DP_NOISE_STD in rnd.config:
            delta = add_gaussian_noise(delta, float(rnd.config[DP_NOISE_STD]))  # type: ignore[arg-type]
        if self.masked:
            return out.but(delta=delta, weight=1)
        received = rnd.received
        state = {key: (received[key] + delta[key]).astype(received[key].dtype) for key in delta}
        if rnd.cfg.privacy.clipping != "adaptive":  # the bit is a statistic: only when needed
            return out.but(state=state, delta=delta, weight=1)
        return out.but(state=state, delta=delta, weight=1,
                       metrics={**out.metrics, DP_UNCLIPPED: 0.0 if clipped.clipped else 1.0})

    def __repr__(self) -> str:
        return f"Privacy(masked={self.masked})"

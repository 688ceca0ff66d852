"""Client-level differential privacy for federated adapter updates (DP-FedAvg).

What is guaranteed: the unit of privacy is one institution. Each round an institution's whole
contribution, its adapter delta over every tensor together, is clipped to L2 norm C (fixed, or
adaptive after Andrew et al. 2021); Gaussian noise with std sigma * C is added to the sum of the
clipped deltas (McMahan et al. 2018). So whether any one institution took part, with all its
data, changes the distribution of each released global adapter only by a bounded amount, and
the (epsilon, delta) over the whole run comes from an RDP accountant for the Poisson-subsampled
Gaussian mechanism, the sampling rate being the fraction of institutions per round. Flower
samples a fixed number of institutions rather than each one independently, so with sampling
below 1 the epsilon is the customary approximation, not a proof; with every institution in every
round it is exact. Every record of an institution is part of its contribution, so the same
(epsilon, delta) holds for single records too.

Under secure aggregation the server sees only the sum, so it cannot add noise after summing.
Each institution instead adds N(0, sigma^2 C^2 / m) to its own clipped delta before masking,
where m is the participants minus the dropouts secure aggregation tolerates; any sum of at least
m shares then carries at least the central noise. Two conditions are the integrator's to keep:
the sum must be unweighted (weighting by example counts would scale the sensitivity), and
secure aggregation's clip range must be wide enough that the noisy values are not clipped,
since clipping each share would change the noise of the sum.
"""

from fedpeft.common.privacy.accountant import PrivacyAccountant, epsilon_for
from fedpeft.common.privacy.clipping import (
    AdaptiveClipping,
    ClippedUpdate,
    clip_update,
    update_norm,
)
from fedpeft.common.privacy.noise import (
    add_gaussian_noise,
    central_noise_std,
    distributed_noise_std,
    noise_rng,
)
from fedpeft.common.privacy.validation import UpdateRefused, validate_update

__all__ = [
    "AdaptiveClipping",
    "ClippedUpdate",
    "PrivacyAccountant",
    "UpdateRefused",
    "add_gaussian_noise",
    "central_noise_std",
    "clip_update",
    "distributed_noise_std",
    "epsilon_for",
    "noise_rng",
    "update_norm",
    "validate_update",
]

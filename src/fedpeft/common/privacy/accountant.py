"""Privacy spent so far: an RDP accountant over rounds of the subsampled Gaussian mechanism.

The arithmetic is Google's `dp-accounting` (its RDP accountant): Renyi DP of the
Poisson-subsampled Gaussian mechanism (Mironov, Talwar and Zhang 2019), composed by adding the
RDP curves of the rounds, and converted to (epsilon, delta) with the improved conversion of
Canonne, Kamath and Steinke (2020) / Asoodeh et al. (2020), optimised over the library's
default orders. RDP curves add up, so each round costs a vector addition; the curve of one
round depends only on (noise multiplier, sampling rate) and is computed once per pair.

A noise multiplier of 0 means no noise: every round with a non-zero sampling rate makes
epsilon infinite, and the accountant says so rather than inventing a number.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

import dp_accounting
import numpy as np
from dp_accounting.rdp import RdpAccountant, compute_epsilon

logger = logging.getLogger(__name__)

_ORDERS = np.asarray(RdpAccountant().orders, dtype=np.float64)


class _DropNonConvergence(logging.Filter):
    """Drops dp-accounting's per-order "failed to converge" warnings.

    With the large sampling rates of federations (often 0.2 to 1) the series for fractional
    orders near 1 does not converge; the library then counts that order as infinite RDP, which
    can only raise epsilon, never lower it (and orders that close to 1 rarely give the
    minimum). Logged once, at debug level, by `_round_rdp` instead of once per order.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in record.getMessage()


@contextlib.contextmanager
def _quiet_library() -> Iterator[None]:
    library_logger = logging.getLogger("absl")
    noise_filter = _DropNonConvergence()
    library_logger.addFilter(noise_filter)
    try:
        yield
    finally:
        library_logger.removeFilter(noise_filter)


@functools.lru_cache(maxsize=64)
def _round_rdp(noise_multiplier: float, sampling_rate: float) -> np.ndarray:
    """RDP at every order of one round (read-only: the cache hands out the same array)."""
    accountant = RdpAccountant(orders=_ORDERS)
    event = dp_accounting.PoissonSampledDpEvent(
        sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    with _quiet_library():
        accountant.compose(event)
    rdp = accountant.rdp
    if noise_multiplier > 0 and sampling_rate > 0 and np.isinf(rdp).any():
        logger.debug("RDP accountant: %d of %d orders excluded for sigma=%g, q=%g",
                     int(np.isinf(rdp).sum()), rdp.size, noise_multiplier, sampling_rate)
    rdp.setflags(write=False)
    return rdp


def _check_sampling_rate(sampling_rate: float) -> None:
    if not 0 <= sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in [0, 1], got {sampling_rate}")


def _epsilon(rdp: np.ndarray, delta: float) -> float:
    return float(compute_epsilon(_ORDERS, rdp, delta)[0])


class PrivacyAccountant:
    """Cumulative (epsilon, delta) of a federation, one `step` per aggregated round.

    The neighbouring relation is adding or removing one institution's whole contribution (what
    client-level clipping bounds). `sampling_rate` is the fraction of institutions sampled in
    the round. The analysis assumes Poisson sampling (each institution independently with that
    probability); Flower samples a fixed number, for which the result is the usual
    approximation, not a proof. With every institution in every round (rate 1) there is no
    sampling at all and the bound is exact RDP of the Gaussian mechanism.
    """

    def __init__(self, noise_multiplier: float, delta: float) -> None:
        if noise_multiplier < 0:
            raise ValueError(f"noise_multiplier must be non-negative, got {noise_multiplier}")
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        self.noise_multiplier = noise_multiplier
        self.delta = delta
        self.rounds = 0
        self._rdp = np.zeros_like(_ORDERS)

    def state(self) -> tuple[int, np.ndarray]:
        """(rounds charged, RDP curve): what a checkpoint keeps so a resumed run goes on
        spending from where it stopped instead of starting again at epsilon 0."""
        return self.rounds, self._rdp.copy()

    def restore(self, rounds: int, rdp: np.ndarray) -> None:
        """Continue from a `state()` taken by an accountant with the same settings."""
        if rounds < 0 or rdp.shape != self._rdp.shape:
            raise ValueError(f"accountant state of {rounds} rounds and shape {rdp.shape} does "
                             f"not fit {self._rdp.shape[0]} RDP orders")
        self.rounds = int(rounds)
        self._rdp = np.asarray(rdp, dtype=np.float64).copy()

    def _rdp_after(self, rounds: int, sampling_rate: float) -> np.ndarray:
        # Zero rounds must not touch the curve: 0 * inf (no noise) would be NaN.
        if rounds == 0:
            return self._rdp
        return self._rdp + rounds * _round_rdp(self.noise_multiplier, sampling_rate)

    @property
    def epsilon(self) -> float:
        """Epsilon at `delta` for the rounds stepped so far (0 before the first)."""
        return _epsilon(self._rdp, self.delta)

    def step(self, sampling_rate: float) -> float:
        """Charge one round at `sampling_rate` and return the cumulative epsilon."""
        _check_sampling_rate(sampling_rate)
        self._rdp = self._rdp_after(1, sampling_rate)
        self.rounds += 1
        return self.epsilon

    def epsilon_after_next(self, sampling_rate: float) -> float:
        """Epsilon one more round would lead to, without charging it.

        The server asks before a round, so it can stop while the budget still holds instead of
        finding out after the release that it was exceeded.
        """
        _check_sampling_rate(sampling_rate)
        return _epsilon(self._rdp_after(1, sampling_rate), self.delta)

    def rounds_within(self, target_epsilon: float, sampling_rate: float, max_rounds: int) -> int:
        """How many more rounds at `sampling_rate` keep epsilon <= target (at most max_rounds).

        Epsilon grows monotonically with the rounds (the RDP curve only grows), so a binary
        search over the count is exact.
        """
        _check_sampling_rate(sampling_rate)
        if max_rounds < 0:
            raise ValueError(f"max_rounds must be non-negative, got {max_rounds}")
        low, high = 0, max_rounds
        while low < high:
            middle = (low + high + 1) // 2
            if _epsilon(self._rdp_after(middle, sampling_rate), self.delta) <= target_epsilon:
                low = middle
            else:
                high = middle - 1
        return low


def rdp_of(noise_multiplier: float, sampling_rate: float, steps: int) -> np.ndarray:
    """RDP curve of `steps` steps of the subsampled Gaussian: what an account outside one run
    (an institution's lifetime account) adds up, so its epsilon is the accountant's own."""
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    _check_sampling_rate(sampling_rate)
    return PrivacyAccountant(noise_multiplier, 0.5)._rdp_after(steps, sampling_rate)


def epsilon_of_rdp(rdp: np.ndarray, delta: float) -> float:
    """Epsilon at `delta` of an RDP curve over the accountant's orders (`rdp_of` sums)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return _epsilon(rdp, delta)


def epsilon_for(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> float:
    """Epsilon after `rounds` rounds at a constant rate: for planning a run before it starts."""
    if rounds < 0:
        raise ValueError(f"rounds must be non-negative, got {rounds}")
    _check_sampling_rate(sampling_rate)
    accountant = PrivacyAccountant(noise_multiplier, delta)
    return _epsilon(accountant._rdp_after(rounds, sampling_rate), delta)

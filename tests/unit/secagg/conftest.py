"""Shared by the secagg tests: a uniformity check (PRG and masked-vector tests) and one
round's server and clients in one process (`Federation`; test modules import it with
`from tests.unit.secagg.conftest import ...`, the name pytest's importlib mode gives this file)."""

from __future__ import annotations

import random
from collections.abc import Callable, Collection

import numpy as np
import pytest

from fedpeft.common.config.secure_aggregation import SecureAggregationConfig
from fedpeft.common.crypto import generate_signing_key
from fedpeft.common.crypto.secagg import (
    AggregateResult,
    Identity,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    quantization_bound,
)

CHI2_CRITICAL_255_DOF = 330.52
"""The chi-square statistic with 255 degrees of freedom exceeded with probability 1e-3."""


def _assert_bytes_uniform(values: np.ndarray, ring_bits: int) -> None:
    """Both the low byte and the top byte of ring elements look uniform (p > 1e-3)."""
    low, top = values & np.uint64(0xFF), values >> np.uint64(ring_bits - 8)
    for name, byte in (("low", low), ("top", top)):
        counts = np.bincount(byte.astype(np.int64), minlength=256)
        assert counts.size == 256, f"{name} byte has values above 255"
        expected = values.size / 256
        statistic = float(((counts - expected) ** 2 / expected).sum())
        assert statistic < CHI2_CRITICAL_255_DOF, f"{name} byte: chi2 = {statistic:.1f}"


@pytest.fixture
def assert_bytes_uniform() -> Callable[[np.ndarray, int], None]:
    return _assert_bytes_uniform


# -- one round in one process ----------------------------------------------------------------
CONTEXT = b"test-federation|run-1|round-3"
GRAPH_SEED = bytes(range(32))
FLOAT_SLACK = 1e-12
_NONE: frozenset[int] = frozenset()


def make_params(count: int, max_dropouts: int, *, ring_bits: int = 64, bits: int = 24,
                threshold: int | None = None) -> SecAggParams:
    config = SecureAggregationConfig.model_validate({"enabled": True, "max_dropouts": max_dropouts})
    return SecAggParams(ring_bits, bits, config.clip_range,
                        config.threshold(count) if threshold is None else threshold, CONTEXT,
                        count, config.degree(count), max_dropouts, GRAPH_SEED)


def identities(count: int) -> dict[int, Identity]:
    """One enrolled institution per protocol id 1..count, each knowing all the others."""
    keys = {node: generate_signing_key() for node in range(1, count + 1)}
    roster = {f"inst-{node}": key.public_key() for node, key in keys.items()}
    return {node: Identity(f"inst-{node}", key, roster) for node, key in keys.items()}


class Federation:
    """One round's server and clients (ids 1..count, each with its signing identity unless
    `signed` is False), with seeded client randomness (reproducible vectors).

    With `persist`, every client is rebuilt from `to_bytes()` before each of its steps, as the
    ClientApp does between Flower messages.
    """

    def __init__(
        self,
        count: int,
        max_dropouts: int,
        *,
        size: int = 100,
        ring_bits: int = 64,
        bits: int = 24,
        max_weight: int = 500,
        persist: bool = False,
        signed: bool = True,
    ) -> None:
        self.ids = list(range(1, count + 1))
        self.params = make_params(count, max_dropouts, ring_bits=ring_bits, bits=bits)
        self.server = SecAggServer(self.params)
        self._rngs = {node: random.Random(node) for node in self.ids}
        self.identities: dict[int, Identity | None] = (
            dict(identities(count)) if signed else dict.fromkeys(self.ids))
        self.clients = {node: SecAggClient(node, self.params, self.identities[node],
                                           randbytes=self._rngs[node].randbytes)
                        for node in self.ids}
        self._persist = persist
        values = np.random.default_rng(count + size)
        self.values = {node: values.uniform(-3, 3, size) for node in self.ids}
        self.weights = {node: int(values.integers(1, max_weight)) for node in self.ids}
        self.vectors: dict[int, np.ndarray] = {}

    def client(self, node: int) -> SecAggClient:
        if self._persist:
            self.clients[node] = SecAggClient.from_bytes(
                self.clients[node].to_bytes(), self.identities[node],
                randbytes=self._rngs[node].randbytes
            )
        return self.clients[node]

    def exchange(
        self, missing_keys: Collection[int] = _NONE, silent_shares: Collection[int] = _NONE
    ) -> list[int]:
        """Stages 1 and 2; returns the nodes that completed stage 2."""
        advertised = {n: self.client(n).advertise() for n in self.ids if n not in missing_keys}
        forwarded = self.server.receive_keys(advertised)
        sent = {n: self.client(n).share_keys(keys) for n, keys in forwarded.items()
                if n not in silent_shares}
        inboxes = self.server.route_shares(sent)
        for node, ciphertexts in inboxes.items():
            self.client(node).receive_shares(ciphertexts)
        return sorted(inboxes)

    def mask(self, nodes: Collection[int]) -> tuple[list[int], list[int]]:
        self.vectors = {n: self.client(n).mask(self.values[n], self.weights[n]).vector
                        for n in nodes}
        return self.server.receive_masked(self.vectors)

    def confirm(self, survivors: list[int], silent: Collection[int] = _NONE
                ) -> dict[int, dict[int, bytes]]:
        """The consistency check: each answering survivor signs the list; returns what the
        server forwards to each."""
        signatures = {n: self.client(n).confirm_survivors(survivors) for n in survivors
                      if n not in silent}
        return self.server.receive_confirmations(signatures)

    def unmask(self, survivors: list[int], silent: Collection[int] = _NONE) -> AggregateResult:
        forwarded = self.confirm(survivors, silent)
        shares = {n: self.client(n).unmask(signatures) for n, signatures in forwarded.items()}
        return self.server.unmask(shares)

    def run(
        self,
        *,
        missing_keys: Collection[int] = _NONE,
        no_vector: Collection[int] = _NONE,
        silent_unmask: Collection[int] = _NONE,
    ) -> AggregateResult:
        sharers = self.exchange(missing_keys)
        survivors, _ = self.mask([n for n in sharers if n not in no_vector])
        return self.unmask(survivors, silent_unmask)

    def masked_vectors(self) -> dict[int, np.ndarray]:
        """Stages 1 and 2 with everyone, then every client's masked vector (not yet sent)."""
        self.exchange()
        return {n: self.clients[n].mask(self.values[n], self.weights[n]).vector
                for n in self.ids}

    def unmask_with_weight_shifted(self, shift: int) -> AggregateResult:
        """A survivor adds `shift` (mod 2**64) to the weight slot of its masked vector: the
        masks still cancel, so the unmasked total weight is off by `shift`."""
        vectors = self.masked_vectors()
        node = self.ids[0]
        forged = vectors[node].copy()
        forged[-1:] += np.uint64(shift % (1 << 64))
        survivors, _ = self.server.receive_masked({**vectors, node: forged})
        return self.unmask(survivors)

    def expected_mean(self, nodes: Collection[int]) -> np.ndarray:
        return np.average(
            [self.values[n] for n in nodes], axis=0, weights=[self.weights[n] for n in nodes]
        )

    def assert_mean_of(self, result: AggregateResult, nodes: Collection[int]) -> None:
        assert result.survivors == tuple(sorted(nodes))
        assert result.total_weight == sum(self.weights[n] for n in nodes)
        assert result.mean.dtype == np.float64
        error = np.abs(result.mean - self.expected_mean(nodes)).max()
        bound = quantization_bound(self.params.clip_range, self.params.quantization_bits)
        assert error <= bound + FLOAT_SLACK

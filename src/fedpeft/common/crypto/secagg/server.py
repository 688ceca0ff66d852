"""The aggregator's side of one SecAgg+ round: route, sum, unmask only the sum.

The server sees public keys, ciphertexts it cannot open, and masked vectors. It learns the
sum of the surviving institutions' weighted updates by removing, from the sum, the masks
that do not cancel: each survivor's self mask (rebuilt from shares of its seed) and the
pairwise masks that survivors added for neighbours that dropped out before sending a vector
(rebuilt from shares of the dropped node's mask private key). It never asks for both secrets
of one node.

Which stage sets what:

- U1 (`receive_keys`): nodes that advertised keys. Others are out of the round.
- U2 (`route_shares`): nodes that sent share bundles; they and only they mask with each other.
- U3 (`receive_masked`): nodes of U2 that sent a masked vector: the survivors, whose updates
  are in the result even if they vanish before stage 4. U2 - U3 are the dropped nodes.
- U4 (`receive_confirmations`): survivors that signed the survivor list (the consistency
  check); each is sent its share holders' signatures so it can check they were told the same.
- stage 4 (`unmask`): any `threshold` holders per secret suffice; the rest may be gone.

At every stage the server aborts the round (RoundAborted) as soon as more than max_dropouts of
the invited institutions are missing in total (the distributed DP noise is sized for that
many), or some secret it will need has fewer than `threshold` live holders, rather than
waiting for the last stage to fail. The honest clients refuse the same conditions themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedpeft.common.crypto.secagg import shamir
from fedpeft.common.crypto.secagg.agreement import (
    PRIVATE_KEY_SIZE,
    load_private_key,
    mask_seed,
    public_key_bytes,
)
from fedpeft.common.crypto.secagg.authentication import SignedKeys
from fedpeft.common.crypto.secagg.encoding import decode_mean
from fedpeft.common.crypto.secagg.graph import neighbour_graph
from fedpeft.common.crypto.secagg.params import AdvertisedKeys, SecAggParams
from fedpeft.common.crypto.secagg.prg import MASK_SEED_SIZE, MAX_RING_BITS, expand_mask
from fedpeft.common.errors import RoundAborted, SecurityError

_log = logging.getLogger(__name__)

MAX_DROPOUTS_SETTING = "secure_aggregation.max_dropouts"


class _Stage(Enum):
    KEYS = 1
    SHARES = 2
    MASKED = 3
    CONFIRM = 4
    UNMASK = 5
    DONE = 6


@dataclass(frozen=True)
class AggregateResult:
    """The round's outcome: the weighted mean of the survivors' updates (float64, as long as
    the updates), the sum of their weights, and who survived or dropped out."""

    mean: np.ndarray
    total_weight: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


class SecAggServer:
    """The aggregator's state for one round; call the stages in order, each once."""

    def __init__(self, params: SecAggParams) -> None:
        """The round's institutions are the protocol ids 1..params.participants; the public
        `params.graph_seed`, fresh per round, decides who shares with whom."""
        if not isinstance(params, SecAggParams):
            raise TypeError(f"expected SecAggParams, got {type(params).__name__}")
        self._params = params
        self._graph = neighbour_graph(range(1, params.participants + 1), params.degree,
                                      params.graph_seed)
        self._stage = _Stage.KEYS
        self._keys: dict[int, AdvertisedKeys] = {}
        self._confirmed: frozenset[int] = frozenset()
        self._sharers: frozenset[int] = frozenset()
        self._survivors: tuple[int, ...] = ()
        self._dropped: tuple[int, ...] = ()
        self._total: np.ndarray | None = None

    @property
    def graph(self) -> dict[int, tuple[int, ...]]:
        """Each node's neighbours: the only nodes it exchanges shares and masks with."""
        return {node: neighbours for node, neighbours in self._graph.items()}

    @property
    def params(self) -> SecAggParams:
        return self._params

    def receive_keys(
        self, keys: Mapping[int, SignedKeys]
    ) -> dict[int, dict[int, SignedKeys]]:
        """Stage 1 -> 2: for each node that advertised, its advertising neighbours' signed
        keys (the neighbours verify the signatures; the server has no roster to)."""
        self._require_stage(_Stage.KEYS, "receive_keys")
        owners: dict[bytes, int] = {}
        for node, advertised in sorted(keys.items()):
            self._require_member(node, self._graph, "advertised keys")
            if not isinstance(advertised, SignedKeys):
                raise TypeError(f"expected SignedKeys, got {type(advertised).__name__}")
            for public in (advertised.keys.cipher_public, advertised.keys.mask_public):
                if public in owners:
                    raise SecurityError(
                        f"node {node} advertised a public key already used by node "
                        f"{owners[public]}"
                    )
                owners[public] = node
        self._keys = {node: advertised.keys for node, advertised in keys.items()}
        self._check_total(self._keys, "after the key exchange")
        self._check_holders(self._keys.keys(), self._keys.keys(), "after the key exchange")
        self._stage = _Stage.SHARES
        return {
            node: {peer: keys[peer] for peer in self._graph[node] if peer in keys}
            for node in sorted(keys)
        }

    def route_shares(self, sent: Mapping[int, Mapping[int, bytes]]) -> dict[int, dict[int, bytes]]:
        """Stage 2 -> 3: turn each sender's bundles (source -> {destination: ciphertext}) into
        each destination's inbox (destination -> {source: ciphertext}).

        The senders form U2. An honest sender addresses exactly its neighbours that advertised
        keys, so any other set of destinations raises SecurityError naming the sender. Bundles
        for nodes that did not reply in stage 2 are not delivered: those nodes are out.
        """
        self._require_stage(_Stage.SHARES, "route_shares")
        for source, bundles in sent.items():
            self._require_member(source, self._keys, "share bundles")
            expected = {peer for peer in self._graph[source] if peer in self._keys}
            if set(bundles) != expected:
                raise SecurityError(
                    f"node {source} addressed share bundles to nodes {sorted(bundles, key=str)}, "
                    f"not to its neighbours {sorted(expected)}"
                )
            for ciphertext in bundles.values():
                if not isinstance(ciphertext, bytes):
                    raise SecurityError(f"node {source} sent a share bundle that is not bytes")
        self._sharers = frozenset(sent)
        self._check_total(self._sharers, "after the share exchange")
        self._check_holders(self._sharers, self._sharers, "after the share exchange")
        self._stage = _Stage.MASKED
        inboxes: dict[int, dict[int, bytes]] = {node: {} for node in sorted(self._sharers)}
        for source, bundles in sorted(sent.items()):
            for destination, ciphertext in sorted(bundles.items()):
                if destination in self._sharers:
                    inboxes[destination][source] = ciphertext
        return inboxes

    def receive_masked(self, vectors: Mapping[int, np.ndarray]) -> tuple[list[int], list[int]]:
        """Stage 3 -> 4: sum the masked vectors; return (survivors U3, dropped U2 - U3).

        The vectors are summed at once and not kept, so memory stays at one vector.
        """
        self._require_stage(_Stage.MASKED, "receive_masked")
        length = None
        ring_bits = self._params.ring_bits
        for node, vector in sorted(vectors.items()):
            self._require_member(node, self._sharers, "a masked vector")
            if not isinstance(vector, np.ndarray) or vector.dtype != np.uint64 or vector.ndim != 1:
                raise SecurityError(f"node {node} sent a masked vector that is not 1-D uint64")
            length = vector.size if length is None else length
            if vector.size != length or length < 2:
                raise SecurityError(
                    f"node {node} sent a masked vector of length {vector.size}, expected "
                    f"{length if length >= 2 else 'at least 2'}"
                )
            if ring_bits < MAX_RING_BITS and int(vector.max()) >> ring_bits:
                raise SecurityError(f"node {node} sent values outside the 2**{ring_bits} ring")
        survivors = frozenset(vectors)
        self._survivors = tuple(sorted(survivors))
        self._dropped = tuple(sorted(self._sharers - survivors))
        self._check_total(survivors, "after the masked inputs")
        self._check_holders(self._sharers, survivors, "after the masked inputs")
        total = np.zeros(length or 0, dtype=np.uint64)
        for node in self._survivors:
            np.add(total, vectors[node], out=total)
        self._total = total
        self._stage = _Stage.CONFIRM
        _log.info(
            "secure aggregation: %d survivors, %d dropped out after the share exchange %s",
            len(self._survivors), len(self._dropped), list(self._dropped),
        )
        return list(self._survivors), list(self._dropped)

    @property
    def survivors(self) -> tuple[int, ...]:
        """U3: the list every survivor is sent, and signs, in the consistency check."""
        return self._survivors

    def receive_confirmations(
        self, signatures: Mapping[int, bytes]
    ) -> dict[int, dict[int, bytes]]:
        """Consistency check: `signatures` (survivor -> its signature over U3) -> for each
        signer, its share holders' signatures, which it checks before releasing anything."""
        self._require_stage(_Stage.CONFIRM, "receive_confirmations")
        for node, signature in signatures.items():
            self._require_member(node, self._survivors, "a signed survivor list")
            if not isinstance(signature, bytes):
                raise SecurityError(f"node {node} sent a survivor signature that is not bytes")
        self._confirmed = frozenset(signatures)
        self._check_holders(self._sharers, self._confirmed, "after the consistency check")
        self._stage = _Stage.UNMASK
        return {
            node: {peer: signatures[peer] for peer in self._graph[node] if peer in signatures}
            for node in sorted(self._confirmed)
        }

    def unmask_request(self, node_id: int) -> tuple[list[int], list[int]]:
        """Which shares survivor `node_id` releases in stage 4: the self-mask seeds of the
        survivors it exchanged shares with (and its own), and the mask keys of the ones that
        dropped, as it computes them itself from the signed survivor list."""
        if self._stage is not _Stage.UNMASK:
            raise RuntimeError("unmask_request is only valid after receive_confirmations")
        self._require_member(node_id, self._confirmed, "an unmask request")
        partners = {peer for peer in self._graph[node_id] if peer in self._sharers}
        alive = sorted(partners.intersection(self._survivors) | {node_id})
        return alive, sorted(partners.intersection(self._dropped))

    def unmask(self, shares: Mapping[int, Mapping[int, bytes]]) -> AggregateResult:
        """Stage 4: rebuild the secrets from the survivors' shares and remove the masks.

        `shares` maps each responding survivor to what its `SecAggClient.unmask` returned.
        """
        self._require_stage(_Stage.UNMASK, "unmask")
        seed_shares: dict[int, dict[int, bytes]] = {node: {} for node in self._survivors}
        key_shares: dict[int, dict[int, bytes]] = {node: {} for node in self._dropped}
        for responder, released in sorted(shares.items()):
            alive, gone = self.unmask_request(responder)
            for owner, share in released.items():
                if owner in alive:
                    seed_shares[owner][responder] = share
                elif owner in gone:
                    key_shares[owner][responder] = share
                else:
                    raise SecurityError(f"node {responder} released a share it was not asked for")
        seeds = {node: self._rebuild_seed(node, held) for node, held in seed_shares.items()}
        mask_keys = {node: self._rebuild_mask_key(node, held) for node, held in key_shares.items()}
        self._stage = _Stage.DONE
        return self._finish(seeds, mask_keys)

    def _finish(
        self, seeds: dict[int, bytes], mask_keys: dict[int, X25519PrivateKey]
    ) -> AggregateResult:
        total = self._total
        if total is None:
            raise RuntimeError("no masked vectors were summed")
        self._total = None
        ring_bits, context = self._params.ring_bits, self._params.context
        for seed in seeds.values():
            np.subtract(total, expand_mask(seed, total.size, ring_bits), out=total)
        survivors = set(self._survivors)
        for dropped, key in mask_keys.items():
            for peer in self._graph[dropped]:
                if peer not in survivors:
                    continue
                seed = mask_seed(key, dropped, self._keys[peer].mask_public, peer, context)
                pairwise = expand_mask(seed, total.size, ring_bits)
                # The survivor added the mask if its id is the smaller one, else subtracted it.
                if peer < dropped:
                    np.subtract(total, pairwise, out=total)
                else:
                    np.add(total, pairwise, out=total)
        if ring_bits < MAX_RING_BITS:
            np.bitwise_and(total, np.uint64((1 << ring_bits) - 1), out=total)
        total_weight = int(total[-1])
        self._check_total_weight(total_weight)
        mean = decode_mean(
            total[:-1], total_weight, self._params.clip_range, self._params.quantization_bits
        )
        return AggregateResult(mean, total_weight, self._survivors, self._dropped)

    def _check_total_weight(self, total_weight: int) -> None:
        if total_weight < len(self._survivors):
            raise SecurityError(
                f"the unmasked total weight {total_weight} is below one per survivor: "
                "a survivor sent an inconsistent vector or share"
            )
        bits, ring_bits = self._params.quantization_bits, self._params.ring_bits
        if total_weight * ((1 << bits) - 1) >= 1 << ring_bits:
            raise RoundAborted(
                f"secure aggregation: the total weight {total_weight} times 2**{bits} levels "
                f"overflows the 2**{ring_bits} ring; raise secure_aggregation.ring_bits or "
                "lower secure_aggregation.quantization_bits"
            )

    def _rebuild(self, node: int, held: dict[int, bytes], what: str) -> bytes:
        threshold = self._params.threshold
        if len(held) < threshold:
            raise RoundAborted(_too_few(node, what, len(held), threshold, "from the survivors"))
        return shamir.combine(held, threshold)

    def _rebuild_seed(self, node: int, held: dict[int, bytes]) -> bytes:
        seed = self._rebuild(node, held, "self-mask seed")
        if len(seed) != MASK_SEED_SIZE:
            raise SecurityError(f"the rebuilt self-mask seed of node {node} is malformed")
        return seed

    def _rebuild_mask_key(self, node: int, held: dict[int, bytes]) -> X25519PrivateKey:
        secret = self._rebuild(node, held, "mask key")
        if len(secret) != PRIVATE_KEY_SIZE:
            raise SecurityError(f"the rebuilt mask key of node {node} is malformed")
        key = load_private_key(secret)
        if public_key_bytes(key) != self._keys[node].mask_public:
            raise SecurityError(
                f"the rebuilt mask key of node {node} does not match its advertised public key"
            )
        return key

    def _check_total(self, alive: Collection[int], when: str) -> None:
        """RoundAborted when more than max_dropouts invited institutions are missing."""
        params = self._params
        missing = params.participants - len(alive)
        if missing > params.max_dropouts:
            raise RoundAborted(
                f"secure aggregation: {missing} of {params.participants} institutions dropped "
                f"out {when}; more than {MAX_DROPOUTS_SETTING}={params.max_dropouts} allows"
            )

    def _check_holders(self, owners: Collection[int], alive: Collection[int], when: str) -> None:
        """RoundAborted unless every node of `owners` keeps `threshold` live share holders
        (its neighbours in `alive`, and itself if alive)."""
        if not owners:
            raise RoundAborted(f"secure aggregation: no institution remains {when}")
        threshold = self._params.threshold
        for owner in sorted(owners):
            holders = sum(peer in alive for peer in self._graph[owner]) + (owner in alive)
            if holders < threshold:
                if self._stage not in (_Stage.MASKED, _Stage.CONFIRM):
                    what = "secrets"
                else:
                    what = "self-mask seed" if owner in self._survivors else "mask key"
                raise RoundAborted(_too_few(owner, what, holders, threshold, when))

    def _require_stage(self, stage: _Stage, step: str) -> None:
        if self._stage is not stage:
            raise RuntimeError(
                f"{step} called out of order (the round is at stage {self._stage.name})"
            )

    @staticmethod
    def _require_member(node: object, members: Collection[int], what: str) -> None:
        if node not in members:
            raise SecurityError(f"node {node!r} sent {what} but is not expected to at this stage")


def _too_few(node: int, what: str, count: int, threshold: int, when: str) -> str:
    return (
        f"secure aggregation: cannot rebuild the {what} of node {node} {when}: {count} of "
        f"{threshold} shares available; more institutions dropped out than "
        f"{MAX_DROPOUTS_SETTING} allows"
    )

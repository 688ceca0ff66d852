"""One institution's side of one SecAgg+ round.

The ClientApp creates a `SecAggClient` when the round's first secure-aggregation message
arrives and calls one method per server message, in order: `advertise`, `share_keys`,
`receive_shares`, `mask`, `confirm_survivors`, `unmask`. Each may be called once; a request
out of order is the server's mistake or an attack and raises SecurityError. Asking twice for a
masked vector would be the worst of these: the difference of two vectors masked with the same
seeds is the difference of the plaintexts.

Against a malicious server (Bell et al. 2020): with an `Identity`, the advertised keys are
signed and every neighbour's are verified against this institution's own roster before any
share leaves (`authentication`); the neighbours must be this node's neighbours in the graph
the public graph seed fixes, with no more missing than max_dropouts; the survivor list is
signed once, checked against max_dropouts in total, and shares are released only after
`threshold` share holders signed the same list. Without an identity (a run that exchanges
unsealed updates, where the institution consented to plaintext) none of that can be checked:
the protocol then only holds against an honest-but-curious server.

Between messages the ClientApp keeps `to_bytes()` in Flower's `Context.state`, which never
leaves the institution's node. That state holds private material: the two private keys and
the self-mask seed until the vector is masked, and the shares of the neighbours' secrets
until they are released. Secrets are dropped from the state as soon as they are no longer
needed. The identity (its signing key) is never part of it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedpeft.common.crypto.seal import RandBytes, _random
from fedpeft.common.crypto.secagg import shamir
from fedpeft.common.crypto.secagg.agreement import (
    decrypt_shares,
    encrypt_shares,
    generate_private_key,
    load_private_key,
    mask_seed,
    private_key_bytes,
    public_key_bytes,
    share_key,
)
from fedpeft.common.crypto.secagg.authentication import (
    Identity,
    SignedKeys,
    check_roster_names,
    sign_keys,
    sign_survivors,
    verify_keys,
    verify_survivors,
)
from fedpeft.common.crypto.secagg.encoding import encode
from fedpeft.common.crypto.secagg.graph import neighbour_graph
from fedpeft.common.crypto.secagg.nodes import is_node_id
from fedpeft.common.crypto.secagg.params import AdvertisedKeys, SecAggParams
from fedpeft.common.crypto.secagg.prg import MASK_SEED_SIZE, MAX_RING_BITS, expand_mask
from fedpeft.common.errors import SecurityError
from fedpeft.common.ring import max_round_weight

_log = logging.getLogger(__name__)

STATE_VERSION = 2
_BUNDLE_SIZE = 2 * shamir.SHARE_SIZE
"""A share bundle: the share of the self-mask seed, then the share of the mask private key."""


class _Stage(str, Enum):
    NEW = "new"
    ADVERTISED = "advertised"
    SHARED = "shared"
    RECEIVED = "received"
    MASKED = "masked"
    CONFIRMED = "confirmed"
    DONE = "done"


# Which secrets the state holds at each stage; `from_bytes` refuses any other combination.
_HAS_KEYS = {_Stage.ADVERTISED, _Stage.SHARED, _Stage.RECEIVED}
_HAS_SEED = {_Stage.SHARED, _Stage.RECEIVED}
_HAS_SHARES = {_Stage.SHARED, _Stage.RECEIVED, _Stage.MASKED, _Stage.CONFIRMED}


@dataclass(frozen=True)
class MaskedInput:
    """What an institution sends in stage 3.

    `vector` (uint64, one longer than the update: the weight is last) is uniformly random
    to anyone without the seeds. `clipped` counts update values outside the clip range; it
    is not masked, so sending it to the server reveals it.
    """

    vector: np.ndarray
    clipped: int


class SecAggClient:
    """The state and steps of one institution (`node_id`) in one round."""

    def __init__(
        self, node_id: int, params: SecAggParams, identity: Identity | None, *,
        randbytes: RandBytes = os.urandom,
    ) -> None:
        """`identity` signs and verifies (None: unauthenticated, see the module docstring);
        `randbytes` supplies the private keys, the self-mask seed and the nonces; tests pass a
        seeded source to reproduce a round."""
        if not isinstance(params, SecAggParams):
            raise TypeError(f"expected SecAggParams, got {type(params).__name__}")
        if not is_node_id(node_id) or node_id > params.participants:
            raise SecurityError(
                f"protocol id {node_id!r} is not one of the round's {params.participants} "
                "participants"
            )
        self._node_id = node_id
        self._params = params
        self._identity = identity
        self._randbytes = randbytes
        self._stage = _Stage.NEW
        self._cipher_key: bytes | None = None
        self._mask_key: bytes | None = None
        self._self_seed: bytes | None = None
        self._neighbours: dict[int, AdvertisedKeys] = {}
        # Shares this node holds, by owner (itself included): (seed share, mask-key share).
        self._held: dict[int, tuple[bytes, bytes]] = {}
        # Neighbours' enrolled signing keys (raw), verified at share_keys.
        self._signers: dict[int, bytes] = {}
        self._survivors: tuple[int, ...] = ()

    @property
    def node_id(self) -> int:
        return self._node_id

    @property
    def params(self) -> SecAggParams:
        return self._params

    def advertise(self) -> SignedKeys:
        """Stage 1: fresh key pairs for this round; the public halves, signed, go to the
        server (unsigned, with an empty name, without an identity)."""
        self._require_stage(_Stage.NEW, "advertise")
        cipher_key = generate_private_key(self._randbytes)
        mask_key = generate_private_key(self._randbytes)
        self._cipher_key = private_key_bytes(cipher_key)
        self._mask_key = private_key_bytes(mask_key)
        self._stage = _Stage.ADVERTISED
        keys = AdvertisedKeys(public_key_bytes(cipher_key), public_key_bytes(mask_key))
        if self._identity is None:
            return SignedKeys(keys, "", b"")
        return sign_keys(self._identity, self._params, self._node_id, keys)

    def share_keys(self, neighbours: Mapping[int, SignedKeys]) -> dict[int, bytes]:
        """Stage 2: check the neighbours (graph, count, signatures), then split the self-mask
        seed and the mask private key among them and this node; return each neighbour's share
        bundle, encrypted to it."""
        self._require_stage(_Stage.ADVERTISED, "share_keys")
        self._check_graph(neighbours)
        signers = self._verified_signers(neighbours)
        peers = self._checked_neighbours({node: ad.keys for node, ad in neighbours.items()})
        threshold = self._params.threshold
        if len(peers) + 1 < threshold:
            raise SecurityError(
                f"node {self._node_id} was given {len(peers)} neighbours: with itself, fewer "
                f"share holders than the threshold {threshold}"
            )
        seed = _random(self._randbytes, MASK_SEED_SIZE)
        holders = [self._node_id, *sorted(peers)]
        seed_shares = shamir.split(seed, threshold, holders)
        key_shares = shamir.split(_present(self._mask_key), threshold, holders)
        cipher_key = load_private_key(_present(self._cipher_key))
        context = self._params.context
        sent: dict[int, bytes] = {}
        for peer in holders[1:]:
            key = share_key(cipher_key, self._node_id, peers[peer].cipher_public, peer, context)
            bundle = seed_shares[peer] + key_shares[peer]
            sent[peer] = encrypt_shares(
                key, bundle, context, self._node_id, peer, randbytes=self._randbytes
            )
        self._neighbours = peers
        self._signers = signers
        self._self_seed = seed
        self._held = {self._node_id: (seed_shares[self._node_id], key_shares[self._node_id])}
        self._stage = _Stage.SHARED
        return sent

    def receive_shares(self, ciphertexts: Mapping[int, bytes]) -> None:
        """Stage 3 input: the bundles neighbours sent this node. Their senders are the
        neighbours that completed stage 2: exactly those this node masks with."""
        self._require_stage(_Stage.SHARED, "receive_shares")
        cipher_key = load_private_key(_present(self._cipher_key))
        context = self._params.context
        held = dict(self._held)
        for source, ciphertext in ciphertexts.items():
            keys = self._neighbours.get(source)
            if keys is None:
                raise SecurityError(
                    f"node {self._node_id} received shares from node {source!r}, "
                    "which is not one of its neighbours"
                )
            key = share_key(cipher_key, self._node_id, keys.cipher_public, source, context)
            bundle = decrypt_shares(key, ciphertext, context, source, self._node_id)
            if len(bundle) != _BUNDLE_SIZE:
                raise SecurityError(f"malformed share bundle from node {source}")
            held[source] = (bundle[: shamir.SHARE_SIZE], bundle[shamir.SHARE_SIZE :])
        if len(held) < self._params.threshold:
            raise SecurityError(
                f"node {self._node_id} received shares from {len(held) - 1} neighbours: with "
                f"itself, fewer holders than the threshold {self._params.threshold}"
            )
        self._held = held
        self._stage = _Stage.RECEIVED

    def mask(self, values: np.ndarray, weight: int) -> MaskedInput:
        """Stage 3: the update encoded, multiplied by `weight`, with `weight` appended, then
        masked with the self mask and one pairwise mask per neighbour that sent shares."""
        self._require_stage(_Stage.RECEIVED, "mask")
        weight = self._checked_weight(weight)
        flat = np.asarray(values)
        if flat.ndim != 1 or flat.size == 0:
            raise ValueError(f"values must be a non-empty 1-D array, got shape {flat.shape}")
        levels, clipped = encode(flat, self._params.clip_range, self._params.quantization_bits)
        ring_bits = self._params.ring_bits
        vector = np.empty(levels.size + 1, dtype=np.uint64)
        np.multiply(levels, np.uint64(weight), out=vector[:-1])
        vector[-1] = weight
        np.add(vector, expand_mask(_present(self._self_seed), vector.size, ring_bits),
               out=vector)
        mask_key = load_private_key(_present(self._mask_key))
        for peer in sorted(self._held.keys() - {self._node_id}):
            seed = mask_seed(mask_key, self._node_id, self._neighbours[peer].mask_public, peer,
                             self._params.context)
            pairwise = expand_mask(seed, vector.size, ring_bits)
            # Exactly one of the pair adds the mask and the other subtracts it: the sum cancels.
            if self._node_id < peer:
                np.add(vector, pairwise, out=vector)
            else:
                np.subtract(vector, pairwise, out=vector)
        if ring_bits < MAX_RING_BITS:
            np.bitwise_and(vector, np.uint64((1 << ring_bits) - 1), out=vector)
        self._cipher_key = self._mask_key = self._self_seed = None
        self._stage = _Stage.MASKED
        if clipped:
            _log.info("secure aggregation: %d update values clipped to +/-%g", clipped,
                      self._params.clip_range)
        return MaskedInput(vector, clipped)

    def confirm_survivors(self, survivors: Collection[int]) -> bytes:
        """Consistency check, part 1: accept the survivor list (the institutions whose masked
        vector the server says it summed) and sign it; an institution signs one list per round.

        More missing institutions than max_dropouts in total are refused: the distributed DP
        noise is sized for that many, and fewer survivors would carry less of it.
        """
        self._require_stage(_Stage.MASKED, "confirm_survivors")
        alive = self._checked_ids(survivors, "survivor list")
        if self._node_id not in alive:
            raise SecurityError(f"node {self._node_id} is missing from the survivors it is sent")
        params = self._params
        missing = params.participants - len(alive)
        if missing > params.max_dropouts:
            raise SecurityError(
                f"node {self._node_id} refuses to unmask: {missing} of {params.participants} "
                f"institutions dropped out, more than max_dropouts={params.max_dropouts}"
            )
        self._survivors = tuple(sorted(alive))
        self._stage = _Stage.CONFIRMED
        if self._identity is None:
            return b""
        return sign_survivors(self._identity, params, self._survivors)

    def unmask(self, signatures: Mapping[int, bytes]) -> dict[int, bytes]:
        """Consistency check, part 2, and stage 4: with `threshold` share holders' signatures
        over the list this node signed (`signatures` by neighbour), the share of the self-mask
        seed of each survivor it holds one of (itself included), and the share of the mask
        private key of each neighbour that exchanged shares but is not a survivor.

        Both come from the one signed list, so no owner's two secrets are ever released; the
        signatures make that list the one every honest holder was told.
        """
        self._require_stage(_Stage.CONFIRMED, "unmask")
        alive = set(self._survivors)
        holders = sorted(alive & self._held.keys())
        threshold = self._params.threshold
        if len(holders) < threshold:
            raise SecurityError(
                f"only {len(holders)} survivors exchanged shares with node {self._node_id}, "
                f"fewer than the threshold {threshold}"
            )
        if self._identity is not None:
            self._check_confirmations(holders, signatures)
        gone = sorted(self._held.keys() - alive)
        released = {owner: self._held[owner][0] for owner in holders}
        released.update({owner: self._held[owner][1] for owner in gone})
        self._held = {}
        self._survivors = ()
        self._stage = _Stage.DONE
        return released

    def _check_confirmations(self, holders: list[int], signatures: Mapping[int, bytes]) -> None:
        confirmed = 1  # this node signed its own list
        for peer in holders:
            if peer == self._node_id or peer not in signatures:
                continue
            public = Ed25519PublicKey.from_public_bytes(self._signers[peer])
            verify_survivors(public, self._params, self._survivors, signatures[peer], peer)
            confirmed += 1
        if confirmed < self._params.threshold:
            raise SecurityError(
                f"node {self._node_id} refuses to unmask: only {confirmed} of its share holders "
                f"confirmed the survivor list, fewer than the threshold {self._params.threshold}"
            )

    def to_bytes(self) -> bytes:
        """The whole state between stages, private keys included: keep it on this node."""
        state = {
            "version": STATE_VERSION,
            "node_id": self._node_id,
            "params": {
                name: value.hex() if isinstance(value, bytes) else value
                for name, value in self._params.to_record().items()
            },
            "stage": self._stage.value,
            "cipher_key": _hex(self._cipher_key),
            "mask_key": _hex(self._mask_key),
            "self_seed": _hex(self._self_seed),
            "neighbours": {str(node): keys.to_bytes().hex() for node, keys in
                           self._neighbours.items()},
            "held": {str(node): [seed.hex(), key.hex()] for node, (seed, key) in
                     self._held.items()},
            "authenticated": self._identity is not None,
            "signers": {str(node): key.hex() for node, key in self._signers.items()},
            "survivors": list(self._survivors),
        }
        return json.dumps(state, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, identity: Identity | None, *,
                   randbytes: RandBytes = os.urandom) -> SecAggClient:
        """Restore `to_bytes` output; SecurityError if it is not a consistent client state."""
        try:
            state = json.loads(data)
            if state["version"] != STATE_VERSION:
                raise ValueError("unsupported version")
            record = dict(state["params"])
            record["context"] = bytes.fromhex(record["context"])
            record["graph_seed"] = bytes.fromhex(record["graph_seed"])
            client = cls(state["node_id"], SecAggParams.from_record(record), identity,
                         randbytes=randbytes)
            client._stage = _Stage(state["stage"])
            client._cipher_key = _unhex(state["cipher_key"])
            client._mask_key = _unhex(state["mask_key"])
            client._self_seed = _unhex(state["self_seed"])
            client._neighbours = {
                int(node): AdvertisedKeys.from_bytes(bytes.fromhex(keys))
                for node, keys in state["neighbours"].items()
            }
            client._held = {
                int(node): (bytes.fromhex(seed), bytes.fromhex(key))
                for node, (seed, key) in state["held"].items()
            }
            client._signers = {int(node): bytes.fromhex(key)
                               for node, key in state["signers"].items()}
            client._survivors = tuple(int(node) for node in state["survivors"])
            authenticated = state["authenticated"]
        except (ValueError, TypeError, KeyError, AttributeError, SecurityError):
            raise SecurityError("malformed secure-aggregation client state") from None
        if authenticated is not (identity is not None):
            raise SecurityError(
                "secure aggregation: this round started "
                f"{'with' if authenticated else 'without'} the institution's identity and "
                "cannot continue otherwise"
            )
        client._check_consistent()
        return client

    def _check_consistent(self) -> None:
        has_keys = self._cipher_key is not None and self._mask_key is not None
        nodes = self._neighbours.keys() | self._held.keys()
        if (
            not all(is_node_id(node) for node in nodes)
            or not self._held.keys() <= self._neighbours.keys() | {self._node_id}
            or has_keys != (self._stage in _HAS_KEYS)
            or (self._self_seed is not None) != (self._stage in _HAS_SEED)
            or bool(self._held) != (self._stage in _HAS_SHARES)
            or bool(self._survivors) != (self._stage is _Stage.CONFIRMED)
            or (self._identity is not None and self._stage in _HAS_SHARES
                and self._signers.keys() != self._neighbours.keys())
        ):
            raise SecurityError("malformed secure-aggregation client state")

    def _require_stage(self, stage: _Stage, step: str) -> None:
        if self._stage is not stage:
            raise SecurityError(
                f"node {self._node_id} refuses {step}: expected at stage '{stage.value}', "
                f"the round is at stage '{self._stage.value}'"
            )

    def _check_graph(self, neighbours: Mapping[int, object]) -> None:
        """The neighbours must be this node's in the graph the round's public seed fixes, and
        at most max_dropouts of those may be missing: a server that picks who shares with whom,
        or leaves an institution with a handful of holders, is refused."""
        params = self._params
        graph = neighbour_graph(range(1, params.participants + 1), params.degree,
                                params.graph_seed)
        expected = set(graph[self._node_id])
        strangers = set(neighbours) - expected
        if strangers:
            raise SecurityError(
                f"node {self._node_id} was given neighbours {sorted(strangers, key=str)} that "
                "are not its neighbours in the round's graph"
            )
        missing = len(expected) - len(neighbours)
        if missing > params.max_dropouts:
            raise SecurityError(
                f"node {self._node_id} was given {len(neighbours)} of its {len(expected)} "
                f"neighbours: too few neighbours (max_dropouts={params.max_dropouts})"
            )

    def _verified_signers(self, neighbours: Mapping[int, SignedKeys]) -> dict[int, bytes]:
        """Each neighbour's enrolled signing key (raw), after checking its signed keys."""
        for advert in neighbours.values():
            if not isinstance(advert, SignedKeys):
                raise TypeError(f"expected SignedKeys, got {type(advert).__name__}")
        if self._identity is None:
            return {}
        signers: dict[int, bytes] = {}
        for node, advert in sorted(neighbours.items()):
            public = verify_keys(self._identity, self._params, node, advert)
            signers[node] = public.public_bytes_raw()
        check_roster_names(neighbours, self._identity.name)
        return signers

    def _checked_ids(self, nodes: Collection[int], what: str) -> set[int]:
        ids = list(nodes)
        if len(set(ids)) != len(ids) or not all(
                is_node_id(node) and node <= self._params.participants for node in ids):
            raise SecurityError(f"node {self._node_id} was sent a malformed {what}")
        return set(ids)

    def _checked_neighbours(
        self, neighbours: Mapping[int, AdvertisedKeys]
    ) -> dict[int, AdvertisedKeys]:
        own = AdvertisedKeys(*self._own_public_keys())
        seen = {own.cipher_public: self._node_id, own.mask_public: self._node_id}
        peers: dict[int, AdvertisedKeys] = {}
        for peer, keys in sorted(neighbours.items()):
            if not is_node_id(peer) or peer == self._node_id:
                raise SecurityError(f"node {self._node_id} was given an invalid neighbour {peer!r}")
            if not isinstance(keys, AdvertisedKeys):
                raise TypeError(f"expected AdvertisedKeys, got {type(keys).__name__}")
            for public in (keys.cipher_public, keys.mask_public):
                if public in seen:
                    raise SecurityError(
                        f"node {peer} advertised a public key already used by node {seen[public]}"
                    )
                seen[public] = peer
            peers[peer] = keys
        return peers

    def _own_public_keys(self) -> tuple[bytes, bytes]:
        return (
            public_key_bytes(load_private_key(_present(self._cipher_key))),
            public_key_bytes(load_private_key(_present(self._mask_key))),
        )

    def _checked_weight(self, weight: int) -> int:
        if isinstance(weight, bool) or not isinstance(weight, (int, np.integer)):
            raise TypeError(f"weight must be an int, got {type(weight).__name__}")
        weight = int(weight)
        if weight < 1:
            raise ValueError(f"weight must be at least 1, got {weight}")
        ring_bits, bits = self._params.ring_bits, self._params.quantization_bits
        if weight >= max_round_weight(ring_bits, bits):
            raise ValueError(
                f"weight {weight} with quantization_bits={bits} alone fills the 2**{ring_bits} "
                "ring, so the sum over institutions would wrap around"
            )
        return weight



def _present(value: bytes | None) -> bytes:
    if value is None:
        raise SecurityError("malformed secure-aggregation client state")
    return value

def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _unhex(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)

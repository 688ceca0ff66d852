"""What institutions sign in a SecAgg+ round, so that a malicious server cannot lie to them.

Bell et al. (CCS 2020) make SecAgg+ hold against a malicious server with two signatures per
institution, made with its enrolled Ed25519 key (the one that signs its updates):

- its advertised X25519 keys, bound to the round's parameters (`SecAggParams.digest`, which
  includes the federation, run and round), its protocol id and its institution name. A
  neighbour accepts the keys only if the name is in its own roster of enrolled institutions
  and the signature verifies under that name's key: the server can neither substitute keys
  (it would learn the pairwise secrets and share keys) nor invent institutions.
- the list of survivors it was told before unmasking (the consistency check). Each honest
  institution signs one list only, and releases shares only after `threshold` of its share
  holders signed the same list; since the threshold exceeds half of the holders, the server
  cannot tell one story ("x survived": send x's self-mask shares) to some holders and another
  ("x dropped": send x's mask-key shares) to others.

A message is a label, then fixed-width or length-prefixed fields, so no two different inputs
give the same bytes to sign.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from fedpeft.common.crypto.keys import SigningPrivateKey, SigningPublicKey
from fedpeft.common.crypto.secagg.nodes import node_id_bytes
from fedpeft.common.crypto.secagg.params import AdvertisedKeys, SecAggParams
from fedpeft.common.crypto.signing import sign, verify
from fedpeft.common.errors import SecurityError

_ADVERT_LABEL = b"fedpeft/secagg/advertised-keys/v1"
_SURVIVORS_LABEL = b"fedpeft/secagg/survivors/v1"
MAX_NAME_BYTES = 255


@dataclass(frozen=True)
class Identity:
    """Who an institution is in a round, and whom it accepts as a neighbour.

    `roster` maps each enrolled institution's name to its Ed25519 public key; it comes from the
    institution's own bundle, never from the server (see `fedpeft.client.peers`).
    """

    name: str
    signing_key: SigningPrivateKey
    roster: Mapping[str, SigningPublicKey]


@dataclass(frozen=True)
class SignedKeys:
    """An institution's advertised keys with its name and its signature over both."""

    keys: AdvertisedKeys
    name: str
    signature: bytes


def advert_message(params: SecAggParams, node_id: int, name: str, keys: AdvertisedKeys) -> bytes:
    """The bytes an institution signs to advertise `keys` as `name`, protocol id `node_id`."""
    return (_ADVERT_LABEL + params.digest() + node_id_bytes(node_id) + _name_bytes(name)
            + keys.to_bytes())


def survivors_message(params: SecAggParams, survivors: Collection[int]) -> bytes:
    """The bytes an institution signs to confirm the survivor list it was told."""
    ids = sorted(survivors)
    return (_SURVIVORS_LABEL + params.digest() + len(ids).to_bytes(4, "big")
            + b"".join(node_id_bytes(node) for node in ids))


def sign_keys(identity: Identity, params: SecAggParams, node_id: int,
              keys: AdvertisedKeys) -> SignedKeys:
    """`keys` as this institution advertises them."""
    message = advert_message(params, node_id, identity.name, keys)
    return SignedKeys(keys, identity.name, sign(identity.signing_key, message))


def verify_keys(identity: Identity, params: SecAggParams, node_id: int,
                advert: SignedKeys) -> SigningPublicKey:
    """The signing key of the neighbour behind `advert`, or SecurityError naming why not."""
    if not advert.name or not advert.signature:
        raise SecurityError(f"node {node_id} advertised unsigned keys")
    public = identity.roster.get(advert.name)
    if public is None:
        raise SecurityError(
            f"node {node_id} advertised keys as {advert.name!r}, an institution that is not in "
            "this institution's roster"
        )
    try:
        verify(public, advert.signature, advert_message(params, node_id, advert.name, advert.keys))
    except SecurityError:
        raise SecurityError(
            f"node {node_id} advertised keys whose signature does not verify under the enrolled "
            f"key of {advert.name!r}: substituted keys"
        ) from None
    return public


def sign_survivors(identity: Identity, params: SecAggParams, survivors: Collection[int]) -> bytes:
    """This institution's signature over the survivor list it was told."""
    return sign(identity.signing_key, survivors_message(params, survivors))


def verify_survivors(public: SigningPublicKey, params: SecAggParams, survivors: Collection[int],
                     signature: bytes, node_id: int) -> None:
    """Return only if neighbour `node_id` signed the same survivor list."""
    try:
        verify(public, signature, survivors_message(params, survivors))
    except SecurityError:
        raise SecurityError(
            f"node {node_id} did not sign the survivor list this institution was told: the "
            "server told different dropout stories"
        ) from None


def check_roster_names(adverts: Mapping[int, SignedKeys], own_name: str) -> None:
    """SecurityError when two neighbours (or a neighbour and this institution) share a name."""
    seen: dict[str, int] = {}
    for node, advert in sorted(adverts.items()):
        if advert.name == own_name or advert.name in seen:
            raise SecurityError(
                f"node {node} advertised keys as {advert.name!r}, a name already used in this "
                "round: one institution cannot hold two places"
            )
        seen[advert.name] = node


def _name_bytes(name: str) -> bytes:
    data = name.encode("utf-8")
    if not data or len(data) > MAX_NAME_BYTES:
        raise SecurityError(f"an institution name must be 1..{MAX_NAME_BYTES} bytes")
    return len(data).to_bytes(1, "big") + data

"""Pairwise seeds agree on both sides and nowhere else; share ciphertexts cannot be altered."""

from __future__ import annotations

import pytest

from fedpeft.common.crypto.keys import EncryptionPrivateKey
from fedpeft.common.crypto.secagg.agreement import (
    decrypt_shares,
    encrypt_shares,
    generate_private_key,
    mask_seed,
    public_key_bytes,
    share_key,
)
from fedpeft.common.errors import SecurityError

CONTEXT = b"fed|run|3"
U, V, W = 5, 9, 12

Keys = dict[int, EncryptionPrivateKey]


@pytest.fixture(scope="module")
def keys() -> Keys:
    return {node: generate_private_key() for node in (U, V, W)}


def _seed(keys: Keys, own: int, peer: int, context: bytes = CONTEXT) -> bytes:
    return mask_seed(keys[own], own, public_key_bytes(keys[peer]), peer, context)


def test_both_sides_derive_the_same_mask_seed(keys: Keys) -> None:
    assert _seed(keys, U, V) == _seed(keys, V, U)
    assert len(_seed(keys, U, V)) == 32


def test_seeds_differ_per_pair_round_and_purpose(keys: Keys) -> None:
    seeds = {
        _seed(keys, U, V),
        _seed(keys, U, W),
        _seed(keys, V, W),
        _seed(keys, U, V, b"fed|run|4"),
        share_key(keys[U], U, public_key_bytes(keys[V]), V, CONTEXT),
    }
    assert len(seeds) == 5


def test_seed_is_bound_to_the_claimed_node_ids(keys: Keys) -> None:
    """The same keys under other node ids give another seed: ids are part of the binding."""
    assert mask_seed(keys[U], U, public_key_bytes(keys[V]), W, CONTEXT) != _seed(keys, U, V)


def test_low_order_public_key_is_refused(keys: Keys) -> None:
    with pytest.raises(SecurityError, match="node 9 advertised an invalid public key"):
        mask_seed(keys[U], U, bytes(32), V, CONTEXT)


def test_share_ciphertext_round_trip_and_tampering(keys: Keys) -> None:
    key = share_key(keys[U], U, public_key_bytes(keys[V]), V, CONTEXT)
    assert key == share_key(keys[V], V, public_key_bytes(keys[U]), U, CONTEXT)
    ciphertext = encrypt_shares(key, b"bundle", CONTEXT, U, V)
    assert decrypt_shares(key, ciphertext, CONTEXT, U, V) == b"bundle"
    flipped = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    attempts = [
        (flipped, CONTEXT, U, V),
        (ciphertext, b"fed|run|4", U, V),
        (ciphertext, CONTEXT, V, U),
        (ciphertext, CONTEXT, U, W),
        (ciphertext[:20], CONTEXT, U, V),
    ]
    for data, context, source, destination in attempts:
        with pytest.raises(SecurityError, match="share ciphertext"):
            decrypt_shares(key, data, context, source, destination)

"""Pairwise secrets between two institutions, and the encryption of the shares they exchange.

Each institution generates two X25519 key pairs per round. From one X25519 exchange per
neighbour it derives, with HKDF-SHA256:

- with the mask keys, the seed of the pairwise mask (both sides get the same seed, one adds
  the mask and the other subtracts it, so it cancels in the sum);
- with the cipher keys, the AES-256-GCM key that protects the share bundles the pair sends
  each other through the relay.

The HKDF salt is both public keys and the info is a purpose label, the round context and the
unordered pair of node ids, so a seed or key is tied to one pair, one purpose and one round.
The associated data of each ciphertext also names source and destination, so a bundle cannot
be redirected or passed off as coming from the other direction.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedpeft.common.crypto.seal import (
    KEY_SIZE,
    NONCE_SIZE,
    PUBLIC_KEY_SIZE,
    TAG_SIZE,
    RandBytes,
    _random,
    _raw,
)
from fedpeft.common.crypto.secagg.nodes import node_id_bytes
from fedpeft.common.crypto.secagg.prg import MASK_SEED_SIZE
from fedpeft.common.errors import SecurityError

PRIVATE_KEY_SIZE = 32
_MASK_LABEL = b"fedpeft/secagg/mask-seed/v1"
_SHARE_KEY_LABEL = b"fedpeft/secagg/share-key/v1"
_SHARES_AAD_LABEL = b"fedpeft/secagg/shares/v1"


def generate_private_key(randbytes: RandBytes = os.urandom) -> X25519PrivateKey:
    """A fresh X25519 key; `randbytes` lets tests make a whole round reproducible."""
    return X25519PrivateKey.from_private_bytes(_random(randbytes, PRIVATE_KEY_SIZE))


def private_key_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte private key, for the client state and for Shamir sharing."""
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def load_private_key(data: bytes) -> X25519PrivateKey:
    """The X25519 key whose raw bytes are `data`; SecurityError if they are not 32 bytes."""
    if not isinstance(data, bytes) or len(data) != PRIVATE_KEY_SIZE:
        raise SecurityError(f"an X25519 private key must be {PRIVATE_KEY_SIZE} bytes")
    return X25519PrivateKey.from_private_bytes(data)


def public_key_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public half of `key`, as advertised."""
    return _raw(key.public_key())


def mask_seed(
    own: X25519PrivateKey, own_id: int, peer_public: bytes, peer_id: int, context: bytes
) -> bytes:
    """The pairwise mask seed of `own_id` and `peer_id`; both compute the same 32 bytes."""
    return _pairwise(_MASK_LABEL, MASK_SEED_SIZE, own, own_id, peer_public, peer_id, context)


def share_key(
    own: X25519PrivateKey, own_id: int, peer_public: bytes, peer_id: int, context: bytes
) -> bytes:
    """The AES-256-GCM key for share bundles between `own_id` and `peer_id`, either way."""
    return _pairwise(_SHARE_KEY_LABEL, KEY_SIZE, own, own_id, peer_public, peer_id, context)


def encrypt_shares(
    key: bytes,
    plaintext: bytes,
    context: bytes,
    source: int,
    destination: int,
    *,
    randbytes: RandBytes = os.urandom,
) -> bytes:
    """nonce (12) || AES-256-GCM ciphertext and tag of `plaintext` from `source` to `destination`.

    Both directions of a pair share one key for a single message each, so random nonces
    cannot collide in practice.
    """
    nonce = _random(randbytes, NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _aad(context, source, destination))


def decrypt_shares(
    key: bytes, ciphertext: bytes, context: bytes, source: int, destination: int
) -> bytes:
    """The plaintext of `encrypt_shares` output; SecurityError if anything was changed."""
    if not isinstance(ciphertext, bytes) or len(ciphertext) < NONCE_SIZE + TAG_SIZE:
        raise SecurityError(f"malformed share ciphertext from node {source}")
    nonce, body = ciphertext[:NONCE_SIZE], ciphertext[NONCE_SIZE:]
    try:
        return AESGCM(key).decrypt(nonce, body, _aad(context, source, destination))
    except InvalidTag:
        raise SecurityError(f"share ciphertext from node {source} failed authentication") from None


def _pairwise(
    label: bytes,
    size: int,
    own: X25519PrivateKey,
    own_id: int,
    peer_public: bytes,
    peer_id: int,
    context: bytes,
) -> bytes:
    if own_id == peer_id:
        raise ValueError(f"node {own_id} cannot derive a pairwise secret with itself")
    if not isinstance(peer_public, bytes) or len(peer_public) != PUBLIC_KEY_SIZE:
        raise SecurityError(f"node {peer_id} advertised a malformed public key")
    try:
        shared = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        # A low-order point gives an all-zero secret: no honest institution advertises one.
        raise SecurityError(f"node {peer_id} advertised an invalid public key") from None
    (low_id, low_public), (high_id, high_public) = sorted(
        [(own_id, public_key_bytes(own)), (peer_id, peer_public)]
    )
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=size,
        salt=low_public + high_public,
        info=label + _framed(context) + node_id_bytes(low_id) + node_id_bytes(high_id),
    )
    return hkdf.derive(shared)


def _aad(context: bytes, source: int, destination: int) -> bytes:
    return _SHARES_AAD_LABEL + _framed(context) + node_id_bytes(source) + node_id_bytes(destination)


def _framed(data: bytes) -> bytes:
    """`data` prefixed by its length, so adjacent fields cannot run into each other."""
    return len(data).to_bytes(2, "big") + data

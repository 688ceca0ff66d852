"""Hybrid public-key encryption of one message to the aggregator (ECIES-style).

Each message gets a fresh ephemeral X25519 key, so a sender keeps no long-lived encryption
secret and two seals of the same update share nothing. The shared secret goes through
HKDF-SHA256 with both public keys as salt (binding the key to this sender-recipient pair,
which a bare X25519 output does not) and a fixed context string (so the key can never
collide with a key derived elsewhere from the same secret), then AES-256-GCM encrypts with
caller-supplied associated data that binds the ciphertext to its round and manifest.

A fresh key per message also makes the random 96-bit nonce safe: each AES key is used once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedpeft.common.errors import SecurityError

SEAL_VERSION = 1
HKDF_INFO = b"fedpeft/seal/v1"
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
PUBLIC_KEY_SIZE = 32
MAX_PLAINTEXT_SIZE = 2**31 - 1
"""The largest input the AES-GCM binding accepts in one call (2 GiB)."""

_PREFIX_SIZE = 1 + PUBLIC_KEY_SIZE + NONCE_SIZE

RandBytes = Callable[[int], bytes]


@dataclass(frozen=True)
class SealedBox:
    """What travels: the sender's ephemeral public key, the nonce, and ciphertext with tag."""

    ephemeral_pub: bytes
    nonce: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        """version (1) || ephemeral public key (32) || nonce (12) || ciphertext and tag."""
        return bytes([SEAL_VERSION]) + self.ephemeral_pub + self.nonce + self.ciphertext

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> SealedBox:
        """Parse `to_bytes` output; anything else is refused as hostile input."""
        if len(data) < _PREFIX_SIZE + TAG_SIZE:
            raise SecurityError("malformed sealed box: truncated")
        if data[0] != SEAL_VERSION:
            raise SecurityError(f"malformed sealed box: unsupported version {data[0]}")
        return cls(
            ephemeral_pub=bytes(data[1 : 1 + PUBLIC_KEY_SIZE]),
            nonce=bytes(data[1 + PUBLIC_KEY_SIZE : _PREFIX_SIZE]),
            ciphertext=bytes(data[_PREFIX_SIZE:]),
        )


def seal(
    recipient_pub: X25519PublicKey,
    plaintext: bytes,
    aad: bytes,
    *,
    randbytes: RandBytes = os.urandom,
) -> SealedBox:
    """Encrypt `plaintext` so only the holder of `recipient_pub`'s private key can read it.

    `randbytes` supplies the ephemeral private key (32 bytes) and the nonce (12 bytes);
    tests pass a fixed source to reproduce published vectors.
    """
    if not isinstance(recipient_pub, X25519PublicKey):
        raise TypeError(f"expected an X25519 public key, got {type(recipient_pub).__name__}")
    _require_bytes(plaintext, "plaintext")
    _require_bytes(aad, "aad")
    if len(plaintext) > MAX_PLAINTEXT_SIZE:
        raise ValueError(f"plaintext of {len(plaintext)} bytes exceeds {MAX_PLAINTEXT_SIZE}")
    ephemeral = X25519PrivateKey.from_private_bytes(_random(randbytes, KEY_SIZE))
    nonce = _random(randbytes, NONCE_SIZE)
    ephemeral_pub = _raw(ephemeral.public_key())
    key = _derive_key(ephemeral.exchange(recipient_pub), ephemeral_pub, _raw(recipient_pub))
    return SealedBox(ephemeral_pub, nonce, AESGCM(key).encrypt(nonce, plaintext, aad))


def open_sealed(recipient_priv: X25519PrivateKey, box: SealedBox, aad: bytes) -> bytes:
    """The plaintext of `box`, or SecurityError if it was not sealed to us with this `aad`.

    A wrong key, a changed bit anywhere, or other associated data all give the same refusal:
    AES-GCM cannot tell them apart, and neither should an attacker.
    """
    if not isinstance(recipient_priv, X25519PrivateKey):
        raise TypeError(f"expected an X25519 private key, got {type(recipient_priv).__name__}")
    if not isinstance(box, SealedBox):
        raise TypeError(f"expected a SealedBox, got {type(box).__name__}")
    _require_bytes(aad, "aad")
    if len(box.ephemeral_pub) != PUBLIC_KEY_SIZE or len(box.nonce) != NONCE_SIZE:
        raise SecurityError("malformed sealed box: bad key or nonce length")
    try:
        shared = recipient_priv.exchange(X25519PublicKey.from_public_bytes(box.ephemeral_pub))
    except ValueError:
        # A low-order point makes the shared secret all zeros: no honest sender produces one.
        raise SecurityError("invalid ephemeral key in sealed box") from None
    key = _derive_key(shared, box.ephemeral_pub, _raw(recipient_priv.public_key()))
    try:
        return AESGCM(key).decrypt(box.nonce, box.ciphertext, aad)
    except InvalidTag:
        raise SecurityError("ciphertext failed authentication") from None


def _derive_key(shared_secret: bytes, ephemeral_pub: bytes, recipient_pub: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=ephemeral_pub + recipient_pub,
        info=HKDF_INFO,
    )
    return hkdf.derive(shared_secret)


def _random(randbytes: RandBytes, size: int) -> bytes:
    value = randbytes(size)
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"randbytes({size}) must return {size} bytes")
    return value


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _require_bytes(value: object, name: str) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")

"""Ed25519 signatures, with refusals that raise instead of returning False.

A boolean result is one forgotten `if` away from accepting a forged update; an exception
cannot be ignored by accident.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedpeft.common.errors import SecurityError

SIGNATURE_SIZE = 64


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The 64-byte Ed25519 signature of `data` (deterministic: no randomness to supply)."""
    if not isinstance(private_key, Ed25519PrivateKey):
        raise TypeError(f"expected an Ed25519 private key, got {type(private_key).__name__}")
    _require_bytes(data, "data")
    return private_key.sign(data)


def verify(public_key: Ed25519PublicKey, signature: bytes, data: bytes) -> None:
    """Return only if `signature` is `public_key`'s signature of `data`.

    Raises SecurityError("bad signature") otherwise, whatever was wrong with the signature
    (length, encoding or value): an attacker learns nothing from the message.
    """
    if not isinstance(public_key, Ed25519PublicKey):
        raise TypeError(f"expected an Ed25519 public key, got {type(public_key).__name__}")
    _require_bytes(signature, "signature")
    _require_bytes(data, "data")
    if len(signature) != SIGNATURE_SIZE:
        raise SecurityError("bad signature")
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        raise SecurityError("bad signature") from None


def _require_bytes(value: object, name: str) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")

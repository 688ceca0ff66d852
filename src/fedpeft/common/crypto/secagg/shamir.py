"""Shamir t-of-n secret sharing of short byte strings (seeds and private keys).

Arithmetic is over the prime field of the Mersenne prime 2**521 - 1, large enough to hold a
64-byte secret plus its length in one field element, so a secret is shared with one
polynomial rather than chunk by chunk. Any `threshold` shares rebuild the secret; fewer
reveal nothing about it (every candidate secret is equally likely). The x-coordinate of a
share is the holder's node id, so a share carries only its y-coordinate.

Shares beyond the threshold are checked against the polynomial the first `threshold` define,
so a corrupted share is reported rather than silently yielding a wrong secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from fedpeft.common.crypto.secagg.nodes import distinct_node_ids
from fedpeft.common.errors import SecurityError

PRIME = 2**521 - 1
SHARE_SIZE = (PRIME.bit_length() + 7) // 8
"""Bytes of one share: a field element, big-endian."""
MAX_SECRET_SIZE = 64
_LENGTH_SHIFT = 8 * MAX_SECRET_SIZE


def split(secret: bytes, threshold: int, holders: Sequence[int]) -> dict[int, bytes]:
    """One share of `secret` per holder id; any `threshold` of them rebuild it."""
    if not isinstance(secret, bytes):
        raise TypeError(f"secret must be bytes, got {type(secret).__name__}")
    if len(secret) > MAX_SECRET_SIZE:
        raise ValueError(f"secret of {len(secret)} bytes exceeds {MAX_SECRET_SIZE}")
    xs = distinct_node_ids(holders, "share holders")
    if type(threshold) is not int or not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be an int in [1, {len(xs)} holders], got {threshold!r}")
    # The length goes above the secret's bits so that leading zero bytes survive the round trip.
    constant = (len(secret) << _LENGTH_SHIFT) | int.from_bytes(secret, "big")
    coefficients = [constant] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: _evaluate(coefficients, x).to_bytes(SHARE_SIZE, "big") for x in xs}


def combine(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """The secret that `shares` (holder id -> share) were split from.

    ValueError if fewer than `threshold` shares are given; SecurityError if a share is
    malformed, the shares are inconsistent with each other, or they rebuild no valid secret.
    """
    if type(threshold) is not int or threshold < 1:
        raise ValueError(f"threshold must be a positive int, got {threshold!r}")
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares cannot rebuild a secret that needs {threshold}")
    points = sorted((x, _parse_share(x, share)) for x, share in shares.items())
    distinct_node_ids((x for x, _ in points), "share holders")
    basis, extra = points[:threshold], points[threshold:]
    for x, y in extra:
        if _interpolate(basis, x) != y:
            raise SecurityError(f"the share of holder {x} is inconsistent with the others")
    value = _interpolate(basis, 0)
    length, body = value >> _LENGTH_SHIFT, value & ((1 << _LENGTH_SHIFT) - 1)
    if length > MAX_SECRET_SIZE or body >> (8 * length):
        raise SecurityError("the shares do not rebuild a valid secret")
    return body.to_bytes(length, "big")


def _parse_share(x: object, share: object) -> int:
    if not isinstance(share, bytes) or len(share) != SHARE_SIZE:
        raise SecurityError(f"malformed share from holder {x}: expected {SHARE_SIZE} bytes")
    y = int.from_bytes(share, "big")
    if y >= PRIME:
        raise SecurityError(f"malformed share from holder {x}: not a field element")
    return y


def _evaluate(coefficients: list[int], x: int) -> int:
    result = 0
    for coefficient in reversed(coefficients):
        result = (result * x + coefficient) % PRIME
    return result


def _interpolate(points: list[tuple[int, int]], at: int) -> int:
    """The value at `at` of the polynomial of degree < len(points) through `points` (Lagrange)."""
    total = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * (at - xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        total = (total + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    return total

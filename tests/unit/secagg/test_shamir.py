"""Shamir sharing: any threshold of shares rebuilds the secret, fewer do not, bad ones fail."""

from __future__ import annotations

import itertools

import pytest

from fedpeft.common.crypto.secagg.shamir import SHARE_SIZE, combine, split
from fedpeft.common.errors import SecurityError

HOLDERS = [1, 7, 2**40 + 3, 2**63, 2**64 - 1]


@pytest.mark.parametrize("threshold", [1, 2, 3, 5])
def test_every_threshold_subset_rebuilds_the_secret(threshold: int) -> None:
    secret = bytes(range(32))
    shares = split(secret, threshold, HOLDERS)
    assert set(shares) == set(HOLDERS)
    for size in range(threshold, len(HOLDERS) + 1):
        for subset in itertools.combinations(HOLDERS, size):
            assert combine({x: shares[x] for x in subset}, threshold) == secret


@pytest.mark.parametrize("secret", [b"", b"\x00", b"\x00\x00\x01", b"\xff" * 32, b"\x00" * 64])
def test_secret_length_and_leading_zeros_survive(secret: bytes) -> None:
    shares = split(secret, 2, HOLDERS[:3])
    assert combine({x: shares[x] for x in HOLDERS[1:3]}, 2) == secret


def test_fewer_shares_than_threshold_are_refused() -> None:
    shares = split(b"k" * 32, 3, HOLDERS)
    with pytest.raises(ValueError, match="2 shares cannot rebuild a secret that needs 3"):
        combine({x: shares[x] for x in HOLDERS[:2]}, 3)


def test_below_threshold_shares_rebuild_a_different_secret() -> None:
    """Treating two shares of a 3-of-n split as a 2-of-n split does not give the secret."""
    secret = b"s" * 32
    shares = split(secret, 3, HOLDERS)
    try:
        guess = combine({x: shares[x] for x in HOLDERS[:2]}, 2)
    except SecurityError:
        return
    assert guess != secret


def test_two_splits_of_one_secret_differ() -> None:
    assert split(b"x" * 32, 2, HOLDERS) != split(b"x" * 32, 2, HOLDERS)


@pytest.mark.parametrize(
    "bad", [b"", b"\x00" * (SHARE_SIZE - 1), b"\x00" * (SHARE_SIZE + 1), b"\xff" * SHARE_SIZE]
)
def test_malformed_share_is_a_security_error(bad: bytes) -> None:
    shares = split(b"k" * 32, 2, HOLDERS)
    shares[HOLDERS[0]] = bad
    with pytest.raises(SecurityError, match="malformed share"):
        combine(shares, 2)


def test_a_share_off_the_polynomial_is_detected_when_extra_shares_exist() -> None:
    shares = split(b"k" * 32, 2, HOLDERS)
    wrong = (int.from_bytes(shares[HOLDERS[-1]], "big") ^ 1).to_bytes(SHARE_SIZE, "big")
    with pytest.raises(SecurityError, match="inconsistent"):
        combine({**shares, HOLDERS[-1]: wrong}, 2)


@pytest.mark.parametrize("holders", [[0, 1, 2], [1, 1, 2], [1, 2, 2**64], [1, True, 3], [-1, 2]])
def test_invalid_holder_ids_are_refused(holders: list[int]) -> None:
    with pytest.raises(ValueError, match="share holders"):
        split(b"k", 2, holders)


@pytest.mark.parametrize("threshold", [0, 4])
def test_threshold_must_fit_the_holders(threshold: int) -> None:
    with pytest.raises(ValueError, match="threshold"):
        split(b"k", threshold, [1, 2, 3])


def test_secret_longer_than_64_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds 64"):
        split(b"k" * 65, 2, [1, 2, 3])

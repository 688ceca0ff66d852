"""Mask expansion: reproducible from the seed, seed-specific, and uniform in the ring."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import pytest

from fedpeft.common.crypto.secagg.prg import expand_mask

UniformCheck = Callable[[np.ndarray, int], None]


def _seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def test_same_seed_gives_the_same_mask() -> None:
    first = expand_mask(_seed("a"), 5000, 64)
    assert first.dtype == np.uint64 and first.shape == (5000,)
    assert np.array_equal(first, expand_mask(_seed("a"), 5000, 64))


def test_different_seeds_give_unrelated_masks() -> None:
    a, b = expand_mask(_seed("a"), 5000, 64), expand_mask(_seed("b"), 5000, 64)
    assert np.count_nonzero(a == b) == 0


@pytest.mark.parametrize("ring_bits", [32, 64])
def test_mask_is_uniform_in_the_ring(ring_bits: int, assert_bytes_uniform: UniformCheck) -> None:
    for label in ("uniform-1", "uniform-2"):
        mask = expand_mask(_seed(label), 200_000, ring_bits)
        assert int(mask.max()) < 2**ring_bits
        assert_bytes_uniform(mask, ring_bits)


def test_masks_of_any_length_including_chunk_boundaries() -> None:
    long = expand_mask(_seed("c"), (1 << 17) + 3, 64)
    assert expand_mask(_seed("c"), 0, 64).size == 0
    assert np.array_equal(expand_mask(_seed("c"), 7, 64), long[:7])


@pytest.mark.parametrize("seed", [b"", b"x" * 31, b"x" * 33])
def test_seed_must_be_32_bytes(seed: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        expand_mask(seed, 10, 64)

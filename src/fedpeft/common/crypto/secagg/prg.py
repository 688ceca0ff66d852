"""Expanding a 32-byte seed into a mask as long as the update: the ChaCha20 keystream.

Every seed masks exactly one vector (seeds are derived afresh for each round and pair, and
the self-mask seed is drawn per round), so the nonce can be fixed: a (key, nonce) pair is
never reused for different data. The keystream is produced in chunks straight into the output
array, so a 14-million-value mask costs one pass of ChaCha20 and no Python loop per value.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

MASK_SEED_SIZE = 32
MAX_RING_BITS = 64
_NONCE = bytes(16)
"""cryptography's ChaCha20 nonce: a 32-bit little-endian block counter, then 96 bits of nonce."""
_CHUNK_BYTES = 1 << 20
_ZEROS = bytes(_CHUNK_BYTES)


def expand_mask(seed: bytes, length: int, ring_bits: int) -> np.ndarray:
    """`length` uint64 values, uniform in [0, 2**ring_bits), determined by `seed` alone.

    Truncating uniform 64-bit words to their low `ring_bits` bits keeps them uniform, because
    2**ring_bits divides 2**64.
    """
    if not isinstance(seed, bytes) or len(seed) != MASK_SEED_SIZE:
        raise ValueError(f"a mask seed must be {MASK_SEED_SIZE} bytes")
    if type(length) is not int or length < 0:
        raise ValueError(f"length must be a non-negative int, got {length!r}")
    if type(ring_bits) is not int or not 1 <= ring_bits <= MAX_RING_BITS:
        raise ValueError(f"ring_bits must be an int in [1, {MAX_RING_BITS}], got {ring_bits!r}")
    words = np.empty(length, dtype="<u8")
    stream = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    raw = words.data.cast("B")
    for start in range(0, len(raw), _CHUNK_BYTES):
        end = min(start + _CHUNK_BYTES, len(raw))
        stream.update_into(memoryview(_ZEROS)[: end - start], raw[start:end])
    mask = words.astype(np.uint64, copy=False)
    if ring_bits < MAX_RING_BITS:
        np.bitwise_and(mask, np.uint64((1 << ring_bits) - 1), out=mask)
    return mask

"""A uniformity check shared by the PRG and masked-vector tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

CHI2_CRITICAL_255_DOF = 330.52
"""The chi-square statistic with 255 degrees of freedom exceeded with probability 1e-3."""


def _assert_bytes_uniform(values: np.ndarray, ring_bits: int) -> None:
    """Both the low byte and the top byte of ring elements look uniform (p > 1e-3)."""
    low, top = values & np.uint64(0xFF), values >> np.uint64(ring_bits - 8)
    for name, byte in (("low", low), ("top", top)):
        counts = np.bincount(byte.astype(np.int64), minlength=256)
        assert counts.size == 256, f"{name} byte has values above 255"
        expected = values.size / 256
        statistic = float(((counts - expected) ** 2 / expected).sum())
        assert statistic < CHI2_CRITICAL_255_DOF, f"{name} byte: chi2 = {statistic:.1f}"


@pytest.fixture
def assert_bytes_uniform() -> Callable[[np.ndarray, int], None]:
    return _assert_bytes_uniform

"""The digests ledger bodies quote: stable, and different whenever the data differs."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedpeft.common.audit import canonical_json, canonical_sha256, sha256_arrays, sha256_bytes


def test_canonical_json_ignores_key_order_and_refuses_nan() -> None:
    assert canonical_json({"b": [1, 2.5], "a": "é"}) == b'{"a":"\\u00e9","b":[1,2.5]}'
    assert canonical_sha256({"x": 1, "y": 2}) == canonical_sha256({"y": 2, "x": 1})
    assert canonical_sha256({"x": 1}) == hashlib.sha256(b'{"x":1}').hexdigest()
    assert canonical_sha256({"x": 1}) != canonical_sha256({"x": 2})
    assert sha256_bytes(b"abc") == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(ValueError, match="not JSON compliant"):
        canonical_json({"loss": float("nan")})


def test_sha256_arrays_covers_names_dtypes_shapes_and_values() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones(4, dtype=np.float16)
    digest = sha256_arrays({"a": a, "b": b})

    assert digest == sha256_arrays({"b": b, "a": a.copy()})
    assert digest == sha256_arrays({"a": np.asfortranarray(a), "b": b})  # values, not layout
    assert digest != sha256_arrays({"a2": a, "b": b})
    assert digest != sha256_arrays({"a": a.reshape(3, 2), "b": b})
    assert digest != sha256_arrays({"a": a.view(np.int32), "b": b})
    assert digest != sha256_arrays({"a": a, "b": b * 2})
    assert digest != sha256_arrays({"a": a})
    with pytest.raises(TypeError, match="'o'"):
        sha256_arrays({"o": np.array([object()])})

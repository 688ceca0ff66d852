"""Refusing malformed or oversized updates before they reach the aggregate.

One NaN poisons every value of a sum, a wrong shape breaks it, and an update far above the clip
norm means the sender did not clip (a broken or malicious client): its influence on the global
adapter, and on the privacy guarantee, would no longer be bounded. Checks are vectorised so
validating every update of a round costs about one pass over the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fedpeft.common.errors import SecurityError

# Keys come from the sender; a refusal message quotes at most this many characters of one.
_KEY_CHARS = 80


class UpdateRefused(SecurityError):
    """An update that must not be aggregated; the message names the tensor and the reason."""


def _name(key: object) -> str:
    # repr() escapes newlines and control characters, so a key cannot forge log lines.
    text = repr(key)
    return text if len(text) <= _KEY_CHARS else text[: _KEY_CHARS - 3] + "..."


def _check_keys(update: Mapping[str, np.ndarray], expected: Mapping[str, object]) -> None:
    missing = [key for key in expected if key not in update]
    if missing:
        raise UpdateRefused(
            f"update refused: tensor {_name(missing[0])} is missing ({len(missing)} missing)"
        )
    extra = [key for key in update if key not in expected]
    if extra:
        raise UpdateRefused(
            f"update refused: unexpected tensor {_name(extra[0])} ({len(extra)} unexpected)"
        )


def _check_tensor(key: str, value: object, shape: tuple[int, ...], dtype: str) -> None:
    if not isinstance(value, np.ndarray):
        raise UpdateRefused(f"update refused: tensor {_name(key)} is not an array")
    if value.shape != tuple(shape):
        raise UpdateRefused(
            f"update refused: tensor {_name(key)} has shape {value.shape}, expected {tuple(shape)}"
        )
    if value.dtype != np.dtype(dtype):
        raise UpdateRefused(
            f"update refused: tensor {_name(key)} has dtype {value.dtype.str}, expected "
            f"{np.dtype(dtype).str}"
        )
    if not np.isfinite(value).all():
        bad = int(np.count_nonzero(~np.isfinite(value)))
        raise UpdateRefused(f"update refused: tensor {_name(key)} has {bad} NaN or infinite values")


def validate_update(
    delta_or_state: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[tuple[int, ...], str]],
    max_norm: float | None,
) -> None:
    """Raise `UpdateRefused` unless the update has exactly the expected tensors, shapes and
    dtypes, only finite values, and (if `max_norm` is given) a global L2 norm within it.

    `expected` maps each tensor name to (shape, dtype name). `max_norm` is meant for clipped
    deltas seen in plaintext (the clip norm times `privacy.max_norm_factor`, room for float
    rounding and a clip norm that moved between rounds); a full adapter state has no such
    bound, pass None. A masked update under secure aggregation is never seen alone, and an
    update carrying its own noise share has a norm that grows with the tensor size, so
    neither can be checked this way.
    """
    _check_keys(delta_or_state, expected)
    for key, (shape, dtype) in expected.items():
        _check_tensor(key, delta_or_state[key], shape, dtype)
    if max_norm is None:
        return
    squares = {
        key: float(np.square(value, dtype=np.float64).sum())
        for key, value in delta_or_state.items()
    }
    norm = math.sqrt(sum(squares.values()))
    if norm > max_norm:
        largest = max(squares, key=squares.__getitem__)
        raise UpdateRefused(
            f"update refused: norm {norm:.6g} exceeds the bound {max_norm:.6g} (largest tensor "
            f"{_name(largest)}, norm {math.sqrt(squares[largest]):.6g})"
        )

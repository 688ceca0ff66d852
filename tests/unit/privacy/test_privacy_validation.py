"""Malformed or oversized updates are refused with a one-line reason naming the tensor."""

from __future__ import annotations

import numpy as np
import pytest

from fedpeft.common.errors import SecurityError
from fedpeft.common.privacy import UpdateRefused, validate_update

EXPECTED = {"lora_A": ((2, 3), "float32"), "lora_B": ((3, 2), "float32")}


def _update() -> dict[str, np.ndarray]:
    return {
        "lora_A": np.full((2, 3), 0.1, dtype=np.float32),
        "lora_B": np.full((3, 2), 0.2, dtype=np.float32),
    }


def _refusal(update: dict[str, object], max_norm: float | None = None) -> str:
    with pytest.raises(UpdateRefused) as caught:
        validate_update(update, EXPECTED, max_norm)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_good_update_passes() -> None:
    validate_update(_update(), EXPECTED, max_norm=1.0)
    validate_update(_update(), EXPECTED, max_norm=None)


def test_refusal_is_a_security_error() -> None:
    assert issubclass(UpdateRefused, SecurityError)


def test_nan_and_inf_are_counted() -> None:
    update = _update()
    update["lora_B"][0, 0] = np.nan
    assert "'lora_B' has 1 NaN or infinite values" in _refusal(update)
    update = _update()
    update["lora_A"][0, :2] = [np.inf, -np.inf]
    assert "'lora_A' has 2 NaN or infinite values" in _refusal(update)


def test_wrong_shape() -> None:
    update = _update()
    update["lora_A"] = np.zeros((3, 2), dtype=np.float32)
    assert "'lora_A' has shape (3, 2), expected (2, 3)" in _refusal(update)


def test_wrong_dtype() -> None:
    update = _update()
    update["lora_B"] = update["lora_B"].astype(np.float64)
    assert "'lora_B' has dtype <f8, expected <f4" in _refusal(update)
    update["lora_B"] = update["lora_B"].astype(">f4")
    assert "'lora_B' has dtype >f4" in _refusal(update)


def test_not_an_array() -> None:
    update: dict[str, object] = dict(_update())
    update["lora_A"] = [[0.1] * 3] * 2
    assert "'lora_A' is not an array" in _refusal(update)


def test_missing_and_extra_tensors() -> None:
    update = _update()
    del update["lora_B"]
    assert "'lora_B' is missing" in _refusal(update)

    update = _update()
    update["lora_C"] = np.zeros(1, dtype=np.float32)
    assert "unexpected tensor 'lora_C'" in _refusal(update)


def test_sender_chosen_key_cannot_break_the_log_line() -> None:
    update = _update()
    update["x\nFORGED " + "y" * 500] = np.zeros(1, dtype=np.float32)
    message = _refusal(update)
    assert "\\n" in message and len(message) < 200


def test_norm_above_the_bound() -> None:
    update = _update()
    update["lora_B"] *= 10  # norm sqrt(6 * 0.01 + 6 * 4) = 4.9051
    message = _refusal(update, max_norm=1.5)
    assert "norm 4.9051 exceeds the bound 1.5" in message
    assert "largest tensor 'lora_B'" in message

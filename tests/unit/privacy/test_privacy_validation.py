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


def _key_of_repr_length(length: int) -> str:
    return "k" * (length - 2)  # repr adds the two quotes


def test_a_key_at_the_limit_is_quoted_whole_and_a_longer_one_cut_to_the_limit() -> None:
    whole = _key_of_repr_length(80)
    update = {**_update(), whole: np.zeros(1, dtype=np.float32)}
    assert f"unexpected tensor {whole!r} (1 unexpected)" in _refusal(update)

    longer = _key_of_repr_length(81)
    update = {**_update(), longer: np.zeros(1, dtype=np.float32)}
    message = _refusal(update)
    shown = message.split("unexpected tensor ", 1)[1].split(" (", 1)[0]
    assert shown == repr(longer)[:77] + "..."
    assert len(shown) == 80


def test_update_exactly_at_the_bound_passes() -> None:
    update = {name: np.zeros(shape, dtype=np.float32) for name, (shape, _) in EXPECTED.items()}
    update["lora_A"][0, 0], update["lora_B"][0, 0] = 3.0, 4.0  # norm exactly 5
    validate_update(update, EXPECTED, max_norm=5.0)
    assert "norm 5 exceeds the bound 4.99" in _refusal(update, max_norm=4.99)


def test_largest_tensor_is_the_one_with_the_largest_norm_not_the_last_name() -> None:
    update = _update()
    update["lora_A"] *= 100  # lora_A is first by name, and now the largest
    assert "largest tensor 'lora_A', norm 24.4949" in _refusal(update, max_norm=1.5)


def test_norm_is_accumulated_beyond_float32_range() -> None:
    """Values whose squares overflow float32 (3e19 ** 2 > 3.4e38) are finite: the norm is
    still measured (in float64), so a bound above it passes and one below it names it."""
    update = {name: np.zeros(shape, dtype=np.float32) for name, (shape, _) in EXPECTED.items()}
    update["lora_A"][0, 0] = 3e19
    validate_update(update, EXPECTED, max_norm=4e19)
    assert "norm 3e+19 exceeds the bound 2e+19" in _refusal(update, max_norm=2e19)

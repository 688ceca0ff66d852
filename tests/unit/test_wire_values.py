"""A server's config values are read with their type checked, naming the key."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord

from fedpeft.common.errors import SecurityError
from fedpeft.common.wire import values

RECORD = ConfigRecord({"server-round": 3, "proximal-mu": 0.5, "run-config": "{}",
                       "flag": True, "ids": [1, 2]})


def test_well_typed_values_are_returned() -> None:
    assert values.integer(RECORD, "server-round") == 3
    assert values.number(RECORD, "proximal-mu") == 0.5
    assert values.number(RECORD, "server-round") == 3.0
    assert values.number(RECORD, "absent", default=0.0) == 0.0
    assert values.text(RECORD, "run-config") == "{}"


@pytest.mark.parametrize(("read", "key", "message"), [
    (values.integer, "proximal-mu", "'proximal-mu' must be an integer, got float"),
    (values.integer, "flag", "'flag' must be an integer, got bool"),
    (values.integer, "absent", "'absent' must be an integer, got NoneType"),
    (values.number, "ids", "'ids' must be a number, got list"),
    (values.text, "server-round", "'server-round' must be a string, got int"),
])
def test_a_wrongly_typed_value_is_refused_naming_the_key(read, key, message) -> None:
    with pytest.raises(SecurityError, match=message):
        read(RECORD, key)

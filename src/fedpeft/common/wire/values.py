"""Typed reads of the scalar settings a server puts in a train or evaluate ConfigRecord.

A ConfigRecord value may be any of Flower's record types (a list, bytes, a string): a server
that sends the wrong one is refused here, naming the key, instead of failing later in a
conversion or being silently coerced.
"""

from __future__ import annotations

from flwr.app import ConfigRecord

from fedpeft.common.errors import SecurityError


def integer(record: ConfigRecord, key: str) -> int:
    """`record[key]` as an int (a bool is not one)."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SecurityError(f"the server's config: {key!r} must be an integer, got "
                            f"{type(value).__name__}")
    return value


def number(record: ConfigRecord, key: str, default: float | None = None) -> float:
    """`record[key]` as a float; `default` when the key is absent (None: it must be there)."""
    if key not in record and default is not None:
        return default
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SecurityError(f"the server's config: {key!r} must be a number, got "
                            f"{type(value).__name__}")
    return float(value)


def text(record: ConfigRecord, key: str) -> str:
    """`record[key]` as a str."""
    value = record.get(key)
    if not isinstance(value, str):
        raise SecurityError(f"the server's config: {key!r} must be a string, got "
                            f"{type(value).__name__}")
    return value

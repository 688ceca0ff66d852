"""Flower node ids as the protocol uses them: graph vertices and Shamir x-coordinates.

Flower numbers nodes with unsigned 64-bit integers. Zero is excluded because a share at
x = 0 would be the secret itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeGuard

MAX_NODE_ID = 2**64 - 1
NODE_ID_SIZE = 8
"""Bytes of a node id inside derivation labels and associated data (big-endian)."""


def is_node_id(value: object) -> TypeGuard[int]:
    """Whether `value` is a usable node id: an int (not a bool) in [1, 2**64)."""
    return type(value) is int and 0 < value <= MAX_NODE_ID


def node_id_bytes(node_id: int) -> bytes:
    """The fixed-width encoding used wherever a node id is bound into a key or ciphertext."""
    return node_id.to_bytes(NODE_ID_SIZE, "big")


def distinct_node_ids(values: Iterable[object], what: str) -> tuple[int, ...]:
    """`values` as node ids, or ValueError naming `what` if one is invalid or repeated."""
    ids: list[int] = []
    for value in values:
        if not is_node_id(value):
            raise ValueError(f"{what}: {value!r} is not a node id (an int in [1, 2**64))")
        ids.append(value)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{what}: node ids must be distinct")
    return tuple(ids)

"""What the aggregator tells every institution about a round, and what institutions advertise.

`SecAggParams` travels from the server to the clients in a Flower ConfigRecord, so a client
must treat it as untrusted input: `from_record` checks every type and range and names the
offending key, and refuses settings a malicious server could exploit: a threshold that is not
more than half of an institution's share holders (the server could then collect t shares of
its self-mask seed from some holders and t shares of its mask key from others), or one below
degree + 1 - max_dropouts. `context` ("federation|run|round") is bound into every derived key,
seed and ciphertext, so nothing from one round can be replayed into another; `digest()` is
bound into every signed advertisement, so neighbours that accept each other's keys have been
told the same parameters.

The graph is over the protocol ids 1..participants and is fixed by `graph_seed`, so every
institution recomputes its own neighbours instead of taking the server's word for them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from fedpeft.common.crypto.seal import PUBLIC_KEY_SIZE
from fedpeft.common.crypto.secagg.encoding import MAX_QUANTIZATION_BITS
from fedpeft.common.crypto.secagg.prg import MAX_RING_BITS
from fedpeft.common.errors import SecurityError
from fedpeft.common.ring import headroom_problem

MIN_RING_BITS = 32
MIN_THRESHOLD = 2
"""With a threshold of 1 every share equals the secret: any single holder could unmask."""
MAX_CONTEXT_SIZE = 256
MAX_PARTICIPANTS = 100_000
GRAPH_SEED_SIZE = 32


@dataclass(frozen=True)
class SecAggParams:
    """The settings every participant of one round must agree on.

    `threshold` is how many shares rebuild an institution's secrets; `context` binds every
    key, seed and ciphertext to one round; `participants` institutions (ids 1..participants)
    were invited, each with `degree` neighbours in the graph drawn from `graph_seed`, and at
    most `max_dropouts` of them may be missing from the sum. Invalid values raise ValueError
    naming the field.
    """

    ring_bits: int
    quantization_bits: int
    clip_range: float
    threshold: int
    context: bytes
    participants: int
    degree: int
    max_dropouts: int
    graph_seed: bytes

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            problem = check(getattr(self, name))
            if problem:
                raise ValueError(f"{name}: {problem}")
        problem = headroom_problem(self.ring_bits, self.quantization_bits)
        if problem:
            raise ValueError(problem)
        self._check_graph()

    def _check_graph(self) -> None:
        if self.degree > self.participants - 1:
            raise ValueError(
                f"degree: {self.degree} neighbours among {self.participants} participants"
            )
        if self.max_dropouts > self.participants - 1:
            raise ValueError(
                f"max_dropouts: {self.max_dropouts} of {self.participants} participants"
            )
        holders = self.degree + 1
        if 2 * self.threshold <= holders:
            raise ValueError(
                f"threshold: {self.threshold} of {holders} share holders is not more than half: "
                "the server could rebuild both secrets of one institution"
            )
        if self.threshold < holders - self.max_dropouts:
            raise ValueError(
                f"threshold: {self.threshold} is below degree + 1 - max_dropouts = "
                f"{holders - self.max_dropouts}"
            )
        if self.threshold > holders:
            raise ValueError(f"threshold: {self.threshold} exceeds the {holders} share holders")

    def digest(self) -> bytes:
        """SHA-256 of every parameter: what a signed advertisement binds the round's terms to."""
        parts = [f"{name}={value.hex() if isinstance(value, bytes) else value!r}"
                 for name, value in sorted(self.to_record().items())]
        return hashlib.sha256("\n".join(parts).encode()).digest()

    def to_record(self) -> dict[str, int | float | bytes]:
        """The values for a Flower ConfigRecord (ints, a float and bytes)."""
        return {
            "ring_bits": self.ring_bits,
            "quantization_bits": self.quantization_bits,
            "clip_range": float(self.clip_range),
            "threshold": self.threshold,
            "context": self.context,
            "participants": self.participants,
            "degree": self.degree,
            "max_dropouts": self.max_dropouts,
            "graph_seed": self.graph_seed,
        }

    @classmethod
    def from_record(cls, values: Mapping[str, object]) -> SecAggParams:
        """Parse `to_record` output received from the aggregator; keys it does not use are
        ignored, so the record may carry other round settings alongside."""
        found: dict[str, object] = {}
        for field in fields(cls):
            if field.name not in values:
                raise SecurityError(f"secure-aggregation parameters: missing {field.name}")
            found[field.name] = values[field.name]
        try:
            return cls(**found)  # type: ignore[arg-type]  # each value is checked in __post_init__
        except ValueError as error:
            raise SecurityError(f"secure-aggregation parameters: {error}") from None


@dataclass(frozen=True)
class AdvertisedKeys:
    """An institution's two X25519 public keys for one round (32 raw bytes each).

    Two keys because the mask key's private half is revealed if the institution drops out,
    and that must not also expose the share ciphertexts encrypted under the cipher key.
    """

    cipher_public: bytes
    mask_public: bytes

    def __post_init__(self) -> None:
        for name in ("cipher_public", "mask_public"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != PUBLIC_KEY_SIZE:
                raise SecurityError(f"advertised {name} must be {PUBLIC_KEY_SIZE} bytes")

    def to_bytes(self) -> bytes:
        """cipher_public (32) || mask_public (32)."""
        return self.cipher_public + self.mask_public

    @classmethod
    def from_bytes(cls, data: bytes) -> AdvertisedKeys:
        """Parse `to_bytes` output; any other length is refused."""
        if not isinstance(data, bytes) or len(data) != 2 * PUBLIC_KEY_SIZE:
            raise SecurityError(f"advertised keys must be {2 * PUBLIC_KEY_SIZE} bytes")
        return cls(data[:PUBLIC_KEY_SIZE], data[PUBLIC_KEY_SIZE:])


def _int_in(low: int, high: int) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if type(value) is not int:
            return f"expected an int, got {type(value).__name__}"
        if not low <= value <= high:
            return f"{value} is outside [{low}, {high}]"
        return None

    return check


def _check_clip_range(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a float, got {type(value).__name__}"
    if not (math.isfinite(value) and value > 0):
        return f"{value} is not a positive finite number"
    return None


def _check_context(value: object) -> str | None:
    if not isinstance(value, bytes):
        return f"expected bytes, got {type(value).__name__}"
    if not 1 <= len(value) <= MAX_CONTEXT_SIZE:
        return f"length {len(value)} is outside [1, {MAX_CONTEXT_SIZE}]"
    return None


def _check_graph_seed(value: object) -> str | None:
    if not isinstance(value, bytes):
        return f"expected bytes, got {type(value).__name__}"
    if len(value) != GRAPH_SEED_SIZE:
        return f"length {len(value)} is not {GRAPH_SEED_SIZE}"
    return None


_CHECKS: dict[str, Callable[[object], str | None]] = {
    "ring_bits": _int_in(MIN_RING_BITS, MAX_RING_BITS),
    "quantization_bits": _int_in(1, MAX_QUANTIZATION_BITS),
    "clip_range": _check_clip_range,
    "threshold": _int_in(MIN_THRESHOLD, 2**31 - 1),
    "context": _check_context,
    "participants": _int_in(2, MAX_PARTICIPANTS),
    "degree": _int_in(1, MAX_PARTICIPANTS - 1),
    "max_dropouts": _int_in(0, MAX_PARTICIPANTS - 1),
    "graph_seed": _check_graph_seed,
}

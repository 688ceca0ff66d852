"""Round parameters and advertised keys survive a Flower record and reject hostile values."""

from __future__ import annotations

import pytest

from fedpeft.common.crypto.secagg.params import AdvertisedKeys, SecAggParams
from fedpeft.common.errors import SecurityError

PARAMS = SecAggParams(
    ring_bits=64, quantization_bits=24, clip_range=4.0, threshold=3, context=b"fed|run|7",
    participants=5, degree=4, max_dropouts=2, graph_seed=bytes(32),
)


def test_record_round_trip_uses_config_record_types() -> None:
    record = PARAMS.to_record()
    assert {type(value) for value in record.values()} <= {int, float, bytes}
    assert SecAggParams.from_record(record) == PARAMS


def test_unrelated_record_entries_are_ignored() -> None:
    assert SecAggParams.from_record({**PARAMS.to_record(), "stage": "share"}) == PARAMS


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ring_bits", True),
        ("ring_bits", 64.0),
        ("ring_bits", 65),
        ("ring_bits", 30),
        ("quantization_bits", 0),
        ("quantization_bits", "24"),
        ("clip_range", "4"),
        ("clip_range", 0.0),
        ("clip_range", float("nan")),
        ("threshold", 1),
        ("threshold", 2.0),
        ("context", "fed|run|7"),
        ("context", b""),
        ("context", b"x" * 257),
        ("participants", 1),
        ("degree", 0),
        ("max_dropouts", -1),
        ("graph_seed", b"short"),
    ],
)
def test_invalid_values_are_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(SecurityError, match=key):
        SecAggParams.from_record({**PARAMS.to_record(), key: value})


def test_missing_key_is_refused_naming_it() -> None:
    record = PARAMS.to_record()
    del record["threshold"]
    with pytest.raises(SecurityError, match="missing threshold"):
        SecAggParams.from_record(record)


def test_ring_must_leave_headroom_above_the_levels() -> None:
    with pytest.raises(SecurityError, match="ring_bits"):
        SecAggParams.from_record({**PARAMS.to_record(), "ring_bits": 32, "quantization_bits": 24})
    with pytest.raises(ValueError, match="ring_bits"):
        SecAggParams(32, 24, 4.0, 3, b"c", 5, 4, 2, bytes(32))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"threshold": 2}, "threshold: 2 of 5 share holders is not more than half"),
        ({"threshold": 2, "participants": 20, "degree": 3},
         "threshold: 2 of 4 share holders is not more than half"),
        ({"max_dropouts": 1}, "threshold: 3 is below degree \\+ 1 - max_dropouts = 4"),
        ({"threshold": 6}, "threshold: 6 exceeds the 5 share holders"),
        ({"degree": 5}, "degree: 5 neighbours among 5 participants"),
        ({"max_dropouts": 5}, "max_dropouts: 5 of 5 participants"),
    ],
)
def test_parameters_a_malicious_server_could_exploit_are_refused(
        change: dict[str, object], problem: str) -> None:
    with pytest.raises(SecurityError, match=problem):
        SecAggParams.from_record({**PARAMS.to_record(), **change})


@pytest.mark.parametrize(
    "change",
    [{"ring_bits": 63}, {"quantization_bits": 23}, {"clip_range": 4.5}, {"context": b"fed|run|8"},
     {"threshold": 4, "max_dropouts": 1}, {"participants": 6}, {"degree": 3, "threshold": 3},
     {"max_dropouts": 0, "threshold": 5}, {"graph_seed": bytes(31) + b"\x01"}],
)
def test_the_digest_signed_into_advertisements_covers_every_parameter(
        change: dict[str, object]) -> None:
    assert SecAggParams.from_record({**PARAMS.to_record(), **change}).digest() != PARAMS.digest()


def test_advertised_keys_round_trip_and_length_checks() -> None:
    keys = AdvertisedKeys(bytes(range(32)), bytes(range(32, 64)))
    assert AdvertisedKeys.from_bytes(keys.to_bytes()) == keys
    for bad in (b"", keys.to_bytes()[:-1], keys.to_bytes() + b"\x00"):
        with pytest.raises(SecurityError, match="advertised keys must be 64 bytes"):
            AdvertisedKeys.from_bytes(bad)
    with pytest.raises(SecurityError, match="mask_public"):
        AdvertisedKeys(bytes(32), bytes(31))

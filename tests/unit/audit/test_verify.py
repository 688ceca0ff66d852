"""Verifying ledgers: each way of tampering is caught at the first bad record, and named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fedpeft.common.audit import Ledger, sha256_bytes, verify_ledger
from fedpeft.common.audit.records import ZERO_HASH, encode_line, genesis_body, sign_record
from fedpeft.common.crypto import SigningPrivateKey, fingerprint, generate_signing_key
from fedpeft.common.errors import ConfigError

Lines = list[bytes]

_BODIES = [
    ("run-start", {"config_sha256": "ab" * 32}),
    ("round", {"round": 1, "institutions": ["bank-a", "bank-b"]}),
    ("round", {"round": 2, "institutions": ["bank-a", "bank-b"]}),
    ("round", {"round": 3, "institutions": ["bank-a"]}),
    ("run-end", {"rounds": 3}),
]
"""Genesis is record 0, so these are records 1 to 5."""


@pytest.fixture(scope="module")
def key() -> SigningPrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def intruder() -> SigningPrivateKey:
    return generate_signing_key()


def _write_ledger(path: Path, key: SigningPrivateKey, role: str = "coordinator",
                  bodies: list[tuple[str, dict]] = _BODIES) -> Ledger:
    ledger = Ledger.create(path, key, owner="FED-1", role=role)
    for kind, body in bodies:
        ledger.append(kind, body)
    return ledger


@pytest.fixture()
def ledger_path(tmp_path: Path, key: SigningPrivateKey) -> Path:
    path = tmp_path / "ledger.jsonl"
    _write_ledger(path, key)
    return path


def _read(path: Path) -> Lines:
    return path.read_bytes().split(b"\n")[:-1]


def _write(path: Path, lines: Lines) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_an_intact_ledger_verifies(ledger_path: Path, key: SigningPrivateKey) -> None:
    report = verify_ledger(ledger_path)
    assert report.ok and report.first_bad is None and report.reason is None
    assert report.path == ledger_path
    assert (report.records, report.owner, report.role) == (6, "FED-1", "coordinator")
    assert report.signer == fingerprint(key.public_key())
    assert report.head == sha256_bytes(_read(ledger_path)[-1])
    assert report.kinds == {"genesis": 1, "run-start": 1, "round": 3, "run-end": 1}
    assert report.complete is True and report.key_pinned is False
    assert verify_ledger(ledger_path, key.public_key()).key_pinned is True


def test_completeness_is_flagged_not_failed(tmp_path: Path, key: SigningPrivateKey) -> None:
    coordinator = tmp_path / "coordinator.jsonl"
    _write_ledger(coordinator, key, bodies=_BODIES[:-1])
    report = verify_ledger(coordinator)
    assert report.ok and report.complete is False
    institution = tmp_path / "institution.jsonl"
    _write_ledger(institution, key, role="institution", bodies=_BODIES[:-1])
    assert verify_ledger(institution).complete is None


def _edit_body(lines: Lines) -> None:
    lines[2] = lines[2].replace(b'"bank-b"', b'"bank-c"')


def _edit_last_body(lines: Lines) -> None:
    lines[5] = lines[5].replace(b'"rounds":3', b'"rounds":4')


def _edit_signature(lines: Lines) -> None:
    start = lines[3].index(b'"signature":"') + len(b'"signature":"') + 10
    flipped = b"B" if lines[3][start:start + 1] == b"A" else b"A"
    lines[3] = lines[3][:start] + flipped + lines[3][start + 1:]


def _add_whitespace(lines: Lines) -> None:
    lines[5] = lines[5].replace(b'"kind":', b'"kind": ')


def _break_json(lines: Lines) -> None:
    lines[4] = lines[4][:40]


def _swap(lines: Lines) -> None:
    lines[2], lines[3] = lines[3], lines[2]


def _duplicate(lines: Lines) -> None:
    lines.insert(3, lines[2])


def _duplicate_last(lines: Lines) -> None:
    lines.append(lines[-1])


def _swap_genesis(lines: Lines) -> None:
    lines[0], lines[1] = lines[1], lines[0]


def _drop_field(lines: Lines) -> None:
    record = json.loads(lines[2])
    del record["time"]
    lines[2] = encode_line(record)


def _seq_as_text(lines: Lines) -> None:
    lines[2] = lines[2].replace(b'"seq":2', b'"seq":"2"')


def _nan_in_body(lines: Lines) -> None:
    lines[2] = lines[2].replace(b'"round":1', b'"round":NaN')


def _removed_and_float_seq(lines: Lines) -> None:
    """Record 2 removed, and a later record's seq spelled 2.0 (not an int, so not record 2)."""
    lines.pop(2)
    lines[3] = lines[3].replace(b'"seq":4', b'"seq":2.0')


def _huge_number(lines: Lines) -> None:
    lines[2] = lines[2].replace(b'"round":1', b'"round":1e999')


TAMPERING: dict[str, tuple[Callable[[Lines], None], int, str]] = {
    "edited body byte": (_edit_body, 2, "signature does not verify"),
    "edited last record": (_edit_last_body, 5, "signature does not verify"),
    "edited signature": (_edit_signature, 3, "signature does not verify"),
    "whitespace added": (_add_whitespace, 5, "not in canonical form"),
    "invalid JSON": (_break_json, 4, "not valid JSON"),
    "middle record deleted": (lambda lines: lines.pop(2), 2,
                              "sequence number 3 where 2 was expected (a record was removed)"),
    "first record deleted": (lambda lines: lines.pop(0), 0,
                             "sequence number 1 where 0 was expected (a record was removed)"),
    "records swapped": (_swap, 2,
                        "sequence number 3 where 2 was expected (records were reordered)"),
    "genesis swapped": (_swap_genesis, 0, "records were reordered"),
    "field removed": (_drop_field, 2, "not a ledger record (fields missing or added)"),
    "seq as text": (_seq_as_text, 2, "a field has the wrong type"),
    "NaN in a body": (_nan_in_body, 2, "not valid JSON"),
    "number beyond a float": (_huge_number, 2, "not in canonical form"),
    "removed, float seq later": (_removed_and_float_seq, 2, "a record was removed"),
    "record duplicated": (_duplicate, 3, "copy of record 2"),
    "last record duplicated": (_duplicate_last, 6, "copy of record 5"),
}


@pytest.mark.parametrize("name", TAMPERING)
def test_tampering_is_caught_at_the_first_bad_record(ledger_path: Path, name: str) -> None:
    tamper, first_bad, why = TAMPERING[name]
    lines = _read(ledger_path)
    tamper(lines)
    _write(ledger_path, lines)

    report = verify_ledger(ledger_path)

    assert not report.ok
    assert report.first_bad == first_bad
    assert report.reason.startswith(f"record {first_bad} (line {first_bad + 1}): ")
    assert why in report.reason and "\n" not in report.reason
    assert report.records == first_bad and not report.complete
    assert report.path == ledger_path
    if first_bad == 0:  # nothing verified: nothing is claimed about the ledger
        assert (report.owner, report.role, report.signer, report.head) == (None,) * 4


def _forged(lines: Lines, signing_key: SigningPrivateKey, claimed_signer: str | None) -> bytes:
    record = sign_record(signing_key, {"seq": len(lines), "time": "2030-01-01T00:00:00+00:00",
                                       "kind": "round", "body": {"round": 4},
                                       "prev": sha256_bytes(lines[-1])})
    if claimed_signer is not None:
        record["signer"] = claimed_signer
    return encode_line(record)


@pytest.mark.parametrize("claims_ledger_key", [False, True])
def test_a_record_signed_by_another_key_is_caught(
    ledger_path: Path, key: SigningPrivateKey, intruder: SigningPrivateKey, claims_ledger_key: bool
) -> None:
    lines = _read(ledger_path)
    claimed = fingerprint(key.public_key()) if claims_ledger_key else None
    _write(ledger_path, [*lines, _forged(lines, intruder, claimed)])

    report = verify_ledger(ledger_path)

    assert (report.ok, report.first_bad, report.records) == (False, 6, 6)
    expected = ("signature does not verify" if claims_ledger_key
                else f"signed by key {fingerprint(intruder.public_key())[:16]}, not the ledger's")
    assert report.reason.startswith("record 6 (line 7): ") and expected in report.reason


def test_a_ledger_re_signed_by_another_key_fails_only_when_pinned(
    tmp_path: Path, key: SigningPrivateKey, intruder: SigningPrivateKey
) -> None:
    rewritten = tmp_path / "ledger.jsonl"
    _write_ledger(rewritten, intruder, bodies=[("run-start", {"config_sha256": "cd" * 32})])

    assert verify_ledger(rewritten).ok  # internally consistent: only a pinned key tells
    report = verify_ledger(rewritten, key.public_key())

    assert (report.ok, report.first_bad, report.key_pinned) == (False, 0, True)
    assert report.reason.startswith("record 0 (line 1): signed by key ")
    assert "not the pinned key" in report.reason


def test_a_torn_last_line_is_reported_as_such(ledger_path: Path) -> None:
    data = ledger_path.read_bytes()
    ledger_path.write_bytes(data[:-30])

    report = verify_ledger(ledger_path)

    assert (report.ok, report.first_bad, report.records, report.path) == (False, 5, 5, ledger_path)
    assert report.reason == ("record 5 (line 6): incomplete last line "
                             "(a write was interrupted mid-record)")


def test_empty_and_missing_ledgers(tmp_path: Path) -> None:
    empty = tmp_path / "ledger.jsonl"
    empty.write_bytes(b"")
    report = verify_ledger(empty)
    assert (report.ok, report.first_bad, report.reason, report.path) == (
        False, 0, "ledger is empty (no genesis record)", empty)
    with pytest.raises(ConfigError, match="ledger not found"):
        verify_ledger(tmp_path / "missing.jsonl")


def test_a_record_spliced_from_another_ledger_of_the_same_key_is_caught(
    tmp_path: Path, ledger_path: Path, key: SigningPrivateKey
) -> None:
    """Same key, same position, valid signature: only the previous-record hash tells that
    record 3 was taken from another ledger (e.g. another run of the same federation)."""
    other = tmp_path / "other.jsonl"
    _write_ledger(other, key, bodies=[("run-start", {"config_sha256": "cd" * 32}),
                                      ("round", {"round": 1, "institutions": ["bank-z"]}),
                                      ("round", {"round": 2, "institutions": ["bank-z"]})])
    lines, foreign = _read(ledger_path), _read(other)
    lines[3] = foreign[3]
    _write(ledger_path, lines)

    report = verify_ledger(ledger_path, key.public_key())

    assert (report.ok, report.first_bad, report.records) == (False, 3, 3)
    assert report.reason.startswith("record 3 (line 4): ")
    assert "previous-record hash" in report.reason


def _genesis(key: SigningPrivateKey, **changes: object) -> bytes:
    """A genesis record signed by `key` itself, with body fields changed."""
    body = {**genesis_body(key.public_key(), "FED-1", "coordinator"), **changes}
    return encode_line(sign_record(key, {"seq": 0, "time": "2030-01-01T00:00:00+00:00",
                                         "kind": "genesis", "body": body, "prev": ZERO_HASH}))


@pytest.mark.parametrize(("changes", "why"), [
    ({"owner": 7}, "names no owner or role"),
    ({"ledger": "auditor"}, "names no owner or role"),
    ({"public_key": "!"}, "carries no valid public key"),
])
def test_a_self_signed_genesis_must_name_its_owner_role_and_key(
    tmp_path: Path, key: SigningPrivateKey, changes: dict, why: str
) -> None:
    path = tmp_path / "ledger.jsonl"
    if changes.get("public_key") == "!":  # a stray character inside the real key's base64
        text = genesis_body(key.public_key(), "x", "coordinator")["public_key"]
        changes = {"public_key": text[:10] + "!" + text[10:]}
    _write(path, [_genesis(key, **changes)])

    report = verify_ledger(path)

    assert (report.ok, report.first_bad) == (False, 0)
    assert report.reason.startswith("record 0 (line 1): ") and why in report.reason


def test_a_malformed_signer_fingerprint_is_named_as_such(ledger_path: Path,
                                                         key: SigningPrivateKey) -> None:
    lines = _read(ledger_path)
    _write(ledger_path, [*lines, _forged(lines, key, "not-a-fingerprint")])

    report = verify_ledger(ledger_path)

    assert (report.ok, report.first_bad) == (False, 6)
    assert "signed by key a malformed fingerprint, not the ledger's key" in report.reason

"""Writing ledgers: the record format, continuing a ledger, and what the writer refuses."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from fedpeft.common.audit import Ledger, canonical_json, sha256_bytes, verify_ledger
from fedpeft.common.audit.records import ZERO_HASH, signed_bytes
from fedpeft.common.crypto import SigningPrivateKey, fingerprint, generate_signing_key, verify
from fedpeft.common.errors import ConfigError, SecurityError


@pytest.fixture(scope="module")
def key() -> SigningPrivateKey:
    return generate_signing_key()


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def test_records_are_canonical_chained_and_signed(tmp_path: Path, key: SigningPrivateKey) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger.create(path, key, owner="FED-1", role="coordinator")
    returned = ledger.append("round", {"round": 1, "institutions": ["bank-b", "bank-a"]})
    lines = _lines(path)
    genesis, first = (json.loads(line) for line in lines)

    assert [canonical_json(json.loads(line)) for line in lines] == lines
    assert returned == first
    assert (genesis["seq"], genesis["kind"], genesis["prev"]) == (0, "genesis", ZERO_HASH)
    assert genesis["body"]["ledger"] == "coordinator" and genesis["body"]["owner"] == "FED-1"
    assert genesis["body"]["version"] == 1  # the record format, for readers of later formats
    raw = base64.b64decode(genesis["body"]["public_key"])
    assert raw == key.public_key().public_bytes_raw()
    assert (first["seq"], first["prev"]) == (1, sha256_bytes(lines[0]))
    assert first["signer"] == fingerprint(key.public_key())
    assert first["time"].endswith("+00:00")
    verify(key.public_key(), base64.b64decode(first["signature"]), signed_bytes(first))
    assert (ledger.records, ledger.head) == (2, sha256_bytes(lines[1]))


def test_open_continues_the_chain(tmp_path: Path, key: SigningPrivateKey) -> None:
    path = tmp_path / "ledger.jsonl"
    first = Ledger.create(path, key, owner="bank-a", role="institution")
    first.append("update-sent", {"round": 1})
    head = first.head

    again = Ledger.open(path, key)
    record = again.append("update-sent", {"round": 2})

    assert (record["seq"], record["prev"]) == (2, head)
    report = verify_ledger(path, key.public_key())
    assert report.ok and report.records == 3 and report.head == again.head


def test_create_refuses_an_existing_file_and_unknown_roles(
    tmp_path: Path, key: SigningPrivateKey
) -> None:
    path = tmp_path / "ledger.jsonl"
    Ledger.create(path, key, owner="FED-1", role="coordinator")
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        Ledger.create(path, key, owner="FED-1", role="coordinator")
    assert path.read_bytes() == before
    with pytest.raises(ConfigError, match="role 'auditor'"):
        Ledger.create(tmp_path / "other.jsonl", key, owner="x", role="auditor")
    with pytest.raises(ConfigError, match="owner must be a non-empty name"):
        Ledger.create(tmp_path / "other.jsonl", key, owner="", role="coordinator")
    assert not (tmp_path / "other.jsonl").exists()


def test_open_refuses_another_signers_ledger(tmp_path: Path, key: SigningPrivateKey) -> None:
    path = tmp_path / "ledger.jsonl"
    Ledger.create(path, key, owner="FED-1", role="coordinator")
    with pytest.raises(SecurityError, match="refusing to append to another signer's ledger"):
        Ledger.open(path, generate_signing_key())


@pytest.mark.parametrize("damage", ["edit", "torn"])
def test_open_refuses_to_extend_a_broken_ledger(
    tmp_path: Path, key: SigningPrivateKey, damage: str
) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger.create(path, key, owner="FED-1", role="coordinator")
    ledger.append("round", {"round": 1})
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"round":1', b'"round":2') if damage == "edit" else data[:-9])
    with pytest.raises(SecurityError, match=r"record 1 \(line 2\).*refusing to extend"):
        Ledger.open(path, key)


def test_append_refuses_a_file_changed_behind_its_back(
    tmp_path: Path, key: SigningPrivateKey
) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger.create(path, key, owner="FED-1", role="coordinator")
    with path.open("ab") as handle:
        handle.write(b"{}\n")
    with pytest.raises(SecurityError, match="changed on disk"):
        ledger.append("round", {"round": 1})


def test_bad_appends_leave_the_file_untouched(
    tmp_path: Path, key: SigningPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger.create(path, key, owner="FED-1", role="coordinator")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="genesis"):
        ledger.append("genesis", {})
    with pytest.raises(ValueError, match="expected a non-empty name"):
        ledger.append("", {})
    with pytest.raises(ValueError, match="not JSON compliant"):
        ledger.append("round", {"loss": float("nan")})

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        ledger.append("round", {"round": 1})
    monkeypatch.undo()

    assert path.read_bytes() == before
    ledger.append("round", {"round": 1})  # the failed write left the ledger extendable
    assert verify_ledger(path).ok

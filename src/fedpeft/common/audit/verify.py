"""Checking a ledger: every record in order, stopping at the first that fails.

The chain shows that no record was edited, removed from the middle, reordered, duplicated or
added by another key. It cannot show that records were cut from the end: a ledger truncated
after any record is itself a valid ledger. That is why the report gives the record count and
the head hash (of the last line), for comparison with a copy kept elsewhere (the run's
summary, a ticket, an e-mail to the compliance officer), and marks a coordinator ledger whose
last record is not `run-end` as incomplete. `expectations_unmet` turns both into refusals: a
cut coordinator ledger, or a head other than the one kept elsewhere, is not a verified run.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fedpeft.common.audit.records import (
    FIELDS,
    COORDINATOR,
    GENESIS,
    ROLES,
    RUN_END,
    ZERO_HASH,
    decode_public_key,
    decode_signature,
    encode_line,
    line_hash,
    signed_bytes,
)
from fedpeft.common.crypto import SigningPublicKey, fingerprint, verify
from fedpeft.common.crypto.keys import SHORT_FINGERPRINT_CHARS
from fedpeft.common.errors import ConfigError, SecurityError

_HEX64 = re.compile(r"[0-9a-f]{64}")
_TYPES: dict[str, type] = {
    "seq": int, "time": str, "kind": str, "body": dict, "prev": str, "signer": str,
    "signature": str,
}


@dataclass(frozen=True)
class LedgerReport:
    """The outcome of `verify_ledger`.

    `records`, `head` and `kinds` cover the records that verified: all of them when `ok`,
    those before `first_bad` otherwise. `first_bad` is a 0-based position in the file (line
    `first_bad + 1`), which is the `seq` an intact record there would carry.
    """

    path: Path
    records: int
    owner: str | None
    role: str | None
    signer: str | None
    """Fingerprint of the key that signed the ledger (SHA-256 of the raw public key, hex)."""
    head: str | None
    """SHA-256 of the last verified line: compare with the run's summary to see truncation."""
    kinds: dict[str, int]
    ok: bool
    first_bad: int | None
    reason: str | None
    key_pinned: bool
    """Whether the genesis key was checked against a key the caller trusts."""
    complete: bool | None
    """False for a coordinator ledger not ending in `run-end`; None for institution ledgers."""


def verify_ledger(
    path: str | os.PathLike[str], expected_public_key: SigningPublicKey | None = None
) -> LedgerReport:
    """Verify the ledger at `path`, optionally pinning its signer to `expected_public_key`.

    A broken ledger is reported (ok False, with the first bad record and why), not raised:
    only an unreadable path raises (ConfigError). Without a pinned key a ledger rewritten and
    re-signed by someone else verifies; the caller must compare `signer` with a trusted
    fingerprint.
    """
    path = Path(path)
    return check_ledger(path, read_ledger(path), expected_public_key)


def expectations_unmet(
    report: LedgerReport, *, allow_incomplete: bool = False, expect_head: str | None = None
) -> str | None:
    """Why a ledger that verified must still be refused, or None.

    A coordinator ledger without `run-end` is the trace a cut tail leaves (the chain cannot
    show it), so it is refused unless the caller accepts a run still in progress; with
    `expect_head` (a head hash kept where the ledger's keeper cannot rewrite it) any ledger
    whose last record is another one is refused, which catches a cut tail of any ledger.
    """
    if expect_head is not None:
        wanted = expect_head.strip().lower()
        if not _HEX64.fullmatch(wanted):
            raise ConfigError(f"--expect-head {expect_head!r}: expected a SHA-256 hash "
                              "(64 hexadecimal digits)")
        if report.head != wanted:
            return (f"head is {report.head or 'none'} after {report.records} record(s), not the "
                    f"expected {wanted} (records were cut, added or replaced)")
    if report.complete is False and not allow_incomplete:
        return ("no run-end record: the run did not finish or the ledger's tail was cut "
                "(--allow-incomplete accepts a run still in progress)")
    return None


def read_ledger(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"ledger not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a ledger file") from None


def check_ledger(
    path: Path, data: bytes, expected_public_key: SigningPublicKey | None = None
) -> LedgerReport:
    """Verify ledger bytes `data` read from `path` (shared with `Ledger.open`, which must
    check the very bytes it goes on appending to)."""
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline, as every complete record does
    chain = _Chain(lines, expected_public_key)
    for position, line in enumerate(lines):
        try:
            chain.accept(position, line)
        except SecurityError as err:
            return chain.report(path, position, f"record {position} (line {position + 1}): {err}")
    if torn:
        return chain.report(path, len(lines), f"record {len(lines)} (line {len(lines) + 1}): "
                            "incomplete last line (a write was interrupted mid-record)")
    if not lines:
        return chain.report(path, 0, "ledger is empty (no genesis record)")
    return chain.report(path)


class _Chain:
    """The state carried from one record to the next while walking the file."""

    def __init__(self, lines: list[bytes], expected: SigningPublicKey | None) -> None:
        self._lines = lines
        self._expected = None if expected is None else fingerprint(expected)
        self._key: SigningPublicKey | None = None
        self._signer: str | None = None
        self._owner: str | None = None
        self._role: str | None = None
        self._head: str | None = None
        self._seen: dict[str, int] = {}
        self._kinds: Counter[str] = Counter()
        self._last_kind: str | None = None

    def accept(self, position: int, line: bytes) -> None:
        """Return if the record at `position` continues the chain; raise SecurityError why not."""
        record = _parse(line)
        digest = line_hash(line)
        if digest in self._seen:
            raise SecurityError(f"copy of record {self._seen[digest]} (a record was duplicated)")
        if record["seq"] != position:
            raise SecurityError(self._seq_problem(position, record["seq"]))
        if position == 0:
            self._accept_genesis(record)
        elif record["kind"] == GENESIS:
            raise SecurityError("a second genesis record")
        elif record["prev"] != self._head:
            raise SecurityError(
                f"previous-record hash does not match record {position - 1} "
                "(a record was edited, removed or reordered)"
            )
        self._check_signature(record)
        self._seen[digest] = position
        self._head = digest
        self._kinds[record["kind"]] += 1
        self._last_kind = record["kind"]

    def report(
        self, path: Path, first_bad: int | None = None, reason: str | None = None
    ) -> LedgerReport:
        ok = first_bad is None
        complete = (ok and self._last_kind == RUN_END) if self._role == COORDINATOR else None
        return LedgerReport(
            path=path, records=sum(self._kinds.values()), owner=self._owner, role=self._role,
            signer=self._signer, head=self._head, kinds=dict(self._kinds), ok=ok,
            first_bad=first_bad, reason=reason, key_pinned=self._expected is not None,
            complete=complete,
        )

    def _accept_genesis(self, record: dict) -> None:
        body = record["body"]
        if record["kind"] != GENESIS:
            raise SecurityError("the first record is not a genesis record")
        if record["prev"] != ZERO_HASH:
            raise SecurityError("genesis record does not start a chain (prev is not 64 zeros)")
        try:
            key = decode_public_key(body["public_key"])
        except (KeyError, TypeError, ValueError):
            raise SecurityError("genesis record carries no valid public key") from None
        if body.get("ledger") not in ROLES or not isinstance(body.get("owner"), str):
            raise SecurityError(f"genesis record names no owner or role ({' or '.join(ROLES)})")
        signer = fingerprint(key)
        if self._expected is not None and signer != self._expected:
            raise SecurityError(
                f"signed by key {_short(signer)}, not the pinned key {_short(self._expected)} "
                "(the ledger was re-signed or is not the expected one)"
            )
        self._key, self._signer = key, signer
        self._owner, self._role = body["owner"], body["ledger"]

    def _check_signature(self, record: dict) -> None:
        if record["signer"] != self._signer:
            claimed = record["signer"]
            who = _short(claimed) if _HEX64.fullmatch(claimed) else "a malformed fingerprint"
            raise SecurityError(f"signed by key {who}, not the ledger's key {_short(self._signer)}")
        try:
            verify(self._key, decode_signature(record["signature"]), signed_bytes(record))
        except (SecurityError, ValueError):
            raise SecurityError(
                "signature does not verify (the record was edited or forged)"
            ) from None

    def _seq_problem(self, position: int, seq: int) -> str:
        found = f"sequence number {seq} where {position} was expected"
        later = self._lines[position + 1:]
        if seq > position and not any(_seq_of(line) == position for line in later):
            return f"{found} (a record was removed)"
        return f"{found} (records were reordered)"


def _parse(line: bytes) -> dict:
    """The record on `line`, which must be exactly its canonical encoding."""
    try:
        record = json.loads(line, parse_constant=_refuse_constant)
    except ValueError:  # UnicodeDecodeError included
        raise SecurityError("not valid JSON (the line was edited or cut)") from None
    if not isinstance(record, dict) or set(record) != FIELDS:
        raise SecurityError("not a ledger record (fields missing or added)")
    if any(not isinstance(record[name], kind) or isinstance(record[name], bool)
           for name, kind in _TYPES.items()):
        raise SecurityError("a field has the wrong type (the line was edited)")
    try:
        canonical = encode_line(record) == line
    except ValueError:  # a number too large for a float, read as infinity
        canonical = False
    if not canonical:
        raise SecurityError("not in canonical form (the line was edited)")
    return record


def _seq_of(line: bytes) -> int | None:
    try:
        seq = json.loads(line).get("seq")
    except (ValueError, AttributeError):
        return None
    return seq if isinstance(seq, int) else None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _short(fingerprint_hex: str | None) -> str:
    return (fingerprint_hex or "?")[:SHORT_FINGERPRINT_CHARS]

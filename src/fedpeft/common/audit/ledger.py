"""Writing a ledger: append-only, hash-chained, every record signed.

The file is only ever appended to, one whole line per `os.write` on a descriptor opened with
O_APPEND, then fsynced: a crash can leave at most a torn last line, which `verify_ledger`
reports as such, and never damages a record already written. A ledger is continued only
after its whole chain has verified, and only with the key that started it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from fedpeft.common.audit.hashing import canonical_sha256
from fedpeft.common.audit.records import (
    GENESIS,
    ROLES,
    ZERO_HASH,
    encode_line,
    genesis_body,
    line_hash,
    sign_record,
)
from fedpeft.common.audit.verify import check_ledger, read_ledger
from fedpeft.common.crypto import SigningPrivateKey, fingerprint, short_fingerprint
from fedpeft.common.crypto.keys import (
    PUBLIC_FILE_MODE,
    SHORT_FINGERPRINT_CHARS,
    write_file_atomically,
)
from fedpeft.common.errors import ConfigError, SecurityError

__all__ = ["LEDGER_FILE", "Ledger", "canonical_sha256"]

LEDGER_FILE = "ledger.jsonl"
"""The ledger's name inside a run folder (coordinator) or an institution's state folder."""

_log = logging.getLogger(__name__)


class Ledger:
    """An open ledger this process appends to; make one with `create` or `open`.

    One writer per file: the size on disk is checked before every append, so a second writer
    or an outside edit is refused instead of forking the chain. Appends from several threads
    of that writer are serialized.
    """

    def __init__(
        self, path: Path, signing_key: SigningPrivateKey, *, records: int, head: str, size: int
    ) -> None:
        self.path = path
        self._key = signing_key
        self._records = records
        self._head = head
        self._size = size
        self._lock = threading.Lock()

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], signing_key: SigningPrivateKey, owner: str, role: str
    ) -> Ledger:
        """Start a ledger at `path` (which must not exist) with its genesis record."""
        path = Path(path)
        if role not in ROLES:
            raise ConfigError(f"ledger role {role!r}: expected one of {', '.join(ROLES)}")
        if not isinstance(owner, str) or not owner:
            raise ConfigError("ledger owner must be a non-empty name")
        if path.exists():
            raise ConfigError(f"ledger {path} already exists; continue it with Ledger.open")
        body = genesis_body(signing_key.public_key(), owner, role)
        line = encode_line(sign_record(signing_key, _unsigned(0, GENESIS, body, ZERO_HASH)))
        write_file_atomically(path, line + b"\n", mode=PUBLIC_FILE_MODE, overwrite=False)
        _log.info("ledger %s started for %s %s, key %s", path, role, owner,
                  short_fingerprint(signing_key.public_key()))
        return cls(path, signing_key, records=1, head=line_hash(line), size=len(line) + 1)

    @classmethod
    def open(cls, path: str | os.PathLike[str], signing_key: SigningPrivateKey) -> Ledger:
        """Continue the ledger at `path` after verifying it; SecurityError if it is broken or
        was started with another key."""
        path = Path(path)
        data = read_ledger(path)
        report = check_ledger(path, data)
        if not report.ok:
            raise SecurityError(f"{path}: {report.reason}; refusing to extend a broken ledger")
        public = signing_key.public_key()
        if report.signer != fingerprint(public):
            raise SecurityError(
                f"{path}: signed by key {(report.signer or '?')[:SHORT_FINGERPRINT_CHARS]}, not by "
                f"this key {short_fingerprint(public)}; refusing to append to another signer's "
                "ledger"
            )
        assert report.head is not None  # a verified ledger has at least its genesis record
        return cls(path, signing_key, records=report.records, head=report.head, size=len(data))

    @property
    def records(self) -> int:
        """How many records the ledger holds, genesis included."""
        return self._records

    @property
    def head(self) -> str:
        """SHA-256 of the last line: record it outside the ledger to detect a cut tail."""
        return self._head

    @property
    def signer(self) -> str:
        """Fingerprint of the signing key, as the records' `signer` field carries it."""
        return fingerprint(self._key.public_key())

    def append(self, kind: str, body: Mapping[str, object]) -> dict[str, object]:
        """Sign and durably write one record; returns it as written."""
        if not isinstance(kind, str) or not kind or kind == GENESIS:
            raise ValueError(f"record kind {kind!r}: expected a non-empty name other than genesis")
        if not isinstance(body, Mapping):
            raise TypeError(f"record body must be a mapping, got {type(body).__name__}")
        with self._lock:
            record = sign_record(self._key, _unsigned(self._records, kind, dict(body), self._head))
            line = encode_line(record)
            self._write(line + b"\n")
            self._records += 1
            self._head = line_hash(line)
        return record

    def _write(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if size != self._size:
                raise SecurityError(
                    f"{self.path}: changed on disk since it was opened ({size} bytes, "
                    f"expected {self._size}); refusing to append"
                )
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(f"short write to {self.path} ({written} of {len(data)} bytes)")
                os.fsync(fd)
            except OSError:
                # Leave no torn line behind (e.g. disk full): the ledger stays extendable.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._size)
                raise
            self._size += len(data)
        finally:
            os.close(fd)


def _unsigned(seq: int, kind: str, body: Mapping[str, object], prev: str) -> dict[str, object]:
    return {
        "seq": seq,
        "time": datetime.now(timezone.utc).isoformat(),
        "kind": kind,
        "body": body,
        "prev": prev,
    }

"""Tamper-evident, signed, append-only audit ledgers that a compliance officer can verify.

The coordinator keeps one ledger per run (`ledger.jsonl` in the run folder) and each
institution may keep its own. Every record is a line of canonical JSON chained to the previous
line by its SHA-256 and signed with the keeper's Ed25519 key; the first record names the key.

What a verified ledger proves: no record was edited, removed, reordered, duplicated or
inserted after it was signed, and every record was signed by the key in its genesis record,
which, once compared with a key obtained out of band (`--key`), identifies who signed.

What it does not prove: that the signer wrote true statements (a ledger records claims, and
the hashes in them let others check those claims against files); nor that records were not
cut from the end, since any prefix of a ledger is a valid ledger. Keep the head hash and record
count somewhere the ledger's keeper cannot rewrite to detect a cut tail.

- `ledger`: `Ledger.create` / `Ledger.open` / `Ledger.append`.
- `verify`: `verify_ledger`, its `LedgerReport`, and `expectations_unmet` (cut tails).
- `hashing`: the digests bodies quote (canonical JSON, bytes, named arrays).
"""

from fedpeft.common.audit.hashing import (
    canonical_json,
    canonical_sha256,
    sha256_arrays,
    sha256_bytes,
)
from fedpeft.common.audit.ledger import LEDGER_FILE, Ledger
from fedpeft.common.audit.records import COORDINATOR, GENESIS, INSTITUTION, RUN_END
from fedpeft.common.audit.verify import LedgerReport, expectations_unmet, verify_ledger

__all__ = [
    "COORDINATOR",
    "GENESIS",
    "INSTITUTION",
    "LEDGER_FILE",
    "Ledger",
    "LedgerReport",
    "RUN_END",
    "canonical_json",
    "canonical_sha256",
    "expectations_unmet",
    "sha256_arrays",
    "sha256_bytes",
    "verify_ledger",
]

"""The ledger's record format, in one place so the writer and the verifier cannot drift apart.

A record is one line of canonical JSON (see `hashing.canonical_json`) with exactly the fields
in `FIELDS`. `prev` is the SHA-256 of the previous record's line (its canonical JSON, signature
included, without the newline); `signature` is the Ed25519 signature over the canonical JSON of
the record without `signature`. Record 0 has kind `genesis`, `prev` of 64 zeros, and a body
naming the ledger's role, owner and signing public key (raw 32 bytes, base64).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from fedpeft.common.audit.hashing import canonical_json, sha256_bytes
from fedpeft.common.crypto import SigningPrivateKey, SigningPublicKey, fingerprint, sign

FORMAT_VERSION = 1
ZERO_HASH = "0" * 64
GENESIS = "genesis"
RUN_END = "run-end"
COORDINATOR = "coordinator"
INSTITUTION = "institution"
ROLES = (COORDINATOR, INSTITUTION)
FIELDS = frozenset({"seq", "time", "kind", "body", "prev", "signer", "signature"})


def encode_line(record: Mapping[str, object]) -> bytes:
    """The record's line, without the newline: what `prev` and the head hash are taken over."""
    return canonical_json(record)


def line_hash(line: bytes) -> str:
    return sha256_bytes(line)


def signed_bytes(record: Mapping[str, object]) -> bytes:
    """What the signature covers: every field but the signature itself."""
    return canonical_json({name: value for name, value in record.items() if name != "signature"})


def sign_record(key: SigningPrivateKey, unsigned: Mapping[str, object]) -> dict[str, object]:
    """`unsigned` with `signer` and `signature` added."""
    record = {**unsigned, "signer": fingerprint(key.public_key())}
    record["signature"] = base64.b64encode(sign(key, signed_bytes(record))).decode("ascii")
    return record


def decode_signature(text: str) -> bytes:
    """The signature bytes; ValueError unless `text` is their one canonical base64 spelling.

    Strict because the signature is not signed itself: two spellings of the same bytes would
    let a byte of the last record change without any check failing.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as err:
        raise ValueError("signature is not base64") from err
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("signature is not canonical base64")
    return raw


def encode_public_key(key: SigningPublicKey) -> str:
    """The raw public key in base64: fingerprint() hashes the same 32 bytes."""
    return base64.b64encode(key.public_bytes_raw()).decode("ascii")


def decode_public_key(text: str) -> SigningPublicKey:
    """The key `encode_public_key` wrote; ValueError for anything else."""
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as err:
        raise ValueError("public key is not base64") from err
    return SigningPublicKey.from_public_bytes(raw)


def genesis_body(key: SigningPublicKey, owner: str, role: str) -> dict[str, object]:
    return {
        "ledger": role,
        "owner": owner,
        "public_key": encode_public_key(key),
        "version": FORMAT_VERSION,
    }

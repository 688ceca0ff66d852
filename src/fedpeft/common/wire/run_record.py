"""The signed run record: what an institution may obey, signed by the server for one run.

Every train and evaluate message carries the run config as JSON (`fedpeft-config`): model
name, privacy and masking settings, noise, rounds. The SuperLink relays and stores it, so
whoever controls the relay could rewrite it and an institution that obeyed it would switch
its own protections off. The server therefore signs a small record that binds the exact
config bytes to its federation, its run and the number of rounds planned, and puts the
signature next to the config (`fedpeft-config-signature`). An institution verifies it with
the server signing key from its own bundle before it reads anything else in the config.

The signed bytes are SIGNATURE_CONTEXT followed by the record's canonical JSON; the context
string keeps a run-record signature from being mistaken for any other signature made with
the same key (the envelope signatures use their own context). The record's SHA-256 enters
the coordinator's ledger at run start, so an auditor can tie the ledger to the config the
institutions received.
"""

from __future__ import annotations

import hashlib
import json

from flwr.app import ConfigRecord
from pydantic import BaseModel, ConfigDict, Field

from fedpeft.common.crypto import SigningPrivateKey, SigningPublicKey, sign, verify
from fedpeft.common.errors import SecurityError
from fedpeft.common.wire.names import NUM_ROUNDS, RUN_CONFIG, RUN_CONFIG_SIGNATURE

SIGNATURE_CONTEXT = b"fedpeft/run-record/v1\x00"


class RunRecord(BaseModel):
    """One run as the server commits to it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    federation_id: str = Field(min_length=1)
    run_id: int = Field(ge=0)
    num_rounds: int = Field(ge=1, description="Rounds the run may have: bounds train and "
                            "evaluation requests an institution answers.")
    config_sha256: str = Field(pattern=r"^[0-9a-f]{64}$",
                               description="SHA-256 of the config text exactly as sent.")

    @classmethod
    def of(cls, config_text: str, federation_id: str, run_id: int, num_rounds: int) -> RunRecord:
        return cls(federation_id=federation_id, run_id=run_id, num_rounds=num_rounds,
                   config_sha256=hashlib.sha256(config_text.encode("utf-8")).hexdigest())

    def to_bytes(self) -> bytes:
        """Canonical JSON: the same record gives the same bytes on every machine."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True,
                          separators=(",", ":")).encode("ascii")

    def sha256(self) -> str:
        """What the coordinator's ledger quotes at run start."""
        return hashlib.sha256(self.to_bytes()).hexdigest()


def sign_run_record(record: RunRecord, key: SigningPrivateKey) -> bytes:
    """The server's signature of `record`."""
    return sign(key, SIGNATURE_CONTEXT + record.to_bytes())


def run_config_record(config_text: str, federation_id: str, run_id: int, num_rounds: int,
                      key: SigningPrivateKey | None) -> tuple[ConfigRecord, RunRecord]:
    """The config record every message of the run carries, signed with `key` when the server
    has one (an unsealed run may have none), and the record it commits to."""
    record = RunRecord.of(config_text, federation_id, run_id, num_rounds)
    config = ConfigRecord({RUN_CONFIG: config_text, NUM_ROUNDS: num_rounds})
    if key is not None:
        config[RUN_CONFIG_SIGNATURE] = sign_run_record(record, key)
    return config, record


def verify_run_record(record: RunRecord, signature: object, key: SigningPublicKey) -> None:
    """Return only if `signature` is the server's signature of `record`.

    `record` is rebuilt by the institution from what it knows (its federation, the message's
    run id) and the config text it received, so a config lifted from another run or
    federation, or altered by one byte, fails here like a forged signature.
    """
    if signature is None:
        raise SecurityError("the run config is not signed by the server: refused")
    if not isinstance(signature, bytes):
        raise SecurityError("the run config signature is malformed: refused")
    try:
        verify(key, signature, SIGNATURE_CONTEXT + record.to_bytes())
    except SecurityError:
        raise SecurityError(
            "the run config signature does not verify with the server key of this "
            f"institution's bundle (federation {record.federation_id!r}, run {record.run_id}, "
            f"{record.num_rounds} rounds): altered, replayed from another run, or forged"
        ) from None

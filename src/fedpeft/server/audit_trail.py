"""The coordinator's signed ledger of a run: what was configured, received, refused and produced.

One record per event, each chained to the previous and signed with the server's signing key
(`fedpeft.common.audit`): `run-start` (config hash, the hash of the signed run record every
institution verified, protection settings, initial adapter hash),
one `round` per round (who took part: in a sealed run only the institutions whose signed
update verified, not the names replies claim; the SHA-256 of every sealed update as it arrived,
secure-aggregation and privacy facts, refusals, the resulting global adapter's hash, the test
metrics), and `run-end`. A run without sealing keys signs with a key made for the run, whose
fingerprint the summary names; such a ledger proves integrity, not who wrote it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fedpeft.common.adapter.state import AdapterState
from fedpeft.common.audit import (
    COORDINATOR,
    LEDGER_FILE,
    RUN_END,
    Ledger,
    canonical_sha256,
    sha256_arrays,
)
from fedpeft.common.audit.records import line_hash
from fedpeft.common.config import RunConfig
from fedpeft.common.crypto import SigningPrivateKey, generate_signing_key
from fedpeft.common.errors import SecurityError
from fedpeft.common.wire.run_record import RunRecord

_ROUND_FIELDS = ("participants_verified", "updates_sha256", "failures", "secure_aggregation",
                 "privacy", "global_sha256",
                 "server_eval")


def _finite(value: Any) -> Any:
    """JSON-safe copy: canonical JSON has no NaN or infinity, so those become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class AuditTrail:
    """Writes the run's `ledger.jsonl` as the run happens."""

    def __init__(self, folder: Path, owner: str, signing_key: SigningPrivateKey | None,
                 ephemeral_key: bool = False) -> None:
        """A new ledger; without `signing_key` one is made for the run (and then lost)."""
        key = signing_key or generate_signing_key()
        self.ledger = Ledger.create(folder / LEDGER_FILE, key, owner=owner, role=COORDINATOR)
        self.ephemeral_key = ephemeral_key or signing_key is None

    @classmethod
    def reopen(cls, folder: Path, signing_key: SigningPrivateKey, ephemeral_key: bool,
               records: int, head: str) -> AuditTrail:
        """The ledger of an interrupted run, verified whole before anything is appended, whose
        record `records - 1` must be the checkpoint's `head`."""
        path = folder / LEDGER_FILE
        ledger = Ledger.open(path, signing_key)
        lines = path.read_bytes().split(b"\n")
        if ledger.records < records or line_hash(lines[records - 1]) != head:
            raise SecurityError(f"{path}: record {records - 1} is not the head the checkpoint "
                                "saved; refusing to continue a ledger that was rewritten")
        trail = cls.__new__(cls)
        trail.ledger, trail.ephemeral_key = ledger, ephemeral_key
        return trail

    def resumed(self, run_id: int, after_round: int, checkpoint_head: str,
                checkpoint_records: int, run_record: RunRecord,
                releases_charged: list[int] | None = None) -> None:
        """Say where the run continues: records after the checkpoint's head (at most the
        round that was under way when the run stopped) are superseded by what follows. The
        continuation is a new Flower run, with its own signed run record. `releases_charged`:
        superseded rounds whose release the privacy account still counts (run_checkpoint.
        charge_superseded)."""
        self.ledger.append("run-resumed", {
            "run_id": run_id, "resumed_after_round": after_round,
            "checkpoint_head": checkpoint_head, "checkpoint_records": checkpoint_records,
            "superseded_records": self.ledger.records - checkpoint_records,
            "superseded_releases_charged": releases_charged or [],
            "run_record_sha256": run_record.sha256(),
        })

    def start(self, cfg: RunConfig, run_id: int, initial: AdapterState, run_record: RunRecord,
              signed: bool) -> None:
        """`run_record` is what every institution receives (signed when `signed`): its hash
        ties this ledger to the exact config the institutions verified."""
        self.ledger.append("run-start", {
            "run_id": run_id,
            "config_sha256": canonical_sha256(cfg.model_dump(mode="json")),
            "run_record_sha256": run_record.sha256(),
            "run_record_signed": signed,
            "sent_config_sha256": run_record.config_sha256,
            "strategy": cfg.strategy.name,
            "rounds_planned": cfg.federation.num_rounds,
            "sealed_updates": cfg.security.seal_updates,
            "lora": cfg.lora.model_dump(mode="json"),
            "secure_aggregation": cfg.secure_aggregation.model_dump(mode="json"),
            "privacy": cfg.privacy.model_dump(mode="json"),
            "initial_adapter_sha256": sha256_arrays(initial),
        })

    def round(self, record: dict[str, Any]) -> None:
        """The round record of `metrics.jsonl` (round 0 is the initial evaluation: skipped)."""
        if record.get("round", 0) == 0:
            return
        body = {"round": record["round"], "participants": record.get("participants", [])}
        body.update({key: record[key] for key in _ROUND_FIELDS if key in record})
        self.ledger.append("round", _finite(body))

    def end(self, rounds_completed: int, final: AdapterState,
            notes: dict[str, Any]) -> dict[str, Any]:
        """Close the ledger; returns what the run summary says about it."""
        self.ledger.append(RUN_END, _finite({
            "rounds_completed": rounds_completed,
            "final_adapter_sha256": sha256_arrays(final),
            **notes,
        }))
        return {"file": LEDGER_FILE, "head": self.ledger.head, "records": self.ledger.records,
                "signer": self.ledger.signer, "ephemeral_key": self.ephemeral_key}

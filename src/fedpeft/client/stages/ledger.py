"""The institution's own signed ledger of what left its site.

Kept in the institution's writable state folder (`client join --state-dir`, the bundle itself
may be read-only), signed with its own key, so the institution, not the coordinator, holds the
record: one `update-sent` entry per update, with the SHA-256 of the exact
sealed bytes that left (which the coordinator's ledger quotes as received), the form they took
and the privacy settings applied before they left, and one `run-refused` entry per request it
refused (`fedpeft.client.admission`). It also holds the institution's lifetime privacy account:
one `privacy-charge` per round, written whatever the run's `audit.ledger` says
(`fedpeft.client.privacy_account`), and one `evaluation-sent` per global version whose
metrics left (`fedpeft.client.rounds.evaluate`), also whatever `audit.ledger` says: with the
charges, they are the institution's memory of a run across a restart
(`fedpeft.client.run_memory`). `fedpeft audit verify STATE/ledger.jsonl` checks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedpeft.client.identity import InstitutionKeys
from fedpeft.client.stages.base import ClientStage, Outgoing, RoundInput
from fedpeft.common.audit import INSTITUTION, LEDGER_FILE, Ledger
from fedpeft.common.wire.names import DP_CLIP_NORM, DP_NOISE_STD

UPDATE_SENT = "update-sent"
RUN_REFUSED = "run-refused"
EVALUATION_SENT = "evaluation-sent"


def record_event(keys: InstitutionKeys, kind: str, body: dict[str, Any]) -> None:
    """Append one record of `kind` (the ledger is created on the first record)."""
    path = Path(keys.state_dir) / LEDGER_FILE
    if path.exists():
        ledger = Ledger.open(path, keys.signing_key)
    else:
        ledger = Ledger.create(path, keys.signing_key, owner=keys.name, role=INSTITUTION)
    ledger.append(kind, body)


def record_sent(keys: InstitutionKeys, body: dict[str, Any]) -> None:
    """Append one `update-sent` record."""
    record_event(keys, UPDATE_SENT, body)


class Recording(ClientStage):
    """Writes what leaves, in the form it leaves, into the institution's own ledger."""

    name = "ledger"

    def __init__(self, keys: InstitutionKeys) -> None:
        self.keys = keys

    def apply(self, out: Outgoing, rnd: RoundInput) -> Outgoing:
        privacy = rnd.cfg.privacy
        body = {
            "run_id": rnd.msg.metadata.run_id, "round": rnd.server_round,
            "federation_id": self.keys.federation_id,
            "clip_norm": rnd.config.get(DP_CLIP_NORM), "noise_std": rnd.config.get(DP_NOISE_STD),
            "noise_multiplier": privacy.noise_multiplier if privacy.enabled else None,
            "tensors": len(out.state), "values": int(sum(a.size for a in out.state.values())),
            **out.ledger,
        }
        record_sent(self.keys, body)
        return out

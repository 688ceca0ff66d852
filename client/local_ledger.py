"""The institution's own signed ledger of what left its site.

Kept next to its bundle (its keys), signed with its own key, so the institution, not the
coordinator, holds the record: one `update-sent` entry per update, with the SHA-256 of the exact
sealed bytes that left (which the coordinator's ledger quotes as received), the form they took
and the privacy settings applied before they left. `fedpeft audit verify BUNDLE/ledger.jsonl`
checks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedpeft.client.sealing import InstitutionKeys
from fedpeft.common.audit import INSTITUTION, LEDGER_FILE, Ledger


def record_sent(keys: InstitutionKeys, body: dict[str, Any]) -> None:
    """Append one `update-sent` record (the ledger is created on the first update)."""
    path = Path(keys.bundle_dir) / LEDGER_FILE
    if path.exists():
        ledger = Ledger.open(path, keys.signing_key)
    else:
        ledger = Ledger.create(path, keys.signing_key, owner=keys.name, role=INSTITUTION)
    ledger.append("update-sent", body)

"""The `[audit]` section: the signed ledgers."""

from __future__ import annotations

from pydantic import Field

from fedpeft.common.config.base import StrictModel


class AuditConfig(StrictModel):
    """The hash-chained, signed ledgers a compliance officer verifies."""

    ledger: bool = Field(True,
                         description="Keep ledger.jsonl in the run folder (and on each site).")

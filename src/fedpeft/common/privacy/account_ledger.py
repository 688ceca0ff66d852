"""Reading an institution's lifetime privacy account out of its own signed ledger.

The account has no file of its own: it is the `privacy-charge` records of the ledger the
institution already keeps (`fedpeft.client.stages.ledger`), so there is one record of truth,
signed with a key only the institution holds. Reading it fails closed, never as "nothing
spent":

- a ledger that does not verify with the institution's own key (a record edited, removed from
  the middle, reordered, or the whole file re-signed by another key) is refused, naming the
  first bad record, as `fedpeft audit verify` does;
- a missing ledger is refused (`AccountMissing`): the institution cannot tell a ledger that
  was deleted from one that never existed, so only its operator can start one, on purpose.

What the chain cannot show is a tail cut off, or the whole state folder rolled back to an
older copy (any prefix of a ledger is a valid ledger): compare the head with one kept
elsewhere (`fedpeft client account --expect-head`).
"""

from __future__ import annotations

import json
from pathlib import Path

from fedpeft.common.audit.verify import LedgerReport, check_ledger, read_ledger
from fedpeft.common.crypto import SigningPublicKey
from fedpeft.common.errors import SecurityError
from fedpeft.common.privacy.lifetime import LifetimeAccount, account_of


class AccountMissing(SecurityError):
    """No ledger where the institution keeps its account: deleted, or never started."""


def read_account(path: Path, public_key: SigningPublicKey | None
                 ) -> tuple[LifetimeAccount, LedgerReport]:
    """The account the ledger at `path` states, with its verification report.

    `public_key` pins the signer (the institution's own key); None accepts any consistent
    signer, for a reader that only has a copy (the report), which must then show the signer.
    """
    if not path.exists():
        raise AccountMissing(f"no privacy account: {path} is missing (deleted, or never started "
                             "with `fedpeft client account --start`); refusing to count it as "
                             "nothing spent")
    data = read_ledger(path)
    report = check_ledger(path, data, public_key)
    if not report.ok:
        raise SecurityError(f"{path}: {report.reason}; the lifetime privacy account in it "
                            "cannot be trusted: refusing")
    return account_of(json.loads(line) for line in data.splitlines()), report

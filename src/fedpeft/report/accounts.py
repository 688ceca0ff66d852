"""The report's section on the institutions' own lifetime privacy accounts.

A simulation copies each virtual institution's ledger into `institutions/<name>/` of the run
folder; its account is folded from that copy. A copy carries no key to pin, so each account
is shown with its signer's fingerprint, and a ledger that does not verify is shown as such,
never as nothing spent. A deployment's ledgers stay with the institutions, which read them
with `fedpeft client account`. The epsilon is stated at the default lifetime delta: the
report does not have the institutions' policies.
"""

from __future__ import annotations

from pathlib import Path

from fedpeft.common.audit import LEDGER_FILE
from fedpeft.common.config.policy import InstitutionPolicy
from fedpeft.common.errors import FedpeftError
from fedpeft.common.privacy.account_ledger import read_account
from fedpeft.common.privacy.lifetime import account_lines
from fedpeft.report.document import Block, Bullets, Line, Paragraph, Section, Span, code, line
from fedpeft.report.view import BAD

TITLE = "Institutions' lifetime privacy accounts"
INSTITUTIONS = "institutions"


def accounts_section(run_dir: Path) -> Section:
    ledgers = sorted((run_dir / INSTITUTIONS).glob(f"*/{LEDGER_FILE}"))
    if not ledgers:
        return Section(TITLE, (Paragraph(line(
            "No institution ledger in this run folder: in a deployment each institution keeps "
            "its own and reads its account with ", code("fedpeft client account"), ".")),))
    delta = InstitutionPolicy().lifetime_delta
    blocks: list[Block] = [Paragraph(line(
        "What each institution can guarantee itself, over every round its ledger charges: its "
        "own noise share under secure aggregation and its own DP-SGD steps, with no credit "
        "for the coordinator's sampling or noise (so it overstates epsilon when sampling is "
        "real). A simulated institution's keys, and so its account, last one run."))]
    for path in ledgers:
        blocks.append(Paragraph(line(Span(path.parent.name, "bold"), " (",
                                     code(str(path.relative_to(run_dir))), ")")))
        blocks.append(Bullets(_lines(path, delta)))
    return Section(TITLE, tuple(blocks))


def _lines(path: Path, delta: float) -> tuple[Line, ...]:
    try:
        account, report = read_account(path, None)
    except (FedpeftError, OSError) as err:
        return (line(Span("not readable", BAD), f": {' '.join(str(err).split())}"),)
    return (*(line(text) for text in account_lines(account, delta)),
            line("signed by key ", code(report.signer or "?")))

"""`fedpeft audit ...`: what a compliance officer runs on a run folder handed to them.

`verify` exits 0 only when every ledger given verifies and is whole; a broken one, a
coordinator ledger without its `run-end` record (unless `--allow-incomplete`) or a head other
than `--expect-head` ends the command with a SecurityError (one line naming the file and the
reason, exit code 4) after the table has shown what did verify.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from fedpeft.cli.display import console, err_console
from fedpeft.common.audit import LEDGER_FILE, LedgerReport, expectations_unmet, verify_ledger
from fedpeft.common.crypto import load_signing_public_key
from fedpeft.common.errors import ConfigError, SecurityError

audit_app = typer.Typer(help="Signed audit ledgers.", no_args_is_help=True)

LedgerPaths = Annotated[
    list[Path],
    typer.Argument(help=f"Ledger file, or run folder (its {LEDGER_FILE}); several may be given."),
]
PinnedKey = Annotated[
    Path | None,
    typer.Option("--key", help="PEM public key that must have signed every ledger given "
                 "(the coordinator's: FED/server/signing.pub)."),
]

AllowIncomplete = Annotated[
    bool,
    typer.Option("--allow-incomplete", help="Accept a coordinator ledger without its run-end "
                 "record (a run still in progress); otherwise that is a failure."),
]
ExpectHead = Annotated[
    str | None,
    typer.Option("--expect-head", help="SHA-256 the ledger's last record must have (the head "
                 "kept in summary.json, a ticket or an e-mail): catches a cut or extended tail. "
                 "One ledger only."),
]


@audit_app.callback()
def _group() -> None:
    """Signed audit ledgers: check that a run's record was not altered after signing."""
    # A callback keeps `verify` a subcommand even while it is the group's only command.


@audit_app.command("verify")
def verify(paths: LedgerPaths, key: PinnedKey = None, allow_incomplete: AllowIncomplete = False,
           expect_head: ExpectHead = None) -> None:
    """Verify ledgers: chain, signatures, completeness and (with --key) who signed them."""
    if expect_head is not None and len(paths) != 1:
        raise ConfigError(f"--expect-head: give exactly one ledger, not {len(paths)}")
    pinned = None if key is None else load_signing_public_key(key)
    reports = [verify_ledger(_ledger_file(path), pinned) for path in paths]
    for report in reports:
        console.print(_table(report))
    if pinned is None:
        err_console.print(
            "[yellow]warning:[/] signer key not pinned: anyone who rewrites a ledger can re-sign "
            "it with a key of their own. Pin it with --key: FED/server/signing.pub for a run's "
            "ledger (institutions have it as server-signing.pub in their bundle), "
            "FED/institutions/NAME/signing.pub for an institution's; or compare the signer "
            "fingerprint above with server_signing_fingerprint in FED/federation.json or the "
            "run's summary.json.",
            soft_wrap=True, highlight=False,
        )
    refused = [(report.path, report.reason) for report in reports if not report.ok]
    for report in reports:
        if not report.ok:
            continue
        reason = expectations_unmet(report, allow_incomplete=allow_incomplete,
                                    expect_head=expect_head)
        if reason is not None:
            refused.append((report.path, reason))
        elif report.complete is False:
            err_console.print(
                Text.assemble(("note: ", "yellow"), f"{report.path} has no run-end record "
                              "(accepted with --allow-incomplete): compare its records and head "
                              "with the run's summary.json once the run ends"),
                soft_wrap=True, highlight=False,
            )
    if refused:
        others = f" ({len(refused) - 1} more refused ledger(s) above)" if len(refused) > 1 else ""
        raise SecurityError(f"{refused[0][0]}: {refused[0][1]}{others}")


def _ledger_file(path: Path) -> Path:
    """`path` itself, or the ledger inside it when it is a run folder."""
    if not path.is_dir():
        return path
    ledger = path / LEDGER_FILE
    if not ledger.is_file():
        raise ConfigError(f"{path}: no {LEDGER_FILE} in this folder (not a run folder?)")
    return ledger


def _table(report: LedgerReport) -> Table:
    # No borders, short labels: a 64-digit hash stays on one line of an 80-column terminal,
    # where it can be copied and compared.
    table = Table(title=Text(str(report.path)), title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    status = (Text("verified", "green") if report.ok
              else Text(f"BROKEN at record {report.first_bad}", "bold red"))
    owner = f"{_printable(report.owner or '?')} ({report.role or '?'})"
    kinds = ", ".join(f"{_printable(kind)} {count}" for kind, count in report.kinds.items())
    complete = {True: "yes", False: "no (no run-end record)", None: "n/a"}[report.complete]
    rows = [
        ("status", status),
        ("records", Text(str(report.records))),
        ("owner", Text(owner)),
        ("signer", Text(report.signer or "?")),
        ("head", Text(report.head or "?")),
        ("key pinned", Text("yes") if report.key_pinned else Text("no", "yellow")),
        ("complete", Text(complete)),
        ("kinds", Text(kinds)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _printable(text: str) -> str:
    """Ledger text with control characters replaced: a forged owner name must not be able to
    move the cursor and overwrite the verdict on the terminal."""
    return "".join(char if char.isprintable() else "?" for char in text)

"""`fedpeft report RUN`: write a run's report for a compliance officer (Markdown and HTML)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from fedpeft.cli.display import console


def report(
    run: Annotated[Path, typer.Argument(help="Run folder (runs/NAME).", show_default=False)],
) -> None:
    """Write RUN/report.md and RUN/report.html: who took part, what was exchanged and in what
    form, the guarantees in force, failures, and the verified audit ledger."""
    from fedpeft.report import write_report

    paths = write_report(run)
    for label, path in (("report (Markdown):", paths.markdown), ("report (HTML):    ", paths.html)):
        console.print(Text.assemble((label, "green"), " ", str(path)),
                      highlight=False, soft_wrap=True)

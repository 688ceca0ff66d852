"""`fedpeft report RUN`: a run folder turned into a report a compliance officer can read.

`write_report` reads the run folder (`facts`), decides the wording once (`content`), and
renders it as Markdown (`markdown`) and as a standalone HTML file (`html`), with plots
(`plots`). It writes `RUN/report.md`, `RUN/report.html` and `RUN/report/*.png`; each file is
written to a temporary name and renamed, so a reader sees the old report or the new one,
never half of one.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from fedpeft.common.crypto.keys import PUBLIC_FILE_MODE, write_file_atomically
from fedpeft.report.content import build_document
from fedpeft.report.facts import RunFacts, read_run
from fedpeft.report.html import render_html
from fedpeft.report.markdown import PLOTS_DIR, render_markdown
from fedpeft.report.plots import PLOT_FILES, draw_figures

__all__ = ["ReportPaths", "RunFacts", "read_run", "write_report"]

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"


@dataclass(frozen=True)
class ReportPaths:
    """What `write_report` wrote."""

    markdown: Path
    html: Path
    plots: tuple[Path, ...]


def write_report(run_dir: Path) -> ReportPaths:
    """Write the report of the run folder `run_dir`, replacing any earlier one.

    DataError (one line naming the path) when `run_dir` is not a run folder.
    """
    run_dir = Path(run_dir)
    facts = read_run(run_dir)
    with tempfile.TemporaryDirectory(prefix="fedpeft-report-") as scratch:
        figures = draw_figures(facts, Path(scratch))
    document = build_document(facts, figures, run_dir)
    markdown = render_markdown(document).encode("utf-8")
    html = render_html(document).encode("utf-8")

    plots_dir = run_dir / PLOTS_DIR
    plots_dir.mkdir(exist_ok=True)
    plots = []
    for figure in figures.values():
        path = plots_dir / figure.filename
        write_file_atomically(path, figure.data, mode=PUBLIC_FILE_MODE, overwrite=True)
        plots.append(path)
    for filename in set(PLOT_FILES.values()) - {f.filename for f in figures.values()}:
        (plots_dir / filename).unlink(missing_ok=True)  # a plot an earlier report had
    paths = ReportPaths(run_dir / MARKDOWN_FILE, run_dir / HTML_FILE, tuple(plots))
    write_file_atomically(paths.markdown, markdown, mode=PUBLIC_FILE_MODE, overwrite=True)
    write_file_atomically(paths.html, html, mode=PUBLIC_FILE_MODE, overwrite=True)
    return paths

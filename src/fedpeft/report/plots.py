"""The report's plots: test quality, loss and privacy spent per round.

Drawn with the run folder's own plotting helpers (`fedpeft.common.runs.plots`), so the report's
figures look like the ones in `plots/`.
"""

from __future__ import annotations

from pathlib import Path

from fedpeft.common.runs.plots import plot_series, round_series
from fedpeft.report.document import Figure
from fedpeft.report.facts import RunFacts

PLOT_FILES = {"quality": "quality.png", "loss": "loss.png", "epsilon": "epsilon.png"}
"""Every file the report may write into its plot folder, by figure name."""


def draw_figures(facts: RunFacts, scratch: Path) -> dict[str, Figure]:
    """Draw every figure the run supports into `scratch`; return them by name, PNG bytes
    loaded (the caller publishes them)."""
    records = facts.records
    xlabel = "epoch" if facts.is_baseline else "round"
    quality = round_series(records, "server_eval", ("accuracy", "macro_f1"))
    if not quality:
        quality = round_series(records, "server_eval", ("perplexity",))
    losses = {
        "test loss (server side)": round_series(records, "server_eval", ("loss",)).get("loss", []),
        "training loss (institutions)": round_series(records, "train", ("loss",)).get("loss", []),
    }
    epsilon = round_series(records, "privacy", ("epsilon",))
    plans = {
        "quality": (quality, "test-set quality per round", "Test-set quality per round "
                    "(server side; round 0 is the initial model)."),
        "loss": (losses, "loss per round", "Test loss and mean local training loss per round."),
        "epsilon": ({"epsilon (cumulative)": epsilon.get("epsilon", [])},
                    "privacy spent per round", "Cumulative epsilon after each round."),
    }
    figures: dict[str, Figure] = {}
    for name, (series, title, caption) in plans.items():
        path = plot_series(series, title, scratch / PLOT_FILES[name], xlabel=xlabel)
        if path is not None:
            figures[name] = Figure(PLOT_FILES[name], path.read_bytes(), caption)
    return figures

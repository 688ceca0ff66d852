"""Several runs side by side: one figure, one line per run, one panel per test metric.

The question it answers is the one a federation is started for: does federated training beat
each institution alone and come close to pooling the data (a centralized baseline), and at
what privacy cost. Baselines count epochs where federations count rounds; both are plotted on
one axis labelled as such, since one epoch over the local data is what a round asks for.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from fedpeft.common.runs.catalog import RunSnapshot, numbers

COMPARED_METRICS = ("accuracy", "macro_f1", "loss", "perplexity")


def run_label(run: RunSnapshot) -> str:
    return f"{run.name} ({run.kind})" if run.kind else run.name


def compared_metrics(runs: list[RunSnapshot]) -> list[str]:
    """The test metrics at least one run recorded, in a fixed order."""
    seen = {name for run in runs for r in run.records for name in numbers(r.get("server_eval"))}
    return [name for name in COMPARED_METRICS if name in seen]


def plot_comparison(runs: list[RunSnapshot], path: Path) -> Path | None:
    """Write the comparison PNG to `path`; None (and no file) when no run has test metrics."""
    panels: list[tuple[str, str]] = [("server_eval", m) for m in compared_metrics(runs)]
    if any(run.epsilon is not None for run in runs):
        panels.append(("privacy", "epsilon"))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for axis, (section, metric) in zip(axes[0], panels):
        for index, run in enumerate(runs):
            points = [(r["round"], numbers(r.get(section)).get(metric)) for r in run.records]
            points = [(x, y) for x, y in points if y is not None]
            if points:
                xs, ys = zip(*points)
                # One colour per run in every panel, so a run is found by colour across panels.
                axis.plot(xs, ys, marker="o", markersize=3, color=f"C{index % 10}",
                          label=run_label(run))
        if metric == "epsilon":
            for target in {run.target_epsilon for run in runs if run.target_epsilon}:
                axis.axhline(target, linestyle="--", color="grey", linewidth=1)
            axis.set_ylim(bottom=0)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(f"test {metric}" if section == "server_eval" else "epsilon spent")
        axis.set_xlabel("round / epoch")
        axis.grid(alpha=0.3)
    handles = [Line2D([], [], color=f"C{i % 10}", marker="o", markersize=3) for i in range(len(runs))]
    labels = [run_label(run) for run in runs]
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize="small")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""Per-round plots for a run folder, drawn from its `metrics.jsonl` records.

Uses matplotlib's Agg backend: runs on headless servers and inside CI.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)


def _series(records: list[dict[str, Any]], section: str) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for record in records:
        for name, value in (record.get(section) or {}).items():
            if isinstance(value, (int, float)) and name != "num-examples":
                series[name].append((record["round"], float(value)))
    return series


def _save(fig: plt.Figure, path: Path) -> None:
    """Every plot's last step: lay out, write the PNG, free the figure (Agg keeps them)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_metric_grid(series: dict[str, list[tuple[int, float]]], title: str, xlabel: str,
                      path: Path) -> None:
    names = sorted(series)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for axis, name in zip(axes[0], names):
        rounds, values = zip(*series[name])
        axis.plot(rounds, values, marker="o")
        axis.set_title(name)
        axis.set_xlabel(xlabel)
        axis.grid(alpha=0.3)
    fig.suptitle(title)
    _save(fig, path)


def _plot_client_loss(records: list[dict[str, Any]], path: Path) -> None:
    per_client: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for record in records:
        for client in record.get("clients") or []:
            loss = (client.get("train") or {}).get("loss")
            if loss is not None:
                per_client[client["name"]].append((record["round"], loss))
    if not per_client:
        return
    fig, axis = plt.subplots(figsize=(6, 3.6))
    for name in sorted(per_client):
        rounds, values = zip(*per_client[name])
        axis.plot(rounds, values, marker=".", label=name)
    axis.set_title("local training loss per institution")
    axis.set_xlabel("round")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    _save(fig, path)


def _plot_time(records: list[dict[str, Any]], path: Path) -> None:
    rows = [r for r in records if r.get("time")]
    if not rows:
        return
    rounds = [r["round"] for r in rows]
    parts = ["local_compute_s", "framework_s", "server_eval_s"]
    fig, axis = plt.subplots(figsize=(6, 3.6))
    bottom = [0.0] * len(rows)
    for part in parts:
        values = [max(0.0, float(r["time"].get(part) or 0.0)) for r in rows]
        axis.bar(rounds, values, bottom=bottom, label=part.removesuffix("_s").replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, values)]
    axis.set_title("round wall time (s)")
    axis.set_xlabel("round")
    axis.legend(fontsize="small")
    _save(fig, path)


def _plot_traffic(records: list[dict[str, Any]], path: Path) -> None:
    rows = [r for r in records if r.get("bytes")]
    if not rows:
        return
    fig, axis = plt.subplots(figsize=(6, 3.6))
    for key in ("sent", "received"):
        axis.plot([r["round"] for r in rows], [r["bytes"][key] / 1e6 for r in rows], marker="o",
                  label=key)
    axis.set_title("server traffic per round (MB)")
    axis.set_xlabel("round")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    _save(fig, path)


def write_plots(records: list[dict[str, Any]], out_dir: Path, xlabel: str = "round") -> list[Path]:
    """Draw every plot the records support; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for section, title in (("server_eval", "test-set metrics (server side)"),
                           ("client_eval", "local validation metrics (institutions)")):
        series = _series(records, section)
        if series:
            path = out_dir / f"{section}.png"
            _plot_metric_grid(series, title, xlabel, path)
            written.append(path)
    for name, draw in (("client_train_loss.png", _plot_client_loss), ("time.png", _plot_time),
                       ("traffic.png", _plot_traffic)):
        path = out_dir / name
        draw(records, path)
        if path.exists():
            written.append(path)
    return written


def round_series(
    records: list[dict[str, Any]], section: str, names: tuple[str, ...] | None = None
) -> dict[str, list[tuple[int, float]]]:
    """The numeric values of `section` in each record, by name, as (round, value) points;
    only `names` when given (used by the run report)."""
    series = _series(records, section)
    return {name: points for name, points in series.items() if names is None or name in names}


def plot_series(
    series: dict[str, list[tuple[int, float]]], title: str, path: Path, xlabel: str = "round"
) -> Path | None:
    """One panel per named series, in the style of the run folder's plots; None (and no
    file) when there is nothing to draw."""
    series = {name: points for name, points in series.items() if points}
    if not series:
        return None
    _plot_metric_grid(series, title, xlabel, path)
    return path

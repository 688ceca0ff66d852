"""What a person sees while a run goes and when it ends: rich progress and tables."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)
for _console in (console, err_console):
    # Piped or logged output keeps each line whole: a path cut at column 80 cannot be copied.
    _console.soft_wrap = not _console.is_terminal

_SHOWN = ("accuracy", "macro_f1", "loss", "perplexity")


def print_table(table: Table) -> None:
    """A table at its natural width when not on a terminal (a log or a pipe has no 80-column
    screen to fit, and cut cells lose the numbers); fitted to the terminal otherwise."""
    if console.is_terminal:
        console.print(table)
        return
    natural = console.measure(table, options=console.options.update(width=10_000)).maximum
    fitted = console.width
    console.width = max(fitted, natural)
    try:
        console.print(table)
    finally:
        console.width = fitted


def _metrics_text(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in _SHOWN if isinstance(metrics.get(k), (int, float)))


def describe_round(record: dict[str, Any]) -> str:
    """One line per round: test metrics, training loss, time split."""
    parts = [f"test {_metrics_text(record.get('server_eval') or {})}"]
    train_loss = (record.get("train") or {}).get("loss")
    if isinstance(train_loss, (int, float)):
        parts.append(f"train loss {train_loss:.4f}")
    timing = record.get("time") or {}
    if "round_s" in timing:
        parts.append(
            f"{timing['round_s']:.1f}s (local {timing.get('local_compute_s', 0):.1f}s, "
            f"framework {timing.get('framework_s', 0):.1f}s)"
        )
    masked = record.get("secure_aggregation")
    if masked and "survivors" in masked:
        parts.append(f"masked sum of {masked['survivors']}/{masked['participants']}")
    privacy = record.get("privacy")
    if privacy:
        parts.append(f"epsilon {privacy['epsilon']:.3f}")
    failures = record.get("failures") or []
    if failures:
        parts.append(f"[yellow]{len(failures)} failure(s)[/]")
    return " | ".join(parts)


@contextmanager
def round_progress(total_rounds: int, label: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A progress bar over rounds; yields the callback the run calls after each round."""
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=False,
    )
    with progress:
        task = progress.add_task(label, total=total_rounds)

        def on_round(record: dict[str, Any]) -> None:
            number = record["round"]
            name = "initial" if number == 0 else f"round {number}/{total_rounds}"
            progress.console.print(f"  {name:>14}  {describe_round(record)}")
            if number > 0:
                progress.update(task, completed=number)

        yield on_round


def summary_table(records: list[dict[str, Any]], title: str) -> Table:
    """Per-round table printed at the end of a run."""
    metric_names = [k for k in _SHOWN if any(k in (r.get("server_eval") or {}) for r in records)]
    table = Table(title=title)
    table.add_column("round", justify="right")
    for name in metric_names:
        table.add_column(f"test {name}", justify="right")
    table.add_column("train loss", justify="right")
    private = any("privacy" in r for r in records)
    if private:
        table.add_column("epsilon", justify="right")
    table.add_column("MB sent/recv", justify="right")
    table.add_column("seconds", justify="right")
    for record in records:
        evals = record.get("server_eval") or {}
        train_loss = (record.get("train") or {}).get("loss")
        traffic = record.get("bytes")
        timing = record.get("time") or {}
        table.add_row(
            str(record["round"]),
            *[f"{evals[n]:.4f}" if n in evals else "" for n in metric_names],
            f"{train_loss:.4f}" if isinstance(train_loss, (int, float)) else "",
            *([f"{record['privacy']['epsilon']:.3f}" if "privacy" in record else ""]
              if private else []),
            f"{traffic['sent'] / 1e6:.2f}/{traffic['received'] / 1e6:.2f}" if traffic else "",
            f"{timing['round_s']:.1f}" if "round_s" in timing else "",
        )
    return table

"""`fedpeft runs list` and `fedpeft runs compare`: what is in a runs folder, and how runs differ.

Both read run folders as they are (see `common.runs.catalog`): a run still writing, failed or
damaged is shown as such in its row, never as a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedpeft.cli.display import console, print_table
from fedpeft.common.errors import DataError
from fedpeft.common.runs.catalog import RunSnapshot, list_runs, read_snapshot
from fedpeft.common.runs.comparison import compared_metrics, plot_comparison

runs_app = typer.Typer(help="Run folders: list them, compare them.", no_args_is_help=True)

_LISTED_METRICS = ("accuracy", "macro_f1", "loss")
_STATUS_STYLE = {"running": "cyan", "completed": "green", "failed": "red", "unreadable": "yellow"}
_NOT_COMPARED = {"output.dir", "output.run_name", "security.credentials_dir",
                 "security.federation_id"}


def _status(run: RunSnapshot) -> str:
    return f"[{_STATUS_STYLE.get(run.status, 'white')}]{run.status}[/]"


def _rounds(run: RunSnapshot) -> str:
    planned = run.rounds_planned
    return f"{run.rounds_done}/{planned}" if planned else str(run.rounds_done)


def _epsilon(run: RunSnapshot) -> str:
    if run.epsilon is None:
        return ""
    target = run.target_epsilon
    return f"{run.epsilon:.3f}" + (f" / {target:g}" if target else "")


def _metrics(run: RunSnapshot, names: tuple[str, ...] | list[str]) -> list[str]:
    final = run.final_eval
    return [f"{final[name]:.4f}" if name in final else "" for name in names]


def _note(run: RunSnapshot) -> str:
    return "; ".join(filter(None, [run.error, *run.problems]))


@runs_app.command("list")
def list_command(
    runs_dir: Annotated[Path, typer.Argument(help="Folder holding run folders.")] = Path("runs"),
) -> None:
    """One row per run folder: kind, status, rounds, final test metrics, epsilon, start."""
    if not runs_dir.is_dir():
        raise DataError(f"{runs_dir}: runs folder not found")
    runs = list_runs(runs_dir)
    table = Table(title=f"runs in {runs_dir}")
    for column in ("run", "kind", "status", "rounds"):
        table.add_column(column)
    for name in _LISTED_METRICS:
        table.add_column(f"test {name}", justify="right")
    for column in ("epsilon", "started (UTC)", "note"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            run.name, run.kind or "", _status(run), _rounds(run), *_metrics(run, _LISTED_METRICS),
            _epsilon(run), f"{run.started:%Y-%m-%d %H:%M}" if run.started else "", _note(run),
        )
    if runs:
        print_table(table)
    else:
        console.print(f"no run folders in {runs_dir}")


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(runs: list[RunSnapshot]) -> list[str]:
    """The config fields whose values differ between the runs (what a sweep varied)."""
    flats = [_flat(run.config) for run in runs]
    keys = sorted({key for flat in flats for key in flat} - _NOT_COMPARED)
    return [key for key in keys if len({repr(flat.get(key)) for flat in flats}) > 1]


@runs_app.command("compare")
def compare_command(
    runs: Annotated[list[Path], typer.Argument(help="Run folders to compare.")],
    plot: Annotated[Path, typer.Option("--plot", help="Where to write the comparison PNG.")] = Path(
        "runs-compare.png"),
) -> None:
    """Runs side by side (federated vs centralized vs local, or a sweep): a table and a plot."""
    snapshots = []
    for path in runs:
        if not path.is_dir():
            raise DataError(f"{path}: run folder not found")
        snapshot = read_snapshot(path)
        if not snapshot.records:
            reason = snapshot.error or "no readable round in metrics.jsonl"
            raise DataError(f"{path}: nothing to compare ({reason})")
        snapshots.append(snapshot)
    metrics = compared_metrics(snapshots)
    differing = config_differences(snapshots)
    table = Table(title="run comparison (final round / epoch)")
    for column in ("run", "kind", "status", "rounds"):
        table.add_column(column)
    for name in metrics:
        table.add_column(f"test {name}", justify="right")
    table.add_column("epsilon")
    for key in differing:
        table.add_column(key)
    for run in snapshots:
        flat = _flat(run.config)
        table.add_row(run.name, run.kind or "", _status(run), _rounds(run), *_metrics(run, metrics),
                      _epsilon(run), *[str(flat.get(key, "")) for key in differing])
    print_table(table)
    for run in snapshots:
        if _note(run):
            console.print(f"[yellow]{run.name}:[/] {_note(run)}")
    written = plot_comparison(snapshots, plot)
    console.print(f"[green]plot:[/] {written}" if written else "no test metrics to plot")

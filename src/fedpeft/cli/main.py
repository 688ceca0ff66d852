"""`fedpeft`: the command line.

Errors a user can fix print as one red line naming the problem and exit non-zero; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from fedpeft.cli import deployment
from fedpeft.cli import options as opt
from fedpeft.cli.audit import audit_app
from fedpeft.cli.dashboard import dashboard as dashboard_command
from fedpeft.cli.display import (
    console,
    err_console,
    print_table,
    round_progress,
    summary_table,
    sweep_table,
)
from fedpeft.cli.report import report as report_command
from fedpeft.cli.runs import runs_app
from fedpeft.common.config import to_toml
from fedpeft.common.errors import FedpeftError

app = typer.Typer(
    name="fedpeft",
    help="Federated parameter-efficient fine-tuning of transformer models on Flower.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Datasets.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(deployment.federation_app, name="federation")
app.add_typer(deployment.server_app, name="server")
app.add_typer(deployment.institution_app, name="institution")
app.add_typer(deployment.client_app, name="client")
app.add_typer(audit_app, name="audit")
app.add_typer(runs_app, name="runs")
app.command("run")(deployment.run)
app.command("report")(report_command)
app.command("dashboard")(dashboard_command)


def _report(report_path: Path, summary: dict, records_path: Path, title: str) -> None:
    from fedpeft.common.runs.metrics_log import read_metrics

    print_table(summary_table(read_metrics(records_path), title))
    console.print(f"[green]run folder:[/] {report_path}")


@app.command()
def simulate(
    config: opt.ConfigFile = None,
    clients: opt.Clients = None,
    rounds: opt.Rounds = None,
    data: opt.TrainData = None,
    test_data: opt.TestData = None,
    text_column: opt.TextColumn = None,
    label_column: opt.LabelColumn = None,
    partition: opt.Partition = None,
    model: opt.Model = None,
    task: opt.Task = None,
    peft: opt.Method = None,
    strategy: opt.Strategy = None,
    out: opt.OutDir = None,
    name: opt.RunName = None,
    sets: opt.Sets = None,
) -> None:
    """Simulate a federation of institutions on this machine (Flower Simulation Engine)."""
    cfg = opt.build_config(config, clients=clients, rounds=rounds, data=data, test_data=test_data,
                           text_column=text_column, label_column=label_column, partition=partition,
                           model=model, task=task, peft=peft, strategy=strategy, out=out, name=name,
                           sets=sets)
    from fedpeft.simulation.federated import simulate as run_simulated

    protections = [name for name, on in (
        ("sealed", cfg.security.seal_updates),
        ("secure aggregation", cfg.secure_aggregation.enabled),
        (f"client-level DP (delta {cfg.privacy.delta:g})", cfg.privacy.enabled),
        ("example-level DP-SGD", cfg.privacy.example_level),
        (f"LoRA {cfg.lora.mode}", cfg.lora.mode != "fedavg"),
    ) if on]
    console.print(
        f"[bold]fedpeft simulate[/]: {cfg.simulation.num_clients} institutions, "
        f"{cfg.federation.num_rounds} rounds, {cfg.strategy.name}, {cfg.peft.method} on "
        f"{cfg.model.name}; {', '.join(protections) or 'no protection'}"
    )
    with round_progress(cfg.federation.num_rounds, "federated rounds") as on_round:
        report = run_simulated(cfg, on_round)
    _report(report.path, report.summary, report.path / "metrics.jsonl", "federated run")


@app.command()
def resume(
    run: Annotated[Path, typer.Argument(help="An interrupted simulation's folder (NAME.partial "
                                             "or NAME.failed).")],
) -> None:
    """Continue an interrupted simulated federation from its last complete round."""
    from fedpeft.common.config import load_config
    from fedpeft.common.runs.folder import RunFolder
    from fedpeft.simulation.federated import resume_simulation

    RunFolder.resolve(run)
    rounds = load_config(run / "config.toml").federation.num_rounds
    console.print(f"[bold]fedpeft resume[/]: {run}")
    with round_progress(rounds, "federated rounds") as on_round:
        report = resume_simulation(run, on_round)
    _report(report.path, report.summary, report.path / "metrics.jsonl", "federated run")


@app.command()
def baseline(
    kind: Annotated[str, typer.Argument(help="centralized (all data pooled) | local (each alone)")],
    config: opt.ConfigFile = None,
    clients: opt.Clients = None,
    rounds: opt.Rounds = None,
    data: opt.TrainData = None,
    test_data: opt.TestData = None,
    text_column: opt.TextColumn = None,
    label_column: opt.LabelColumn = None,
    partition: opt.Partition = None,
    model: opt.Model = None,
    task: opt.Task = None,
    peft: opt.Method = None,
    out: opt.OutDir = None,
    name: opt.RunName = None,
    sets: opt.Sets = None,
) -> None:
    """Train a baseline on the same data and test set as `simulate`."""
    if kind not in ("centralized", "local"):
        raise FedpeftError(f"baseline kind {kind!r}: expected 'centralized' or 'local'")
    cfg = opt.build_config(config, clients=clients, rounds=rounds, data=data, test_data=test_data,
                           text_column=text_column, label_column=label_column, partition=partition,
                           model=model, task=task, peft=peft, out=out, name=name, sets=sets)
    from fedpeft.simulation.baselines import run_baseline

    console.print(f"[bold]fedpeft baseline {kind}[/]: {cfg.federation.num_rounds} epochs, "
                  f"{cfg.peft.method} on {cfg.model.name}")
    with round_progress(cfg.federation.num_rounds, f"{kind} epochs") as on_round:
        report = run_baseline(kind, cfg, on_round)  # type: ignore[arg-type]
    _report(report.path, report.summary, report.path / "metrics.jsonl", f"{kind} baseline")


@app.command()
def sweep(
    grid: Annotated[list[str] | None, typer.Option(
        "--grid", help="FIELD=V1,V2,... (repeatable; the trials are the product).")] = None,
    random: Annotated[int, typer.Option(
        "--random", help="N random trials drawn from the --range items.")] = 0,
    ranges: Annotated[list[str] | None, typer.Option(
        "--range", help="FIELD=LOW:HIGH[:log|int] for --random (repeatable).")] = None,
    config: opt.ConfigFile = None,
    out: opt.OutDir = None,
    name: Annotated[str | None, typer.Option("--name", help="Sweep folder name.")] = None,
    sets: opt.Sets = None,
) -> None:
    """Search config fields in simulation; trials ranked by validation metric (not test)."""
    import time

    from fedpeft.simulation import sweep as search

    fields = search.parse_grid(grid or [])
    drawn = search.parse_ranges(ranges or [])
    if not fields and not drawn:
        raise FedpeftError("sweep: give at least one --grid FIELD=V1,V2 or --random N --range ...")
    base_sets = opt.parse_sets(sets)
    for field in base_sets:
        search.check_field(field)
    base = opt.build_config(config, sets=sets)
    overrides = search.trials(fields, drawn, random, base.training.seed)
    sweep_dir = Path(out or base.output.dir) / (name or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    if sweep_dir.exists():
        raise FedpeftError(f"{sweep_dir}: sweep folder exists already (choose another --name)")
    configs = search.trial_configs(base_sets, config, overrides, sweep_dir)
    from fedpeft.simulation.federated import simulate as run_simulated

    console.print(f"[bold]fedpeft sweep[/]: {len(configs)} trials in {sweep_dir}")

    def on_trial(number: int, row: dict) -> None:
        shown = row.get("validation")
        outcome = f"validation {shown:.4f}" if isinstance(shown, float) else row["status"]
        console.print(f"  trial {number}/{len(configs)}: {outcome}")

    ranked = search.run_sweep(configs, overrides, sweep_dir, run_simulated, on_trial)
    print_table(sweep_table(ranked, configs[0].model.task))
    console.print(f"[green]results:[/] {sweep_dir / search.RESULTS_FILE}")


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder (or an adapter folder).")],
    merged: Annotated[Path, typer.Option("--merged", help="Output folder for the merged model.")],
    best: Annotated[bool, typer.Option("--best", help="Export best/ instead of adapter/.")] = False,
) -> None:
    """Write a standalone Hugging Face model with the adapter merged into the base weights."""
    from fedpeft.common.adapter.export import export_merged

    adapter = run / ("best" if best else "adapter") if (run / "adapter").is_dir() else run
    if not (adapter / "adapter_config.json").is_file():
        raise FedpeftError(f"{adapter}: no adapter_config.json (not a run or adapter folder)")
    if merged.exists() and any(merged.iterdir()):
        raise FedpeftError(f"{merged}: output folder exists and is not empty")
    export_merged(adapter, merged)
    console.print(f"[green]merged model written:[/] {merged}")


@data_app.command("demo")
def data_demo(
    out: Annotated[Path, typer.Option(
        "--out",
        help="Folder for bank-support-train.csv and bank-support-test.csv.")] = Path("demo-data"),
) -> None:
    """Write the built-in dataset as OUT/bank-support-train.csv and OUT/bank-support-test.csv
    (columns text, label, site) to inspect it or to start from its format."""
    from fedpeft.common.config import BUILTIN_DATASET
    from fedpeft.common.data.builtin import write_builtin

    train, test = write_builtin(BUILTIN_DATASET, out)
    console.print(f"[green]written:[/] {train}, {test}")


@config_app.command("show")
def config_show(config: opt.ConfigFile = None, sets: opt.Sets = None) -> None:
    """Print the effective configuration (defaults, file and --set items) as TOML.

    Refuses what `fedpeft simulate` would: every config rule, and the round plan of the
    simulated federation (secure-aggregation threshold, privacy budget), printed as a comment.
    """
    from fedpeft.common.config.plan import describe, plan, simulated_participants

    cfg = opt.build_config(config, sets=sets)
    round_plan = plan(cfg, simulated_participants(cfg))
    console.print(to_toml(cfg), markup=False, highlight=False)
    console.print(f"# round plan of the simulated federation: {describe(round_plan)}",
                  markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    # Warnings and errors from any library reach the terminal; INFO goes only to run.log.
    stderr = logging.StreamHandler()
    stderr.setLevel(logging.WARNING)
    stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # Flower's own warnings (deprecations of APIs it still ships) go to run.log, not the screen.
    stderr.addFilter(lambda record: record.name != "flwr" or record.levelno >= logging.ERROR)
    logging.getLogger().addHandler(stderr)
    try:
        app()
    except FedpeftError as err:
        err_console.print(Text.assemble(("error: ", "bold red"), str(err)), highlight=False,
                          soft_wrap=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()

"""CLI options shared by the commands that start a run, and their mapping onto config fields.

Each flag is a shortcut for one dotted config field; `--set FIELD=VALUE` reaches any other.
Flags override the TOML file, which overrides the defaults; validation happens once, on the
merged result, so the error names the field whichever way the value arrived.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fedpeft.common.config import RunConfig, load_config
from fedpeft.common.errors import ConfigError

ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")]
Clients = Annotated[int | None, typer.Option(
    "--clients",
    help="Simulated institutions. On the built-in data (5 banks, one institution each by "
         "default) fewer merge whole banks (3: two pairs and one bank alone), more split banks "
         "into shares; set --partition iid for identical random shards instead.",
)]
Rounds = Annotated[int | None, typer.Option("--rounds", help="Federated rounds.")]
TrainData = Annotated[str | None, typer.Option("--data", help="Training file (CSV, JSONL, Parquet).")]
TestData = Annotated[str | None, typer.Option("--test-data", help="Held-out test file.")]
TextColumn = Annotated[str | None, typer.Option("--text-column", help="Text column.")]
LabelColumn = Annotated[str | None, typer.Option("--label-column", help="Label column.")]
Partition = Annotated[
    str | None, typer.Option("--partition", help="iid | dirichlet:ALPHA | column:NAME")
]
Model = Annotated[str | None, typer.Option("--model", help="Local model folder or hub name.")]
Task = Annotated[str | None, typer.Option("--task", help="classification | causal-lm")]
Method = Annotated[str | None, typer.Option("--peft", help="PEFT method (lora, ia3, prompt_tuning, ...).")]
Strategy = Annotated[
    str | None, typer.Option("--strategy", help="fedavg | fedprox | fedadam | fedyogi | fedavgm")
]
OutDir = Annotated[str | None, typer.Option("--out", help="Parent folder for run folders.")]
RunName = Annotated[str | None, typer.Option("--name", help="Run folder name.")]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Any config field: --set training.learning_rate=1e-4 (repeatable)."),
]


def _parse_value(text: str) -> Any:
    """JSON where it parses (numbers, booleans, lists), the raw string otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in items or []:
        field, sep, value = item.partition("=")
        if not sep or not field.strip():
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. training.learning_rate=1e-4")
        parsed[field.strip()] = _parse_value(value)
    return parsed


def build_config(
    config: Path | None,
    *,
    clients: int | None = None,
    rounds: int | None = None,
    data: str | None = None,
    test_data: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    partition: str | None = None,
    model: str | None = None,
    task: str | None = None,
    peft: str | None = None,
    strategy: str | None = None,
    out: str | None = None,
    name: str | None = None,
    sets: list[str] | None = None,
) -> RunConfig:
    """The effective config: file, then flags, then `--set` items."""
    overrides: dict[str, Any] = {
        "simulation.num_clients": clients,
        "federation.num_rounds": rounds,
        "data.train": data,
        "data.test": test_data,
        "data.text_column": text_column,
        "data.label_column": label_column,
        "data.partition": partition,
        "model.name": model,
        "model.task": task,
        "peft.method": peft,
        "strategy.name": strategy,
        "output.dir": out,
        "output.run_name": name,
    }
    overrides.update(parse_sets(sets))
    return load_config(config, overrides)

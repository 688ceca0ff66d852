"""`fedpeft sweep`: a small grid or random search over config fields, in simulation.

Each trial is an ordinary simulated run (its own run folder under the sweep's folder), so any
trial can be inspected, reported on or exported like a single run. Trials are ranked by the
institutions' aggregated validation metric of the final round, never by the test metric: a
configuration picked for its test score has an optimistic test score. Every trial's config is
validated before the first one starts, so a bad value costs no compute.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from fedpeft.common.config import RunConfig, load_config
from fedpeft.common.errors import ConfigError, FedpeftError
from fedpeft.common.runs.best import SelectionMetric
from fedpeft.common.runs.metrics_log import read_metrics
from fedpeft.simulation.federated import RunReport

RESULTS_FILE = "sweep.json"


def check_field(dotted: str) -> None:
    """Refuse a dotted name that is not a field of the run config (`training.learning_rate`)."""
    model: type[BaseModel] = RunConfig
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            known = ", ".join(sorted(model.model_fields))
            where = ".".join(parts[:depth]) or "the config"
            raise ConfigError(f"sweep: unknown config field {dotted!r} ({where} has: {known})")
        annotation = field.annotation
        last = depth == len(parts) - 1
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if last:
                raise ConfigError(f"sweep: {dotted!r} is a section, not a field")
            model = annotation
        elif not last:
            raise ConfigError(f"sweep: unknown config field {dotted!r} ({part!r} is not a section)")


def _value(text: str) -> Any:
    """JSON where it parses (numbers, booleans, lists), the raw string otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """`FIELD=V1,V2,...` items -> field -> values."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        field, sep, values = item.partition("=")
        field = field.strip()
        if not sep or not field or not values.strip():
            raise ConfigError(f"--grid {item!r}: expected FIELD=V1,V2,... e.g. "
                              "training.learning_rate=1e-3,3e-3")
        check_field(field)
        grid[field] = [_value(v.strip()) for v in values.split(",")]
    return grid


@dataclass(frozen=True)
class Range:
    """A random-search range: uniform, log-uniform or integer."""

    low: float
    high: float
    scale: str  # "linear" | "log" | "int"

    def draw(self, rng: np.random.Generator) -> float | int:
        if self.scale == "log":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        if self.scale == "int":
            return int(rng.integers(int(self.low), int(self.high) + 1))
        return float(rng.uniform(self.low, self.high))


def parse_ranges(items: list[str]) -> dict[str, Range]:
    """`FIELD=LOW:HIGH[:log|int]` items -> field -> range."""
    ranges: dict[str, Range] = {}
    for item in items:
        field, sep, spec = item.partition("=")
        field = field.strip()
        parts = spec.split(":")
        scale = parts[2] if len(parts) == 3 else "linear"
        try:
            low, high = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            low = high = math.nan
        if (not sep or len(parts) not in (2, 3) or scale not in ("linear", "log", "int")
                or not low < high or (scale == "log" and low <= 0)):
            raise ConfigError(f"--range {item!r}: expected FIELD=LOW:HIGH[:log|int] with "
                              "LOW < HIGH (and LOW > 0 for log)")
        check_field(field)
        ranges[field] = Range(low, high, scale)
    return ranges


def trials(grid: Mapping[str, list[Any]], ranges: Mapping[str, Range], random_trials: int,
           seed: int) -> list[dict[str, Any]]:
    """The overrides of each trial: the grid's product, or `random_trials` draws from `ranges`
    (each combined with every grid point when both are given)."""
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] or [{}]
    if not ranges:
        return points
    if random_trials < 1:
        raise ConfigError("--range needs --random N (N >= 1 trials)")
    rng = np.random.default_rng(seed)
    return [{**point, **{field: r.draw(rng) for field, r in ranges.items()}}
            for _ in range(random_trials) for point in points]


def trial_configs(base: Mapping[str, Any], config_file: Path | None,
                  overrides: list[dict[str, Any]], sweep_dir: Path) -> list[RunConfig]:
    """One validated config per trial, its run folder `trial-NN` inside `sweep_dir`."""
    configs = []
    for number, trial in enumerate(overrides, start=1):
        settings = {**base, **trial, "output.dir": str(sweep_dir),
                    "output.run_name": f"trial-{number:02d}"}
        try:
            configs.append(load_config(config_file, settings))
        except ConfigError as err:
            raise ConfigError(f"sweep trial {number} {_describe(trial)}: {err}") from None
    return configs


def _describe(trial: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.items())


def validation_score(records: list[dict[str, Any]], metric: SelectionMetric) -> float | None:
    """The final round's aggregated validation metric (institutions' own validation rows)."""
    rounds = [r for r in records if r.get("round", 0) > 0]
    if not rounds:
        return None
    value = (rounds[-1].get("client_eval") or {}).get(metric.name)
    return float(value) if isinstance(value, (int, float)) else None


def run_sweep(configs: list[RunConfig], overrides: list[dict[str, Any]], sweep_dir: Path,
              run: Callable[[RunConfig], RunReport],
              on_trial: Callable[[int, dict[str, Any]], None] | None = None,
              ) -> list[dict[str, Any]]:
    """Run every trial, rank them by validation and write `sweep.json`; returns the ranking.

    A trial that fails with a user-facing error is kept in the table as failed (the remaining
    trials still run); anything else is a bug and stops the sweep.
    """
    metric = SelectionMetric.for_task(configs[0].model.task)
    rows: list[dict[str, Any]] = []
    for number, (cfg, trial) in enumerate(zip(configs, overrides, strict=True), start=1):
        row: dict[str, Any] = {"trial": number, "overrides": trial}
        try:
            report = run(cfg)
        except FedpeftError as err:
            row.update(status="failed", error=str(err))
        else:
            row.update(status="completed", run_folder=str(report.path),
                       validation=validation_score(read_metrics(report.path / "metrics.jsonl"),
                                                   metric),
                       test=report.summary["final"].get(metric.name))
        rows.append(row)
        if on_trial is not None:
            on_trial(number, row)
    ranked = sorted(rows, key=lambda r: _rank_key(r, metric))
    for position, row in enumerate(ranked, start=1):
        row["rank"] = position
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / RESULTS_FILE).write_text(json.dumps(
        {"ranked_by": f"validation {metric.name} (final round, institutions' validation rows)",
         "higher_is_better": metric.higher_is_better, "trials": ranked}, indent=2))
    return ranked


def _rank_key(row: dict[str, Any], metric: SelectionMetric) -> tuple[int, float]:
    value = row.get("validation")
    if value is None:
        return (1, 0.0)  # failed or unvalidated trials last
    return (0, -value if metric.higher_is_better else value)

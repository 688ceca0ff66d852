"""The tracking tools of one run, opened from its folder's config and ended with the run.

`MetricsLog` opens them when it starts a run's `metrics.jsonl` (it knows only the folder, so
the folder's `config.toml` says what is wanted); `RunFolder.finish`/`fail` ends them with the
final folder, so the artefacts come from where the run was published.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Protocol

from fedpeft.common.config import RunConfig, load_config
from fedpeft.common.errors import ConfigError, FedpeftError

logger = logging.getLogger(__name__)


class Tracker(Protocol):
    def log_round(self, record: dict[str, Any]) -> None: ...

    def end(self, final_dir: Path, status: str) -> None: ...


_OPEN: dict[Path, list[Tracker]] = {}
"""Trackers of the runs this process is writing, by run folder (absolute)."""


def check_trackers(cfg: RunConfig) -> None:
    """Refuse, before a run folder exists, a tracking tool this machine lacks. Checked by the
    coordinator only: institutions receive the same config and never track."""
    if cfg.tracking.mlflow and importlib.util.find_spec("mlflow") is None:
        raise ConfigError("tracking.mlflow = true needs MLflow on this machine: "
                          "pip install 'fedpeft[mlflow]'")


def open_trackers(run_dir: Path) -> list[Tracker]:
    """The trackers `RUN/config.toml` asks for; none when the folder has no config (a metrics
    log outside a run folder) or the config cannot be read."""
    config_path = run_dir / "config.toml"
    if not config_path.is_file():
        return []
    try:
        cfg = load_config(config_path)
    except FedpeftError as err:
        logger.warning("no experiment tracking: %s", err)
        return []
    trackers: list[Tracker] = []
    if cfg.tracking.tensorboard:
        from fedpeft.common.tracking.tensorboard import TensorBoardTracker

        trackers.append(TensorBoardTracker(run_dir, cfg))
    if cfg.tracking.mlflow:
        from fedpeft.common.runs.catalog import run_name
        from fedpeft.common.tracking.mlflow_tracker import MlflowTracker

        trackers.append(MlflowTracker(run_dir, run_name(run_dir), cfg))
    _OPEN[run_dir.resolve()] = trackers
    return trackers


def end_trackers(run_dir: Path, final_dir: Path, status: str) -> None:
    """End the trackers opened for `run_dir` (now published as `final_dir`)."""
    for tracker in _OPEN.pop(run_dir.resolve(), []):
        tracker.end(final_dir, status)

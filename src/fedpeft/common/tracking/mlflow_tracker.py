"""MLflow, when `tracking.mlflow` asks for it: per-round metrics, the config as parameters,
and at the end the adapter, config and summary as artefacts.

It talks to MLflow through `MlflowClient` with an explicit run id, not the `mlflow.start_run`
global, so a process running several things at once (tests, a notebook) cannot mix runs up.
Without a tracking URI the store is a SQLite file beside the run folders: MLflow 3 keeps the
plain-folder store only behind an opt-out flag, and a database file is just as local.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from fedpeft.common.config import RunConfig
from fedpeft.common.tracking.scalars import per_institution_allowed, round_scalars

MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlflow-artifacts"
_BATCH = 100
"""MLflow's log_batch takes at most 100 params (and 1000 metrics) per call."""
_NOT_A_KEY = re.compile(r"[^A-Za-z0-9_\-. /:]")
ARTEFACTS = ("config.toml", "summary.json", "report.html")
ARTEFACT_FOLDERS = ("adapter", "best")


def _key(name: str) -> str:
    """MLflow accepts letters, digits and `_-. /:` in keys; institution names may hold more."""
    return _NOT_A_KEY.sub("_", name)


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = str(value)[:6000]
    return flat


def default_uri(cfg: RunConfig) -> str:
    return f"sqlite:///{(Path(cfg.output.dir) / MLFLOW_DB).resolve()}"


class MlflowTracker:
    """One MLflow run per fedpeft run, in experiment `tracking.mlflow_experiment`."""

    def __init__(self, run_dir: Path, run_name: str, cfg: RunConfig) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        self._metric = Metric
        self.per_institution = per_institution_allowed(cfg)
        uri = cfg.tracking.mlflow_uri or default_uri(cfg)
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(cfg.tracking.mlflow_experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            location = None if cfg.tracking.mlflow_uri else (
                Path(cfg.output.dir) / MLFLOW_ARTIFACTS).resolve().as_uri()
            experiment_id = self.client.create_experiment(cfg.tracking.mlflow_experiment,
                                                          artifact_location=location)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name,
                                             tags={"fedpeft.run_folder": str(run_dir)}).info.run_id
        params = [Param(_key(k), v) for k, v in _flat(cfg.model_dump(mode="json")).items()]
        for start in range(0, len(params), _BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + _BATCH])

    def log_round(self, record: dict[str, Any]) -> None:
        step, now = int(record.get("round", 0)), int(time.time() * 1000)
        metrics = [self._metric(_key(tag), value, now, step)
                   for tag, value in round_scalars(record, self.per_institution).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def end(self, final_dir: Path, status: str) -> None:
        for name in ARTEFACTS:
            if (final_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(final_dir / name))
        for folder in ARTEFACT_FOLDERS:
            if (final_dir / folder).is_dir():
                self.client.log_artifacts(self.run_id, str(final_dir / folder), folder)
        self.client.set_terminated(self.run_id, status)

"""`[tracking]`: where else a run's per-round numbers go besides `metrics.jsonl`.

Local-first: TensorBoard event files inside the run folder by default; MLflow only when asked,
into a SQLite store beside the run folders unless a tracking URI says otherwise (a remote URI
sends the numbers off this machine: that is the operator's explicit choice).
"""

from __future__ import annotations

from pydantic import Field

from fedpeft.common.config.base import StrictModel


class TrackingConfig(StrictModel):
    """Experiment tracking tools fed as each round is recorded."""

    tensorboard: bool = Field(
        True,
        description="Write TensorBoard event files to RUN/tensorboard/: server metrics always, "
        "per-institution ones only without DP and secure aggregation.",
    )
    mlflow: bool = Field(False, description="Also log to MLflow (needs the `mlflow` extra).")
    mlflow_uri: str | None = Field(
        None,
        description="MLflow tracking URI; None: sqlite:///<output.dir>/mlflow.db on this machine.",
    )
    mlflow_experiment: str = Field("fedpeft", min_length=1, description="MLflow experiment name.")

"""TensorBoard event files in the run folder: readable back with TensorBoard's own reader,
holding the per-round test metrics, and no per-institution numbers when DP is on."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedpeft.common.config import load_config
from fedpeft.common.tracking import TENSORBOARD_DIR, per_institution_allowed, round_scalars

from .conftest import round_record


def _events(run: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run / TENSORBOARD_DIR))
    accumulator.Reload()
    return accumulator


def _series(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, pytest.approx(e.value)) for e in events.Scalars(tag)]


def test_event_files_hold_the_per_round_test_metrics(write_run) -> None:
    run = write_run("plain", dp=False)
    events = _events(run)
    for metric in ("accuracy", "macro_f1", "loss"):
        assert _series(events, f"test/{metric}") == [
            (n, round_record(n, dp=False)["server_eval"][metric]) for n in range(4)]
    assert _series(events, "round/failures") == [(1, 0.0), (2, 1.0), (3, 0.0)]
    assert _series(events, "traffic_MB/sent") == [(n, 1.5 * n) for n in (1, 2, 3)]
    # Without DP or secure aggregation, each institution's own curves are there too.
    assert _series(events, "institution/bank-b/train_loss") == [(n, 0.8) for n in (1, 2, 3)]
    [config] = events.Tensors("config/text_summary")  # the effective config, as text
    assert "learning_rate = 0.001" in config.tensor_proto.string_val[0].decode()


def test_with_dp_no_institution_is_singled_out(write_run) -> None:
    run = write_run("private", dp=True)
    events = _events(run)
    tags = events.Tags()["scalars"]
    assert _series(events, "privacy/epsilon") == [(1, 0.9), (2, 1.5), (3, 2.1)]
    assert "test/accuracy" in tags
    assert [tag for tag in tags if tag.startswith("institution/")] == []


def test_tracking_can_be_turned_off(write_run, runs_dir: Path) -> None:
    from fedpeft.common.runs.folder import open_run_folder
    from fedpeft.common.runs.metrics_log import MetricsLog

    cfg = load_config(overrides={"output.dir": str(runs_dir), "output.run_name": "quiet",
                                 "tracking.tensorboard": False})
    folder = open_run_folder(cfg, "sim")
    MetricsLog(folder.metrics_path).append(round_record(0, dp=False))
    assert not (folder.finish({}) / TENSORBOARD_DIR).exists()


@pytest.mark.parametrize("setting", ["privacy.enabled", "privacy.example_level",
                                     "secure_aggregation.enabled"])
def test_each_protection_withholds_per_institution_numbers(setting: str) -> None:
    overrides = {setting: True}
    if setting == "secure_aggregation.enabled":
        overrides["secure_aggregation.clip_range"] = 4.0
    assert not per_institution_allowed(load_config(overrides=overrides))
    assert per_institution_allowed(load_config())
    assert not any(t.startswith("institution/") for t in round_scalars(round_record(1, dp=True), False))


def test_mlflow_runs_hold_rounds_config_adapter_and_outcome(write_run, runs_dir: Path) -> None:
    """Three runs into one local MLflow store (one store: creating one takes seconds)."""
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    tracked = {"tracking.mlflow": True, "tracking.mlflow_experiment": "sweep"}
    write_run("plain", settings=tracked)
    write_run("private", dp=True, settings=tracked)
    write_run("broken", state="failed", settings=tracked)
    client = MlflowClient(tracking_uri=f"sqlite:///{runs_dir.resolve() / 'mlflow.db'}")
    found = {r.info.run_name: r for r in
             client.search_runs([client.get_experiment_by_name("sweep").experiment_id])}
    assert found["broken"].info.status == "FAILED"
    for name, dp in (("plain", False), ("private", True)):
        run = found[name]
        assert run.info.status == "FINISHED"
        assert run.data.params["training.learning_rate"] == "0.001"
        assert run.data.params["privacy.enabled"] == str(dp)
        history = sorted(client.get_metric_history(run.info.run_id, "test/accuracy"), key=lambda m: m.step)
        assert [(m.step, pytest.approx(m.value)) for m in history] == [
            (n, round_record(n, dp=dp)["server_eval"]["accuracy"]) for n in range(4)]
        institution_keys = [k for k in run.data.metrics if k.startswith("institution/")]
        assert (institution_keys == []) is dp, name
        artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"adapter", "config.toml", "summary.json"} <= artefacts
        assert [a.path for a in client.list_artifacts(run.info.run_id, "adapter")] == [
            "adapter/adapter_config.json"]


def test_mlflow_asked_for_but_missing_is_refused_before_any_folder(
        runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from fedpeft.common.errors import ConfigError
    from fedpeft.common.runs.folder import open_run_folder

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    cfg = load_config(overrides={"output.dir": str(runs_dir), "tracking.mlflow": True})
    with pytest.raises(ConfigError, match=r"tracking.mlflow = true needs MLflow on this machine"):
        open_run_folder(cfg, "sim")
    assert not runs_dir.exists()

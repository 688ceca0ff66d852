"""`fedpeft sweep`: fields checked before any trial runs, trials ranked by validation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from fedpeft.cli.main import main
from fedpeft.common.config import RunConfig
from fedpeft.common.errors import ConfigError
from fedpeft.common.runs.metrics_log import MetricsLog
from fedpeft.simulation import sweep
from fedpeft.simulation.federated import RunReport


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["fedpeft", "sweep", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code), capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--grid", "training.lerning_rate=1e-3,3e-3"],
     "error: sweep: unknown config field 'training.lerning_rate' (training has: "),
    (["--grid", "trainig.learning_rate=1e-3"],
     "error: sweep: unknown config field 'trainig.learning_rate' (the config has: "),
    (["--grid", "training=1,2"], "error: sweep: 'training' is a section, not a field"),
    (["--random", "2", "--range", "training.learning_rate=0:1e-2:log"],
     "error: --range 'training.learning_rate=0:1e-2:log': expected FIELD=LOW:HIGH"),
    (["--grid", "training.learning_rate=1e-3,5"],
     "error: sweep trial 2 training.learning_rate=5: config: training.learning_rate: "),
])
def test_refused_with_one_line_and_exit_2(monkeypatch, capsys, tmp_path: Path, args,
                                          message) -> None:
    code, err = _cli(monkeypatch, capsys, *args, "--out", str(tmp_path))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), err
    assert list(tmp_path.iterdir()) == []  # no trial ran, no folder written


def test_grid_is_the_product_and_random_draws_within_ranges() -> None:
    grid = sweep.parse_grid(["training.learning_rate=1e-3,3e-3", "training.local_steps=10,20"])
    assert sweep.trials(grid, {}, 0, seed=1) == [
        {"training.learning_rate": 1e-3, "training.local_steps": 10},
        {"training.learning_rate": 1e-3, "training.local_steps": 20},
        {"training.learning_rate": 3e-3, "training.local_steps": 10},
        {"training.learning_rate": 3e-3, "training.local_steps": 20},
    ]
    ranges = sweep.parse_ranges(["training.learning_rate=1e-4:1e-2:log",
                                 "training.local_steps=5:8:int"])
    drawn = sweep.trials({}, ranges, 20, seed=1)
    assert len(drawn) == 20
    assert all(1e-4 <= t["training.learning_rate"] <= 1e-2 for t in drawn)
    assert {t["training.local_steps"] for t in drawn} <= {5, 6, 7, 8}
    assert drawn == sweep.trials({}, ranges, 20, seed=1)  # seeded


def _fake_run(validation: dict[float, float], test: dict[float, float]):
    """A run whose final validation and test macro-F1 depend on the learning rate: validation
    and test disagree on purpose, so ranking on the wrong one is caught."""
    def run(cfg: RunConfig) -> RunReport:
        folder = Path(cfg.output.dir) / str(cfg.output.run_name)
        folder.mkdir(parents=True)
        log = MetricsLog(folder / "metrics.jsonl")
        lr = cfg.training.learning_rate
        log.append({"round": 0, "server_eval": {"macro_f1": 0.1}})
        log.append({"round": 1, "server_eval": {"macro_f1": test[lr]},
                    "client_eval": {"macro_f1": validation[lr]}})
        return RunReport(folder, {"final": {"macro_f1": test[lr]}})
    return run


def test_trials_are_ranked_by_validation_not_test(tmp_path: Path) -> None:
    grid = sweep.parse_grid(["training.learning_rate=0.001,0.003,0.01"])
    overrides = sweep.trials(grid, {}, 0, seed=0)
    configs = sweep.trial_configs({}, None, overrides, tmp_path / "sw")
    run = _fake_run(validation={0.001: 0.5, 0.003: 0.8, 0.01: 0.6},
                    test={0.001: 0.9, 0.003: 0.7, 0.01: 0.6})
    ranked = sweep.run_sweep(configs, overrides, tmp_path / "sw", run)
    assert [r["overrides"]["training.learning_rate"] for r in ranked] == [0.003, 0.01, 0.001]
    written: dict[str, Any] = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [t["rank"] for t in written["trials"]] == [1, 2, 3]
    assert written["trials"][0]["validation"] == 0.8 and written["trials"][0]["test"] == 0.7
    assert written["trials"][0]["run_folder"] == str(tmp_path / "sw" / "trial-02")


def test_failed_trial_is_listed_last(tmp_path: Path) -> None:
    overrides = sweep.trials(sweep.parse_grid(["training.learning_rate=0.001,0.003"]), {}, 0, 0)
    configs = sweep.trial_configs({}, None, overrides, tmp_path)
    good = _fake_run({0.003: 0.4}, {0.003: 0.4})

    def run(cfg: RunConfig) -> RunReport:
        if cfg.training.learning_rate == 0.001:
            raise ConfigError("data.train: file not found")
        return good(cfg)

    ranked = sweep.run_sweep(configs, overrides, tmp_path, run)
    assert [(r["trial"], r["status"]) for r in ranked] == [(2, "completed"), (1, "failed")]
    assert ranked[1]["error"] == "data.train: file not found"


def test_random_without_ranges_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--range needs --random N"):
        sweep.trials({}, sweep.parse_ranges(["training.learning_rate=1e-4:1e-2"]), 0, 0)

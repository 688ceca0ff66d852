"""Bad input through the real `fedpeft` command: one line naming the problem, exit code 2,
and no run folder left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.e2e


def _fedpeft(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedpeft.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    good = pd.DataFrame({"sentence": [f"text number {i}" for i in range(20)],
                         "label": ["a", "b"] * 10})
    paths = {"good": tmp_path / "good.csv", "unseen": tmp_path / "unseen.csv",
             "tiny": tmp_path / "tiny.csv", "empty_model": tmp_path / "not-a-model"}
    good.to_csv(paths["good"], index=False)
    pd.DataFrame({"sentence": ["x", "y"], "label": ["a", "zebra"]}).to_csv(paths["unseen"],
                                                                           index=False)
    good.head(3).to_csv(paths["tiny"], index=False)
    paths["empty_model"].mkdir()
    return paths


CASES = {
    "missing file": (["--data", "{tmp}/nope.csv"], "nope.csv"),
    "missing column": (["--data", "{good}", "--label-column", "label"], "column 'text' not found"),
    "unseen test label": (["--data", "{good}", "--test-data", "{unseen}", "--text-column",
                           "sentence"],
                          "zebra"),
    "fewer rows than institutions": (["--data", "{tiny}", "--test-data", "{good}", "--text-column",
                                      "sentence", "--clients", "5"], "5"),
    "model folder without config": (["--model", "{empty_model}"], "config.json"),
    "unknown target module": (["--set", 'peft.target_modules=["no_such_layer"]'], "no_such_layer"),
    "bad config value": (["--set", "training.batch_size=0"], "training.batch_size"),
    "unknown peft method": (["--peft", "not_a_method"], "not_a_method"),
    "median under secure aggregation": (["--set", "strategy.name=fedmedian", "--set",
                                         "secure_aggregation.enabled=true"], "fedmedian"),
    "stacking under secure aggregation": (["--set", "lora.mode=stacking", "--set",
                                           "secure_aggregation.enabled=true"], "stacking"),
    "more dropouts than masking survives": (["--set", "secure_aggregation.enabled=true",
                                             "--set", "secure_aggregation.max_dropouts=3"],
                                            "max_dropouts=3 is too many"),
    "unreachable privacy budget": (["--set", "privacy.enabled=true", "--set",
                                    "privacy.target_epsilon=0.01"], "target_epsilon=0.01"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_simulate_refuses_bad_input(case: str, files: dict[str, Path], tmp_path: Path) -> None:
    args, expected = CASES[case]
    out = tmp_path / "runs"
    values = {"tmp": tmp_path, **files}
    result = _fedpeft("simulate", *[a.format(**values) for a in args], "--out", str(out),
                      cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in _error_line(result)
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_existing_run_is_never_overwritten(tmp_path: Path) -> None:
    earlier = tmp_path / "runs" / "mine"
    earlier.mkdir(parents=True)
    (earlier / "metrics.jsonl").write_text("earlier\n")
    result = _fedpeft("simulate", "--out", str(tmp_path / "runs"), "--name", "mine", cwd=tmp_path)
    assert result.returncode == 2
    assert "already exists" in _error_line(result)
    assert (earlier / "metrics.jsonl").read_text() == "earlier\n"


def test_config_show_prints_effective_toml(tmp_path: Path) -> None:
    result = _fedpeft("config", "show", "--set", "federation.num_rounds=7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "num_rounds = 7" in result.stdout


def test_export_refuses_a_folder_without_adapter(tmp_path: Path) -> None:
    result = _fedpeft("export", str(tmp_path), "--merged", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert "adapter_config.json" in _error_line(result)

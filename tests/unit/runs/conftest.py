"""Run folders written by fedpeft's own run-folder code (RunFolder, MetricsLog, save_config):
completed federated and baseline runs, a failed one, one still running, and damaged ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedpeft.common.config import load_config
from fedpeft.common.runs.folder import open_run_folder
from fedpeft.common.runs.metrics_log import MetricsLog

EPSILONS = (0.9, 1.5, 2.1)


def round_record(number: int, *, dp: bool, lr: float = 1e-3) -> dict[str, Any]:
    """A round as the server records it; metrics depend on the round and learning rate."""
    quality = 0.3 + 0.1 * number + lr * 10
    record: dict[str, Any] = {"round": number,
                              "server_eval": {"accuracy": quality, "macro_f1": quality - 0.05,
                                              "loss": 1.6 - 0.2 * number}}
    if number == 0:
        return record
    names = ["bank-a", "bank-b", "bank-c"]
    record |= {
        "train": {"loss": 1.0 - 0.1 * number, "num-examples": 300},
        "client_eval": {"accuracy": 0.6 + 0.01 * number},
        "clients": [{"node_id": 10 + i, "name": n, "train": {"loss": 0.9 - 0.1 * i, "num-examples": 100},
                     "evaluate": {"accuracy": 0.5 + 0.1 * i}} for i, n in enumerate(names)
                    if not (number == 2 and n == "bank-c")],
        "failures": ([{"node_id": 12, "name": "bank-c", "phase": "sealing",
                       "reason": "signature does not verify"}] if number == 2 else []),
        "bytes": {"sent": 1_500_000 * number, "received": 1_200_000},
        "time": {"round_s": 3.0, "local_compute_s": 2.0, "server_eval_s": 0.5, "framework_s": 0.5},
    }
    if dp:
        record["privacy"] = {"epsilon": EPSILONS[number - 1], "delta": 1e-5}
    return record


@pytest.fixture()
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture()
def write_run(runs_dir: Path) -> Callable[..., Path]:
    """write_run(name, kind=, state=completed|failed|running, dp=, rounds=, lr=, settings=)
    -> folder; `settings` are further dotted config overrides."""

    def write(name: str, *, kind: str = "sim", state: str = "completed", dp: bool = False,
              rounds: int = 3, lr: float = 1e-3, settings: dict[str, Any] | None = None) -> Path:
        overrides: dict[str, Any] = {"output.dir": str(runs_dir), "output.run_name": name,
                                     "federation.num_rounds": 3, "training.learning_rate": lr,
                                     **(settings or {})}
        if dp:
            overrides |= {"privacy.enabled": True, "privacy.target_epsilon": 5.0}
        cfg = load_config(overrides=overrides)
        folder = open_run_folder(cfg, kind)
        log = MetricsLog(folder.metrics_path)
        for number in range(rounds + 1):
            log.append(round_record(number, dp=dp, lr=lr))
        if state == "running":
            folder._detach_log()  # the run goes on in another process
            return folder.path
        folder.adapter_dir.mkdir()
        (folder.adapter_dir / "adapter_config.json").write_text('{"r": 8}', encoding="utf-8")
        if state == "failed":
            return folder.fail(RuntimeError("institution bank-c refused the global adapter"))
        summary = {"kind": "federated" if kind == "sim" else kind, "rounds": 3,
                   "final": log.records[-1]["server_eval"], "institutions": ["bank-a", "bank-b", "bank-c"],
                   "security": {"sealed_updates": True, "secure_aggregation": False, "lora_mode": "fedavg"}}
        if dp:
            summary["privacy"] = {"enabled": True, "epsilon": EPSILONS[rounds - 1], "target_epsilon": 5.0}
        return folder.finish(summary)

    return write


def tear_last_line(run: Path) -> None:
    """A writer caught mid-line: the last record is cut without its newline."""
    metrics = run / "metrics.jsonl"
    text = metrics.read_text(encoding="utf-8")
    metrics.write_text(text + json.dumps(round_record(9, dp=False))[:25], encoding="utf-8")


def tear_middle_line(run: Path) -> None:
    """A record in the middle cut short (disk full, edited by hand)."""
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = lines[1][:20] + "\n"
    metrics.write_text("".join(lines), encoding="utf-8")

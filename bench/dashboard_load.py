"""What the dashboard costs the coordinator's machine (issue #13 benchmark).

Every open run page re-reads its run folder every 3 seconds. This writes a 200-round,
20-institution run folder with fedpeft's own writer (tracking off, to time the dashboard
alone) plus 30 finished 50-round runs beside it, then times the requests a browser makes:
the runs list, one run's live fragment, and its JSON, in process through Starlette's test
client (no network), median of 20 after one warm-up.

    .venv/bin/python bench/dashboard_load.py
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from fedpeft.common.config import load_config
from fedpeft.common.runs.folder import open_run_folder
from fedpeft.common.runs.metrics_log import MetricsLog

warnings.filterwarnings("ignore")
from starlette.testclient import TestClient

from fedpeft.dashboard.app import create_app


def _record(number: int, institutions: int) -> dict:
    record = {"round": number, "server_eval": {"accuracy": 0.5, "macro_f1": 0.4, "loss": 1.0}}
    if number:
        record |= {
            "train": {"loss": 0.9}, "client_eval": {"accuracy": 0.6},
            "clients": [{"node_id": i, "name": f"hospital-{i:02d}", "train": {"loss": 0.9, "num-examples": 100},
                         "evaluate": {"accuracy": 0.6}} for i in range(institutions)],
            "failures": [], "bytes": {"sent": 3_000_000, "received": 3_000_000},
            "time": {"round_s": 60.0, "local_compute_s": 50.0, "framework_s": 5.0, "server_eval_s": 5.0},
        }
    return record


def _write(runs_dir: Path, name: str, rounds: int, institutions: int) -> None:
    cfg = load_config(overrides={"output.dir": str(runs_dir), "output.run_name": name,
                                 "tracking.tensorboard": False, "federation.num_rounds": rounds})
    folder = open_run_folder(cfg, "sim")
    log = MetricsLog(folder.metrics_path)
    for number in range(rounds + 1):
        log.append(_record(number, institutions))
    folder.finish({"kind": "federated", "rounds": rounds})


def _median_ms(client: TestClient, path: str, repeats: int = 20) -> float:
    client.get(path)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        assert client.get(path).status_code == 200, path
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = Path(scratch) / "runs"
        _write(runs_dir, "big", 200, 20)
        for index in range(30):
            _write(runs_dir, f"old-{index:02d}", 50, 5)
        size = (runs_dir / "big" / "metrics.jsonl").stat().st_size
        client = TestClient(create_app(runs_dir), base_url="http://127.0.0.1")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"python {platform.python_version()}")
        print(f"big run: 200 rounds x 20 institutions, metrics.jsonl {size / 1e6:.1f} MB; 31 runs")
        for label, path in (("runs list fragment (31 runs)", "/live/runs"),
                            ("run live fragment (200 rounds)", "/live/runs/big"),
                            ("run JSON (200 rounds)", "/api/runs/big")):
            print(f"{label}, files unchanged: {_median_ms(client, path):.0f} ms median")
        # The first request after a round is recorded reads and draws the run again.
        log = MetricsLog(runs_dir / "big" / "metrics.jsonl")
        times = []
        for number in range(201, 211):
            log.append(_record(number, 20))
            started = time.perf_counter()
            assert client.get("/live/runs/big").status_code == 200
            times.append((time.perf_counter() - started) * 1000)
        print(f"run live fragment, first request after a new round: {statistics.median(times):.0f} ms median")


if __name__ == "__main__":
    main()

"""The dashboard in a real headless browser: `fedpeft dashboard` started as a process on
127.0.0.1, Debian's chromium loading its pages; the runs and a drawn curve are on the page,
the live script refreshes it, and a round written meanwhile shows up. Every process started
here is stopped by its process group id."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fedpeft.common.config import load_config
from fedpeft.common.runs.folder import open_run_folder
from fedpeft.common.runs.metrics_log import MetricsLog

pytestmark = pytest.mark.e2e

CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)
START_TIMEOUT_S = 60
BROWSER_TIMEOUT_S = 120


def _record(number: int) -> dict:
    record = {"round": number,
              "server_eval": {"accuracy": 0.3 + 0.1 * number, "macro_f1": 0.25 + 0.1 * number,
                                               "loss": 1.6 - 0.2 * number}}
    if number:
        record |= {"train": {"loss": 1.0 - 0.1 * number},
                   "clients": [{"node_id": 1, "name": "clinic-north", "train": {"loss": 0.9}},
                               {"node_id": 2, "name": "clinic-south", "train": {"loss": 0.7}}],
                   "failures": [], "bytes": {"sent": 2_000_000, "received": 1_000_000},
                   "time": {"round_s": 2.0, "local_compute_s": 1.5, "framework_s": 0.3,
                            "server_eval_s": 0.2},
                   "privacy": {"epsilon": 0.8 * number}}
    return record


def _write_runs(runs_dir: Path) -> Path:
    """A completed DP run and one still running (its folder stays `.partial`)."""
    for name, rounds, finished in (("finished-dp", 3, True), ("still-going", 1, False)):
        cfg = load_config(overrides={"output.dir": str(runs_dir), "output.run_name": name,
                                     "tracking.tensorboard": False, "federation.num_rounds": 3,
                                     "privacy.enabled": True, "privacy.target_epsilon": 8.0})
        folder = open_run_folder(cfg, "sim")
        log = MetricsLog(folder.metrics_path)
        for number in range(rounds + 1):
            log.append(_record(number))
        if finished:
            folder.finish({"kind": "federated", "rounds": 3,
                           "final": log.records[-1]["server_eval"]})
        else:
            folder._detach_log()
            running = folder.path
    return running


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the process and every child it started (chromium's renderers share its group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def _dashboard(runs_dir: Path, logs: Path) -> Iterator[str]:
    port = _free_port()
    log = (logs / "dashboard.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "fedpeft.cli.main", "dashboard", str(runs_dir), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/runs", timeout=5) as response:
                    json.load(response)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((logs / "dashboard.log").read_text(errors="replace")) from None
                time.sleep(0.3)
        yield url
    finally:
        _stop(process)
        log.close()


def _chromium(*args: str, profile: Path) -> str:
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = process.communicate(timeout=BROWSER_TIMEOUT_S)
    finally:
        _stop(process)
    return out.decode("utf-8", errors="replace")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (scripts/setup-test.sh installs "
                                              "Debian's chromium when run as root)")
def test_the_dashboard_in_a_headless_browser(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    running = _write_runs(runs_dir)
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    with _dashboard(runs_dir, tmp_path) as url:
        index = _chromium("--dump-dom", f"{url}/", profile=profile)
        assert 'data-run="finished-dp"' in index and 'data-run="still-going"' in index
        assert 'class="status-running">running' in index
        assert 'class="status-completed">completed' in index

        # A round recorded while the dashboard runs reaches the page without a restart.
        MetricsLog(running / "metrics.jsonl").append(_record(2))
        # Virtual time lets the live script run its refresh (every 3 s) before the DOM is dumped.
        page = _chromium("--dump-dom", "--virtual-time-budget=8000", f"{url}/runs/still-going",
                         profile=profile)
        assert "data-refreshed=" in page  # the live script fetched and swapped the fragment
        assert "round 2 of 3" in page
        assert '<polyline class="series" data-series="accuracy"' in page
        assert 'data-chart="epsilon"' in page and "target 8" in page
        assert "clinic-north" in page  # participants of each round

        shot = tmp_path / "dashboard.png"
        _chromium(f"--screenshot={shot}", "--window-size=1280,1400", f"{url}/runs/finished-dp",
                  profile=profile)
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000

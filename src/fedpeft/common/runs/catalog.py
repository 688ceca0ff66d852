"""What a runs folder holds, read without trusting that any run in it is finished or intact.

`fedpeft runs list`, `fedpeft runs compare` and the dashboard look at run folders while runs
are still writing them, after a crash, or after someone edited a file. So reading never
raises for a run's content: a line cut mid-write at the end of `metrics.jsonl` is a run still
writing (ignored), any other unreadable line or file is noted in `problems`, and a folder with
nothing readable at all is listed as `unreadable` with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomllib

from fedpeft.common.runs.folder import FAILED_SUFFIX, PARTIAL_SUFFIX

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.toml"
LOG_FILE = "run.log"
ERROR_FILE = "error.txt"

_LOG_KIND = re.compile(r"fedpeft (\S+) run ")
"""The first line `open_run_folder` logs names the kind of run before summary.json exists."""
_KINDS = {"sim": "federated", "run": "federated"}


@dataclass
class RunSnapshot:
    """One run folder as it is on disk at the moment it was read."""

    path: Path
    name: str
    status: str
    """running | completed | failed | unreadable"""
    kind: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """The first line of `error.txt` (failed run) or why the folder is unreadable."""
    problems: list[str] = field(default_factory=list)
    started: datetime | None = None
    updated: datetime | None = None

    @property
    def rounds_done(self) -> int:
        return max((r["round"] for r in self.records), default=0)

    @property
    def rounds_planned(self) -> int | None:
        for value in (self.summary.get("rounds"), self.summary.get("epochs"),
                      self.setting("federation", "num_rounds")):
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    @property
    def final_eval(self) -> dict[str, float]:
        """The last round's server-side test metrics (the summary's when it has them)."""
        final = self.summary.get("final")
        if not isinstance(final, dict) and self.records:
            final = self.records[-1].get("server_eval")
        return numbers(final)

    @property
    def epsilon(self) -> float | None:
        """The privacy spent by the last charged round; None without DP."""
        for record in reversed(self.records):
            privacy = record.get("privacy")
            if isinstance(privacy, dict) and isinstance(privacy.get("epsilon"), (int, float)):
                return float(privacy["epsilon"])
        return None

    @property
    def target_epsilon(self) -> float | None:
        value = self.setting("privacy", "target_epsilon")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def dp_enabled(self) -> bool:
        return self.setting("privacy", "enabled") is True or self.epsilon is not None

    def setting(self, section: str, key: str) -> Any:
        table = self.config.get(section)
        return table.get(key) if isinstance(table, dict) else None


def numbers(value: Any) -> dict[str, float]:
    """The numeric entries of a metrics dict (anything else, or not a dict: left out)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def read_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(round records sorted by round, problems) of a `metrics.jsonl` that may be mid-write."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        return [], [f"{path}: cannot read ({err.strerror or err})"]
    lines = text.split("\n")
    if lines and lines[-1] and not text.endswith("\n"):
        lines = lines[:-1]  # the writer's current line, not yet complete
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(f"{path} line {number}: not JSON (cut or edited)")
            continue
        round_number = record.get("round") if isinstance(record, dict) else None
        if not isinstance(round_number, int) or isinstance(round_number, bool):
            problems.append(f"{path} line {number}: no round number")
            continue
        records.append(record)
    records.sort(key=lambda r: r["round"])
    return records, problems


def _read_json_object(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        problems.append(f"{path}: not valid JSON")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path}: not a JSON object")
        return {}
    return data


def _read_toml(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):
        problems.append(f"{path}: not valid TOML")
        return {}


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except OSError:
        return None


def _kind(run_dir: Path, summary: dict[str, Any]) -> str | None:
    if isinstance(summary.get("kind"), str):
        return summary["kind"]
    try:
        with (run_dir / LOG_FILE).open(encoding="utf-8", errors="replace") as handle:
            match = _LOG_KIND.search(handle.readline())
    except OSError:
        return None
    return _KINDS.get(match.group(1), match.group(1)) if match else None


def run_name(run_dir: Path) -> str:
    name = run_dir.name
    for suffix in (PARTIAL_SUFFIX, FAILED_SUFFIX):
        name = name.removesuffix(suffix)
    return name


def read_snapshot(run_dir: Path) -> RunSnapshot:
    """The run folder `run_dir` as it is now; never raises for what the folder contains."""
    run_dir = Path(run_dir)
    name = run_name(run_dir)
    metrics = run_dir / METRICS_FILE
    if metrics.is_file():
        records, problems = read_records(metrics)
    elif run_dir.name.endswith(PARTIAL_SUFFIX):
        records, problems = [], []  # started, no round recorded yet
    else:
        return RunSnapshot(run_dir, name, "unreadable", error=f"{metrics}: not found")
    summary = _read_json_object(run_dir / SUMMARY_FILE, problems)
    config = _read_toml(run_dir / CONFIG_FILE, problems)
    error = None
    if run_dir.name.endswith(FAILED_SUFFIX):
        status = "failed"
        try:
            lines = (run_dir / ERROR_FILE).read_text(encoding="utf-8", errors="replace").splitlines()
            error = lines[0] if lines else None
        except OSError:
            error = "error.txt not found"
    elif run_dir.name.endswith(PARTIAL_SUFFIX):
        status = "running"
    elif summary.get("status") == "completed":
        status = "completed"
    else:
        status = "unreadable"
        error = f"{run_dir / SUMMARY_FILE}: missing or without status (run not finished?)"
    return RunSnapshot(
        path=run_dir, name=name, status=status, kind=_kind(run_dir, summary), records=records,
        summary=summary, config=config, error=error, problems=problems,
        started=_mtime(run_dir / CONFIG_FILE), updated=_mtime(metrics),
    )


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and ((path / METRICS_FILE).is_file() or (path / CONFIG_FILE).is_file())


def list_runs(runs_dir: Path, read: Callable[[Path], RunSnapshot] = read_snapshot) -> list[RunSnapshot]:
    """Every run folder directly under `runs_dir`, newest first."""
    if not runs_dir.is_dir():
        return []
    snapshots = [read(child) for child in runs_dir.iterdir() if is_run_folder(child)]
    epoch = datetime.fromtimestamp(0, timezone.utc)
    return sorted(snapshots, key=lambda s: (s.started or epoch, s.name), reverse=True)


def _signature(run_dir: Path) -> tuple[tuple[int, int] | None, ...]:
    def stat(name: str) -> tuple[int, int] | None:
        try:
            info = (run_dir / name).stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    return tuple(stat(name) for name in (METRICS_FILE, SUMMARY_FILE, CONFIG_FILE, ERROR_FILE))


class SnapshotCache:
    """`read_snapshot` that re-reads a run folder only when one of its files changed (size or
    modification time): a viewer polling every few seconds costs little for finished runs and
    between the rounds of a running one. Snapshots it returns are shared: read, never modify."""

    def __init__(self) -> None:
        self._cached: dict[Path, tuple[tuple[tuple[int, int] | None, ...], RunSnapshot]] = {}

    def read(self, run_dir: Path) -> RunSnapshot:
        signature = _signature(run_dir)
        hit = self._cached.get(run_dir)
        if hit is not None and hit[0] == signature:
            return hit[1]
        snapshot = read_snapshot(run_dir)
        self._cached[run_dir] = (signature, snapshot)
        return snapshot

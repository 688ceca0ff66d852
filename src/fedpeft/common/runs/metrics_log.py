"""`metrics.jsonl`: one JSON object per round (or epoch, for baselines), flushed as written.

Written line by line so a run that dies in round 7 still shows rounds 0-6.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fedpeft.common.errors import ConfigError
from fedpeft.common.tracking import open_trackers


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity; store them as null rather than emit invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


class MetricsLog:
    """Append-only writer for one run's `metrics.jsonl`; each record also goes to the tracking
    tools the run folder's config asks for (`common.tracking`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self.superseded: list[dict[str, Any]] = []
        """The records `resume` cut (complete lines only): rounds that were recorded, so
        released, after the checkpoint, and are run again. A resumed privacy account must
        still count their releases (`fedpeft.server.run_checkpoint.charge_superseded`)."""
        self.trackers = open_trackers(path.parent)

    @classmethod
    def resume(cls, path: Path, nbytes: int) -> MetricsLog:
        """Continue a log whose first `nbytes` bytes were checkpointed: anything after them
        (a round that was under way when the run stopped) is cut, so no round is counted
        twice once it is run again."""
        size = path.stat().st_size if path.exists() else 0
        if size < nbytes:
            raise ConfigError(f"{path}: {size} bytes, but the checkpoint counted {nbytes}; "
                              "the metrics were changed since the run stopped")
        with path.open("r+b") as handle:
            handle.seek(nbytes)
            cut = handle.read()
            handle.truncate(nbytes)
        log = cls(path)
        log.records = read_metrics(path)
        log.superseded = _complete_records(cut)
        return log

    @property
    def nbytes(self) -> int:
        """Bytes written so far: what a checkpoint records to cut the log back to."""
        return self.path.stat().st_size if self.path.exists() else 0

    def append(self, record: dict[str, Any]) -> None:
        clean = _finite(record)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(clean, sort_keys=True) + "\n")
        self.records.append(clean)
        for tracker in self.trackers:
            tracker.log_round(clean)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read a `metrics.jsonl` back (used by plots, reports and tests)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _complete_records(data: bytes) -> list[dict[str, Any]]:
    """The JSON records of `data`'s complete lines (a line torn by a crash is left out)."""
    records = []
    for line in data.split(b"\n")[:-1]:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records

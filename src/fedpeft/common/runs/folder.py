"""A run folder that is presented as finished only when it is.

While a run is going, everything is written under `<parent>/<name>.partial/`; a successful run
is renamed to `<parent>/<name>/`, a failed one to `<parent>/<name>.failed/` with `error.txt`.
So a folder without a suffix always holds a complete run, and nothing an earlier run wrote is
ever overwritten: an existing target name is refused before any work starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from fedpeft.common.config import RunConfig, save_config
from fedpeft.common.errors import ConfigError
from fedpeft.common.runs.checkpoint import remove_checkpoint
from fedpeft.common.tracking import check_trackers, end_trackers

PARTIAL_SUFFIX = ".partial"
FAILED_SUFFIX = ".failed"

_LOCK_FILE = ".lock"
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def default_run_name(kind: str, now: datetime | None = None) -> str:
    """`<kind>-YYYYmmdd-HHMMSS` in UTC, so run folders sort by start time."""
    moment = now or datetime.now(timezone.utc)
    return f"{kind}-{moment:%Y%m%d-%H%M%S}"


class RunFolder:
    """The folder of one run and the well-known paths inside it."""

    def __init__(self, parent: Path, name: str) -> None:
        self.parent = parent
        self.name = name
        self.path = parent / f"{name}{PARTIAL_SUFFIX}"
        self._log_handler: logging.Handler | None = None
        self._lock: TextIO | None = None

    @classmethod
    def create(cls, parent: Path, name: str) -> RunFolder:
        """Claim `<parent>/<name>`; refuse if any run of that name exists in any state."""
        for suffix in ("", PARTIAL_SUFFIX, FAILED_SUFFIX):
            existing = parent / f"{name}{suffix}"
            if existing.exists():
                raise ConfigError(
                    f"{existing}: a run folder of that name already exists; "
                    "choose another output.run_name or remove it"
                )
        parent.mkdir(parents=True, exist_ok=True)
        folder = cls(parent, name)
        folder.path.mkdir()
        folder.plots_dir.mkdir()
        folder.hold()
        return folder

    @classmethod
    def resolve(cls, path: Path) -> RunFolder:
        """The interrupted run at `path` (`<name>.partial` or `<name>.failed`), unchanged;
        ConfigError for a completed run, a missing folder or anything else."""
        name = path.name.removesuffix(PARTIAL_SUFFIX).removesuffix(FAILED_SUFFIX)
        folder = cls(path.parent, name)
        if path.name == name:
            if (path / "summary.json").is_file():
                raise ConfigError(f"{path}: the run is complete; there is nothing to resume")
            raise ConfigError(f"{path}: not an interrupted run folder (expected "
                              f"{name}{PARTIAL_SUFFIX} or {name}{FAILED_SUFFIX})")
        if not path.is_dir():
            raise ConfigError(f"{path}: no such run folder")
        if folder.final_path.exists():
            raise ConfigError(f"{folder.final_path} exists already: the run completed once")
        folder.path = path
        return folder

    @classmethod
    def reopen(cls, path: Path) -> RunFolder:
        """The interrupted run at `path`, locked for this process and renamed back to
        `.partial` to go on (a `.failed` run's error.txt is kept under another name)."""
        folder = cls.resolve(path)
        folder.hold()
        error = path / "error.txt"
        if error.exists():
            count = len(list(path.glob("error-before-resume-*.txt")))
            error.rename(path / f"error-before-resume-{count + 1}.txt")
        if path.name.endswith(FAILED_SUFFIX):
            partial = folder.parent / f"{folder.name}{PARTIAL_SUFFIX}"
            os.replace(path, partial)
            folder.path = partial
        return folder

    def hold(self) -> None:
        """Lock the folder for this process (released when it exits, however it exits), so
        a resume cannot run while the run itself still does."""
        lock_path = self.path / _LOCK_FILE
        handle = lock_path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ConfigError(f"{self.path}: the run is still going in another process; stop "
                              "it first") from None
        self._lock = handle

    def _release(self) -> None:
        if self._lock is not None:
            (self.path / _LOCK_FILE).unlink(missing_ok=True)
            self._lock.close()
            self._lock = None

    @property
    def final_path(self) -> Path:
        return self.parent / self.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def best_dir(self) -> Path:
        return self.path / "best"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    @property
    def log_path(self) -> Path:
        return self.path / "run.log"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def attach_log(self, level: int = logging.INFO) -> None:
        """Send every log record of this process (fedpeft and Flower) to `run.log`.

        Flower's logger propagates to the root logger, so one root handler sees both.
        Renaming the folder later does not disturb the open file on POSIX systems.
        """
        handler = logging.FileHandler(self.log_path, encoding="utf-8")
        handler.setLevel(level)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        if root.level > level or root.level == logging.NOTSET:
            root.setLevel(level)
        self._log_handler = handler

    def _detach_log(self) -> None:
        if self._log_handler is None:
            return
        logging.getLogger().removeHandler(self._log_handler)
        self._log_handler.close()
        self._log_handler = None

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")

    def finish(self, summary: dict[str, Any]) -> Path:
        """Write `summary.json` and publish the folder under its final name."""
        self.write_summary({**summary, "status": "completed"})
        remove_checkpoint(self.path)
        self._release()
        self._detach_log()
        os.replace(self.path, self.final_path)
        end_trackers(self.path, self.final_path, "FINISHED")
        self.path = self.final_path
        return self.path

    def fail(self, error: BaseException) -> Path:
        """Keep what was written for diagnosis, clearly marked as a failed run."""
        logging.getLogger(__name__).error("run failed: %s", error)
        with contextlib.suppress(OSError):  # e.g. the disk is full: the rename still tells
            (self.path / "error.txt").write_text(f"{type(error).__name__}: {error}\n",
                                                 encoding="utf-8")
        self._release()
        self._detach_log()
        target = self.parent / f"{self.name}{FAILED_SUFFIX}"
        os.replace(self.path, target)
        end_trackers(self.path, target, "FAILED")
        self.path = target
        return target


def open_run_folder(cfg: RunConfig, kind: str) -> RunFolder:
    """Create the run folder for `cfg`, save the effective config, and start `run.log`."""
    name = cfg.output.run_name or default_run_name(kind)
    check_trackers(cfg)
    folder = RunFolder.create(Path(cfg.output.dir), name)
    save_config(cfg, folder.config_path)
    folder.attach_log()
    logging.getLogger(__name__).info("fedpeft %s run %s, base model %s", kind, name, cfg.model.name)
    return folder

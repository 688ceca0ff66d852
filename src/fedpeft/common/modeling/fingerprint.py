"""The content hash of a model folder: what an institution's policy pins a base model by.

A model name says where the weights are, not what they are: the folder behind a name can be
replaced. The hash covers every regular file under the folder (relative path and bytes, in
sorted path order), so a changed weight, tokenizer or config gives another hash. Symbolic
links are followed as the loader would follow them.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from fedpeft.common.errors import ModelError
from fedpeft.common.modeling.resolve import resolve_model_path

_CHUNK = 1 << 20


def folder_sha256(folder: Path) -> str:
    """SHA-256 over (relative path, size, bytes) of every file under `folder`."""
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder (a pinned model must be local)")
    digest = hashlib.sha256(b"fedpeft/model-folder/v1\x00")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix().encode("utf-8")
        digest.update(len(relative).to_bytes(4, "big") + relative)
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def model_folder(name: str) -> Path:
    """The local folder `name` resolves to; a hub name cannot be pinned."""
    folder = Path(resolve_model_path(name))
    if not folder.is_dir():
        raise ModelError(f"model {name!r} is not a local folder: it cannot be checked against "
                         "a pinned hash (download it and name the folder)")
    return folder


def folder_stamp(folder: Path) -> str:
    """A cheap digest of the folder's file names, sizes and modification times: when it is
    unchanged, a hash computed earlier still stands (the files were not rewritten)."""
    stamp = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        info = path.stat()
        stamp.update(f"{path.relative_to(folder).as_posix()}\0{info.st_size}\0"
                     f"{info.st_mtime_ns}\0".encode())
    return stamp.hexdigest()


@lru_cache(maxsize=4)
def _cached(folder: str, stamp: str) -> str:
    return folder_sha256(Path(folder))


def model_sha256(name: str) -> str:
    """The content hash of the folder `name` resolves to (cached in the process while its
    stamp is unchanged)."""
    folder = model_folder(name)
    return _cached(str(folder), folder_stamp(folder))

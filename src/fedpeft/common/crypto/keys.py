"""Long-lived key pairs and their files.

Each institution holds an Ed25519 key to sign its updates; the aggregator holds an X25519 key
that updates are sealed to, and an Ed25519 key to sign the global adapter. Keys live in PEM
files (PKCS8 for private keys, SubjectPublicKeyInfo for public ones) so standard tools
(`openssl pkey -in bank-a.key -noout -text`) can inspect them.

A private key file is written so that it is never visible with loose permissions, not even
for an instant, and never silently replaces another key: losing the old key of a running
federation would lock the institution out until every peer is given the new public key.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedpeft.common.errors import ConfigError

# Names for the protocol code, so that it never has to import `cryptography.hazmat` itself.
SigningPrivateKey = Ed25519PrivateKey
SigningPublicKey = Ed25519PublicKey
EncryptionPrivateKey = X25519PrivateKey
EncryptionPublicKey = X25519PublicKey

PrivateKey = Ed25519PrivateKey | X25519PrivateKey
PublicKey = Ed25519PublicKey | X25519PublicKey

PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
SHORT_FINGERPRINT_CHARS = 16
"""64 bits: enough to tell a federation's keys apart on screen, not to authenticate a key."""

_log = logging.getLogger(__name__)
_K = TypeVar("_K")


def generate_signing_key() -> Ed25519PrivateKey:
    """A new Ed25519 key for signing updates (institution) or global adapters (server)."""
    return Ed25519PrivateKey.generate()


def generate_encryption_key() -> X25519PrivateKey:
    """A new X25519 key for the aggregator, which institutions seal their updates to."""
    return X25519PrivateKey.generate()


def fingerprint(public_key: PublicKey) -> str:
    """SHA-256 of the raw public key, in hex: what operators compare out of band.

    The raw 32 bytes rather than the PEM text, so the fingerprint does not change with the
    encoding a key happens to be stored in.
    """
    return hashlib.sha256(_raw_public_bytes(public_key)).hexdigest()


def short_fingerprint(public_key: PublicKey) -> str:
    """The leading hex digits of `fingerprint`, for logs and tables."""
    return fingerprint(public_key)[:SHORT_FINGERPRINT_CHARS]


def save_private_key(
    key: PrivateKey, path: str | os.PathLike[str], *, overwrite: bool = False
) -> None:
    """Write `key` as unencrypted PKCS8 PEM, readable by its owner only (0600).

    Unencrypted because the nodes run unattended; the file mode is the protection.
    """
    if not isinstance(key, (Ed25519PrivateKey, X25519PrivateKey)):
        raise TypeError(f"expected an Ed25519 or X25519 private key, got {type(key).__name__}")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_file_atomically(Path(path), pem, mode=PRIVATE_FILE_MODE, overwrite=overwrite)


def save_public_key(
    key: PublicKey, path: str | os.PathLike[str], *, overwrite: bool = False
) -> None:
    """Write `key` as SubjectPublicKeyInfo PEM, the file handed to the other parties."""
    pem = _public_key(key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_file_atomically(Path(path), pem, mode=PUBLIC_FILE_MODE, overwrite=overwrite)


def load_signing_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The Ed25519 private key in `path`; warns when the file is open to group or others."""
    return _load_private(Path(path), Ed25519PrivateKey, "Ed25519")


def load_encryption_private_key(path: str | os.PathLike[str]) -> X25519PrivateKey:
    """The X25519 private key in `path`; warns when the file is open to group or others."""
    return _load_private(Path(path), X25519PrivateKey, "X25519")


def load_signing_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """The Ed25519 public key in `path`, e.g. an institution's entry in the signer list."""
    return _load_public(Path(path), Ed25519PublicKey, "Ed25519")


def signing_public_key_from_pem(pem: bytes, source: str) -> Ed25519PublicKey:
    """The Ed25519 public key in PEM text `pem`, e.g. from a registry entry named `source`."""
    return _parse_public(pem, source, Ed25519PublicKey, "Ed25519")


def load_encryption_public_key(path: str | os.PathLike[str]) -> X25519PublicKey:
    """The aggregator's X25519 public key in `path`."""
    return _load_public(Path(path), X25519PublicKey, "X25519")


def write_file_atomically(path: Path, data: bytes, *, mode: int, overwrite: bool) -> None:
    """Write `data` to `path` so readers see either nothing or the whole file, with `mode`.

    The temporary file is created with `mode` before any byte is written, so a private key
    is never briefly world-readable. Without `overwrite`, the final step is a hard link,
    which fails if `path` exists even when another process creates it meanwhile.
    """
    path = path.expanduser()
    if not overwrite and path.exists():
        raise ConfigError(f"refusing to overwrite existing file {path} (pass overwrite=True)")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ConfigError(
                    f"refusing to overwrite existing file {path} (pass overwrite=True)"
                ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Persist the new directory entry, so a crash right after saving does not lose the key."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_private(path: Path, kind: type[_K], label: str) -> _K:
    data = _read(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        _log.warning(
            "private key file %s is accessible by group or others (mode %03o); run chmod 600 on it",
            path,
            mode,
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # TypeError: the PEM is password-protected. Never echo the file's content.
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, kind):
        raise ConfigError(f"{path}: expected an {label} private key, found {_key_label(key)}")
    return key


def _load_public(path: Path, kind: type[_K], label: str) -> _K:
    return _parse_public(_read(path), str(path), kind, label)


def _parse_public(data: bytes, source: str, kind: type[_K], label: str) -> _K:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{source} is not a PEM public key") from None
    if not isinstance(key, kind):
        raise ConfigError(f"{source}: expected an {label} public key, found {_key_label(key)}")
    return key


def _read(path: Path) -> bytes:
    path = path.expanduser()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"key file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"key file is a directory: {path}") from None


def _key_label(key: object) -> str:
    """'EllipticCurvePrivateKey' and the like: the key's class, never its content."""
    return type(key).__name__.removeprefix("_")


def _public_key(key: object) -> PublicKey:
    if isinstance(key, (Ed25519PrivateKey, X25519PrivateKey)):
        raise TypeError("expected a public key, got a private key; pass key.public_key()")
    if not isinstance(key, (Ed25519PublicKey, X25519PublicKey)):
        raise TypeError(f"expected an Ed25519 or X25519 public key, got {type(key).__name__}")
    return key


def _raw_public_bytes(key: PublicKey) -> bytes:
    return _public_key(key).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

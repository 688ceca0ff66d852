"""Key files: PEM round trips, 0600 private files, no silent overwrite, fingerprints."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

import pytest

from fedpeft.common.crypto.keys import (
    fingerprint,
    generate_encryption_key,
    generate_signing_key,
    load_encryption_private_key,
    load_encryption_public_key,
    load_signing_private_key,
    load_signing_public_key,
    save_private_key,
    save_public_key,
    short_fingerprint,
    signing_public_key_from_pem,
)
from fedpeft.common.crypto.signing import sign, verify
from fedpeft.common.errors import ConfigError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_signing_key_round_trip(tmp_path: Path) -> None:
    key = generate_signing_key()
    save_private_key(key, tmp_path / "bank-a.key")
    save_public_key(key.public_key(), tmp_path / "bank-a.pub")
    assert (tmp_path / "bank-a.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "bank-a.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    loaded, public = (
        load_signing_private_key(tmp_path / "bank-a.key"),
        load_signing_public_key(tmp_path / "bank-a.pub"),
    )
    verify(public, sign(loaded, b"update"), b"update")
    assert fingerprint(public) == fingerprint(key.public_key())


def test_encryption_key_round_trip(tmp_path: Path) -> None:
    key = generate_encryption_key()
    save_private_key(key, tmp_path / "aggregator.key")
    save_public_key(key.public_key(), tmp_path / "aggregator.pub")
    loaded = load_encryption_private_key(tmp_path / "aggregator.key")
    assert fingerprint(loaded.public_key()) == fingerprint(
        load_encryption_public_key(tmp_path / "aggregator.pub")
    )


def test_private_key_is_0600_and_public_key_0644(tmp_path: Path) -> None:
    key = generate_signing_key()
    save_private_key(key, tmp_path / "k")
    save_public_key(key.public_key(), tmp_path / "k.pub")
    assert _mode(tmp_path / "k") == 0o600
    assert _mode(tmp_path / "k.pub") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "k.pub"]  # no temporary files left


def test_existing_key_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k"
    save_private_key(generate_signing_key(), path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite existing file"):
        save_private_key(generate_signing_key(), path)
    assert path.read_bytes() == before
    save_private_key(generate_signing_key(), path, overwrite=True)
    assert path.read_bytes() != before and _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


def test_loose_permissions_log_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "k"
    save_private_key(generate_signing_key(), path)
    with caplog.at_level(logging.WARNING):
        load_signing_private_key(path)
    assert not caplog.records
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING):
        load_signing_private_key(path)
    assert "accessible by group or others (mode 644)" in caplog.text
    assert "PRIVATE KEY" not in caplog.text


def test_wrong_or_unreadable_key_files_are_config_errors(tmp_path: Path) -> None:
    save_private_key(generate_encryption_key(), tmp_path / "x25519.key")
    save_public_key(generate_encryption_key().public_key(), tmp_path / "x25519.pub")
    (tmp_path / "garbage").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n")
    with pytest.raises(
        ConfigError, match="expected an Ed25519 private key, found X25519PrivateKey"
    ):
        load_signing_private_key(tmp_path / "x25519.key")
    with pytest.raises(ConfigError, match="expected an Ed25519 public key"):
        load_signing_public_key(tmp_path / "x25519.pub")
    with pytest.raises(ConfigError, match="is not an unencrypted PEM private key"):
        load_signing_private_key(tmp_path / "garbage")
    with pytest.raises(ConfigError, match="key file not found"):
        load_encryption_private_key(tmp_path / "missing.key")


def test_fingerprint_is_sha256_of_the_raw_public_key() -> None:
    # RFC 8032 TEST 1 public key: the fingerprint must not depend on how the key is stored.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    public = Ed25519PublicKey.from_public_bytes(raw)
    assert fingerprint(public) == hashlib.sha256(raw).hexdigest()
    assert short_fingerprint(public) == hashlib.sha256(raw).hexdigest()[:16]


def test_key_type_misuse(tmp_path: Path) -> None:
    key = generate_signing_key()
    with pytest.raises(TypeError, match="pass key.public_key()"):
        save_public_key(key, tmp_path / "k.pub")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="private key"):
        save_private_key(key.public_key(), tmp_path / "k")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a public key"):
        fingerprint(key)  # type: ignore[arg-type]


def test_public_key_files_are_not_overwritten_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "k.pub"
    save_public_key(generate_signing_key().public_key(), path)
    with pytest.raises(ConfigError, match="refusing to overwrite existing file"):
        save_public_key(generate_signing_key().public_key(), path)
    replacement = generate_signing_key().public_key()
    save_public_key(replacement, path, overwrite=True)
    assert fingerprint(load_signing_public_key(path)) == fingerprint(replacement)


def test_refusals_name_the_expected_kind_and_the_source(tmp_path: Path) -> None:
    signing = generate_signing_key()
    save_private_key(signing, tmp_path / "ed.key")
    save_public_key(signing.public_key(), tmp_path / "ed.pub")
    (tmp_path / "junk.pub").write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="ed.key: expected an X25519 private key"):
        load_encryption_private_key(tmp_path / "ed.key")
    with pytest.raises(ConfigError, match="ed.pub: expected an X25519 public key"):
        load_encryption_public_key(tmp_path / "ed.pub")
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'junk.pub'} is not a PEM public key$"):
        load_signing_public_key(tmp_path / "junk.pub")
    x25519_pem = (tmp_path / "x.pub")
    save_public_key(generate_encryption_key().public_key(), x25519_pem)
    with pytest.raises(ConfigError, match="^registry bank-a: expected an Ed25519 public key"):
        signing_public_key_from_pem(x25519_pem.read_bytes(), "registry bank-a")


def test_saving_does_not_depend_on_the_system_temporary_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is written beside its final name, so the last step is an atomic link on the
    same filesystem, whatever TMPDIR is."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-dir"))
    save_private_key(generate_signing_key(), tmp_path / "k")
    assert _mode(tmp_path / "k") == 0o600

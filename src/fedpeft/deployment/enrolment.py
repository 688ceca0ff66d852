"""Creating a federation's credentials and enrolling or revoking institutions (files only).

Every step builds its files in a hidden staging folder and renames it into place at the end:
a failure half-way (bad address, full disk) leaves no half-made federation or bundle that a
later command could mistake for a complete one. Talking to a running SuperLink is
`fedpeft.deployment.control`'s job; this module never needs the network.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedpeft.common.crypto import (
    create_ca,
    create_node_auth_key,
    create_server_cert,
    fingerprint,
    generate_encryption_key,
    generate_signing_key,
    save_private_key,
    save_public_key,
)
from fedpeft.common.crypto.keys import PUBLIC_FILE_MODE
from fedpeft.common.errors import ConfigError
from fedpeft.deployment.federation_files import (
    NODE_AUTH_KEY,
    BundleManifest,
    FederationFolder,
    FederationManifest,
    InstitutionBundle,
    InstitutionRecord,
    Registry,
    certificate_fingerprint,
    check_institution_name,
    utc_now,
    write_record,
)
from fedpeft.deployment.roster import write_rosters

LOOPBACK_SANS = ("127.0.0.1", "localhost")
"""Always in the server certificate: the SuperLink's own app processes and the coordinator's
`flwr` CLI reach its Control/Runtime API over loopback, through the same TLS certificate."""


@contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A private (0700) staging folder that becomes `target` only if the block succeeds."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target}: already exists and is not empty")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sans(addresses: list[str]) -> list[str]:
    if not addresses:
        raise ConfigError("--address: give at least one host name or IP address institutions dial")
    return list(dict.fromkeys([*addresses, *LOOPBACK_SANS]))


def init_federation(root: Path, addresses: list[str]) -> FederationManifest:
    """Create the CA, the SuperLink's TLS certificate and keys, and an empty registry."""
    folder = FederationFolder(root)
    sans = _sans(addresses)
    with _staged(folder.root) as staging:
        staged = FederationFolder(staging)
        ca = create_ca(f"fedpeft federation {folder.root.name}", staged.root)
        try:
            create_server_cert(ca, sans, staged.server_dir)
        except ValueError as err:
            raise ConfigError(f"--address: {err}") from None
        staged.server_dir.chmod(0o700)  # holds the TLS and signing keys
        signing, encryption = generate_signing_key(), generate_encryption_key()
        save_private_key(signing, staged.server_signing_key)
        save_public_key(signing.public_key(), staged.server_signing_pub)
        save_private_key(encryption, staged.server_encryption_key)
        save_public_key(encryption.public_key(), staged.server_encryption_pub)
        manifest = FederationManifest(
            federation_id=f"fed-{secrets.token_hex(8)}",
            created_at=utc_now(),
            addresses=addresses,
            ca_fingerprint=certificate_fingerprint(staged.ca_cert),
            server_signing_fingerprint=fingerprint(signing.public_key()),
            server_encryption_fingerprint=fingerprint(encryption.public_key()),
        )
        write_record(staged.manifest_path, manifest, overwrite=False)
        write_record(staged.registry_path, Registry(federation_id=manifest.federation_id),
                     overwrite=False)
    return manifest


def _copy_public(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    target.chmod(PUBLIC_FILE_MODE)


def add_institution(root: Path, name: str) -> InstitutionRecord:
    """Write institution `name`'s bundle and record it as active in the registry.

    Names are never reused, not even after revocation: the registry is an audit trail, and one
    name must always mean one set of keys.
    """
    folder = FederationFolder(root)
    manifest, registry = folder.manifest(), folder.registry()
    check_institution_name(name)
    if name in registry.institutions:
        status = registry.institutions[name].status
        raise ConfigError(f"{folder.registry_path}: institution {name!r} already exists ({status})")
    with _staged(folder.bundle(name).root) as staging:
        bundle = InstitutionBundle(staging)
        node_key = create_node_auth_key(bundle.root, NODE_AUTH_KEY)
        signing = generate_signing_key()
        save_private_key(signing, bundle.signing_key)
        save_public_key(signing.public_key(), bundle.signing_pub)
        _copy_public(folder.ca_cert, bundle.ca_cert)
        _copy_public(folder.server_signing_pub, bundle.server_signing_pub)
        _copy_public(folder.server_encryption_pub, bundle.server_encryption_pub)
        write_record(bundle.manifest_path, BundleManifest(
            federation_id=manifest.federation_id,
            name=name,
            superlink_addresses=manifest.addresses,
            ca_fingerprint=manifest.ca_fingerprint,
            server_signing_fingerprint=manifest.server_signing_fingerprint,
            server_encryption_fingerprint=manifest.server_encryption_fingerprint,
        ), overwrite=False)
        record = InstitutionRecord(
            name=name,
            node_auth_public_key=node_key.public_key_path.read_text(encoding="ascii").strip(),
            signing_fingerprint=fingerprint(signing.public_key()),
            signing_public_key=bundle.signing_pub.read_text(encoding="ascii"),
            added_at=utc_now(),
        )
        registry.institutions[name] = record
        write_record(folder.registry_path, registry, overwrite=True)
    write_rosters(folder)  # every bundle here now names the new institution as a peer
    return record


def record_node_id(root: Path, name: str, node_id: int) -> None:
    """Remember the SuperLink's node id for `name`: unregistering needs it, not the key."""
    folder = FederationFolder(root)
    registry = folder.registry()
    registry.institutions[name] = _existing(folder, registry, name).model_copy(
        update={"node_id": node_id}
    )
    write_record(folder.registry_path, registry, overwrite=True)


def forget_node_id(root: Path, name: str) -> None:
    """The SuperLink no longer knows `name`'s node (it was unregistered there)."""
    folder = FederationFolder(root)
    registry = folder.registry()
    registry.institutions[name] = _existing(folder, registry, name).model_copy(
        update={"node_id": None}
    )
    write_record(folder.registry_path, registry, overwrite=True)


def revoke_institution(root: Path, name: str) -> InstitutionRecord:
    """Mark `name` revoked; its record and keys stay in the registry for the audit trail.

    Revoking twice returns the first revocation unchanged, so a coordinator can repeat the
    command to finish unregistering from a SuperLink that was unreachable the first time.
    """
    folder = FederationFolder(root)
    registry = folder.registry()
    record = _existing(folder, registry, name)
    if record.status == "revoked":
        return record
    revoked = record.model_copy(update={"status": "revoked", "revoked_at": utc_now()})
    registry.institutions[name] = revoked
    write_record(folder.registry_path, registry, overwrite=True)
    write_rosters(folder)
    return revoked


def _existing(folder: FederationFolder, registry: Registry, name: str) -> InstitutionRecord:
    if name not in registry.institutions:
        known = ", ".join(sorted(registry.institutions)) or "none"
        raise ConfigError(f"{folder.registry_path}: no institution {name!r} (known: {known})")
    return registry.institutions[name]


"""Creating a federation's credentials and enrolling or revoking institutions (files only).

Enrolment registers public keys only: the institution makes its key pairs on its own machine
(`fedpeft.deployment.bundle`) and sends `enrolment-request.json`; this module checks it, records
the keys in the registry and writes the reply, the federation's public files, for the
institution to complete its bundle with. The coordinator never holds an institution's private
key.

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
    check_node_auth_public_key,
    create_ca,
    create_server_cert,
    fingerprint,
    generate_encryption_key,
    generate_signing_key,
    save_private_key,
    save_public_key,
    signing_public_key_from_pem,
)
from fedpeft.common.crypto.keys import PUBLIC_FILE_MODE, write_file_atomically
from fedpeft.common.errors import ConfigError, SecurityError
from fedpeft.deployment.federation_files import (
    BundleManifest,
    EnrolmentRequest,
    FederationFolder,
    FederationManifest,
    InstitutionBundle,
    InstitutionRecord,
    Registry,
    certificate_fingerprint,
    check_institution_name,
    read_record,
    utc_now,
    write_record,
)

LOOPBACK_SANS = ("127.0.0.1", "localhost")
"""Always in the server certificate: the SuperLink's own app processes and the coordinator's
`flwr` CLI reach its Control/Runtime API over loopback, through the same TLS certificate."""


@contextmanager
def staged(target: Path) -> Iterator[Path]:
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
    with staged(folder.root) as staging:
        new = FederationFolder(staging)
        ca = create_ca(f"fedpeft federation {folder.root.name}", new.root)
        try:
            create_server_cert(ca, sans, new.server_dir)
        except ValueError as err:
            raise ConfigError(f"--address: {err}") from None
        new.server_dir.chmod(0o700)  # holds the TLS and signing keys
        signing, encryption = generate_signing_key(), generate_encryption_key()
        save_private_key(signing, new.server_signing_key)
        save_public_key(signing.public_key(), new.server_signing_pub)
        save_private_key(encryption, new.server_encryption_key)
        save_public_key(encryption.public_key(), new.server_encryption_pub)
        manifest = FederationManifest(
            federation_id=f"fed-{secrets.token_hex(8)}",
            created_at=utc_now(),
            addresses=addresses,
            ca_fingerprint=certificate_fingerprint(new.ca_cert),
            server_signing_fingerprint=fingerprint(signing.public_key()),
            server_encryption_fingerprint=fingerprint(encryption.public_key()),
        )
        write_record(new.manifest_path, manifest, overwrite=False)
        write_record(new.registry_path, Registry(federation_id=manifest.federation_id),
                     overwrite=False)
    return manifest


def _copy_public(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    target.chmod(PUBLIC_FILE_MODE)


def read_request(path: Path) -> EnrolmentRequest:
    """An institution's enrolment request, after checking every key in it parses and matches."""
    if b"PRIVATE KEY" in _bytes(path):
        raise SecurityError(f"{path}: holds a private key; an institution sends only its "
                            "enrolment-request.json, never a private key")
    request = read_record(path, EnrolmentRequest)
    check_institution_name(request.name)
    check_node_auth_public_key(request.node_auth_public_key, f"{path}: node_auth_public_key")
    key = signing_public_key_from_pem(request.signing_public_key.encode("ascii"),
                                      f"{path}: signing_public_key")
    if fingerprint(key) != request.signing_fingerprint:
        raise SecurityError(f"{path}: signing_fingerprint does not match signing_public_key")
    return request


def add_institution(root: Path, name: str, request_path: Path) -> InstitutionRecord:
    """Register the public keys of `name`'s request and write its reply folder.

    Names are never reused, not even after revocation: the registry is an audit trail, and one
    name must always mean one set of keys. A key already registered under another name is
    refused too: one key pair, one institution.
    """
    folder = FederationFolder(root)
    manifest, registry = folder.manifest(), folder.registry()
    check_institution_name(name)
    request = read_request(request_path)
    if request.name != name:
        raise ConfigError(f"{request_path}: the request is for institution {request.name!r}, "
                          f"not {name!r}")
    if name in registry.institutions:
        status = registry.institutions[name].status
        raise ConfigError(f"{folder.registry_path}: institution {name!r} already exists ({status})")
    node_key = request.node_auth_public_key.strip()  # checked by read_request
    for other in registry.institutions.values():
        if (other.signing_fingerprint == request.signing_fingerprint
                or other.node_auth_public_key.split()[:2] == node_key.split()[:2]):
            raise SecurityError(f"{request_path}: a key of this request is already registered "
                                f"for institution {other.name!r}")
    with staged(folder.reply(name).root) as staging:
        reply = InstitutionBundle(staging)
        _copy_public(folder.ca_cert, reply.ca_cert)
        _copy_public(folder.server_signing_pub, reply.server_signing_pub)
        _copy_public(folder.server_encryption_pub, reply.server_encryption_pub)
        write_file_atomically(reply.signing_pub, request.signing_public_key.encode("ascii"),
                              mode=PUBLIC_FILE_MODE, overwrite=False)
        write_file_atomically(reply.node_auth_pub, f"{node_key}\n".encode("ascii"),
                              mode=PUBLIC_FILE_MODE, overwrite=False)
        write_record(reply.manifest_path, BundleManifest(
            federation_id=manifest.federation_id,
            name=name,
            superlink_addresses=manifest.addresses,
            ca_fingerprint=manifest.ca_fingerprint,
            server_signing_fingerprint=manifest.server_signing_fingerprint,
            server_encryption_fingerprint=manifest.server_encryption_fingerprint,
        ), overwrite=False)
        record = InstitutionRecord(
            name=name,
            node_auth_public_key=node_key,
            signing_fingerprint=request.signing_fingerprint,
            signing_public_key=request.signing_public_key,
            added_at=utc_now(),
        )
        registry.institutions[name] = record
        write_record(folder.registry_path, registry, overwrite=True)
    return record


def _bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: enrolment request not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give the request file "
                          "(BUNDLE/enrolment-request.json)") from None


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
    return revoked


def _existing(folder: FederationFolder, registry: Registry, name: str) -> InstitutionRecord:
    if name not in registry.institutions:
        known = ", ".join(sorted(registry.institutions)) or "none"
        raise ConfigError(f"{folder.registry_path}: no institution {name!r} (known: {known})")
    return registry.institutions[name]


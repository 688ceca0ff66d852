"""The aggregator's keys and the institutions it accepts updates from, read from a federation folder.

Deployment and simulation read the same layout (`fedpeft.deployment.federation_files`): the
coordinator's folder written by `fedpeft federation init` / `add-institution`, or the temporary
one a simulation creates for its run. The registry is re-read for every round, so revoking an
institution refuses its updates from the next round on, without restarting the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpeft.common.config import SecurityConfig
from fedpeft.common.crypto import (
    EncryptionPrivateKey,
    SigningPrivateKey,
    SigningPublicKey,
    fingerprint,
    load_encryption_private_key,
    load_signing_private_key,
    load_signing_public_key,
    signing_public_key_from_pem,
)
from fedpeft.common.errors import ConfigError
from fedpeft.deployment.federation_files import FederationFolder, InstitutionRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signer:
    """An institution as the aggregator knows it: its update-signing key and standing."""

    name: str
    public_key: SigningPublicKey
    revoked: bool = False
    node_id: int | None = None
    """SuperLink node id it registered as; when known, its updates must come from that node."""


@dataclass(frozen=True)
class ServerKeys:
    """What the sealing strategy needs: the aggregator's private keys and the signer registry."""

    federation_id: str
    encryption_key: EncryptionPrivateKey
    signing_key: SigningPrivateKey
    signers: Callable[[], Mapping[str, Signer]]
    """Called once per round: the registry as it stands now."""
    fingerprints: dict[str, Any] = field(default_factory=dict)
    """Public-key fingerprints for the run's summary (never a private key)."""


def _public_key(folder: FederationFolder, record: InstitutionRecord) -> SigningPublicKey | None:
    source = f"{folder.registry_path} [{record.name}]"
    if record.signing_public_key is not None:
        key = signing_public_key_from_pem(record.signing_public_key.encode("ascii"), source)
    else:
        path = folder.reply(record.name).signing_pub
        if not path.is_file():
            logger.warning("institution %s: no signing public key in the registry nor at %s; "
                           "its updates will be refused", record.name, path)
            return None
        key = load_signing_public_key(path)
    if fingerprint(key) != record.signing_fingerprint:
        raise ConfigError(f"{source}: signing key does not match the registered fingerprint")
    return key


def read_signers(folder: FederationFolder) -> dict[str, Signer]:
    """Every institution of the registry whose signing key is known, revoked ones included."""
    signers: dict[str, Signer] = {}
    for name, record in folder.registry().institutions.items():
        key = _public_key(folder, record)
        if key is not None:
            signers[name] = Signer(name, key, record.status == "revoked", record.node_id)
    return signers


def load_server_keys(security: SecurityConfig) -> ServerKeys:
    """The aggregator's keys from `security.credentials_dir`, checked against the run's federation."""
    if not security.credentials_dir:
        raise ConfigError(
            "security.credentials_dir: sealed updates need the federation folder on the "
            "aggregator's host (`fedpeft run --dir` sets it); set security.seal_updates = false "
            "only to benchmark without sealing"
        )
    folder = FederationFolder(Path(security.credentials_dir)).require()
    manifest = folder.manifest()
    if security.federation_id is not None and security.federation_id != manifest.federation_id:
        raise ConfigError(
            f"security.federation_id={security.federation_id!r}, but {folder.manifest_path} "
            f"is federation {manifest.federation_id!r}"
        )
    signers = read_signers(folder)  # fail now, not in round 1, on a broken registry
    return ServerKeys(
        federation_id=manifest.federation_id,
        encryption_key=load_encryption_private_key(folder.server_encryption_key),
        signing_key=load_signing_private_key(folder.server_signing_key),
        signers=lambda: read_signers(folder),
        fingerprints={
            "federation_id": manifest.federation_id,
            "server_signing": manifest.server_signing_fingerprint,
            "server_encryption": manifest.server_encryption_fingerprint,
            "institutions": {name: fingerprint(s.public_key) for name, s in sorted(signers.items())},
        },
    )

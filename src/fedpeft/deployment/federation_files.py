"""The files of a deployed federation: the coordinator's folder and an institution's bundle.

One module names every file so that the coordinator who writes them (`fedpeft federation ...`),
the SuperLink that reads the server's half and the institution that reads its bundle can never
disagree on a path. The JSON records are pydantic models with `extra="forbid"`: they are read
back by other people's tools and by fedpeft on other machines, so a hand-edited typo fails
loudly instead of being ignored.

Each side makes its own private keys and hands over only public ones, the way a certificate
signing request works: the coordinator never holds an institution's private key, so it can
neither sign an update nor write a ledger in an institution's name.

    FED/                        the coordinator's folder
      federation.json           id, addresses, fingerprints (public: give it to everyone)
      institutions.json         registry: name, public keys, active/revoked, SuperLink node id
      ca.pem, ca.key            the federation's private CA (ca.key 0600, stays here)
      server/                   everything the SuperLink host needs
        server.pem, server.key  TLS certificate and key
        signing.key/.pub        Ed25519: signs global adapters
        encryption.key/.pub     X25519: institutions seal their updates to it
        state.db, flwr-home/    the SuperLink's database and FLWR_HOME (unless --state-dir)
      flwr-home/                FLWR_HOME of the coordinator's `flwr` CLI (connection config)
      institutions/NAME/        the enrolment reply for NAME: public files only
        institution.json        who it is, which federation, where the SuperLink is
        ca.pem                  the only CA it trusts
        server-signing.pub, server-encryption.pub
        supernode-auth.pub, signing.pub    NAME's own public keys, as registered

    BUNDLE/                     an institution's bundle, on its own machine (`institution init`)
      enrolment-request.json    its public keys: the only file it hands to the coordinator
      supernode-auth, supernode-auth.pub   SuperNode authentication key (OpenSSH, EC; 0600)
      signing.key/.pub          Ed25519: signs its updates (0600)
      institution.json, ca.pem, server-*.pub   copied from the reply (`institution complete`)

The institution's ledger and any other state it writes live in a separate, writable state
folder (`client join --state-dir`, default `BUNDLE-state/` beside the bundle), so the bundle
itself can be mounted read-only.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedpeft.common.crypto.certs import CA_CERT_FILE, CA_KEY_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE
from fedpeft.common.crypto.keys import PUBLIC_FILE_MODE, write_file_atomically
from fedpeft.common.errors import ConfigError

FEDERATION_FILE = "federation.json"
REGISTRY_FILE = "institutions.json"
BUNDLE_FILE = "institution.json"
REQUEST_FILE = "enrolment-request.json"
STATE_SUFFIX = "-state"
SIMULATED_BUNDLES = "bundles"
NODE_AUTH_KEY = "supernode-auth"
SIGNING_KEY = "signing.key"
SIGNING_PUB = "signing.pub"
ENCRYPTION_KEY = "encryption.key"
ENCRYPTION_PUB = "encryption.pub"
SERVER_SIGNING_PUB = "server-signing.pub"
SERVER_ENCRYPTION_PUB = "server-encryption.pub"

INSTITUTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
"""Institution names become folder names and SuperNode names: no spaces, quotes or slashes."""

_M = TypeVar("_M", bound=BaseModel)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FederationManifest(_Record):
    """`federation.json`: what every party compares out of band before trusting the others."""

    federation_id: str
    created_at: datetime
    addresses: list[str] = Field(description="Host names / IPs the server certificate covers.")
    ca_fingerprint: str = Field(description="SHA-256 of the CA certificate (DER), hex.")
    server_signing_fingerprint: str
    server_encryption_fingerprint: str


class InstitutionRecord(_Record):
    """One line of the registry: enough to recognise, register and revoke an institution."""

    name: str
    status: Literal["active", "revoked"] = "active"
    node_auth_public_key: str = Field(description="OpenSSH public key line the SuperNode proves.")
    signing_fingerprint: str = Field(description="SHA-256 of the raw Ed25519 public key, hex.")
    signing_public_key: str | None = Field(
        None,
        description="The Ed25519 public key (PEM) the aggregator checks updates with; None in "
        "registries written before it was recorded (then the bundle's signing.pub is read).",
    )
    node_id: int | None = Field(None, description="SuperLink node id once registered there.")
    added_at: datetime
    revoked_at: datetime | None = None


class Registry(_Record):
    """`institutions.json`: revoked entries stay, so the audit trail keeps every key ever trusted."""

    federation_id: str
    institutions: dict[str, InstitutionRecord] = Field(default_factory=dict)


class EnrolmentRequest(_Record):
    """`enrolment-request.json`: an institution's public keys, made on its own machine.

    The fingerprint is there to be read aloud: the coordinator compares it over a second
    channel before enrolling, so a request swapped in transit is caught."""

    name: str
    node_auth_public_key: str = Field(description="OpenSSH public key line (EC, NIST curve).")
    signing_public_key: str = Field(description="Ed25519 public key, PEM.")
    signing_fingerprint: str = Field(description="SHA-256 of the raw Ed25519 public key, hex.")
    created_at: datetime


class BundleManifest(_Record):
    """`institution.json` in a bundle: the institution's identity in this federation."""

    federation_id: str
    name: str
    superlink_addresses: list[str]
    ca_fingerprint: str
    server_signing_fingerprint: str
    server_encryption_fingerprint: str


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def check_institution_name(name: str) -> str:
    """`name` if it is usable as a folder and SuperNode name, else a ConfigError naming it."""
    if not INSTITUTION_NAME.fullmatch(name):
        raise ConfigError(
            f"institution name {name!r}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def credential_name(name: str) -> str:
    """`name` itself when it is a valid institution name, else a stable valid stand-in.

    Simulated institutions are named after partition values (`column:site`), which may hold
    spaces or slashes; their ephemeral bundles need folder-safe names that stay distinct.
    """
    if INSTITUTION_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:40] or "institution"
    return f"{stem}-{digest}"


def certificate_fingerprint(pem_path: Path) -> str:
    """SHA-256 of a PEM certificate's DER bytes: what `openssl x509 -fingerprint -sha256` shows."""
    try:
        der = ssl.PEM_cert_to_DER_cert(pem_path.read_text(encoding="ascii"))
    except FileNotFoundError:
        raise ConfigError(f"certificate file not found: {pem_path}") from None
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{pem_path} is not a PEM certificate") from None
    return hashlib.sha256(der).hexdigest()


def read_record(path: Path, model: type[_M]) -> _M:
    """Load a JSON record, failing with one line that names the file and the bad field."""
    try:
        return model.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {field}: {first['msg']}") from None


def write_record(path: Path, record: BaseModel, *, overwrite: bool) -> None:
    """Write a JSON record atomically, so a crash never leaves half a registry behind."""
    text = json.dumps(record.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    write_file_atomically(path, text.encode("utf-8"), mode=PUBLIC_FILE_MODE, overwrite=overwrite)


class FederationFolder:
    """Paths inside the coordinator's federation folder (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.manifest_path = self.root / FEDERATION_FILE
        self.registry_path = self.root / REGISTRY_FILE
        self.ca_cert = self.root / CA_CERT_FILE
        self.ca_key = self.root / CA_KEY_FILE
        self.server_dir = self.root / "server"
        self.server_cert = self.server_dir / SERVER_CERT_FILE
        self.server_key = self.server_dir / SERVER_KEY_FILE
        self.server_signing_key = self.server_dir / SIGNING_KEY
        self.server_signing_pub = self.server_dir / SIGNING_PUB
        self.server_encryption_key = self.server_dir / ENCRYPTION_KEY
        self.server_encryption_pub = self.server_dir / ENCRYPTION_PUB
        self.cli_flwr_home = self.root / "flwr-home"
        self.institutions_dir = self.root / "institutions"

    def reply(self, name: str) -> InstitutionBundle:
        """The public files enrolment wrote for `name`: a bundle without any private key."""
        return InstitutionBundle(self.institutions_dir / check_institution_name(name))

    def require(self) -> FederationFolder:
        """Self, after checking it was made by `fedpeft federation init`."""
        if not self.manifest_path.is_file():
            raise ConfigError(
                f"{self.root}: not a federation folder (no {FEDERATION_FILE}); "
                "create it with `fedpeft federation init`"
            )
        return self

    def manifest(self) -> FederationManifest:
        return read_record(self.require().manifest_path, FederationManifest)

    def registry(self) -> Registry:
        return read_record(self.require().registry_path, Registry)


class InstitutionBundle:
    """Paths inside one institution's bundle folder."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.manifest_path = self.root / BUNDLE_FILE
        self.ca_cert = self.root / CA_CERT_FILE
        self.node_auth_key = self.root / NODE_AUTH_KEY
        self.node_auth_pub = self.root / f"{NODE_AUTH_KEY}.pub"
        self.signing_key = self.root / SIGNING_KEY
        self.signing_pub = self.root / SIGNING_PUB
        self.server_signing_pub = self.root / SERVER_SIGNING_PUB
        self.server_encryption_pub = self.root / SERVER_ENCRYPTION_PUB
        self.request_path = self.root / REQUEST_FILE

    def manifest(self) -> BundleManifest:
        if not self.manifest_path.is_file():
            hint = ("complete it with `fedpeft institution complete` and the coordinator's reply"
                    if self.request_path.is_file()
                    else "create it with `fedpeft institution init`")
            raise ConfigError(f"{self.root}: not a complete institution bundle (no {BUNDLE_FILE}); "
                              f"{hint}")
        return read_record(self.manifest_path, BundleManifest)

    def request(self) -> EnrolmentRequest:
        return read_record(self.request_path, EnrolmentRequest)


def default_state_dir(bundle_root: Path) -> Path:
    """`BUNDLE-state/` beside the bundle: where the institution writes when no --state-dir."""
    return bundle_root.parent / f"{bundle_root.name}{STATE_SUFFIX}"


def simulated_bundle(credentials_dir: Path, name: str) -> InstitutionBundle:
    """A simulated institution's bundle: in `bundles/` beside the simulation's federation
    folder (one process plays every role, but keeps each role's files apart)."""
    return InstitutionBundle(credentials_dir.parent / SIMULATED_BUNDLES / credential_name(name))

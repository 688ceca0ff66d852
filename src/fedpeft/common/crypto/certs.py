"""TLS material for Flower's SuperLink, and SuperNode authentication keys.

A federation runs its own private CA: the SuperLink presents a certificate it issued, and
every SuperNode trusts only that CA (`--root-certificates ca.pem`), so no public CA can
impersonate the aggregator. Keys are EC P-256: as strong as RSA-3072 for TLS, with small
keys and fast handshakes, and accepted by gRPC's BoringSSL.

SuperNode authentication in Flower 1.39 reads the node's private key with
`load_ssh_private_key(data, None)` and requires an `EllipticCurvePrivateKey`, and
`flwr supernode register` reads the public key with `load_ssh_public_key` and requires a
NIST curve: hence an unencrypted OpenSSH private key and an OpenSSH public key line.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedpeft.common.crypto.keys import PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, write_file_atomically
from fedpeft.common.errors import ConfigError

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"
CLOCK_SKEW = dt.timedelta(minutes=5)
"""Certificates start this long before `now`, so a node whose clock lags still accepts them."""

_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_NIST_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA in memory (to issue certificates) and where its files are."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class ServerCertificate:
    """Paths for the SuperLink's `--ssl-certfile` and `--ssl-keyfile`."""

    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class NodeAuthKey:
    """Paths for `flower-supernode --auth-supernode-private-key` and `flwr supernode register`."""

    private_key_path: Path
    public_key_path: Path


def create_ca(
    name: str,
    out_dir: str | os.PathLike[str],
    valid_days: int = 3650,
    *,
    now: dt.datetime | None = None,
    overwrite: bool = False,
) -> CertificateAuthority:
    """Create a self-signed CA that may sign server certificates only (path length 0)."""
    if not name:
        raise ValueError("CA name must not be empty")
    start, end = _validity(valid_days, now)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = _out_dir(out_dir)
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    _write_pair(
        key_path,
        _private_pem(key),
        cert_path,
        certificate.public_bytes(serialization.Encoding.PEM),
        overwrite,
    )
    return CertificateAuthority(certificate, key, cert_path, key_path)


def load_ca(
    cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
) -> CertificateAuthority:
    """A CA created earlier by `create_ca`, to issue a new server certificate with it."""
    cert_file, key_file = Path(cert_path).expanduser(), Path(key_path).expanduser()
    try:
        certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except FileNotFoundError as err:
        raise ConfigError(f"CA file not found: {err.filename}") from None
    except (ValueError, TypeError):
        raise ConfigError(
            f"{cert_file} and {key_file} are not a PEM certificate and unencrypted key"
        ) from None
    if (
        not isinstance(key, ec.EllipticCurvePrivateKey)
        or key.public_key() != certificate.public_key()
    ):
        raise ConfigError(f"{key_file} is not the private key of the CA certificate {cert_file}")
    return CertificateAuthority(certificate, key, cert_file, key_file)


def create_server_cert(
    ca: CertificateAuthority,
    sans: list[str],
    out_dir: str | os.PathLike[str],
    *,
    valid_days: int = 365,
    now: dt.datetime | None = None,
    overwrite: bool = False,
) -> ServerCertificate:
    """Issue the SuperLink's certificate for every address nodes dial (IP or DNS name).

    TLS clients check the address they dial against the subject alternative names only, so
    a missing SAN fails the handshake however the common name is set.
    """
    if not sans:
        raise ValueError("sans must name at least one IP address or DNS name")
    names = [_general_name(san) for san in sans]
    start, end = _validity(valid_days, now)
    if end > ca.certificate.not_valid_after_utc:
        raise ValueError(
            f"a {valid_days}-day certificate would outlive its CA (valid until "
            f"{ca.certificate.not_valid_after_utc:%Y-%m-%d}); lower valid_days"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
            critical=False,
        )
        .sign(ca.private_key, hashes.SHA256())
    )
    directory = _out_dir(out_dir)
    cert_path, key_path = directory / SERVER_CERT_FILE, directory / SERVER_KEY_FILE
    _write_pair(
        key_path,
        _private_pem(key),
        cert_path,
        certificate.public_bytes(serialization.Encoding.PEM),
        overwrite,
    )
    return ServerCertificate(cert_path, key_path)


def create_node_auth_key(
    out_dir: str | os.PathLike[str], name: str, *, overwrite: bool = False
) -> NodeAuthKey:
    """Write `<name>` (OpenSSH private key, 0600) and `<name>.pub` (OpenSSH public key line)."""
    if not _FILE_NAME.fullmatch(name):
        raise ValueError(
            f"node key name {name!r} must be a plain file name (letters, digits, . _ -)"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    directory = _out_dir(out_dir)
    private_path, public_path = directory / name, directory / f"{name}.pub"
    _write_pair(private_path, private, public_path, public + f" {name}\n".encode(), overwrite)
    return NodeAuthKey(private_path, public_path)


def check_node_auth_public_key(line: str, source: str) -> str:
    """`line` stripped, if it is an OpenSSH EC public key on a NIST curve, as Flower's
    `flwr supernode register` requires; else a ConfigError naming `source` (never the text)."""
    text = line.strip()
    try:
        key = serialization.load_ssh_public_key(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
        raise ConfigError(f"{source}: not an OpenSSH public key line") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _NIST_CURVES:
        raise ConfigError(f"{source}: expected an EC public key on a NIST curve "
                          f"(ecdsa-sha2-nistp256), found {type(key).__name__.removeprefix('_')}")
    return text


def _general_name(san: str) -> x509.GeneralName:
    """IP address if it parses as one, DNS name otherwise: '10.0.0.1' must never be a DNSName."""
    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        pass
    labels = san.removeprefix("*.").split(".")
    if len(san) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"SAN {san!r} is neither an IP address nor a DNS name")
    return x509.DNSName(san)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _validity(valid_days: int, now: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    if valid_days < 1:
        raise ValueError(f"valid_days must be at least 1, got {valid_days}")
    now = now or dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now - CLOCK_SKEW, now + dt.timedelta(days=valid_days)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _out_dir(out_dir: str | os.PathLike[str]) -> Path:
    directory = Path(out_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _write_pair(
    key_path: Path, key_data: bytes, public_path: Path, public_data: bytes, overwrite: bool
) -> None:
    """Write a private key and its public half; refuse before writing either if one exists."""
    if not overwrite:
        for path in (key_path, public_path):
            if path.exists():
                raise ConfigError(
                    f"refusing to overwrite existing file {path} (pass overwrite=True)"
                )
    write_file_atomically(key_path, key_data, mode=PRIVATE_FILE_MODE, overwrite=overwrite)
    write_file_atomically(public_path, public_data, mode=PUBLIC_FILE_MODE, overwrite=overwrite)

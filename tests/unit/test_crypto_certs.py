"""TLS and SuperNode-auth material, checked the way Flower 1.39 and gRPC will use it."""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedpeft.common.crypto.certs import create_ca, create_node_auth_key, create_server_cert, load_ca
from fedpeft.common.errors import ConfigError

SANS = ["127.0.0.1", "::1", "localhost", "superlink.bank.example"]
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_cert_is_issued_by_the_ca_for_every_san(tmp_path: Path) -> None:
    ca = create_ca("fedpeft test CA", tmp_path, valid_days=30, now=NOW)
    server = create_server_cert(ca, SANS, tmp_path, valid_days=10, now=NOW)
    cert = _cert(server.cert_path)
    cert.verify_directly_issued_by(_cert(ca.cert_path))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "superlink.bank.example"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert (
        ExtendedKeyUsageOID.SERVER_AUTH
        in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=10)
    assert cert.not_valid_before_utc < NOW
    ca_cert = _cert(ca.cert_path)
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert isinstance(ca_cert.public_key(), ec.EllipticCurvePublicKey)
    assert _mode(ca.key_path) == 0o600 and _mode(server.key_path) == 0o600


def test_grpc_tls_handshake_with_issued_cert(tmp_path: Path) -> None:
    """What a SuperNode does with --root-certificates: dial by IP and by DNS name."""
    ca = create_ca("fedpeft test CA", tmp_path, valid_days=30)
    server = create_server_cert(ca, ["127.0.0.1", "localhost"], tmp_path, valid_days=10)
    echo = grpc.method_handlers_generic_handler(
        "t.Echo", {"Call": grpc.unary_unary_rpc_method_handler(lambda r, c: r)}
    )
    grpc_server = grpc.server(ThreadPoolExecutor(max_workers=2))
    grpc_server.add_generic_rpc_handlers((echo,))
    credentials = grpc.ssl_server_credentials(
        [(server.key_path.read_bytes(), server.cert_path.read_bytes())]
    )
    port = grpc_server.add_secure_port("127.0.0.1:0", credentials)
    grpc_server.start()
    try:
        roots = grpc.ssl_channel_credentials(root_certificates=ca.cert_path.read_bytes())
        for host in ("127.0.0.1", "localhost"):
            with grpc.secure_channel(f"{host}:{port}", roots) as channel:
                assert channel.unary_unary("/t.Echo/Call")(b"ping", timeout=5) == b"ping"
        other_ca = create_ca("someone else", tmp_path / "other", valid_days=30)
        untrusting = grpc.ssl_channel_credentials(root_certificates=other_ca.cert_path.read_bytes())
        with (
            grpc.secure_channel(f"127.0.0.1:{port}", untrusting) as channel,
            pytest.raises(grpc.RpcError, match="(?i)handshake failed"),
        ):
            channel.unary_unary("/t.Echo/Call")(b"ping", timeout=5)
    finally:
        grpc_server.stop(None)


def test_load_ca_issues_more_certificates(tmp_path: Path) -> None:
    ca = create_ca("fedpeft test CA", tmp_path / "ca", valid_days=30)
    reloaded = load_ca(ca.cert_path, ca.key_path)
    server = create_server_cert(reloaded, ["10.0.0.5"], tmp_path / "server", valid_days=10)
    _cert(server.cert_path).verify_directly_issued_by(ca.certificate)
    with pytest.raises(ConfigError, match="not the private key of the CA"):
        load_ca(ca.cert_path, server.key_path)


def test_existing_files_are_not_overwritten(tmp_path: Path) -> None:
    ca = create_ca("fedpeft test CA", tmp_path, valid_days=30)
    key_before = ca.key_path.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        create_ca("again", tmp_path, valid_days=30)
    assert ca.key_path.read_bytes() == key_before
    create_node_auth_key(tmp_path, "bank-a")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        create_node_auth_key(tmp_path, "bank-a")
    create_node_auth_key(tmp_path, "bank-a", overwrite=True)


@pytest.mark.parametrize("san", ["", "bad name", "-leading.example", "a..b", "x" * 64 + ".example"])
def test_invalid_sans_are_rejected(tmp_path: Path, san: str) -> None:
    ca = create_ca("fedpeft test CA", tmp_path, valid_days=30)
    with pytest.raises(ValueError, match="neither an IP address nor a DNS name"):
        create_server_cert(ca, [san], tmp_path / "s")


def test_server_cert_misuse(tmp_path: Path) -> None:
    ca = create_ca("fedpeft test CA", tmp_path, valid_days=30)
    with pytest.raises(ValueError, match="at least one"):
        create_server_cert(ca, [], tmp_path / "s")
    with pytest.raises(ValueError, match="would outlive its CA"):
        create_server_cert(ca, ["localhost"], tmp_path / "s", valid_days=31)
    with pytest.raises(ValueError, match="timezone-aware"):
        create_ca("x", tmp_path / "naive", valid_days=1, now=dt.datetime(2026, 1, 1))


def test_node_auth_key_loads_the_way_flower_loads_it(tmp_path: Path) -> None:
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supernode.cli.flower_supernode import _try_setup_client_authentication

    node = create_node_auth_key(tmp_path, "bank-a")
    assert _mode(node.private_key_path) == 0o600
    private = load_ssh_private_key(node.private_key_path.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(
        private.curve, ec.SECP256R1
    )
    public_line = node.public_key_path.read_text()
    assert public_line.startswith("ecdsa-sha2-nistp256 ") and public_line.endswith(" bank-a\n")
    assert load_ssh_public_key(public_line.encode()) == private.public_key()
    # Flower 1.39's own loaders: `flwr supernode register` and `--auth-supernode-private-key`.
    assert try_load_public_key(node.public_key_path)
    args = argparse.Namespace(
        auth_supernode_private_key=str(node.private_key_path), auth_supernode_public_key=None
    )
    _, flower_public = _try_setup_client_authentication(args)
    assert flower_public == private.public_key()
    with pytest.raises(ValueError, match="plain file name"):
        create_node_auth_key(tmp_path, "../escape")


def test_default_validity_is_ten_years_for_the_ca_and_one_for_the_server(tmp_path: Path) -> None:
    ca = create_ca("fedpeft test CA", tmp_path, now=NOW)
    server = create_server_cert(ca, ["localhost"], tmp_path, now=NOW)
    assert ca.certificate.not_valid_after_utc == NOW + dt.timedelta(days=3650)
    assert _cert(server.cert_path).not_valid_after_utc == NOW + dt.timedelta(days=365)


def test_a_server_cert_may_end_exactly_with_its_ca(tmp_path: Path) -> None:
    ca = create_ca("fedpeft test CA", tmp_path, valid_days=30, now=NOW)
    server = create_server_cert(ca, ["localhost"], tmp_path, valid_days=30, now=NOW)
    assert _cert(server.cert_path).not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_server_cert_extensions_are_marked_as_tls_clients_expect(tmp_path: Path) -> None:
    """BasicConstraints and KeyUsage critical (a client that does not understand them must
    refuse), EKU and SAN not; the key signs handshakes, never certificates."""
    ca = create_ca("fedpeft test CA", tmp_path, valid_days=30, now=NOW)
    cert = _cert(create_server_cert(ca, ["localhost"], tmp_path, valid_days=10,
                                    now=NOW).cert_path)
    critical = {kind: cert.extensions.get_extension_for_class(kind).critical
                for kind in (x509.BasicConstraints, x509.KeyUsage, x509.ExtendedKeyUsage,
                             x509.SubjectAlternativeName)}
    assert critical == {x509.BasicConstraints: True, x509.KeyUsage: True,
                        x509.ExtendedKeyUsage: False, x509.SubjectAlternativeName: False}
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign


def test_server_cert_is_not_overwritten_unless_asked(tmp_path: Path) -> None:
    ca = create_ca("fedpeft test CA", tmp_path / "ca", valid_days=30, now=NOW)
    first = create_server_cert(ca, ["localhost"], tmp_path, valid_days=10, now=NOW)
    before = first.key_path.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        create_server_cert(ca, ["localhost"], tmp_path, valid_days=10, now=NOW)
    create_server_cert(ca, ["localhost"], tmp_path, valid_days=10, now=NOW, overwrite=True)
    assert first.key_path.read_bytes() != before


def test_loaded_ca_knows_its_files(tmp_path: Path) -> None:
    ca = create_ca("fedpeft test CA", tmp_path, valid_days=30)
    reloaded = load_ca(ca.cert_path, ca.key_path)
    assert (reloaded.cert_path, reloaded.key_path) == (ca.cert_path, ca.key_path)


def test_wildcard_and_longest_dns_names(tmp_path: Path) -> None:
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(longest) == 253
    ca = create_ca("fedpeft test CA", tmp_path, valid_days=30)
    server = create_server_cert(ca, ["*.superlink.example", longest], tmp_path / "s",
                                valid_days=10)
    san = _cert(server.cert_path).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["*.superlink.example", longest]
    with pytest.raises(ValueError, match="neither an IP address nor a DNS name"):
        create_server_cert(ca, [longest + "d"], tmp_path / "t", valid_days=10)


def test_node_auth_key_of_another_type_is_refused_by_name() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fedpeft.common.crypto.certs import check_node_auth_public_key

    line = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    with pytest.raises(ConfigError, match="bank-a.pub: expected an EC public key"):
        check_node_auth_public_key(line, "bank-a.pub")


def test_ca_may_sign_server_certificates_only(tmp_path: Path) -> None:
    """Path length 0 and critical constraints: a certificate the CA issued cannot itself
    issue certificates, and a client that does not understand that must refuse the CA."""
    cert = create_ca("fedpeft test CA", tmp_path, valid_days=30, now=NOW).certificate
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    assert not cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).critical


def test_keys_are_for_signing_only_never_for_encryption(tmp_path: Path) -> None:
    ca = create_ca("fedpeft test CA", tmp_path, valid_days=30, now=NOW)
    server = _cert(create_server_cert(ca, ["localhost"], tmp_path, valid_days=10,
                                      now=NOW).cert_path)
    for cert in (ca.certificate, server):
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert not (usage.content_commitment or usage.key_encipherment
                    or usage.data_encipherment or usage.key_agreement)


def test_ca_is_replaced_only_when_asked_into_a_folder_made_on_the_way(tmp_path: Path) -> None:
    folder = tmp_path / "federation" / "tls"
    before = create_ca("fedpeft test CA", folder, valid_days=30).key_path.read_bytes()
    second = create_ca("fedpeft test CA", folder, valid_days=30, overwrite=True)
    assert second.key_path.read_bytes() != before
    assert load_ca(folder / "ca.pem", folder / "ca.key").certificate == second.certificate

"""Institution-held keys: enrolment moves public keys only, and each side refuses what the other
(or whoever carries the files between them) could substitute.

Every flow goes through the real `fedpeft` application, as the two operators run it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from fedpeft.cli.main import app
from fedpeft.common.crypto import (
    create_node_auth_key,
    fingerprint,
    generate_signing_key,
    load_signing_public_key,
    save_private_key,
    save_public_key,
)
from fedpeft.common.errors import ConfigError, SecurityError
from fedpeft.deployment.federation_files import FederationFolder, InstitutionBundle

runner = CliRunner()
COORDINATOR_PRIVATE_FILES = {"ca.key", "server/server.key", "server/signing.key",
                             "server/encryption.key"}


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: {result.output} {result.exception!r}"
    return result.output


def _fails(*args: str) -> BaseException:
    result = runner.invoke(app, list(args))
    assert result.exit_code != 0 and result.exception is not None, result.output
    return result.exception


@pytest.fixture()
def fed(tmp_path: Path) -> FederationFolder:
    _ok("federation", "init", "--dir", str(tmp_path / "FED"), "--address", "127.0.0.1")
    return FederationFolder(tmp_path / "FED")


def _init(tmp_path: Path, name: str) -> InstitutionBundle:
    bundle = InstitutionBundle(tmp_path / "sites" / name)
    _ok("institution", "init", name, "--dir", str(bundle.root))
    return bundle


def _enrol(fed: FederationFolder, bundle: InstitutionBundle, name: str) -> None:
    _ok("federation", "add-institution", name, "--dir", str(fed.root),
        "--request", str(bundle.request_path))


def _public_halves(path: Path) -> list[bytes]:
    """Raw public keys of every private key in `path` (PEM PKCS8 or OpenSSH)."""
    data = path.read_bytes()
    loaders = (lambda d: serialization.load_pem_private_key(d, None),
               lambda d: serialization.load_ssh_private_key(d, None))
    for load in loaders:
        try:
            key = load(data)
        except (ValueError, TypeError):
            continue
        return [key.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)]
    return []


def _der(public_pem_or_ssh: bytes) -> bytes:
    try:
        key = serialization.load_pem_public_key(public_pem_or_ssh)
    except ValueError:
        key = serialization.load_ssh_public_key(public_pem_or_ssh)
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def test_the_coordinator_never_holds_an_institution_private_key(
    fed: FederationFolder, tmp_path: Path
) -> None:
    """The attacker owns the coordinator's machine after enrolment and searches FED/ for any
    private key whose public half is the institution's: there is none."""
    bundle = _init(tmp_path, "bank-a")
    _enrol(fed, bundle, "bank-a")
    _ok("institution", "complete", "--bundle", str(bundle.root),
        "--from", str(fed.reply("bank-a").root))
    institution_keys = {_der(bundle.signing_pub.read_bytes()),
                        _der(bundle.node_auth_pub.read_bytes())}
    private_files = set()
    for path in fed.root.rglob("*"):
        if path.is_file() and b"PRIVATE KEY" in path.read_bytes():
            private_files.add(path.relative_to(fed.root).as_posix())
            assert not institution_keys & set(_public_halves(path)), path
    assert private_files == COORDINATOR_PRIVATE_FILES
    reply_files = {p.name for p in fed.reply("bank-a").root.iterdir()}
    assert reply_files == {"institution.json", "ca.pem", "server-signing.pub",
                           "server-encryption.pub", "signing.pub", "supernode-auth.pub"}
    # what the aggregator checks updates with is the key the institution made
    registry = json.loads(fed.registry_path.read_text())["institutions"]["bank-a"]
    assert registry["signing_fingerprint"] == fingerprint(load_signing_public_key(bundle.signing_pub))


def test_a_request_carrying_a_private_key_is_refused(fed: FederationFolder, tmp_path: Path) -> None:
    bundle = _init(tmp_path, "bank-a")
    request = json.loads(bundle.request_path.read_text())
    request["signing_public_key"] = bundle.signing_key.read_text()
    leaked = tmp_path / "leaked.json"
    leaked.write_text(json.dumps(request))
    error = _fails("federation", "add-institution", "bank-a", "--dir", str(fed.root),
                   "--request", str(leaked))
    assert isinstance(error, SecurityError) and "holds a private key" in str(error)
    assert "bank-a" not in fed.registry().institutions and not fed.reply("bank-a").root.exists()


@pytest.mark.parametrize(("edit", "error", "reason"), [
    (lambda r, k: r.update(name="bank-b"), ConfigError, "is for institution 'bank-b'"),
    (lambda r, k: r.update(signing_fingerprint="00" * 32), SecurityError,
     "signing_fingerprint does not match"),
    (lambda r, k: r.update(signing_public_key=k), SecurityError,
     "signing_fingerprint does not match"),
    (lambda r, k: r.update(node_auth_public_key="ssh-rsa AAAA x"), ConfigError,
     "node_auth_public_key: not an OpenSSH public key"),
])
def test_a_request_altered_in_transit_is_refused(fed: FederationFolder, tmp_path: Path, edit,
                                                 error: type, reason: str) -> None:
    """Whoever carries the request swaps a field: the coordinator refuses before enrolling."""
    bundle = _init(tmp_path, "bank-a")
    request = json.loads(bundle.request_path.read_text())
    other = tmp_path / "other.pub"
    save_public_key(generate_signing_key().public_key(), other)
    edit(request, other.read_text())
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps(request))
    raised = _fails("federation", "add-institution", "bank-a", "--dir", str(fed.root),
                    "--request", str(altered))
    assert isinstance(raised, error) and reason in str(raised)
    assert fed.registry().institutions == {}


def test_one_key_pair_cannot_be_enrolled_under_two_names(fed: FederationFolder,
                                                         tmp_path: Path) -> None:
    bundle = _init(tmp_path, "bank-a")
    _enrol(fed, bundle, "bank-a")
    request = json.loads(bundle.request_path.read_text())
    request["name"] = "bank-sybil"
    copy = tmp_path / "sybil.json"
    copy.write_text(json.dumps(request))
    raised = _fails("federation", "add-institution", "bank-sybil", "--dir", str(fed.root),
                    "--request", str(copy))
    assert isinstance(raised, SecurityError)
    assert "already registered for institution 'bank-a'" in str(raised)


def test_the_institution_refuses_a_reply_with_keys_it_did_not_make(
    fed: FederationFolder, tmp_path: Path
) -> None:
    """A malicious coordinator registers a signing key of its own under bank-a (so it could
    sign bank-a's updates) and hands back a reply: completing the bundle refuses it."""
    bundle = _init(tmp_path, "bank-a")
    forged = InstitutionBundle(tmp_path / "coordinator-made")
    forged.root.mkdir()
    create_node_auth_key(forged.root, "supernode-auth")
    key = generate_signing_key()
    save_private_key(key, forged.signing_key)
    save_public_key(key.public_key(), forged.signing_pub)
    request = json.loads(bundle.request_path.read_text())
    request.update(signing_public_key=forged.signing_pub.read_text(),
                   signing_fingerprint=fingerprint(key.public_key()))
    substituted = tmp_path / "substituted.json"
    substituted.write_text(json.dumps(request))
    _ok("federation", "add-institution", "bank-a", "--dir", str(fed.root),
        "--request", str(substituted))
    raised = _fails("institution", "complete", "--bundle", str(bundle.root),
                    "--from", str(fed.reply("bank-a").root))
    assert isinstance(raised, SecurityError) and "another signing key" in str(raised)
    assert not bundle.manifest_path.exists()


def test_the_institution_refuses_a_reply_for_another_institution_or_altered(
    fed: FederationFolder, tmp_path: Path
) -> None:
    a, b = _init(tmp_path, "bank-a"), _init(tmp_path, "bank-b")
    _enrol(fed, a, "bank-a")
    _enrol(fed, b, "bank-b")
    raised = _fails("institution", "complete", "--bundle", str(a.root),
                    "--from", str(fed.reply("bank-b").root))
    assert isinstance(raised, SecurityError) and "reply is for institution 'bank-b'" in str(raised)
    altered = tmp_path / "altered-reply"
    shutil.copytree(fed.reply("bank-a").root, altered)
    other = tmp_path / "other-fed"
    _ok("federation", "init", "--dir", str(other), "--address", "127.0.0.1")
    shutil.copyfile(other / "server" / "encryption.pub", altered / "server-encryption.pub")
    raised = _fails("institution", "complete", "--bundle", str(a.root), "--from", str(altered))
    assert isinstance(raised, SecurityError)
    assert "server_encryption_fingerprint" in str(raised) and "altered" in str(raised)
    assert not a.manifest_path.exists()
    _ok("institution", "complete", "--bundle", str(a.root), "--from", str(fed.reply("bank-a").root))
    assert a.manifest().name == "bank-a"
    raised = _fails("institution", "complete", "--bundle", str(a.root),
                    "--from", str(fed.reply("bank-a").root))
    assert isinstance(raised, ConfigError) and "already complete" in str(raised)


def test_an_incomplete_bundle_cannot_join_and_says_what_to_do(tmp_path: Path) -> None:
    bundle = _init(tmp_path, "bank-a")
    data = tmp_path / "train.csv"
    data.write_text("text,label\nx,a\n")
    raised = _fails("client", "join", "--superlink", "127.0.0.1:9092", "--bundle",
                    str(bundle.root), "--data", str(data))
    assert isinstance(raised, ConfigError) and "fedpeft institution complete" in str(raised)


def test_init_refuses_an_existing_bundle(tmp_path: Path) -> None:
    bundle = _init(tmp_path, "bank-a")
    before = bundle.signing_key.read_bytes()
    raised = _fails("institution", "init", "bank-a", "--dir", str(bundle.root))
    assert isinstance(raised, ConfigError) and "already exists" in str(raised)
    assert bundle.signing_key.read_bytes() == before

"""The institution's side of enrolment: its own key pairs, its request, its completed bundle.

An institution makes its SuperNode authentication key and its update-signing key on its own
machine (`fedpeft institution init`) and hands over only `enrolment-request.json`; the
coordinator answers with public files (`fedpeft federation add-institution --request`), which
`fedpeft institution complete` checks and copies in. No private key ever leaves the bundle,
so whoever runs the coordinator cannot sign an update or an institution ledger in its name.

Completing checks the reply before trusting it: it must be for this institution, must have
registered this institution's own public keys (not keys the coordinator made), and its CA
certificate and server keys must match the fingerprints in its `institution.json`, which the
institution compares with those the coordinator published through a second channel.
`institution.json` is written last: a bundle without it is never taken for a complete one.
"""

from __future__ import annotations

from pathlib import Path

from fedpeft.common.crypto import (
    create_node_auth_key,
    fingerprint,
    generate_signing_key,
    load_encryption_public_key,
    load_signing_public_key,
    save_private_key,
    save_public_key,
)
from fedpeft.common.crypto.keys import PUBLIC_FILE_MODE, write_file_atomically
from fedpeft.common.errors import ConfigError, SecurityError
from fedpeft.deployment.enrolment import staged
from fedpeft.deployment.federation_files import (
    NODE_AUTH_KEY,
    BundleManifest,
    EnrolmentRequest,
    InstitutionBundle,
    certificate_fingerprint,
    check_institution_name,
    utc_now,
    write_record,
)


def init_bundle(root: Path, name: str) -> EnrolmentRequest:
    """Create bundle folder `root` (0700) with `name`'s private keys (0600) and its request."""
    check_institution_name(name)
    with staged(InstitutionBundle(root).root) as staging:
        bundle = InstitutionBundle(staging)
        node_key = create_node_auth_key(bundle.root, NODE_AUTH_KEY)
        signing = generate_signing_key()
        save_private_key(signing, bundle.signing_key)
        save_public_key(signing.public_key(), bundle.signing_pub)
        request = EnrolmentRequest(
            name=name,
            node_auth_public_key=node_key.public_key_path.read_text(encoding="ascii").strip(),
            signing_public_key=bundle.signing_pub.read_text(encoding="ascii"),
            signing_fingerprint=fingerprint(signing.public_key()),
            created_at=utc_now(),
        )
        write_record(bundle.request_path, request, overwrite=False)
    return request


def complete_bundle(root: Path, reply_dir: Path) -> BundleManifest:
    """Check the coordinator's reply in `reply_dir` and copy its public files into the bundle."""
    bundle, reply = InstitutionBundle(root), InstitutionBundle(reply_dir)
    if not bundle.request_path.is_file():
        raise ConfigError(f"{bundle.root}: no {bundle.request_path.name}; create the bundle with "
                          "`fedpeft institution init` first")
    if bundle.manifest_path.exists():
        raise ConfigError(f"{bundle.manifest_path}: the bundle is already complete")
    request = bundle.request()
    manifest = reply.manifest()
    _check_reply(bundle, reply, request, manifest)
    for source, target in ((reply.ca_cert, bundle.ca_cert),
                           (reply.server_signing_pub, bundle.server_signing_pub),
                           (reply.server_encryption_pub, bundle.server_encryption_pub)):
        write_file_atomically(target, source.read_bytes(), mode=PUBLIC_FILE_MODE,
                              overwrite=target.exists())
    write_record(bundle.manifest_path, manifest, overwrite=False)
    return manifest


def _check_reply(bundle: InstitutionBundle, reply: InstitutionBundle, request: EnrolmentRequest,
                 manifest: BundleManifest) -> None:
    if manifest.name != request.name:
        raise SecurityError(f"{reply.manifest_path}: the reply is for institution "
                            f"{manifest.name!r}, this bundle is {request.name!r}")
    if _read(reply.signing_pub) != bundle.signing_pub.read_bytes():
        raise SecurityError(f"{reply.signing_pub}: the coordinator registered another signing "
                            "key than this bundle's")
    if _read(reply.node_auth_pub).strip() != bundle.node_auth_pub.read_bytes().strip():
        raise SecurityError(f"{reply.node_auth_pub}: the coordinator registered another "
                            "SuperNode key than this bundle's")
    found = {
        "ca_fingerprint": certificate_fingerprint(reply.ca_cert),
        "server_signing_fingerprint": fingerprint(load_signing_public_key(reply.server_signing_pub)),
        "server_encryption_fingerprint":
            fingerprint(load_encryption_public_key(reply.server_encryption_pub)),
    }
    for field, value in found.items():
        if getattr(manifest, field) != value:
            raise SecurityError(f"{reply.root}: {field} in {reply.manifest_path.name} does not "
                                "match the file handed over (the reply was altered)")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing from the coordinator's reply") from None


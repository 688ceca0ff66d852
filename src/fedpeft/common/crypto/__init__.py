"""Every cryptographic operation fedpeft performs, behind names that offer no algorithm choices.

This package is the only place that imports `cryptography.hazmat`: protocol code seals, signs
and verifies through these functions and so cannot pick a weak mode by accident. Every
verification raises `fedpeft.common.errors.SecurityError` on refusal; none returns False.

- `keys`: Ed25519 signing and X25519 encryption keys, their PEM files and fingerprints.
- `signing`: Ed25519 sign / verify.
- `seal`: hybrid encryption to the aggregator (X25519 + HKDF-SHA256 + AES-256-GCM).
- `envelope`: the wire format of an adapter update (sealed and signed) and of the global
  adapter (signed), with replay and manifest checks.
- `certs`: the SuperLink's TLS CA and certificate, and SuperNode authentication keys.
"""

from fedpeft.common.crypto.certs import (
    CertificateAuthority,
    NodeAuthKey,
    ServerCertificate,
    check_node_auth_public_key,
    create_ca,
    create_node_auth_key,
    create_server_cert,
    load_ca,
)
from fedpeft.common.crypto.envelope import (
    Manifest,
    TensorSpec,
    UpdateContext,
    open_update,
    seal_update,
    sign_global,
    verify_global,
)
from fedpeft.common.crypto.keys import (
    EncryptionPrivateKey,
    EncryptionPublicKey,
    SigningPrivateKey,
    SigningPublicKey,
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
from fedpeft.common.crypto.seal import SealedBox, open_sealed, seal
from fedpeft.common.crypto.signing import sign, verify

__all__ = [
    "CertificateAuthority",
    "EncryptionPrivateKey",
    "EncryptionPublicKey",
    "Manifest",
    "NodeAuthKey",
    "SealedBox",
    "ServerCertificate",
    "SigningPrivateKey",
    "SigningPublicKey",
    "TensorSpec",
    "UpdateContext",
    "check_node_auth_public_key",
    "create_ca",
    "create_node_auth_key",
    "create_server_cert",
    "fingerprint",
    "generate_encryption_key",
    "generate_signing_key",
    "load_ca",
    "load_encryption_private_key",
    "load_encryption_public_key",
    "load_signing_private_key",
    "load_signing_public_key",
    "open_sealed",
    "open_update",
    "save_private_key",
    "save_public_key",
    "seal",
    "seal_update",
    "short_fingerprint",
    "signing_public_key_from_pem",
    "sign",
    "sign_global",
    "verify",
    "verify_global",
]

"""Published vectors prove the primitives are the standard ones and wired as specified.

The seal construction is rebuilt here independently (X25519 -> HKDF-SHA256 -> AES-256-GCM)
from RFC 7748's shared secret, so a change of salt, info string or key order in `seal.py`
fails a test instead of silently making fedpeft incompatible with itself across versions.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedpeft.common.crypto.keys import generate_encryption_key, generate_signing_key
from fedpeft.common.crypto.seal import SealedBox, open_sealed, seal
from fedpeft.common.crypto.signing import sign, verify
from fedpeft.common.errors import SecurityError

h = bytes.fromhex

# RFC 8032 section 7.1, TEST 1 and TEST 2: (secret key, public key, message, signature)
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]

# RFC 7748 section 6.1 (Diffie-Hellman example)
ALICE_PRIV = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUB = h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIV = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUB = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED_K = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")

# The GCM specification (McGrew & Viega, as submitted to NIST), AES-256 test cases 13, 14, 16:
# (key, iv, plaintext, aad, ciphertext, tag)
GCM = [
    ("00" * 32, "00" * 12, "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"),
    (
        "00" * 32,
        "00" * 12,
        "00" * 16,
        "",
        "cea7403d4d606b6e074ec5d3baf39d18",
        "d0d1c8a799996bf0265b98b5d48ab919",
    ),
    (
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a31"
        "8a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555"
        "d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
]


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _fixed(*chunks: bytes):
    """A randbytes source that hands out `chunks` in order, checking each requested size."""
    queue = list(chunks)

    def randbytes(size: int) -> bytes:
        chunk = queue.pop(0)
        assert len(chunk) == size
        return chunk

    return randbytes


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_ed25519_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    key = Ed25519PrivateKey.from_private_bytes(h(secret))
    assert key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ) == h(public)
    assert sign(key, h(message)) == h(signature)
    verify(key.public_key(), h(signature), h(message))


def test_x25519_rfc7748_section_5_2_vector() -> None:
    scalar = h("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = h("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    expected = h("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    assert (
        X25519PrivateKey.from_private_bytes(scalar).exchange(X25519PublicKey.from_public_bytes(u))
        == expected
    )


@pytest.mark.parametrize(("key", "iv", "plaintext", "aad", "ciphertext", "tag"), GCM)
def test_aes256_gcm_known_answers(
    key: str, iv: str, plaintext: str, aad: str, ciphertext: str, tag: str
) -> None:
    assert AESGCM(h(key)).encrypt(h(iv), h(plaintext), h(aad)) == h(ciphertext) + h(tag)


def test_seal_follows_the_specified_construction_on_rfc7748_keys() -> None:
    """Alice seals to Bob: the box must carry Alice's RFC public key and decrypt under
    AES-256-GCM with HKDF-SHA256(K, salt = ephemeral || recipient, info = fedpeft/seal/v1)."""
    nonce = h("cafebabefacedbaddecaf888")
    box = seal(
        X25519PublicKey.from_public_bytes(BOB_PUB),
        b"adapter bytes",
        b"aad",
        randbytes=_fixed(ALICE_PRIV, nonce),
    )
    assert box.ephemeral_pub == ALICE_PUB
    assert box.nonce == nonce
    key = HKDF(hashes.SHA256(), 32, salt=ALICE_PUB + BOB_PUB, info=b"fedpeft/seal/v1").derive(
        SHARED_K
    )
    assert AESGCM(key).decrypt(nonce, box.ciphertext, b"aad") == b"adapter bytes"
    assert (
        open_sealed(X25519PrivateKey.from_private_bytes(BOB_PRIV), box, b"aad") == b"adapter bytes"
    )


def test_seal_round_trip_through_bytes_and_fresh_randomness() -> None:
    recipient = generate_encryption_key()
    first = seal(recipient.public_key(), b"x" * 1000, b"ctx")
    second = seal(recipient.public_key(), b"x" * 1000, b"ctx")
    assert first.ephemeral_pub != second.ephemeral_pub and first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext
    wire = first.to_bytes()
    assert len(wire) == 1 + 32 + 12 + 1000 + 16
    assert open_sealed(recipient, SealedBox.from_bytes(wire), b"ctx") == b"x" * 1000
    assert open_sealed(recipient, seal(recipient.public_key(), b"", b""), b"") == b""


def _flip(data: bytes, index: int) -> bytes:
    flipped = bytearray(data)
    flipped[index] ^= 0x01
    return bytes(flipped)


@pytest.mark.parametrize(
    ("where", "index"),
    [
        ("ephemeral key", 1),
        ("ephemeral key", 32),
        ("nonce", 33),
        ("nonce", 44),
        ("ciphertext", 45),
        ("ciphertext", 60),
        ("tag", -16),
        ("tag", -1),
    ],
)
def test_any_flipped_bit_fails_authentication(where: str, index: int) -> None:
    recipient = generate_encryption_key()
    wire = seal(recipient.public_key(), b"secret adapter weights", b"ctx").to_bytes()
    with pytest.raises(SecurityError, match="^ciphertext failed authentication$"):
        open_sealed(recipient, SealedBox.from_bytes(_flip(wire, index)), b"ctx")


def test_wrong_recipient_or_aad_fails_authentication() -> None:
    recipient, other = generate_encryption_key(), generate_encryption_key()
    box = seal(recipient.public_key(), b"secret", b"round 3")
    with pytest.raises(SecurityError, match="ciphertext failed authentication"):
        open_sealed(other, box, b"round 3")
    with pytest.raises(SecurityError, match="ciphertext failed authentication"):
        open_sealed(recipient, box, b"round 4")


def test_low_order_ephemeral_key_is_refused() -> None:
    recipient = generate_encryption_key()
    box = seal(recipient.public_key(), b"secret", b"")
    zero_point = SealedBox(b"\x00" * 32, box.nonce, box.ciphertext)
    with pytest.raises(SecurityError, match="invalid ephemeral key"):
        open_sealed(recipient, zero_point, b"")


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "truncated"),
        (b"\x01" + b"\x00" * 59, "truncated"),
        (b"\x02" + b"\x00" * 80, "unsupported version 2"),
    ],
)
def test_malformed_sealed_box_is_refused(wire: bytes, reason: str) -> None:
    with pytest.raises(SecurityError, match=f"malformed sealed box: {reason}"):
        SealedBox.from_bytes(wire)


def test_refusals_never_echo_plaintext() -> None:
    recipient = generate_encryption_key()
    box = seal(recipient.public_key(), b"PLAINTEXT-MARKER", b"")
    with pytest.raises(SecurityError, match="failed authentication") as caught:
        open_sealed(recipient, box, b"other")
    assert "PLAINTEXT" not in str(caught.value)


def test_signature_refusals() -> None:
    key, other = generate_signing_key(), generate_signing_key()
    signature = sign(key, b"update")
    verify(key.public_key(), signature, b"update")
    for public, sig, data in [
        (other.public_key(), signature, b"update"),  # signed by a different key
        (key.public_key(), signature, b"updatE"),  # data changed
        (key.public_key(), _flip(signature, 10), b"update"),  # signature changed
        (key.public_key(), signature[:-1], b"update"),  # truncated
        (key.public_key(), b"", b"update"),
    ]:
        with pytest.raises(SecurityError, match="^bad signature$"):
            verify(public, sig, data)


def test_misuse_is_a_type_error_not_a_refusal() -> None:
    signing, encryption = generate_signing_key(), generate_encryption_key()
    with pytest.raises(TypeError, match="Ed25519 private key"):
        sign(encryption, b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be bytes"):
        sign(signing, "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="X25519 public key"):
        seal(signing.public_key(), b"x", b"")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must return 32 bytes"):
        seal(encryption.public_key(), b"x", b"", randbytes=lambda n: b"k" * min(n, 8))


def test_misused_arguments_are_named_in_the_type_error() -> None:
    signing, encryption = generate_signing_key(), generate_encryption_key()
    signature = sign(signing, b"x")
    box = seal(encryption.public_key(), b"x", b"")
    for call, name in [
        (lambda: sign(signing, "x"), "data"),
        (lambda: verify(signing.public_key(), "sig", b"x"), "signature"),
        (lambda: verify(signing.public_key(), signature, "x"), "data"),
        (lambda: seal(encryption.public_key(), "x", b""), "plaintext"),
        (lambda: seal(encryption.public_key(), b"x", "aad"), "aad"),
        (lambda: open_sealed(encryption, box, "aad"), "aad"),
    ]:
        with pytest.raises(TypeError, match=f"^{name} must be bytes, got str$"):
            call()  # type: ignore[no-untyped-call]


def test_box_of_an_empty_plaintext_parses_and_opens() -> None:
    """The shortest valid box (prefix and tag only) is not mistaken for a truncated one."""
    recipient = generate_encryption_key()
    wire = seal(recipient.public_key(), b"", b"ctx").to_bytes()
    assert len(wire) == 1 + 32 + 12 + 16
    assert open_sealed(recipient, SealedBox.from_bytes(wire), b"ctx") == b""


def test_box_with_a_wrong_nonce_length_is_refused_as_malformed() -> None:
    recipient = generate_encryption_key()
    box = seal(recipient.public_key(), b"secret", b"")
    with pytest.raises(SecurityError, match="bad key or nonce length"):
        open_sealed(recipient, SealedBox(box.ephemeral_pub, box.nonce[:11], box.ciphertext), b"")

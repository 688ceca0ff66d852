"""The adapter wire format: round trips, and one refusal per check, each naming that check."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import safetensors.numpy

from fedpeft.common.crypto import envelope
from fedpeft.common.crypto.envelope import (
    Manifest,
    UpdateContext,
    open_update,
    seal_update,
    sign_global,
    verify_global,
)
from fedpeft.common.crypto.keys import generate_encryption_key, generate_signing_key
from fedpeft.common.crypto.seal import seal
from fedpeft.common.crypto.signing import sign
from fedpeft.common.errors import SecurityError

AGGREGATOR = generate_encryption_key()
SERVER = generate_signing_key()
BANK_A = generate_signing_key()
BANK_B = generate_signing_key()
SIGNERS = {"bank-a": BANK_A.public_key(), "bank-b": BANK_B.public_key()}
CTX = UpdateContext(
    federation_id="fed-eu", run_id=7, server_round=3, node="bank-a", direction="update"
)
GLOBAL_CTX = CTX.model_copy(update={"direction": "global"})


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "base_model.model.encoder.layer.0.attention.self.query.lora_A.weight": rng.standard_normal(
            (8, 384), dtype=np.float32
        ),
        "base_model.model.encoder.layer.0.attention.self.query.lora_B.weight": rng.standard_normal(
            (384, 8), dtype=np.float32
        ),
        "classifier.bias": rng.standard_normal(2, dtype=np.float32),
        "step": np.array(12, dtype=np.int64),
    }


def _open(blob: bytes, expected: UpdateContext = CTX, **kwargs) -> dict[str, np.ndarray]:
    return open_update(blob, expected, AGGREGATOR, SIGNERS, **kwargs)


def _flip(blob: bytes, index: int) -> bytes:
    flipped = bytearray(blob)
    flipped[index] ^= 0x01
    return bytes(flipped)


def _resign(blob: bytes, key=BANK_A) -> bytes:
    """What an institution holding its own key could do with a tampered blob."""
    digest = hashlib.sha256(blob[:-64]).digest()
    return blob[:-64] + sign(key, envelope.SIGNATURE_CONTEXT + digest)


def _layout(blob: bytes) -> tuple[int, int]:
    """(start of the sealed box, start of the signature)."""
    header_size = int.from_bytes(blob[17:21], "big")
    return 21 + header_size, len(blob) - 64


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == sorted(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape
        np.testing.assert_array_equal(got[name], array)


def test_update_round_trip() -> None:
    arrays = _arrays()
    blob = seal_update(arrays, CTX, AGGREGATOR.public_key(), BANK_A)
    _assert_same(_open(blob, expected_manifest=Manifest.of(arrays)), arrays)


def test_update_is_not_readable_without_the_key() -> None:
    arrays = {"w": np.full(64, 1234.5678, dtype=np.float32)}
    blob = seal_update(arrays, CTX, AGGREGATOR.public_key(), BANK_A)
    assert arrays["w"].tobytes()[:16] not in blob


def test_strided_big_endian_and_scalar_arrays_round_trip() -> None:
    arrays = {
        "strided": np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2],
        "big_endian": np.arange(5, dtype=">f4"),
        "scalar": np.array(1.5, dtype=np.float16),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    got = _open(seal_update(arrays, CTX, AGGREGATOR.public_key(), BANK_A))
    for name, array in arrays.items():
        np.testing.assert_array_equal(got[name], array)
        assert got[name].shape == array.shape


def test_global_round_trip() -> None:
    arrays = _arrays()
    blob = sign_global(arrays, GLOBAL_CTX, SERVER)
    _assert_same(
        verify_global(blob, GLOBAL_CTX, SERVER.public_key(), expected_manifest=Manifest.of(arrays)),
        arrays,
    )


def test_manifest_is_canonical() -> None:
    arrays = _arrays()
    reordered = dict(reversed(list(arrays.items())))
    assert Manifest.of(arrays).to_json() == Manifest.of(reordered).to_json()
    assert Manifest.of(arrays).sha256() == Manifest.of(reordered).sha256()
    assert Manifest.model_validate_json(Manifest.of(arrays).to_json()) == Manifest.of(arrays)
    assert [spec.name for spec in Manifest.of(arrays).tensors] == sorted(arrays)


# --- parse ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda blob: b"", "truncated"),
        (lambda blob: b"garbage", "truncated"),
        (lambda blob: b"x" * 200, "not a fedpeft envelope"),
        (lambda blob: blob[:20], "truncated"),
        (lambda blob: blob[:100], "truncated"),
        (lambda blob: _flip(blob, 0), "not a fedpeft envelope"),
        (lambda blob: _flip(blob, 16), "unsupported version 3"),
        (lambda blob: blob[:17] + (2**31).to_bytes(4, "big") + blob[21:], "header too large"),
        (lambda blob: blob[:17] + (2**20).to_bytes(4, "big") + blob[21:], "truncated"),
        (lambda blob: blob[:21] + b"[" + blob[22:], "invalid header"),
    ],
)
def test_malformed_blobs_are_refused(make, reason: str) -> None:
    blob = seal_update(_arrays(), CTX, AGGREGATOR.public_key(), BANK_A)
    with pytest.raises(SecurityError, match=f"^update refused: malformed envelope: {reason}$"):
        _open(make(blob))


def test_truncated_sealed_box_is_refused() -> None:
    ctx_json = envelope._Header(context=CTX, manifest=Manifest.of({}), signer="bank-a")
    blob = envelope._pack(ctx_json, b"\x01short", BANK_A)
    with pytest.raises(SecurityError, match="^update refused: malformed sealed box: truncated$"):
        _open(blob)


def test_header_with_unknown_field_is_refused_even_when_signed() -> None:
    blob = seal_update(_arrays(), CTX, AGGREGATOR.public_key(), BANK_A)
    header_end, _ = _layout(blob)
    header = blob[21:header_end].replace(b'"signer":"bank-a"', b'"signer":"bank-a","x":1')
    forged = blob[:17] + len(header).to_bytes(4, "big") + header + blob[header_end:]
    with pytest.raises(SecurityError, match="malformed envelope: invalid header"):
        _open(_resign(forged))


# --- signer and signature ------------------------------------------------------------------


def test_unknown_or_revoked_signer_is_refused_by_name() -> None:
    blob = seal_update(_arrays(), CTX, AGGREGATOR.public_key(), BANK_A)
    with pytest.raises(SecurityError, match="^update refused: unknown signer 'bank-a'$"):
        open_update(blob, CTX, AGGREGATOR, {"bank-b": BANK_B.public_key()})


def test_signature_from_a_different_key_is_refused() -> None:
    impostor = generate_signing_key()
    blob = seal_update(_arrays(), CTX, AGGREGATOR.public_key(), impostor)
    with pytest.raises(SecurityError, match="^update from 'bank-a' refused: bad signature$"):
        _open(blob)


def test_institution_cannot_sign_for_another() -> None:
    # bank-b is a known signer, but it may not pass its update off as bank-a's.
    blob = seal_update(_arrays(), CTX, AGGREGATOR.public_key(), BANK_B)
    blob = blob.replace(b'"signer":"bank-a"', b'"signer":"bank-b"')
    with pytest.raises(SecurityError, match="signer 'bank-b' cannot sign for node 'bank-a'"):
        _open(_resign(blob, BANK_B))


def test_flipped_bit_anywhere_is_refused() -> None:
    blob = seal_update(_arrays(), CTX, AGGREGATOR.public_key(), BANK_A)
    box_start, signature_start = _layout(blob)
    positions = {
        "header": 40,
        "box version": box_start,
        "ephemeral key": box_start + 1,
        "nonce": box_start + 33,
        "ciphertext": box_start + 45,
        "tag": signature_start - 1,
        "signature": signature_start,
        "signature end": len(blob) - 1,
    }
    for where, index in positions.items():
        with pytest.raises(SecurityError, match="refused: (bad signature|malformed)") as caught:
            _open(_flip(blob, index))
        assert "bank-a'" in str(caught.value) or "malformed" in str(caught.value), where
    with pytest.raises(SecurityError, match="bad signature"):
        _open(blob + b"\x00")


@pytest.mark.parametrize("offset", [1, 20, 33, 40, 45, 1000, -1])
def test_tampered_ciphertext_fails_authentication_even_if_resigned(offset: int) -> None:
    """Defence in depth: the signer itself cannot slip a modified ciphertext through."""
    blob = seal_update(_arrays(), CTX, AGGREGATOR.public_key(), BANK_A)
    box_start, signature_start = _layout(blob)
    index = box_start + offset if offset >= 0 else signature_start + offset
    with pytest.raises(
        SecurityError, match="^update from 'bank-a' refused: ciphertext failed authentication$"
    ):
        _open(_resign(_flip(blob, index)))


def test_ciphertext_moved_to_a_new_header_fails_authentication() -> None:
    """Replaying an old ciphertext under a fresh, validly signed round-4 header."""
    old = seal_update(_arrays(), CTX, AGGREGATOR.public_key(), BANK_A)
    new_ctx = CTX.model_copy(update={"server_round": 4})
    new = seal_update(_arrays(), new_ctx, AGGREGATOR.public_key(), BANK_A)
    old_box_start, _ = _layout(old)
    new_box_start, _ = _layout(new)
    spliced = _resign(new[:new_box_start] + old[old_box_start:])
    with pytest.raises(SecurityError, match="ciphertext failed authentication"):
        _open(spliced, new_ctx)


# --- context (replay) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("server_round", 4, "round mismatch: sealed for round 3, expected 4"),
        ("run_id", 8, "run mismatch: sealed for run 7, expected 8"),
        (
            "federation_id",
            "fed-us",
            "federation mismatch: sealed for federation 'fed-eu', expected 'fed-us'",
        ),
        ("node", "bank-b", "node mismatch: sealed for node 'bank-a', expected 'bank-b'"),
    ],
)
def test_replay_into_another_context_is_refused(field: str, value: object, message: str) -> None:
    blob = seal_update(_arrays(), CTX, AGGREGATOR.public_key(), BANK_A)
    with pytest.raises(SecurityError, match=f"^update from 'bank-a' refused: {message}$"):
        _open(blob, CTX.model_copy(update={field: value}))


def test_global_replayed_into_another_round_is_refused() -> None:
    blob = sign_global(_arrays(), GLOBAL_CTX, SERVER)
    expected = GLOBAL_CTX.model_copy(update={"server_round": 4})
    with pytest.raises(
        SecurityError,
        match="^global adapter refused: round mismatch: signed for round 3, expected 4$",
    ):
        verify_global(blob, expected, SERVER.public_key())


def test_direction_is_checked_both_ways() -> None:
    # An update handed to a node as a global: not the server's signer name.
    update = seal_update(_arrays(), CTX, AGGREGATOR.public_key(), BANK_A)
    with pytest.raises(SecurityError, match="^global adapter refused: unknown signer 'bank-a'$"):
        verify_global(update, GLOBAL_CTX, SERVER.public_key())
    # A global handed to the aggregator as an update: 'server' is not an institution.
    glob = sign_global(_arrays(), GLOBAL_CTX, SERVER)
    with pytest.raises(
        SecurityError, match="^update refused: (unknown signer 'server'|malformed sealed box)"
    ):
        _open(glob)
    # Crafted by a holder of the right key, to reach the direction check itself.
    arrays = _arrays()
    forged = envelope._pack(
        envelope._Header(context=CTX, manifest=Manifest.of(arrays), signer="server"),
        safetensors.numpy.save(arrays),
        SERVER,
    )
    with pytest.raises(
        SecurityError, match="direction mismatch: signed for direction 'update', expected 'global'"
    ):
        verify_global(forged, GLOBAL_CTX, SERVER.public_key())
    forged_update = envelope._pack(
        envelope._Header(context=GLOBAL_CTX, manifest=Manifest.of(arrays), signer="bank-a"),
        seal(AGGREGATOR.public_key(), safetensors.numpy.save(arrays), b"").to_bytes(),
        BANK_A,
    )
    with pytest.raises(
        SecurityError, match="direction mismatch: sealed for direction 'global', expected 'update'"
    ):
        _open(forged_update)


def test_global_signed_by_another_key_is_refused() -> None:
    blob = sign_global(_arrays(), GLOBAL_CTX, BANK_A)
    with pytest.raises(SecurityError, match="^global adapter refused: bad signature$"):
        verify_global(blob, GLOBAL_CTX, SERVER.public_key())
    with pytest.raises(SecurityError, match="bad signature"):
        verify_global(
            _flip(sign_global(_arrays(), GLOBAL_CTX, SERVER), -100), GLOBAL_CTX, SERVER.public_key()
        )


# --- manifest ------------------------------------------------------------------------------

A_NAME = "base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda a: a.update({A_NAME: np.zeros((16, 384), np.float32)}),
            f"tensor '{A_NAME}' shape mismatch: expected \\(16, 384\\), received \\(8, 384\\)",
        ),
        (
            lambda a: a.update({A_NAME: np.zeros((8, 384), np.float16)}),
            f"tensor '{A_NAME}' dtype mismatch: expected float16, received float32",
        ),
        (lambda a: a.update({"extra": np.zeros(1, np.float32)}), "tensor 'extra' missing"),
        (lambda a: a.pop("classifier.bias"), "unexpected tensor 'classifier.bias'"),
    ],
)
def test_tensors_must_match_the_expected_manifest(change, message: str) -> None:
    expected_arrays = _arrays()
    change(expected_arrays)
    update = seal_update(_arrays(), CTX, AGGREGATOR.public_key(), BANK_A)
    with pytest.raises(SecurityError, match=f"^update from 'bank-a' refused: {message}$"):
        _open(update, expected_manifest=Manifest.of(expected_arrays))
    glob = sign_global(_arrays(), GLOBAL_CTX, SERVER)
    with pytest.raises(SecurityError, match=f"^global adapter refused: {message}$"):
        verify_global(
            glob, GLOBAL_CTX, SERVER.public_key(), expected_manifest=Manifest.of(expected_arrays)
        )


def test_plaintext_must_match_the_signed_manifest() -> None:
    """A signer whose header lies about the sealed tensors (shape or dtype) is caught."""
    arrays = {"w": np.zeros((2, 3), np.float32)}
    lying = Manifest.of({"w": np.zeros((3, 2), np.float32)})
    box = seal(
        AGGREGATOR.public_key(), safetensors.numpy.save(arrays),
        envelope._update_aad(CTX, lying, None)
    )
    blob = envelope._pack(
        envelope._Header(context=CTX, manifest=lying, signer="bank-a"), box.to_bytes(), BANK_A
    )
    with pytest.raises(
        SecurityError, match=r"tensor 'w' shape mismatch: expected \(3, 2\), received \(2, 3\)"
    ):
        _open(blob)
    garbage = seal(AGGREGATOR.public_key(), b"not safetensors",
                   envelope._update_aad(CTX, lying, None))
    blob = envelope._pack(
        envelope._Header(context=CTX, manifest=lying, signer="bank-a"), garbage.to_bytes(), BANK_A
    )
    with pytest.raises(SecurityError, match="malformed tensor data"):
        _open(blob)


# --- developer misuse ----------------------------------------------------------------------


def test_misuse_raises_type_or_value_errors() -> None:
    with pytest.raises(ValueError, match="this call needs 'update'"):
        seal_update(_arrays(), GLOBAL_CTX, AGGREGATOR.public_key(), BANK_A)
    with pytest.raises(ValueError, match="this call needs 'global'"):
        sign_global(_arrays(), CTX, SERVER)
    with pytest.raises(ValueError, match="this call needs 'update'"):
        _open(b"", GLOBAL_CTX)
    with pytest.raises(TypeError, match="tensor 'w' has dtype complex128"):
        seal_update({"w": np.zeros(2, complex)}, CTX, AGGREGATOR.public_key(), BANK_A)
    with pytest.raises(TypeError, match="must be a numpy array"):
        Manifest.of({"w": [1.0, 2.0]})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="blob must be bytes"):
        _open("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="run_id"):
        UpdateContext(
            federation_id="f", run_id="7", server_round=3, node="bank-a", direction="update"
        )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        UpdateContext(
            federation_id="f", run_id=7, server_round=3, node="bank-a", direction="update", x=1
        )  # type: ignore[call-arg]


def test_transposed_array_round_trips() -> None:
    """A transposed view is Fortran-ordered: it must be stored in C order, not as its memory."""
    arrays = {"t": np.arange(12, dtype=np.float32).reshape(3, 4).T}
    np.testing.assert_array_equal(_open(seal_update(arrays, CTX, AGGREGATOR.public_key(),
                                                    BANK_A))["t"], arrays["t"])


def test_non_ascii_tensor_names_round_trip() -> None:
    arrays = {"poids_é": np.ones(2, dtype=np.float32)}
    assert list(_open(seal_update(arrays, CTX, AGGREGATOR.public_key(), BANK_A))) == ["poids_é"]


@pytest.mark.parametrize("weight", [0, -3, True, 2.0])
def test_weights_that_are_not_positive_ints_are_refused_before_sealing(weight: object) -> None:
    with pytest.raises(ValueError, match="weight must be a positive int or None"):
        seal_update(_arrays(), CTX, AGGREGATOR.public_key(), BANK_A, weight)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", 3])
def test_tensor_names_must_be_non_empty_strings(name: object) -> None:
    with pytest.raises(TypeError, match="tensor names must be non-empty strings"):
        Manifest.of({name: np.ones(1, dtype=np.float32)})  # type: ignore[dict-item]


def test_max_update_size_is_the_data_plus_twice_the_manifest_plus_slack() -> None:
    arrays = {"a": np.zeros((3, 5), dtype=np.float32), "b": np.zeros(7, dtype=np.int8)}
    manifest = Manifest.of(arrays)
    expected = 3 * 5 * 4 + 7 + 2 * len(manifest.to_json()) + 64 * 1024
    assert envelope.max_update_size(manifest) == expected
    assert len(seal_update(arrays, CTX, AGGREGATOR.public_key(), BANK_A)) <= expected


def _prefix(header_size: int) -> bytes:
    return envelope.MAGIC + bytes([envelope.FORMAT_VERSION]) + header_size.to_bytes(4, "big")


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (_prefix(0) + b"\x00" * 64, "invalid header"),  # the shortest blob is parsed
        (_prefix(2) + b"{}" + b"\x00" * 64, "invalid header"),  # an empty payload too
        (_prefix(envelope.MAX_HEADER_SIZE) + b"\x00" * 64, "truncated"),  # at the cap
        (_prefix(envelope.MAX_HEADER_SIZE + 1) + b"\x00" * 64, "header too large"),
        (_prefix(100) + b"\x00" * 74, "truncated"),  # header longer than what follows
    ],
)
def test_envelope_length_checks_at_their_boundaries(blob: bytes, reason: str) -> None:
    with pytest.raises(SecurityError, match=f"malformed envelope: {reason}"):
        verify_global(blob, GLOBAL_CTX, SERVER.public_key())

"""The wire format of one adapter exchange: an institution's update, or the server's global.

Flower's SuperLink stores every message body, so an update is sealed end to end to the
aggregator and signed by its institution; the global adapter goes to every institution
alike, so it is signed by the server but not encrypted (the channel has TLS).

Layout of a blob (all lengths big-endian):

    MAGIC (16) | FORMAT_VERSION (1) | header length (4) | header | payload | signature (64)

The header is canonical JSON of the context (federation, run, round, node, direction), the
tensor manifest, the signer's name and, for an update, its FedAvg weight (the example count,
or 1 under differential privacy; none for a masked update, whose weight travels masked). The
payload is a sealed box of the safetensors bytes (update) or the safetensors bytes themselves
(global). The Ed25519 signature is over
SIGNATURE_CONTEXT || SHA-256(every byte before the signature): the context string keeps it
from being mistaken for a signature over anything else, and hashing first lets a 50 MB blob
be signed in one streaming pass without copying it (pure Ed25519 reads its input twice with
SHA-512 and would need the bytes contiguous), at the price of relying on SHA-256's
collision resistance, as Ed25519ph does on SHA-512's.

The sealed box's associated data repeats the context, the manifest's hash and the weight: a
ciphertext lifted into another header (another round, run, institution or weight) fails
authentication even when that header carries a valid signature, e.g. one re-signed by the
institution itself. A relay that rewrites the weight breaks the signature; one that rewrites
the `num-examples` metric beside the envelope changes nothing, since the aggregator weighs by
the sealed weight.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import numpy as np
import safetensors.numpy
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from safetensors import SafetensorError

from fedpeft.common.crypto.keys import (
    EncryptionPrivateKey,
    EncryptionPublicKey,
    SigningPrivateKey,
    SigningPublicKey,
)
from fedpeft.common.crypto.seal import SealedBox, open_sealed, seal
from fedpeft.common.crypto.signing import SIGNATURE_SIZE, sign, verify
from fedpeft.common.errors import SecurityError

MAGIC = b"fedpeft/envelope"
FORMAT_VERSION = 2
MAX_HEADER_SIZE = 16 * 2**20
"""Far above the manifest of any adapter, far below what would let a blob exhaust memory."""
SIGNATURE_CONTEXT = b"fedpeft/envelope/v1/sha256\x00"
SERVER_SIGNER = "server"
"""Signer name in a global adapter's header; the key is the server's, given to every node."""

_LENGTH_SIZE = 4
_PREFIX_SIZE = len(MAGIC) + 1 + _LENGTH_SIZE

Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
DType = Literal[
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float16",
    "float32",
    "float64",
]
"""The numpy dtypes safetensors stores natively; cast bfloat16 adapters to float32 first."""
SUPPORTED_DTYPES: frozenset[str] = frozenset(get_args(DType))

_WIRE = ConfigDict(extra="forbid", frozen=True, strict=True)
"""Everything parsed off the wire: unknown fields and coerced types are refused, not fixed."""


class UpdateContext(BaseModel):
    """Where a blob belongs. It is signed and bound into the ciphertext, so a blob opens only
    in the federation, run, round, node and direction it was made for (no replay)."""

    model_config = _WIRE

    federation_id: Name
    run_id: int = Field(ge=0)
    server_round: int = Field(ge=0)
    node: Name = Field(
        description="Institution: the sender of an update, the receiver of a global."
    )
    direction: Literal["update", "global"]


class TensorSpec(BaseModel):
    """One tensor as the sender declares it, before anyone looks at the bytes."""

    model_config = _WIRE

    name: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    shape: tuple[Annotated[int, Field(ge=0)], ...]
    dtype: DType


class Manifest(BaseModel):
    """The tensors of an adapter, sorted by name: a canonical form with one hash per adapter."""

    model_config = _WIRE

    tensors: tuple[TensorSpec, ...]

    @field_validator("tensors")
    @classmethod
    def _canonical(cls, tensors: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
        names = [spec.name for spec in tensors]
        if any(a >= b for a, b in itertools.pairwise(names)):
            raise ValueError("tensor names must be unique and sorted")
        return tensors

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> Manifest:
        """The manifest of `arrays`, e.g. a PEFT adapter state dict converted to numpy."""
        if not isinstance(arrays, Mapping):
            raise TypeError(
                f"expected a mapping of tensor names to arrays, got {type(arrays).__name__}"
            )
        for name, array in arrays.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"tensor names must be non-empty strings, got {name!r}")
            if not isinstance(array, np.ndarray):
                raise TypeError(
                    f"tensor {name!r} must be a numpy array, got {type(array).__name__}"
                )
            if array.dtype.name not in SUPPORTED_DTYPES:
                raise TypeError(
                    f"tensor {name!r} has dtype {array.dtype.name}, supported: "
                    f"{', '.join(sorted(SUPPORTED_DTYPES))}"
                )
        return cls(
            tensors=tuple(
                TensorSpec(
                    name=name, shape=tuple(arrays[name].shape), dtype=arrays[name].dtype.name
                )
                for name in sorted(arrays)
            )
        )

    def to_json(self) -> bytes:
        """Canonical JSON: the same manifest gives the same bytes on every machine."""
        return _canonical_json(self.model_dump(mode="json"))

    def sha256(self) -> str:
        """Hex SHA-256 of `to_json()`."""
        return hashlib.sha256(self.to_json()).hexdigest()

    def check(self, received: Manifest) -> None:
        """Raise SecurityError naming the first tensor of `received` that differs from this one."""
        expected = {spec.name: spec for spec in self.tensors}
        actual = {spec.name: spec for spec in received.tensors}
        for name, want in expected.items():
            got = actual.get(name)
            if got is None:
                raise SecurityError(f"tensor {name!r} missing")
            if got.shape != want.shape:
                raise SecurityError(
                    f"tensor {name!r} shape mismatch: expected {want.shape}, received {got.shape}"
                )
            if got.dtype != want.dtype:
                raise SecurityError(
                    f"tensor {name!r} dtype mismatch: expected {want.dtype}, received {got.dtype}"
                )
        unexpected = sorted(actual.keys() - expected.keys())
        if unexpected:
            raise SecurityError(f"unexpected tensor {unexpected[0]!r}")


class _Header(BaseModel):
    model_config = _WIRE

    context: UpdateContext
    manifest: Manifest
    signer: Name
    weight: int | None = Field(None, ge=1)


@dataclass(frozen=True)
class OpenedUpdate:
    """An update's tensors and the weight its institution signed and sealed with them."""

    arrays: dict[str, np.ndarray]
    weight: int | None
    """None for a masked update (its weight travels inside the masked vector)."""


@dataclass(frozen=True)
class _Envelope:
    header: _Header
    payload: memoryview
    signed: memoryview
    signature: bytes


def seal_update(
    arrays: Mapping[str, np.ndarray],
    ctx: UpdateContext,
    recipient_enc_pub: EncryptionPublicKey,
    sender_sign_priv: SigningPrivateKey,
    weight: int | None = None,
) -> bytes:
    """Seal an institution's adapter update to the aggregator and sign it as `ctx.node`,
    with its FedAvg `weight` in the signed header and the associated data."""
    _require_direction(ctx, "update")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int)
                               or weight < 1):
        raise ValueError(f"weight must be a positive int or None, got {weight!r}")
    manifest = Manifest.of(arrays)
    box = seal(recipient_enc_pub, _encode_tensors(arrays), _update_aad(ctx, manifest, weight))
    header = _Header(context=ctx, manifest=manifest, signer=ctx.node, weight=weight)
    return _pack(header, box.to_bytes(), sender_sign_priv)


def open_update(
    blob: bytes,
    expected: UpdateContext,
    recipient_enc_priv: EncryptionPrivateKey,
    signers: Mapping[str, SigningPublicKey],
    expected_manifest: Manifest | None = None,
) -> dict[str, np.ndarray]:
    """The tensors of an institution's update (`open_weighted_update` without the weight)."""
    return open_weighted_update(blob, expected, recipient_enc_priv, signers,
                                expected_manifest).arrays


def open_weighted_update(
    blob: bytes,
    expected: UpdateContext,
    recipient_enc_priv: EncryptionPrivateKey,
    signers: Mapping[str, SigningPublicKey],
    expected_manifest: Manifest | None = None,
) -> OpenedUpdate:
    """An institution's update and its sealed weight, or SecurityError saying which check
    refused it.

    Checks run cheapest and least trusting first, so an anonymous blob costs one signature
    check at most: parse, known signer, signature, signer speaks for its own node, context,
    expected manifest, decryption, then the decrypted tensors against the signed manifest.
    `signers` maps institution names to their keys; leaving a name out revokes it.
    """
    _require_direction(expected, "update")
    with _refusing("update"):
        envelope = _unpack(blob)
        box = SealedBox.from_bytes(envelope.payload)
        signer = envelope.header.signer
        public_key = signers.get(signer)
        if public_key is None:
            raise SecurityError(f"unknown signer {signer!r}")
    with _refusing(f"update from {signer!r}"):
        verify(public_key, envelope.signature, _signing_input(envelope.signed))
        header = envelope.header
        if header.context.node != signer:
            raise SecurityError(f"signer {signer!r} cannot sign for node {header.context.node!r}")
        _check_context(header.context, expected, "sealed")
        if expected_manifest is not None:
            expected_manifest.check(header.manifest)
        plaintext = open_sealed(
            recipient_enc_priv, box, _update_aad(header.context, header.manifest, header.weight)
        )
        return OpenedUpdate(_decode_tensors(plaintext, header.manifest), header.weight)


def sign_global(
    arrays: Mapping[str, np.ndarray],
    ctx: UpdateContext,
    server_sign_priv: SigningPrivateKey,
) -> bytes:
    """Sign the aggregated adapter for the institution `ctx.node` (in the clear: TLS hides it)."""
    _require_direction(ctx, "global")
    header = _Header(context=ctx, manifest=Manifest.of(arrays), signer=SERVER_SIGNER)
    return _pack(header, _encode_tensors(arrays), server_sign_priv)


def verify_global(
    blob: bytes,
    expected_ctx: UpdateContext,
    server_sign_pub: SigningPublicKey,
    expected_manifest: Manifest | None = None,
) -> dict[str, np.ndarray]:
    """The tensors of the server's global adapter, or SecurityError naming the failed check."""
    _require_direction(expected_ctx, "global")
    with _refusing("global adapter"):
        envelope = _unpack(blob)
        if envelope.header.signer != SERVER_SIGNER:
            raise SecurityError(f"unknown signer {envelope.header.signer!r}")
        verify(server_sign_pub, envelope.signature, _signing_input(envelope.signed))
        _check_context(envelope.header.context, expected_ctx, "signed")
        if expected_manifest is not None:
            expected_manifest.check(envelope.header.manifest)
        return _decode_tensors(envelope.payload, envelope.header.manifest)


_CONTEXT_LABELS = {
    "federation_id": "federation",
    "run_id": "run",
    "server_round": "round",
    "node": "node",
    "direction": "direction",
}


def _check_context(received: UpdateContext, expected: UpdateContext, verb: str) -> None:
    for field, label in _CONTEXT_LABELS.items():
        got, want = getattr(received, field), getattr(expected, field)
        if got != want:
            raise SecurityError(
                f"{label} mismatch: {verb} for {label} {_show(got)}, expected {_show(want)}"
            )


def _show(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _require_direction(ctx: UpdateContext, direction: str) -> None:
    if not isinstance(ctx, UpdateContext):
        raise TypeError(f"expected an UpdateContext, got {type(ctx).__name__}")
    if ctx.direction != direction:
        raise ValueError(f"context direction is {ctx.direction!r}, this call needs {direction!r}")


@contextlib.contextmanager
def _refusing(what: str) -> Iterator[None]:
    """Prefix every refusal inside with what was refused, keeping the message to one line."""
    try:
        yield
    except SecurityError as err:
        raise SecurityError(f"{what} refused: {err}") from None


def _update_aad(ctx: UpdateContext, manifest: Manifest, weight: int | None) -> bytes:
    return _canonical_json({"context": ctx.model_dump(mode="json"),
                            "manifest_sha256": manifest.sha256(), "weight": weight})


_BLOB_SLACK = 64 * 1024
"""Room for the envelope's prefix, context, signer, sealed-box overhead, signature and the
safetensors header beyond twice the manifest's JSON: far more than they take, far less than
what would matter to the aggregator's memory."""


def max_update_size(manifest: Manifest) -> int:
    """The largest blob an honest update of `manifest` can be: a bound the aggregator checks
    before it hashes, copies or decrypts anything, so an oversized blob costs it nothing."""
    data = sum(int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
               for spec in manifest.tensors)
    return data + 2 * len(manifest.to_json()) + _BLOB_SLACK


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


def _encode_tensors(arrays: Mapping[str, np.ndarray]) -> bytes:
    # safetensors copies raw memory from the data pointer: a strided view would be stored
    # as the wrong numbers, so make each array C-contiguous first (a no-op when it is).
    return safetensors.numpy.save(
        {
            name: array if array.flags.c_contiguous else array.copy(order="C")
            for name, array in arrays.items()
        }
    )


def _decode_tensors(data: bytes | memoryview, manifest: Manifest) -> dict[str, np.ndarray]:
    try:
        arrays = safetensors.numpy.load(bytes(data))
    except SafetensorError:
        raise SecurityError("malformed tensor data") from None
    if any(array.dtype.name not in SUPPORTED_DTYPES for array in arrays.values()):
        raise SecurityError("tensor data holds an unsupported dtype")
    manifest.check(Manifest.of(arrays))
    return {spec.name: arrays[spec.name] for spec in manifest.tensors}


def _pack(header: _Header, payload: bytes, key: SigningPrivateKey) -> bytes:
    header_json = _canonical_json(header.model_dump(mode="json"))
    prefix = (
        MAGIC
        + bytes([FORMAT_VERSION])
        + len(header_json).to_bytes(_LENGTH_SIZE, "big")
        + header_json
    )
    digest = hashlib.sha256(prefix)
    digest.update(payload)
    return b"".join([prefix, payload, sign(key, SIGNATURE_CONTEXT + digest.digest())])


def _signing_input(signed: memoryview) -> bytes:
    return SIGNATURE_CONTEXT + hashlib.sha256(signed).digest()


def _unpack(blob: bytes) -> _Envelope:
    if not isinstance(blob, bytes):
        raise TypeError(f"blob must be bytes, got {type(blob).__name__}")
    view = memoryview(blob)
    if len(view) < _PREFIX_SIZE + SIGNATURE_SIZE:
        raise SecurityError("malformed envelope: truncated")
    if view[: len(MAGIC)] != MAGIC:
        raise SecurityError("malformed envelope: not a fedpeft envelope")
    if view[len(MAGIC)] != FORMAT_VERSION:
        raise SecurityError(f"malformed envelope: unsupported version {view[len(MAGIC)]}")
    header_size = int.from_bytes(view[len(MAGIC) + 1 : _PREFIX_SIZE], "big")
    if header_size > MAX_HEADER_SIZE:
        raise SecurityError("malformed envelope: header too large")
    payload_start = _PREFIX_SIZE + header_size
    if payload_start > len(view) - SIGNATURE_SIZE:
        raise SecurityError("malformed envelope: truncated")
    try:
        header = _Header.model_validate_json(view[_PREFIX_SIZE:payload_start].tobytes())
    except ValidationError:
        raise SecurityError("malformed envelope: invalid header") from None
    return _Envelope(
        header=header,
        payload=view[payload_start:-SIGNATURE_SIZE],
        signed=view[:-SIGNATURE_SIZE],
        signature=view[-SIGNATURE_SIZE:].tobytes(),
    )

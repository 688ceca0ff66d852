"""How the secure-aggregation stages travel inside Flower messages; shared by server and client.

A round under secure aggregation is five exchanges of Flower's Message API, all of category
"train" so every institution's ClientApp routes them (`train.<action>`):

1. `secagg_setup`: the parameters and the institution's protocol id; it answers with two fresh
   X25519 public keys, its name and its signature over them.
2. `secagg_share`: its neighbours' signed public keys; it answers with one AES-GCM ciphertext
   of Shamir shares per neighbour (only the neighbour can read it).
3. the ordinary `train` message, plus the ciphertexts addressed to it; it answers with its
   masked update instead of its adapter.
4. `secagg_confirm`: the list of institutions whose masked update was summed; it answers with
   its signature over that list (the consistency check).
5. `secagg_unmask`: its share holders' signatures over the same list; it answers with the
   shares the server needs to remove the masks of the sum, and nothing more.

Institutions are numbered 1..n within a round (`secagg-id`): Shamir x-coordinates must be small
non-zero field elements, and Flower's 64-bit node ids do not fit a signed config integer.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import ConfigRecord
from flwr.app.typing import ConfigRecordValues

from fedpeft.common.crypto.secagg import AdvertisedKeys, SignedKeys
from fedpeft.common.errors import SecurityError

RECORD = "secagg"
"""The ConfigRecord holding a stage's inputs (server to client) or outputs (client to server)."""

SETUP = "train.secagg_setup"
SHARE = "train.secagg_share"
CONFIRM = "train.secagg_confirm"
UNMASK = "train.secagg_unmask"
ACTIONS = {SETUP: "secagg_setup", SHARE: "secagg_share", CONFIRM: "secagg_confirm",
           UNMASK: "secagg_unmask"}

MASKED_ARRAY = "secagg-masked"
"""The one array of a masked update: the masked ring vector (values, then the example count),
packed into ring_bits / 8 bytes per element (`pack`)."""

ID = "secagg-id"
IDS = "ids"
CIPHER_KEYS = "cipher-keys"
MASK_KEYS = "mask-keys"
NAMES = "names"
SIGNATURES = "signatures"
PAYLOADS = "payloads"
SURVIVORS = "survivors"
SIGNATURE = "signature"
CLIPPED = "secagg-clipped"
"""Reply metric: how many update values fell outside secure_aggregation.clip_range."""

UNSEALED_FEDERATION = "unsealed"
"""The federation id in round contexts when a run exchanges unsealed updates (no bundle)."""

STATE = "fedpeft-secagg"
"""Key of the institution's protocol state in Flower's `Context.state` (stays on its node)."""


def round_context(federation_id: str, run_id: int, server_round: int) -> bytes:
    """What every key, seed and ciphertext of one round is bound to."""
    return f"fedpeft-secagg|{federation_id}|{run_id}|{server_round}".encode()


def non_empty(values: Mapping[str, ConfigRecordValues]) -> dict[str, ConfigRecordValues]:
    """`values` without empty lists: Flower's ConfigRecord cannot size an empty list, so an
    absent key stands for one (the readers below treat it so)."""
    return {key: value for key, value in values.items() if value != []}


def keys_record(keys: Mapping[int, SignedKeys]) -> dict[str, ConfigRecordValues]:
    """Signed public keys by protocol id, as parallel lists a ConfigRecord can hold.

    Names and signatures are left out when any is empty (institutions without an identity):
    Flower cannot size an empty string, and a reader then sees every key as unsigned.
    """
    ids = sorted(keys)
    record: dict[str, ConfigRecordValues] = {
        IDS: ids,
        CIPHER_KEYS: [keys[i].keys.cipher_public for i in ids],
        MASK_KEYS: [keys[i].keys.mask_public for i in ids],
    }
    if all(keys[i].name and keys[i].signature for i in ids):
        record.update({NAMES: [keys[i].name for i in ids],
                       SIGNATURES: [keys[i].signature for i in ids]})
    return non_empty(record)


def read_keys(record: ConfigRecord) -> dict[int, SignedKeys]:
    """The inverse of `keys_record`; SecurityError when the lists do not line up."""
    ids = read_ids(record, IDS)
    cipher = _bytes_list(record, CIPHER_KEYS, len(ids))
    mask = _bytes_list(record, MASK_KEYS, len(ids))
    unsigned = NAMES not in record and SIGNATURES not in record
    names = [""] * len(ids) if unsigned else _str_list(record, NAMES, len(ids))
    signatures = [b""] * len(ids) if unsigned else _bytes_list(record, SIGNATURES, len(ids))
    return {i: SignedKeys(AdvertisedKeys(cipher_public=c, mask_public=m), name, signature)
            for i, c, m, name, signature in zip(ids, cipher, mask, names, signatures)}


def payloads_record(payloads: Mapping[int, bytes]) -> dict[str, ConfigRecordValues]:
    """Opaque byte strings by protocol id (share ciphertexts, shares or signatures); empty
    ones (the signatures of institutions without an identity) are left out."""
    ids = sorted(i for i, payload in payloads.items() if payload)
    return non_empty({IDS: ids, PAYLOADS: [payloads[i] for i in ids]})


def read_payloads(record: ConfigRecord) -> dict[int, bytes]:
    """The inverse of `payloads_record`."""
    ids = read_ids(record, IDS)
    return dict(zip(ids, _bytes_list(record, PAYLOADS, len(ids))))


def element_bytes(ring_bits: int) -> int:
    """Bytes per packed ring element: a 48-bit ring costs 6 bytes a value, not 8."""
    return (ring_bits + 7) // 8


def pack(vector: np.ndarray, ring_bits: int) -> np.ndarray:
    """A uint64 ring vector as uint8, keeping only the low `element_bytes` of each element
    (the rest are zero: every element is reduced modulo 2**ring_bits)."""
    width = element_bytes(ring_bits)
    rows = np.ascontiguousarray(vector, dtype="<u8").view(np.uint8).reshape(-1, 8)
    return np.ascontiguousarray(rows[:, :width]).reshape(-1)


def unpack(data: np.ndarray, ring_bits: int) -> np.ndarray:
    """The inverse of `pack`."""
    width = element_bytes(ring_bits)
    if data.size % width:
        raise SecurityError(f"masked update: {data.size} bytes is not a whole number of "
                            f"{width}-byte ring elements")
    rows = np.zeros((data.size // width, 8), dtype=np.uint8)
    rows[:, :width] = data.reshape(-1, width)
    return rows.view("<u8").reshape(-1).astype(np.uint64, copy=False)


def masked_manifest_size(values: int, ring_bits: int) -> int:
    """Bytes of the packed masked vector of an update with `values` values."""
    return (values + 1) * element_bytes(ring_bits)


def masked_vector(state: Mapping[str, np.ndarray], ring_bits: int) -> np.ndarray:
    """The masked ring vector of an opened reply; SecurityError if it is anything else."""
    if list(state) != [MASKED_ARRAY]:
        raise SecurityError(f"a masked update holds exactly one array {MASKED_ARRAY!r}")
    data = state[MASKED_ARRAY]
    if data.dtype != np.uint8 or data.ndim != 1:
        raise SecurityError(
            f"masked update: expected packed 1-d uint8 bytes, got {data.dtype} {data.shape}"
        )
    return unpack(data, ring_bits)


def flatten(state: Mapping[str, np.ndarray]) -> np.ndarray:
    """All tensors in name order as one float64 vector (the order both sides agree on)."""
    if not state:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([np.asarray(state[k], dtype=np.float64).ravel() for k in sorted(state)])


def unflatten(vector: np.ndarray, like: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`vector` cut into the shapes and dtypes of `like`, in `like`'s key order."""
    sizes = {k: int(like[k].size) for k in sorted(like)}
    if vector.size != sum(sizes.values()):
        raise SecurityError(
            f"aggregate has {vector.size} values, the adapter {sum(sizes.values())}"
        )
    out: dict[str, np.ndarray] = {}
    offset = 0
    for key in sorted(like):
        part = vector[offset:offset + sizes[key]]
        out[key] = part.reshape(like[key].shape).astype(like[key].dtype, copy=False)
        offset += sizes[key]
    return {key: out[key] for key in like}


def read_ids(record: ConfigRecord, key: str) -> list[int]:
    """A list of distinct protocol ids (absent: empty)."""
    value = record.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise SecurityError(f"secure aggregation record: {key!r} must be a list of integers")
    if len(set(value)) != len(value):
        raise SecurityError(f"secure aggregation record: {key!r} repeats an id")
    return [v for v in value if isinstance(v, int)]


def signature_record(signature: bytes) -> dict[str, ConfigRecordValues]:
    """A confirmation; nothing for an institution without an identity (an empty signature)."""
    return {SIGNATURE: signature} if signature else {}


def read_signature(record: ConfigRecord) -> bytes:
    """The inverse of `signature_record`."""
    value = record.get(SIGNATURE, b"")
    if not isinstance(value, bytes):
        raise SecurityError(f"secure aggregation record: {SIGNATURE!r} must be bytes")
    return value


def _str_list(record: ConfigRecord, key: str, length: int) -> list[str]:
    value = record.get(key, [])
    if (not isinstance(value, list) or len(value) != length
            or not all(isinstance(v, str) for v in value)):
        raise SecurityError(f"secure aggregation record: {key!r} must be {length} strings")
    return [str(v) for v in value]


def _bytes_list(record: ConfigRecord, key: str, length: int) -> list[bytes]:
    value = record.get(key, [])
    if (not isinstance(value, list) or len(value) != length
            or not all(isinstance(v, bytes) for v in value)):
        raise SecurityError(
            f"secure aggregation record: {key!r} must be {length} byte strings"
        )
    return [v for v in value if isinstance(v, bytes)]

"""A malicious institution (or a relay) answers one secure-aggregation stage with a malformed
payload (issue #14): the strategy refuses that reply, records the node and a reason naming the
field or value at fault, and the round goes on without it. What cannot be blamed on one node
aborts the round instead; in no case does the run end with an exception."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from tests.unit.secure_aggregation.conftest import (
    Forgery,
    TamperingGrid,
    expected_mean,
    make_strategy,
    run_round,
    with_masked,
    with_record,
)

from fedpeft.common.crypto.secagg import quantization_bound
from fedpeft.common.wire import secagg as wire
from fedpeft.common.wire.names import ARRAYS, METRICS

VICTIM = 102
"""The attacking institution's Flower node id (of 100..104)."""


def _record(reply: Message) -> dict[str, object]:
    return dict(reply.content.config_records[wire.RECORD])


def _ids(reply: Message) -> list[int]:
    ids = _record(reply)[wire.IDS]
    assert isinstance(ids, list)
    return [int(i) for i in ids]


def _payloads(reply: Message) -> list[bytes]:
    payloads = _record(reply)[wire.PAYLOADS]
    assert isinstance(payloads, list)
    return [bytes(p) for p in payloads]


def _attack(tmp_path: Path, stage: str, forgery: Forgery
            ) -> tuple[ArrayRecord | None, list[dict[str, object]], np.ndarray]:
    """One round of five institutions (one dropout allowed) in which VICTIM's reply to `stage`
    is forged; returns the new global, the recorded failures and the global without VICTIM."""
    strategy, recorder, updates, current = make_strategy(tmp_path, 5, 10, max_dropouts=1)
    arrays, _ = run_round(strategy, TamperingGrid(updates, {(stage, VICTIM): forgery}), current)
    failures = recorder.close(1, {}, 0.0)["failures"]
    others = [node for node in updates if node != VICTIM]
    if stage in (wire.CONFIRM, wire.UNMASK):  # its masked update is already in the sum
        others = list(updates)
    return arrays, failures, expected_mean(updates, others, current)


def _assert_refused(arrays: ArrayRecord | None, failures: list[dict[str, object]],
                    expected: np.ndarray, reason: str) -> None:
    assert failures == [{"node_id": VICTIM, "phase": "secure-aggregation", "reason": reason}]
    assert arrays is not None, "the round goes on without the refused institution"
    np.testing.assert_allclose(arrays["w"].numpy(), expected,
                               atol=quantization_bound(2.0, 20) + 1e-6)


# -- stage 1: key advertisement ------------------------------------------------------------
SETUP_FORGERIES: list[tuple[str, Callable[[Message], Message], str]] = [
    ("ids that are not integers", lambda r: with_record(r, **{wire.IDS: ["1"]}),
     "secure aggregation record: 'ids' must be a list of integers"),
    ("a mask key missing", lambda r: with_record(r, **{wire.MASK_KEYS: None}),
     "secure aggregation record: 'mask-keys' must be 1 byte strings"),
    ("two cipher keys for one id",
     lambda r: with_record(r, **{wire.CIPHER_KEYS: _record(r)[wire.CIPHER_KEYS] * 2}),
     "secure aggregation record: 'cipher-keys' must be 1 byte strings"),
    ("keys under another id", lambda r: with_record(r, **{wire.IDS: [99]}),
     "keys for protocol ids [99], expected its own only ({sid})"),
    ("keys for itself and another id",
     lambda r: with_record(r, **{wire.IDS: [*_ids(r), 99],
                                 wire.CIPHER_KEYS: _record(r)[wire.CIPHER_KEYS] * 2,
                                 wire.MASK_KEYS: _record(r)[wire.MASK_KEYS] * 2}),
     "keys for protocol ids [{sid}, 99], expected its own only ({sid})"),
]


@pytest.mark.parametrize(("forgery", "reason"), [(f, r) for _, f, r in SETUP_FORGERIES],
                         ids=[name for name, _, _ in SETUP_FORGERIES])
def test_a_malformed_key_advertisement_is_refused(
        tmp_path: Path, forgery: Forgery, reason: str) -> None:
    sent: list[int] = []

    def forge(reply: Message) -> Message:
        sent.extend(_ids(reply))  # its protocol id, as the honest reply states it
        return forgery(reply)

    arrays, failures, expected = _attack(tmp_path, wire.SETUP, forge)
    reason = reason.format(sid=sent[0])
    _assert_refused(arrays, failures, expected, f"key advertisement refused: {reason}")


def _public_key() -> bytes:
    return X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_two_institutions_advertising_one_public_key_abort_the_round(tmp_path: Path) -> None:
    """The server cannot tell which of the two copied the other's key: the round is aborted
    (and recorded), the global kept, and the run goes on."""
    shared = _public_key()
    copy: Forgery = lambda reply: with_record(reply, **{wire.MASK_KEYS: [shared]})  # noqa: E731
    strategy, recorder, updates, current = make_strategy(tmp_path, 5, 10, max_dropouts=1)
    grid = TamperingGrid(updates, {(wire.SETUP, 101): copy, (wire.SETUP, VICTIM): copy})
    assert run_round(strategy, grid, current) == (None, None)
    record = recorder.close(1, {}, 0.0)
    (failure,) = record["failures"]
    assert failure["node_id"] is None and failure["phase"] == "secure-aggregation"
    assert "advertised a public key already used by node" in failure["reason"]
    assert record["secure_aggregation"]["aborted"] in failure["reason"]
    assert not [m for m in grid.seen if m.array_records], "no institution was asked to train"


# -- stage 2: share bundles ----------------------------------------------------------------
def test_share_bundles_addressed_to_other_than_its_neighbours_are_refused(
        tmp_path: Path) -> None:
    honest: list[int] = []

    def forge(reply: Message) -> Message:
        honest.extend(_ids(reply))
        return with_record(reply, **{wire.IDS: [*_ids(reply)[:-1], 77]})

    arrays, failures, expected = _attack(tmp_path, wire.SHARE, forge)
    forged = sorted([*honest[:-1], 77])
    _assert_refused(arrays, failures, expected,
                    f"key shares refused: bundles addressed to {forged}, not to its "
                    f"neighbours {sorted(honest)}")


@pytest.mark.parametrize(("values", "reason"), [
    (lambda r: {wire.PAYLOADS: _payloads(r)[:-1]}, "'payloads' must be {count} byte strings"),
    (lambda r: {wire.PAYLOADS: [p.hex() for p in _payloads(r)]},
     "'payloads' must be {count} byte strings"),
    (lambda r: {wire.IDS: [_ids(r)[0]] * len(_ids(r))}, "'ids' repeats an id"),
], ids=["one ciphertext short", "text instead of bytes", "one neighbour repeated"])
def test_malformed_share_bundles_are_refused(
        tmp_path: Path, values: Callable[[Message], dict[str, object]], reason: str) -> None:
    count: list[int] = []

    def forge(reply: Message) -> Message:
        count.append(len(_ids(reply)))
        return with_record(reply, **values(reply))  # type: ignore[arg-type]

    arrays, failures, expected = _attack(tmp_path, wire.SHARE, forge)
    _assert_refused(arrays, failures, expected,
                    "key shares refused: secure aggregation record: "
                    + reason.format(count=count[0]))


# -- stage 3: the masked update ------------------------------------------------------------
def _without_arrays(reply: Message) -> Message:
    return make_message(reply.metadata, RecordDict({METRICS: MetricRecord({"loss": 1.0})}))


def _two_arrays(reply: Message) -> Message:
    packed = reply.content.array_records[ARRAYS][wire.MASKED_ARRAY].numpy()
    content = RecordDict(dict(reply.content.items()))
    content[ARRAYS] = ArrayRecord({wire.MASKED_ARRAY: Array(packed), "w": Array(packed)})
    return make_message(reply.metadata, content)


def _packed(reply: Message) -> np.ndarray:
    return reply.content.array_records[ARRAYS][wire.MASKED_ARRAY].numpy()


MASKED_FORGERIES: list[tuple[str, Forgery, str]] = [
    ("no arrays record", _without_arrays, "no 'arrays' record"),
    ("a second array", _two_arrays,
     "a masked update holds exactly one array 'secagg-masked'"),
    ("floats instead of packed bytes",
     lambda r: with_masked(r, _packed(r).astype(np.float32)),
     "masked update: expected packed 1-d uint8 bytes, got float32 (66,)"),
    ("a partial ring element", lambda r: with_masked(r, _packed(r)[:-1]),
     "masked update: 65 bytes is not a whole number of 6-byte ring elements"),
    ("one ring element short", lambda r: with_masked(r, _packed(r)[:-6]),
     "10 ring elements, expected 11"),
    ("one ring element too many",
     lambda r: with_masked(r, np.concatenate([_packed(r), _packed(r)[:6]])),
     "12 ring elements, expected 11"),
]


@pytest.mark.parametrize(("forgery", "reason"), [(f, r) for _, f, r in MASKED_FORGERIES],
                         ids=[name for name, _, _ in MASKED_FORGERIES])
def test_a_malformed_masked_update_is_refused(
        tmp_path: Path, forgery: Forgery, reason: str) -> None:
    arrays, failures, expected = _attack(tmp_path, "train", forgery)
    _assert_refused(arrays, failures, expected, f"masked update refused: {reason}")


# -- consistency check and unmasking -------------------------------------------------------
def test_a_confirmation_whose_signature_is_not_bytes_is_refused(tmp_path: Path) -> None:
    forge: Forgery = lambda reply: with_record(reply, **{wire.SIGNATURE: "signed"})  # noqa: E731
    arrays, failures, expected = _attack(tmp_path, wire.CONFIRM, forge)
    _assert_refused(arrays, failures, expected, "confirmation refused: secure aggregation "
                    "record: 'signature' must be bytes")


def test_shares_released_for_a_node_it_was_not_asked_about_are_refused(
        tmp_path: Path) -> None:
    forge: Forgery = lambda reply: with_record(reply, **{  # noqa: E731
        wire.IDS: [*_ids(reply), 99], wire.PAYLOADS: [*_payloads(reply), bytes(40)]})
    arrays, failures, expected = _attack(tmp_path, wire.UNMASK, forge)
    _assert_refused(arrays, failures, expected, "unmasking shares refused: shares of nodes "
                    "[99] it was not asked for")


def test_unmasking_shares_that_are_not_bytes_are_refused(tmp_path: Path) -> None:
    count: list[int] = []

    def forge(reply: Message) -> Message:
        count.append(len(_ids(reply)))
        return with_record(reply, **{wire.PAYLOADS: [p.hex() for p in _payloads(reply)]})

    arrays, failures, expected = _attack(tmp_path, wire.UNMASK, forge)
    _assert_refused(arrays, failures, expected, "unmasking shares refused: secure aggregation "
                    f"record: 'payloads' must be {count[0]} byte strings")


def test_shares_that_rebuild_no_consistent_secret_abort_the_round(tmp_path: Path) -> None:
    """Well-formed shares with wrong values cannot be blamed on their sender (Shamir shares are
    not authenticated): the round is aborted and recorded, not the run ended."""
    forge: Forgery = lambda reply: with_record(reply, **{  # noqa: E731
        wire.PAYLOADS: [bytes([1]) * len(p) for p in _payloads(reply)]})
    arrays, failures, _ = _attack(tmp_path, wire.UNMASK, forge)
    assert arrays is None
    (failure,) = failures
    assert failure["node_id"] is None
    assert str(failure["reason"]).startswith("round aborted: ")
    assert "inconsistent" in str(failure["reason"])

"""Whole SecAgg+ rounds in one process: the server gets the weighted mean of the survivors and
nothing it should not, dropouts up to the configured limit are tolerated, and beyond it the
round aborts with a message that names the setting."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from tests.unit.secagg.conftest import Federation, make_params

from fedpeft.common.crypto.secagg import (
    SecAggClient,
    encode,
    split,
)
from fedpeft.common.errors import RoundAborted, SecurityError

MAX_DROPOUTS = {2: 0, 3: 1, 5: 1, 20: 2}
"""A valid max_dropouts per federation size (threshold = degree + 1 - max_dropouts >= 2)."""


@pytest.mark.parametrize("count", [3, 5, 20])
@pytest.mark.parametrize("size", [1, 1000, 100_000])
def test_aggregate_is_the_weighted_mean_within_the_quantization_bound(
    count: int, size: int
) -> None:
    federation = Federation(count, MAX_DROPOUTS[count], size=size)
    result = federation.run()
    federation.assert_mean_of(result, federation.ids)
    assert result.dropped == ()
    assert result.mean.shape == (size,)


def test_two_institutions_without_dropout_tolerance() -> None:
    federation = Federation(2, 0)
    federation.assert_mean_of(federation.run(), federation.ids)


def test_unsigned_rounds_still_sum_correctly() -> None:
    """Without identities (an unsealed run) the arithmetic is the same, nothing is checked."""
    federation = Federation(5, 1, signed=False)
    federation.assert_mean_of(federation.run(no_vector=[2]), [1, 3, 4, 5])


def test_small_ring_round() -> None:
    federation = Federation(5, 1, size=1000, ring_bits=32, bits=8, max_weight=60)
    federation.assert_mean_of(federation.run(), federation.ids)


@pytest.mark.parametrize(("count", "max_dropouts"), [(3, 1), (5, 1), (20, 2), (20, 3)])
def test_dropouts_before_masking_up_to_the_limit(count: int, max_dropouts: int) -> None:
    """Nodes that shared keys but sent no vector are left out; their masks are removed."""
    federation = Federation(count, max_dropouts, size=1000)
    gone = federation.ids[:max_dropouts]
    result = federation.run(no_vector=gone)
    survivors = [n for n in federation.ids if n not in gone]
    federation.assert_mean_of(result, survivors)
    assert result.dropped == tuple(sorted(gone))


def test_nodes_missing_from_the_key_exchange_are_out_of_the_round() -> None:
    federation = Federation(5, 1, size=1000)
    result = federation.run(missing_keys=federation.ids[:1])
    federation.assert_mean_of(result, federation.ids[1:])
    assert result.dropped == ()


@pytest.mark.parametrize(
    ("count", "max_dropouts", "before", "after"), [(5, 1, 0, 1), (20, 2, 1, 1), (20, 2, 0, 2)]
)
def test_dropouts_after_masking_are_included_in_the_sum(
    count: int, max_dropouts: int, before: int, after: int
) -> None:
    """A node that sent its masked vector is a survivor even if it never answers stage 4."""
    federation = Federation(count, max_dropouts, size=1000)
    no_vector, silent = federation.ids[:before], federation.ids[before : before + after]
    result = federation.run(no_vector=no_vector, silent_unmask=silent)
    federation.assert_mean_of(result, [n for n in federation.ids if n not in no_vector])
    assert set(silent) <= set(result.survivors)
    assert result.dropped == tuple(sorted(no_vector))


TOO_FEW = r"of node \d+ .*: 3 of 4 shares available; .* secure_aggregation\.max_dropouts allows"
TOO_MANY = r"2 of 5 institutions dropped out .*; more than secure_aggregation\.max_dropouts=1"


def test_too_many_dropouts_before_masking_abort_the_round() -> None:
    federation = Federation(5, 1)
    federation.exchange()
    with pytest.raises(RoundAborted, match=TOO_MANY):
        federation.mask(federation.ids[2:])


def test_dropouts_are_counted_in_total_not_per_node() -> None:
    """One institution misses the key exchange and another sends no vector: each node still
    has enough share holders, but two of five are missing from the sum, more than allowed."""
    federation = Federation(5, 1)
    sharers = federation.exchange(missing_keys=[1])
    with pytest.raises(RoundAborted, match=TOO_MANY + " allows"):
        federation.mask([n for n in sharers if n != 2])


def test_too_many_dropouts_after_masking_abort_the_round() -> None:
    federation = Federation(5, 1)
    federation.exchange()
    survivors, _ = federation.mask(federation.ids)
    with pytest.raises(RoundAborted, match="self-mask seed " + TOO_FEW):
        federation.unmask(survivors, silent=federation.ids[:2])


def test_one_dropout_on_each_side_of_masking_exceeds_a_limit_of_one() -> None:
    federation = Federation(5, 1)
    federation.exchange()
    survivors, _ = federation.mask(federation.ids[1:])
    with pytest.raises(RoundAborted, match=TOO_FEW):
        federation.unmask(survivors, silent=federation.ids[1:2])


@pytest.mark.parametrize("stage", ["keys", "shares"])
def test_too_many_dropouts_during_the_key_exchange_abort_the_round(stage: str) -> None:
    federation = Federation(5, 1)
    gone = federation.ids[:2]
    with pytest.raises(RoundAborted, match=TOO_MANY):
        if stage == "keys":
            federation.exchange(missing_keys=gone)
        else:
            federation.exchange(silent_shares=gone)


@pytest.mark.parametrize(("ring_bits", "bits"), [(32, 8), (64, 24)])
def test_a_masked_vector_is_uniform_and_hides_the_plaintext(
    ring_bits: int, bits: int, assert_bytes_uniform: Callable[[np.ndarray, int], None]
) -> None:
    federation = Federation(3, 1, size=100_000, ring_bits=ring_bits, bits=bits, max_weight=60)
    node = federation.ids[0]
    federation.values[node] = np.zeros(100_000)
    federation.weights[node] = 7
    federation.exchange()
    federation.mask(federation.ids)
    vector = federation.vectors[node]
    assert vector.dtype == np.uint64 and vector.size == 100_001
    assert_bytes_uniform(vector[:-1], ring_bits)
    levels, _ = encode(np.zeros(100_000), federation.params.clip_range, bits)
    assert np.count_nonzero(vector[:-1] == levels * np.uint64(7)) == 0
    assert int(vector[-1]) != 7


def test_state_round_trip_between_every_step_gives_the_same_round() -> None:
    direct, persisted = Federation(5, 1, size=1000), Federation(5, 1, size=1000, persist=True)
    results = [federation.run(no_vector=federation.ids[:1]) for federation in (direct, persisted)]
    assert direct.vectors.keys() == persisted.vectors.keys()
    for node, vector in direct.vectors.items():
        assert np.array_equal(vector, persisted.vectors[node])
    assert np.array_equal(results[0].mean, results[1].mean)
    assert results[0].total_weight == results[1].total_weight


def test_restored_state_still_refuses_a_second_unmask() -> None:
    federation = Federation(3, 1)
    federation.exchange()
    survivors, _ = federation.mask(federation.ids)
    forwarded = federation.confirm(survivors)
    node = survivors[0]
    federation.clients[node].unmask(forwarded[node])
    restored = SecAggClient.from_bytes(federation.clients[node].to_bytes(),
                                       federation.identities[node])
    with pytest.raises(SecurityError, match="refuses unmask"):
        restored.unmask(forwarded[node])


def test_a_signed_round_cannot_continue_without_the_identity() -> None:
    federation = Federation(3, 1)
    federation.exchange()
    with pytest.raises(SecurityError, match="started with the institution's identity"):
        SecAggClient.from_bytes(federation.clients[1].to_bytes(), None)


@pytest.mark.parametrize("state", [b"", b"{}", b"not json", b'{"version": 2}'])
def test_malformed_client_state_is_refused(state: bytes) -> None:
    with pytest.raises(SecurityError, match="malformed secure-aggregation client state"):
        SecAggClient.from_bytes(state, None)


def test_client_state_with_secrets_missing_for_its_stage_is_refused() -> None:
    client = SecAggClient(2, make_params(3, 1), None)
    client.advertise()
    state = client.to_bytes().replace(b'"stage": "advertised"', b'"stage": "received"')
    with pytest.raises(SecurityError, match="malformed"):
        SecAggClient.from_bytes(state, None)


@pytest.fixture
def masked() -> Federation:
    """Five institutions that all sent their masked vectors (threshold 4)."""
    federation = Federation(5, 1)
    federation.exchange()
    federation.mask(federation.ids)
    return federation


def test_client_signs_one_survivor_list_and_releases_one_secret_per_node(
        masked: Federation) -> None:
    client = masked.clients[1]
    with pytest.raises(SecurityError, match="missing from the survivors"):
        client.confirm_survivors([2, 3, 4, 5])
    with pytest.raises(SecurityError, match="malformed survivor list"):
        client.confirm_survivors([1, 2, 3, 4, 99])
    forwarded = masked.confirm(masked.ids)
    with pytest.raises(SecurityError, match="refuses confirm_survivors"):
        client.confirm_survivors([1, 2, 3, 4])
    released = client.unmask(forwarded[1])
    assert set(released) == {1, 2, 3, 4, 5}  # self-mask seed shares only: nobody dropped
    with pytest.raises(SecurityError, match="refuses unmask"):
        client.unmask(forwarded[1])


def test_client_refuses_more_dropouts_than_allowed_in_total(masked: Federation) -> None:
    with pytest.raises(SecurityError, match=r"2 of 5 institutions dropped out, more than "
                                            r"max_dropouts=1"):
        masked.clients[1].confirm_survivors([1, 2, 3])


def test_client_unmask_needs_threshold_confirmations(masked: Federation) -> None:
    forwarded = masked.confirm(masked.ids)
    with pytest.raises(SecurityError, match="only 3 of its share holders confirmed"):
        masked.clients[1].unmask({peer: sig for peer, sig in forwarded[1].items() if peer > 3})


def test_client_refuses_steps_out_of_order(masked: Federation) -> None:
    client = masked.clients[masked.ids[0]]
    with pytest.raises(SecurityError, match="refuses mask"):
        client.mask(np.zeros(100), 1)
    fresh = SecAggClient(2, masked.params, None)
    with pytest.raises(SecurityError, match="refuses unmask"):
        fresh.unmask({})


def test_mask_refuses_bad_weights() -> None:
    federation = Federation(3, 1)
    federation.exchange()
    client = federation.clients[federation.ids[0]]
    with pytest.raises(ValueError, match="at least 1"):
        client.mask(np.zeros(100), 0)
    with pytest.raises(ValueError, match=r"weight 1099511627776 .* 2\*\*64 ring"):
        client.mask(np.zeros(100), 2**40)  # ring 64 - 24 quantization bits: 2**40 in all
    assert client.mask(np.zeros(100), 2**40 - 1).vector.size == 101


def _exchanged_until_routing() -> tuple[Federation, dict[int, dict[int, bytes]]]:
    federation = Federation(5, 1)
    forwarded = federation.server.receive_keys(
        {n: federation.clients[n].advertise() for n in federation.ids}
    )
    sent = {n: federation.clients[n].share_keys(keys) for n, keys in forwarded.items()}
    return federation, federation.server.route_shares(sent)


def test_tampered_or_misattributed_share_ciphertext_is_refused() -> None:
    federation, inboxes = _exchanged_until_routing()
    node, inbox = next(iter(inboxes.items()))
    first, second = sorted(inbox)[:2]
    client = federation.clients[node]
    ciphertext = inbox[first]
    tampered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 0x01])
    for bad in ({**inbox, first: tampered}, {**inbox, first: inbox[second]}):
        with pytest.raises(SecurityError, match="failed authentication"):
            client.receive_shares(bad)
    with pytest.raises(SecurityError, match="not one of its neighbours"):
        client.receive_shares({**inbox, 424242: ciphertext})
    client.receive_shares(inbox)


def test_protocol_ids_outside_the_round_are_refused() -> None:
    with pytest.raises(SecurityError, match="not one of the round's 5 participants"):
        SecAggClient(6, make_params(5, 1), None)


def test_share_keys_refuses_repeated_keys_and_too_few_holders() -> None:
    federation = Federation(5, 1, signed=False)  # the key checks hold without identities too
    advertised = {n: federation.clients[n].advertise() for n in federation.ids}
    forwarded = federation.server.receive_keys(advertised)
    node = federation.ids[0]
    client = federation.clients[node]
    neighbours = forwarded[node]
    first, second = sorted(neighbours)[:2]
    with pytest.raises(SecurityError, match="already used by node"):
        client.share_keys({**neighbours, first: advertised[node]})
    with pytest.raises(SecurityError, match="already used by node"):
        client.share_keys({**neighbours, first: neighbours[second]})
    with pytest.raises(SecurityError, match=r"neighbours \[1\] that are not its neighbours"):
        client.share_keys({**neighbours, node: neighbours[first]})
    with pytest.raises(SecurityError, match="too few neighbours"):
        client.share_keys({first: neighbours[first]})
    assert set(client.share_keys(neighbours)) == set(neighbours)


def test_server_refuses_inconsistent_senders() -> None:
    federation = Federation(5, 1)
    advertised = {n: federation.clients[n].advertise() for n in federation.ids}
    node = federation.ids[0]
    with pytest.raises(SecurityError, match="already used by node"):
        federation.server.receive_keys({**advertised, federation.ids[1]: advertised[node]})
    with pytest.raises(SecurityError, match="node 31337"):
        federation.server.receive_keys({**advertised, 31337: advertised[node]})
    forwarded = federation.server.receive_keys(advertised)
    sent = {n: federation.clients[n].share_keys(keys) for n, keys in forwarded.items()}
    stranger = {**sent[node], 31337: b"x" * 40}
    with pytest.raises(SecurityError, match=f"node {node} addressed share bundles"):
        federation.server.route_shares({**sent, node: stranger})


@pytest.mark.parametrize(
    "bad",
    [np.zeros(50, dtype=np.uint64), np.zeros(101, dtype=np.int64), np.zeros((101, 1), np.uint64)],
)
def test_server_refuses_malformed_masked_vectors(bad: np.ndarray) -> None:
    federation = Federation(5, 1)
    federation.exchange()
    vectors = {n: federation.clients[n].mask(federation.values[n], 1).vector
               for n in federation.ids}
    node = federation.ids[-1]
    with pytest.raises(SecurityError, match=f"node {node} sent a masked vector"):
        federation.server.receive_masked({**vectors, node: bad})


def test_server_refuses_a_rebuilt_key_that_does_not_match_the_advertised_one() -> None:
    federation = Federation(5, 1)
    federation.exchange()
    survivors, dropped = federation.mask(federation.ids[1:])
    forwarded = federation.confirm(survivors)
    shares = {n: federation.clients[n].unmask(forwarded[n]) for n in survivors}
    forged = split(bytes(range(32)), federation.params.threshold, survivors)
    for node in survivors:
        shares[node][dropped[0]] = forged[node]
    with pytest.raises(SecurityError, match="does not match its advertised public key"):
        federation.server.unmask(shares)


def test_server_refuses_shares_it_did_not_ask_for(masked: Federation) -> None:
    forwarded = masked.confirm(masked.ids)
    shares = {n: masked.clients[n].unmask(forwarded[n]) for n in masked.ids}
    responder = masked.ids[0]
    shares[responder] = {**shares[responder], 424242: b"\x00" * 66}
    with pytest.raises(SecurityError, match=f"node {responder} released a share"):
        masked.server.unmask(shares)


def test_server_stages_run_in_order() -> None:
    federation = Federation(3, 1)
    with pytest.raises(RuntimeError, match="out of order"):
        federation.server.route_shares({})


def test_server_refuses_values_outside_a_small_ring() -> None:
    federation = Federation(5, 1, ring_bits=40, bits=16, max_weight=60)
    vectors = federation.masked_vectors()
    node = federation.ids[-1]
    outside = vectors[node].copy()
    outside[7:8] |= np.uint64(1 << 40)
    with pytest.raises(SecurityError, match=f"node {node} sent values outside"):
        federation.server.receive_masked({**vectors, node: outside})


def test_server_refuses_a_total_weight_below_one_per_survivor() -> None:
    federation = Federation(5, 1)
    total = sum(federation.weights.values())
    with pytest.raises(SecurityError, match="total weight 2 is below one per survivor"):
        federation.unmask_with_weight_shifted(2 - total)


def test_a_total_weight_that_overflows_the_ring_aborts_the_round() -> None:
    federation = Federation(5, 1, ring_bits=64, bits=24)
    with pytest.raises(RoundAborted, match="overflows the 2\\*\\*64 ring"):
        federation.unmask_with_weight_shifted(1 << 41)

"""Each refusal of the SecAgg+ server names the step, the node and what went wrong (issue #14:
the wording is built by helpers, so it is asserted here in full, stage by stage).

The server checks no signature and opens no ciphertext, so most rounds here are driven with
what a malicious institution could send it: made-up keys, bundles, vectors and signatures.
Five institutions, complete graph (degree 4), one dropout allowed: threshold 4, or 5 where a
test makes the threshold stricter than the dropouts allow to reach the holder checks.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from tests.unit.secagg.conftest import Federation, make_params

from fedpeft.common.crypto.secagg import (
    AdvertisedKeys,
    SecAggServer,
    SignedKeys,
    split,
)
from fedpeft.common.errors import RoundAborted, SecurityError

IDS = (1, 2, 3, 4, 5)
TOO_MANY = "; more than secure_aggregation.max_dropouts=1 allows"
TOO_FEW = "; more institutions dropped out than secure_aggregation.max_dropouts allows"


def _server(threshold: int | None = None) -> SecAggServer:
    return SecAggServer(make_params(5, 1, threshold=threshold))


def _keys(nodes: tuple[int, ...] = IDS) -> dict[int, SignedKeys]:
    return {n: SignedKeys(AdvertisedKeys(os.urandom(32), os.urandom(32)), "", b"")
            for n in nodes}


def _bundles(server: SecAggServer, senders: tuple[int, ...], keyed: tuple[int, ...] = IDS
             ) -> dict[int, dict[int, bytes]]:
    return {n: {peer: b"ciphertext" for peer in server.graph[n] if peer in keyed}
            for n in senders}


def _vectors(nodes: tuple[int, ...]) -> dict[int, np.ndarray]:
    return {n: np.zeros(3, dtype=np.uint64) for n in nodes}


def _at_masking(threshold: int | None = None) -> SecAggServer:
    server = _server(threshold)
    server.receive_keys(_keys())
    server.route_shares(_bundles(server, IDS))
    return server


def _at_confirmation(survivors: tuple[int, ...]) -> SecAggServer:
    server = _at_masking()
    server.receive_masked(_vectors(survivors))
    return server


def _exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def test_keys_from_a_node_outside_the_round_are_refused_naming_it() -> None:
    with pytest.raises(SecurityError, match=_exactly(
            "node 31337 sent advertised keys but is not expected to at this stage")):
        _server().receive_keys({**_keys(), 31337: _keys((1,))[1]})


def test_a_copied_public_key_names_both_nodes() -> None:
    keys = _keys()
    copied = SignedKeys(AdvertisedKeys(os.urandom(32), keys[2].keys.mask_public), "", b"")
    with pytest.raises(SecurityError, match=_exactly(
            "node 4 advertised a public key already used by node 2")):
        _server().receive_keys({**keys, 4: copied})


@pytest.mark.parametrize(("step", "call"), [
    ("receive_keys", lambda server: server.receive_keys(_keys())),
    ("route_shares", lambda server: server.route_shares(_bundles(server, IDS))),
])
def test_a_step_repeated_is_named_with_the_stage_the_round_is_at(step: str, call) -> None:  # type: ignore[no-untyped-def]
    server = _server()
    server.receive_keys(_keys())
    if step == "route_shares":
        call(server)
    stage = "SHARES" if step == "receive_keys" else "MASKED"
    with pytest.raises(RuntimeError, match=_exactly(
            f"{step} called out of order (the round is at stage {stage})")):
        call(server)


def test_a_second_unmask_is_refused_as_out_of_order() -> None:
    federation = Federation(5, 1)
    federation.run()
    with pytest.raises(RuntimeError, match=_exactly(
            "unmask called out of order (the round is at stage DONE)")):
        federation.server.unmask({})


def test_too_many_missing_keys_abort_naming_the_key_exchange() -> None:
    with pytest.raises(RoundAborted, match=_exactly(
            "secure aggregation: 2 of 5 institutions dropped out after the key exchange"
            + TOO_MANY)):
        _server().receive_keys(_keys((1, 2, 3)))


def test_too_few_holders_after_the_key_exchange_are_named() -> None:
    with pytest.raises(RoundAborted, match=_exactly(
            "secure aggregation: cannot rebuild the secrets of node 2 after the key exchange: "
            "4 of 5 shares available" + TOO_FEW)):
        _server(threshold=5).receive_keys(_keys((2, 3, 4, 5)))


def test_share_bundles_from_a_node_without_keys_are_refused_naming_it() -> None:
    server = _server()
    server.receive_keys(_keys((2, 3, 4, 5)))
    with pytest.raises(SecurityError, match=_exactly(
            "node 1 sent share bundles but is not expected to at this stage")):
        server.route_shares({**_bundles(server, (2, 3, 4, 5), (2, 3, 4, 5)),
                             1: {2: b"ciphertext"}})


def test_a_share_bundle_that_is_not_bytes_is_refused_naming_its_sender() -> None:
    server = _server()
    server.receive_keys(_keys())
    bundles = _bundles(server, IDS)
    bundles[3] = {peer: "ciphertext" for peer in bundles[3]}  # type: ignore[misc]
    with pytest.raises(SecurityError, match=_exactly(
            "node 3 sent a share bundle that is not bytes")):
        server.route_shares(bundles)


def test_too_few_share_senders_abort_naming_the_share_exchange() -> None:
    server = _server()
    server.receive_keys(_keys())
    with pytest.raises(RoundAborted, match=_exactly(
            "secure aggregation: 2 of 5 institutions dropped out after the share exchange"
            + TOO_MANY)):
        server.route_shares(_bundles(server, (1, 2, 3)))


def test_too_few_holders_after_the_share_exchange_are_named() -> None:
    server = _server(threshold=5)
    server.receive_keys(_keys())
    with pytest.raises(RoundAborted, match=_exactly(
            "secure aggregation: cannot rebuild the secrets of node 1 after the share "
            "exchange: 4 of 5 shares available" + TOO_FEW)):
        server.route_shares(_bundles(server, (1, 2, 3, 4)))


def test_a_masked_vector_from_a_node_that_sent_no_shares_is_refused_naming_it() -> None:
    server = _server()
    server.receive_keys(_keys())
    server.route_shares(_bundles(server, (1, 2, 3, 4)))
    with pytest.raises(SecurityError, match=_exactly(
            "node 5 sent a masked vector but is not expected to at this stage")):
        server.receive_masked(_vectors(IDS))


def test_too_few_masked_vectors_abort_naming_the_masked_inputs() -> None:
    with pytest.raises(RoundAborted, match=_exactly(
            "secure aggregation: 2 of 5 institutions dropped out after the masked inputs"
            + TOO_MANY)):
        _at_masking().receive_masked(_vectors((1, 2, 3)))


@pytest.mark.parametrize(("survivors", "what"), [
    ((1, 2, 3, 4), "self-mask seed"),  # node 1 sent its vector: its seed must be rebuilt
    ((2, 3, 4, 5), "mask key"),  # node 1 did not: its mask key must be
])
def test_too_few_holders_after_the_masked_inputs_name_the_secret(
        survivors: tuple[int, ...], what: str) -> None:
    with pytest.raises(RoundAborted, match=_exactly(
            f"secure aggregation: cannot rebuild the {what} of node 1 after the masked inputs: "
            "4 of 5 shares available" + TOO_FEW)):
        _at_masking(threshold=5).receive_masked(_vectors(survivors))


def test_a_confirmation_from_a_node_that_did_not_survive_is_refused_naming_it() -> None:
    with pytest.raises(SecurityError, match=_exactly(
            "node 5 sent a signed survivor list but is not expected to at this stage")):
        _at_confirmation((1, 2, 3, 4)).receive_confirmations(
            dict.fromkeys(IDS, b"signature"))


def test_a_confirmation_that_is_not_bytes_is_refused_naming_its_node() -> None:
    with pytest.raises(SecurityError, match=_exactly(
            "node 2 sent a survivor signature that is not bytes")):
        _at_confirmation(IDS).receive_confirmations(
            {**dict.fromkeys(IDS, b"signature"), 2: "signature"})  # type: ignore[dict-item]


@pytest.mark.parametrize(("survivors", "confirmed", "what"), [
    ((1, 2, 3, 4), (1, 2, 3), "self-mask seed"),
    ((2, 3, 4, 5), (3, 4, 5), "mask key"),
])
def test_too_few_confirmations_name_the_secret_that_cannot_be_rebuilt(
        survivors: tuple[int, ...], confirmed: tuple[int, ...], what: str) -> None:
    with pytest.raises(RoundAborted, match=_exactly(
            f"secure aggregation: cannot rebuild the {what} of node 1 after the consistency "
            "check: 3 of 4 shares available" + TOO_FEW)):
        _at_confirmation(survivors).receive_confirmations(
            dict.fromkeys(confirmed, b"signature"))


def test_an_unmask_request_from_a_node_that_did_not_confirm_is_refused_naming_it() -> None:
    server = _at_confirmation(IDS)
    server.receive_confirmations(dict.fromkeys((1, 2, 3, 4), b"signature"))
    with pytest.raises(SecurityError, match=_exactly(
            "node 5 sent an unmask request but is not expected to at this stage")):
        server.unmask({5: {}})


def _unmasking(survivors: tuple[int, ...]) -> SecAggServer:
    server = _at_confirmation(survivors)
    server.receive_confirmations(dict.fromkeys(survivors, b"signature"))
    return server


def _seed_shares(owners: tuple[int, ...], holders: tuple[int, ...], size: int = 32
                 ) -> dict[int, dict[int, bytes]]:
    """holder -> owner -> its Shamir share of a random `size`-byte secret of `owner`."""
    shares = {owner: split(os.urandom(size), 4, list(IDS)) for owner in owners}
    return {holder: {owner: shares[owner][holder] for owner in owners} for holder in holders}


def test_too_few_shares_of_a_self_mask_seed_name_the_node() -> None:
    server = _unmasking(IDS)
    with pytest.raises(RoundAborted, match=_exactly(
            "secure aggregation: cannot rebuild the self-mask seed of node 1 from the "
            "survivors: 3 of 4 shares available" + TOO_FEW)):
        server.unmask(_seed_shares(IDS, (1, 2, 3)))


def test_too_few_shares_of_a_dropped_nodes_mask_key_name_the_node() -> None:
    server = _unmasking((1, 2, 3, 4))
    released = _seed_shares((1, 2, 3, 4), (1, 2, 3, 4))
    keys = _seed_shares((5,), (1, 2, 3))
    for holder, share in keys.items():
        released[holder].update(share)
    with pytest.raises(RoundAborted, match=_exactly(
            "secure aggregation: cannot rebuild the mask key of node 5 from the survivors: "
            "3 of 4 shares available" + TOO_FEW)):
        server.unmask(released)


def test_a_rebuilt_seed_of_the_wrong_size_is_refused_naming_its_node() -> None:
    server = _unmasking(IDS)
    with pytest.raises(SecurityError, match=_exactly(
            "the rebuilt self-mask seed of node 1 is malformed")):
        server.unmask(_seed_shares(IDS, IDS, size=16))


def test_a_rebuilt_mask_key_of_the_wrong_size_is_refused_naming_its_node() -> None:
    server = _unmasking((1, 2, 3, 4))
    released = _seed_shares((1, 2, 3, 4), (1, 2, 3, 4))
    for holder, share in _seed_shares((5,), (1, 2, 3, 4), size=31).items():
        released[holder].update(share)
    with pytest.raises(SecurityError, match=_exactly(
            "the rebuilt mask key of node 5 is malformed")):
        server.unmask(released)


# -- the weight in the last ring element -------------------------------------------------------
WIDEST = ((1 << 64) - 1) // ((1 << 24) - 1)
"""The largest total weight whose 2**24-level sum still fits a 2**64 ring."""


def test_the_largest_total_weight_that_fits_the_ring_is_accepted() -> None:
    federation = Federation(5, 1)
    result = federation.unmask_with_weight_shifted(WIDEST - sum(federation.weights.values()))
    assert result.total_weight == WIDEST


def test_one_more_than_fits_the_ring_aborts_the_round() -> None:
    federation = Federation(5, 1)
    with pytest.raises(RoundAborted, match=_exactly(
            f"secure aggregation: the total weight {WIDEST + 1} times 2**24 levels overflows "
            "the 2**64 ring; raise secure_aggregation.ring_bits or lower "
            "secure_aggregation.quantization_bits")):
        federation.unmask_with_weight_shifted(WIDEST + 1 - sum(federation.weights.values()))


def test_a_total_weight_of_one_per_survivor_is_accepted() -> None:
    federation = Federation(5, 1)
    result = federation.unmask_with_weight_shifted(5 - sum(federation.weights.values()))
    assert result.total_weight == 5

"""The edges of the secure-aggregation building blocks (issue #14, found by mutation testing):
the smallest and largest settings that must still work, and the wording of each refusal."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedpeft.common.crypto.keys import generate_signing_key
from fedpeft.common.crypto.secagg import shamir
from fedpeft.common.crypto.secagg.agreement import (
    decrypt_shares,
    encrypt_shares,
    generate_private_key,
    load_private_key,
    mask_seed,
)
from fedpeft.common.crypto.secagg.authentication import (
    Identity,
    SignedKeys,
    advert_message,
    verify_keys,
)
from fedpeft.common.crypto.secagg.encoding import decode_mean, encode, quantization_bound
from fedpeft.common.crypto.secagg.graph import neighbour_graph
from fedpeft.common.crypto.secagg.params import AdvertisedKeys, SecAggParams
from fedpeft.common.crypto.secagg.prg import expand_mask
from fedpeft.common.errors import SecurityError

SEED = bytes(range(32))
PARAMS = SecAggParams(
    ring_bits=64, quantization_bits=24, clip_range=4.0, threshold=3, context=b"fed|run|7",
    participants=5, degree=4, max_dropouts=2, graph_seed=bytes(32),
)
KEYS = AdvertisedKeys(bytes(range(32)), bytes(range(32, 64)))


# -- graph -----------------------------------------------------------------------------------
def test_one_short_of_complete_is_a_sparse_graph_not_the_complete_one() -> None:
    graph = neighbour_graph(range(1, 7), 4, SEED)
    assert all(len(neighbours) == 4 for neighbours in graph.values())


def test_degree_one_pairs_every_node_with_exactly_one_other() -> None:
    graph = neighbour_graph(range(1, 7), 1, SEED)
    assert all(len(neighbours) == 1 for neighbours in graph.values())
    assert all(graph[graph[node][0]] == (node,) for node in graph)  # a perfect matching


def test_repeated_ids_are_refused_naming_the_graph() -> None:
    with pytest.raises(ValueError, match="^neighbour_graph: node ids must be distinct"):
        neighbour_graph([1, 2, 2], 1, SEED)


# -- prg -------------------------------------------------------------------------------------
def test_a_negative_mask_length_is_refused_by_the_check() -> None:
    with pytest.raises(ValueError, match="length must be a non-negative int"):
        expand_mask(SEED, -1, 64)


def test_ring_bits_zero_is_refused_and_one_gives_bits() -> None:
    with pytest.raises(ValueError, match="ring_bits must be an int in"):
        expand_mask(SEED, 4, 0)
    bits = expand_mask(SEED, 1000, 1)
    assert set(np.unique(bits).tolist()) == {0, 1}


# -- encoding --------------------------------------------------------------------------------
def test_integer_updates_are_encoded_like_floats() -> None:
    ints, _ = encode(np.array([2, -2, 0, 5]), 2.0, 8)
    floats, clipped = encode(np.array([2.0, -2.0, 0.0, 5.0]), 2.0, 8)
    np.testing.assert_array_equal(ints, floats)
    np.testing.assert_array_equal(floats, [255, 0, 128, 255])
    assert clipped == 1


def test_the_smallest_and_largest_settings_are_accepted() -> None:
    levels, clipped = encode(np.array([-0.5, 0.5]), 0.5, 1)  # clip below 1, one bit
    np.testing.assert_array_equal(levels, [0, 1])
    assert clipped == 0
    assert quantization_bound(1.0, 48) == 1.0 / (2**48 - 1)


def test_a_zero_total_weight_and_a_boolean_clip_range_are_refused() -> None:
    with pytest.raises(ValueError, match="total_weight must be a positive int"):
        decode_mean(np.array([1, 2], dtype=np.uint64), 0, 1.0, 8)
    with pytest.raises(TypeError, match="clip_range must be a number"):
        encode(np.array([0.0]), True, 8)  # type: ignore[arg-type]


# -- params ----------------------------------------------------------------------------------
def test_the_largest_allowed_values_are_accepted() -> None:
    """All but one institution may drop out; a clip range below 1; the longest context."""
    params = dataclasses.replace(PARAMS, participants=3, degree=2, threshold=2,
                                 max_dropouts=2, clip_range=0.25, context=b"c" * 256)
    assert SecAggParams.from_record(params.to_record()) == params


@pytest.mark.parametrize("key", ["clip_range", "context", "graph_seed"])
def test_a_value_of_the_wrong_type_is_named_with_its_type(key: str) -> None:
    expected = "a float" if key == "clip_range" else "bytes"
    with pytest.raises(SecurityError, match=f"{key}: expected {expected}, got str"):
        SecAggParams.from_record({**PARAMS.to_record(), key: "x"})


# -- authentication --------------------------------------------------------------------------
def test_a_named_advert_without_a_signature_is_refused_as_unsigned() -> None:
    key = generate_signing_key()
    identity = Identity("bank-1", key, {"bank-2": key.public_key()})
    with pytest.raises(SecurityError, match="node 2 advertised unsigned keys"):
        verify_keys(identity, PARAMS, 2, SignedKeys(KEYS, "bank-2", b""))


def test_institution_names_of_1_to_255_bytes_are_signed_and_no_others() -> None:
    message = advert_message(PARAMS, 1, "a" * 255, KEYS)
    assert message.endswith(b"\xff" + b"a" * 255 + KEYS.to_bytes())
    for name in ("", "a" * 256):
        with pytest.raises(SecurityError, match=r"institution name must be 1\.\.255 bytes"):
            advert_message(PARAMS, 1, name, KEYS)


# -- shamir ----------------------------------------------------------------------------------
def _constant_share(value: int) -> bytes:
    """With threshold 1 the polynomial is its constant: every share is the encoded secret."""
    return value.to_bytes(shamir.SHARE_SIZE, "big")


def test_holder_ids_are_checked_naming_the_share_holders() -> None:
    with pytest.raises(ValueError, match="^share holders: node ids must be distinct"):
        shamir.split(b"secret", 2, [1, 1, 2])
    with pytest.raises(ValueError, match="^share holders: 0 is not a node id"):
        shamir.combine({0: _constant_share(0), 1: _constant_share(0)}, 1)


def test_a_threshold_of_zero_is_refused_when_combining() -> None:
    shares = shamir.split(b"secret", 2, [1, 2, 3])
    with pytest.raises(ValueError, match="threshold must be a positive int"):
        shamir.combine(shares, 0)


def test_a_malformed_share_names_its_holder_and_the_prime_itself_is_not_a_share() -> None:
    shares = shamir.split(b"secret", 2, [1, 2, 3])
    with pytest.raises(SecurityError, match="malformed share from holder 2: not a field element"):
        shamir.combine({1: shares[1], 2: _constant_share(shamir.PRIME)}, 2)


@pytest.mark.parametrize("value", [
    (1 << shamir._LENGTH_SHIFT) | 0x1FF,  # length 1, but the body needs 2 bytes
    65 << shamir._LENGTH_SHIFT,  # length 65 > 64
])
def test_shares_that_rebuild_no_valid_secret_are_refused(value: int) -> None:
    with pytest.raises(SecurityError, match="do not rebuild a valid secret"):
        shamir.combine({1: _constant_share(value), 2: _constant_share(value)}, 1)


# -- agreement -------------------------------------------------------------------------------
def test_a_private_key_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(SecurityError, match="must be 32 bytes"):
        load_private_key(bytes(31))


def test_share_ciphertexts_shorter_than_nonce_and_tag_are_malformed() -> None:
    key = bytes(32)
    for short in (bytes(27), bytes(3)):
        with pytest.raises(SecurityError, match="malformed share ciphertext from node 1"):
            decrypt_shares(key, short, b"ctx", 1, 2)
    empty = encrypt_shares(key, b"", b"ctx", 1, 2)  # nonce and tag only: 28 bytes
    assert len(empty) == 28 and decrypt_shares(key, empty, b"ctx", 1, 2) == b""


def test_a_peer_key_of_the_wrong_length_is_malformed() -> None:
    with pytest.raises(SecurityError, match="node 2 advertised a malformed public key"):
        mask_seed(generate_private_key(), 1, bytes(31), 2, b"ctx")


# -- server ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("step", "call"), [
    ("route_shares", lambda server: server.route_shares({})),
    ("receive_masked", lambda server: server.receive_masked({})),
    ("receive_confirmations", lambda server: server.receive_confirmations({})),
    ("unmask", lambda server: server.unmask({})),
])
def test_a_stage_called_out_of_order_is_named(step: str, call) -> None:  # type: ignore[no-untyped-def]
    from fedpeft.common.crypto.secagg.server import SecAggServer

    with pytest.raises(RuntimeError, match=rf"^{step} called out of order \(the round is at "
                                           r"stage KEYS\)"):
        call(SecAggServer(PARAMS))

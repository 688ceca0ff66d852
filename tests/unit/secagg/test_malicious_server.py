"""A malicious aggregator attacks secure aggregation, as it would: it crafts the stage messages
itself and sends them to the institutions' real client stage handlers, each institution with a
real enrolled bundle (`fedpeft federation init` / `add-institution`, which write the roster).

Each attack is first shown to work where nothing is checked (an unsealed run has no identities,
the same code path as before signatures existed), by recovering the victim's update with the
library's own functions; then the institutions refuse it, with a log line saying why.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Metadata, RecordDict
from flwr.app.message.message import make_message
from tests.unit.flower_identity import pin_task_identity

from fedpeft.client.stages import masking as handlers
from fedpeft.common.config import RunConfig, SecurityConfig, load_config, to_wire
from fedpeft.common.crypto.secagg import (
    AdvertisedKeys,
    SecAggParams,
    SignedKeys,
    decode_mean,
    expand_mask,
    quantization_bound,
    shamir,
)
from fedpeft.common.crypto.secagg.agreement import (
    decrypt_shares,
    encrypt_shares,
    generate_private_key,
    load_private_key,
    mask_seed,
    public_key_bytes,
    share_key,
)
from fedpeft.common.crypto.secagg.graph import neighbour_graph
from fedpeft.common.errors import SecurityError
from fedpeft.common.wire import secagg as wire
from fedpeft.common.wire.names import (
    BUNDLE,
    CONFIG,
    NUM_ROUNDS,
    RUN_CONFIG,
    RUN_CONFIG_SIGNATURE,
    SERVER_ROUND,
    STATE_DIR,
)
from fedpeft.common.wire.run_record import run_config_record
from fedpeft.deployment.federation_files import simulated_bundle
from fedpeft.server.credentials import load_server_keys
from fedpeft.simulation.credentials import ephemeral_credentials

RUN, ROUND, COUNT, SIZE = 11, 3, 5, 1000
_ids = itertools.count(1)


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_task_identity(monkeypatch, RUN)


@pytest.fixture(scope="module")
def federation() -> Iterator[tuple[Path, str]]:
    """COUNT enrolled institutions, each with its own keys and a completed bundle (with the
    roster), as a simulation makes them; yields (federation folder, federation id)."""
    with ephemeral_credentials([f"hospital-{sid}" for sid in range(1, COUNT + 1)]) as made:
        yield made


@dataclass
class Institutions:
    """The institutions as the attacker reaches them: one node (Context) per protocol id."""

    cfg: RunConfig
    federation_id: str
    contexts: dict[int, Context]
    run_config: ConfigRecord
    """What every stage message carries: the run config as the (malicious) server signs it."""
    values: dict[int, np.ndarray] = field(default_factory=dict)

    def send(self, kind: str, sid: int, values: Mapping[str, object]) -> ConfigRecord:
        """Deliver one crafted stage message to institution `sid`; its reply's record."""
        content = RecordDict({
            wire.RECORD: ConfigRecord({**values, wire.ID: sid}),  # type: ignore[dict-item]
            CONFIG: ConfigRecord({**self.run_config, SERVER_ROUND: ROUND}),
        })
        msg = make_message(Metadata(
            run_id=RUN, message_id=f"m{next(_ids)}", src_node_id=0, dst_node_id=sid,
            reply_to_message_id="", group_id="1", created_at=time.time(), ttl=60.0,
            message_type=kind), content)
        context = self.contexts[sid]
        if kind == "train":  # stage 3, as `Masking.apply` runs it after local training
            expected = wire.round_context(self.federation_id, RUN, ROUND)
            who = handlers.bundle_identity(msg, context)
            packed, _ = handlers.mask_update(msg, context, expected, self.values[sid], 1, who)
            return ConfigRecord({"packed": packed.tobytes()})
        handler = {wire.SETUP: handlers.handle_setup, wire.SHARE: handlers.handle_share,
                   wire.CONFIRM: handlers.handle_confirm, wire.UNMASK: handlers.handle_unmask}
        return handler[kind](msg, context).content[wire.RECORD]


def _institutions(federation: tuple[Path, str] | None, **settings: object) -> Institutions:
    """The institutions of a run whose config is the default with secure aggregation on,
    changed by `settings` (dotted config fields), as the server signs it."""
    if federation is None:  # an unsealed run: no bundles, no identities
        cfg = load_config(overrides={"secure_aggregation.enabled": True,
                                     "security.seal_updates": False, **settings})
        config: dict[int, dict[str, str]] = {sid: {} for sid in range(1, COUNT + 1)}
        federation_id = wire.UNSEALED_FEDERATION
        run_config = ConfigRecord({RUN_CONFIG: to_wire(cfg), NUM_ROUNDS: ROUND})
    else:
        root, federation_id = federation
        cfg = load_config(overrides={"secure_aggregation.enabled": True,
                                     "security.federation_id": federation_id, **settings})
        config = {sid: {BUNDLE: str(simulated_bundle(root, f"hospital-{sid}").root),
                        STATE_DIR: str(root.parent / "state" / f"hospital-{sid}")}
                  for sid in range(1, COUNT + 1)}
        server = load_server_keys(SecurityConfig(credentials_dir=str(root)))
        run_config, _ = run_config_record(to_wire(cfg), federation_id, RUN, ROUND,
                                          server.signing_key)
    contexts = {sid: Context(RUN, sid, config[sid], RecordDict(), {}) for sid in config}
    rng = np.random.default_rng(7)
    values = {sid: rng.uniform(-1, 1, SIZE) for sid in contexts}
    return Institutions(cfg, federation_id, contexts, run_config, values)


def _params(federation_id: str, **change: object) -> dict[str, object]:
    """The honest parameters of the round (5 institutions, complete graph, t = 4), changed."""
    honest = SecAggParams(48, 20, 4.0, 4, wire.round_context(federation_id, RUN, ROUND),
                          COUNT, COUNT - 1, 1, bytes(range(32)))
    return {**honest.to_record(), **change}


def _advertise(inst: Institutions, params: dict[str, object]) -> dict[int, SignedKeys]:
    return {sid: wire.read_keys(inst.send(wire.SETUP, sid, params))[sid] for sid in inst.contexts}


def _honest_until_masked(inst: Institutions, params: dict[str, object]) -> None:
    """Stages 1-3 as an honest server runs them (every institution masks its vector)."""
    adverts = _advertise(inst, params)
    sent = {sid: wire.read_payloads(inst.send(wire.SHARE, sid, {
        **params, **wire.keys_record({p: adverts[p] for p in adverts if p != sid})}))
        for sid in adverts}
    for sid in sent:
        inbox = {source: bundles[sid] for source, bundles in sent.items() if source != sid}
        inst.send("train", sid, {**params, **wire.payloads_record(inbox)})


def _refused(caplog: pytest.LogCaptureFixture, stage: str) -> None:
    assert any(record.levelno == logging.ERROR and f"secure aggregation {stage} refused" in
               record.getMessage() for record in caplog.records)


# -- threshold 2 with split dropout stories ----------------------------------------------------

def test_a_threshold_of_half_the_holders_or_less_is_refused_at_setup(
        federation: tuple[Path, str], caplog: pytest.LogCaptureFixture) -> None:
    """With t = 2 of 5 holders the server tells two holders "1 survived" (seed shares) and two
    others "1 dropped" (mask-key shares) and unmasks institution 1 alone; the old code obeyed."""
    inst = _institutions(federation)
    with pytest.raises(SecurityError,
                       match="threshold: 2 of 5 share holders is not more than half"):
        inst.send(wire.SETUP, 1, _params(inst.federation_id, threshold=2, max_dropouts=3))
    _refused(caplog, "setup")
    assert wire.STATE not in inst.contexts[1].state.config_records  # nothing was created


def test_split_dropout_stories_at_the_honest_threshold_are_refused(
        federation: tuple[Path, str], caplog: pytest.LogCaptureFixture) -> None:
    inst = _institutions(federation)
    params = _params(inst.federation_id)
    _honest_until_masked(inst, params)
    # Institutions 2 and 3 hear that 1 dropped out (they would release 1's mask-key shares);
    # 4 and 5 hear that everyone survived (they would release 1's self-mask seed shares).
    dropped_story, survived_story = [2, 3, 4, 5], [1, 2, 3, 4, 5]
    signatures = {
        sid: wire.read_signature(inst.send(wire.CONFIRM, sid, {
            **params, wire.SURVIVORS: dropped_story if sid in (2, 3) else survived_story}))
        for sid in (2, 3, 4, 5)
    }
    # The server forwards to 2 the signatures it has: 3 signed the same story, 4 and 5 not.
    with pytest.raises(SecurityError, match="node 4 did not sign the survivor list .* "
                                            "different dropout stories"):
        inst.send(wire.UNMASK, 2, {**params, **wire.payloads_record(signatures)})
    _refused(caplog, "unmasking")
    # Leaving out the mismatching signatures leaves too few confirmations.
    with pytest.raises(SecurityError, match="only 2 of its share holders confirmed"):
        inst.send(wire.UNMASK, 3, {**params, **wire.payloads_record({2: signatures[2]})})
    # And an institution signs one story per round.
    with pytest.raises(SecurityError, match="refuses confirm_survivors"):
        inst.send(wire.CONFIRM, 2, {**params, wire.SURVIVORS: survived_story})


# -- substituted neighbour keys at the honest threshold ----------------------------------------

@dataclass
class _Substitution:
    """The attacker's own key pairs, advertised to institution 1 as its four neighbours'."""

    cipher: dict[int, object]
    mask: dict[int, object]

    @classmethod
    def fresh(cls) -> _Substitution:
        return cls({v: generate_private_key() for v in range(2, COUNT + 1)},
                   {v: generate_private_key() for v in range(2, COUNT + 1)})

    def adverts(self, names: Mapping[int, str], signatures: Mapping[int, bytes]
                ) -> dict[int, SignedKeys]:
        return {v: SignedKeys(AdvertisedKeys(public_key_bytes(self.cipher[v]),  # type: ignore[arg-type]
                                             public_key_bytes(self.mask[v])),  # type: ignore[arg-type]
                              names.get(v, ""), signatures.get(v, b""))
                for v in self.cipher}


def _recover_with_substituted_keys(inst: Institutions) -> np.ndarray:
    """The attack on institution 1, end to end, with the library's own functions."""
    context = wire.round_context(inst.federation_id, RUN, ROUND)
    params = _params(inst.federation_id)
    victim = wire.read_keys(inst.send(wire.SETUP, 1, params))[1].keys
    fake = _Substitution.fresh()
    bundles = wire.read_payloads(inst.send(wire.SHARE, 1, {
        **params, **wire.keys_record(fake.adverts({}, {}))}))
    seed_shares, key = {}, {}
    for v, ciphertext in bundles.items():  # the share bundles were encrypted to the attacker
        pair_key = share_key(fake.cipher[v], v, victim.cipher_public, 1, context)  # type: ignore[arg-type]
        bundle = decrypt_shares(pair_key, ciphertext, context, 1, v)
        seed_shares[v], key[v] = bundle[:shamir.SHARE_SIZE], bundle[shamir.SHARE_SIZE:]
    inbox = {v: encrypt_shares(share_key(fake.cipher[v], v, victim.cipher_public, 1, context),  # type: ignore[arg-type]
                               bytes(2 * shamir.SHARE_SIZE), context, v, 1) for v in bundles}
    packed = np.frombuffer(inst.send("train", 1, {**params, **wire.payloads_record(inbox)})
                           ["packed"], dtype=np.uint8)  # type: ignore[arg-type]
    vector = wire.unpack(packed, 48)
    np.subtract(vector, expand_mask(shamir.combine(seed_shares, 4), vector.size, 48), out=vector)
    for v in bundles:  # every pairwise mask is with a key the attacker holds
        seed = mask_seed(fake.mask[v], v, victim.mask_public, 1, context)  # type: ignore[arg-type]
        np.subtract(vector, expand_mask(seed, vector.size, 48), out=vector)
    np.bitwise_and(vector, np.uint64((1 << 48) - 1), out=vector)
    assert load_private_key(shamir.combine(key, 4))  # institution 1's mask key too
    return decode_mean(vector[:-1], int(vector[-1]), 4.0, 20)


def test_substituted_keys_reveal_an_update_where_nothing_is_signed() -> None:
    inst = _institutions(None)
    recovered = _recover_with_substituted_keys(inst)
    assert np.abs(recovered - inst.values[1]).max() <= quantization_bound(4.0, 20) + 1e-12


@pytest.mark.parametrize(
    ("names", "signatures", "problem"),
    [
        ({}, {}, "node 2 advertised unsigned keys"),
        ({v: f"hospital-{v}" for v in range(2, 6)}, {v: bytes(64) for v in range(2, 6)},
         "node 2 advertised keys whose signature does not verify under the enrolled key of "
         "'hospital-2': substituted keys"),
        ({v: f"mallory-{v}" for v in range(2, 6)}, {v: bytes(64) for v in range(2, 6)},
         "'mallory-2', an institution that is not in this institution's roster"),
    ],
)
def test_substituted_or_unsigned_neighbour_keys_are_refused(
        federation: tuple[Path, str], caplog: pytest.LogCaptureFixture,
        names: dict[int, str], signatures: dict[int, bytes], problem: str) -> None:
    inst = _institutions(federation)
    params = _params(inst.federation_id)
    inst.send(wire.SETUP, 1, params)
    fake = _Substitution.fresh()
    with pytest.raises(SecurityError, match=problem):
        inst.send(wire.SHARE, 1, {**params, **wire.keys_record(fake.adverts(names, signatures))})
    _refused(caplog, "key sharing")


def test_a_real_signed_advertisement_cannot_be_moved_to_another_place(
        federation: tuple[Path, str]) -> None:
    inst = _institutions(federation)
    params = _params(inst.federation_id)
    adverts = _advertise(inst, params)
    others = {v: adverts[v] for v in range(2, COUNT + 1)}
    swapped = {**others, 2: adverts[3], 3: adverts[2]}  # signed for the other protocol id
    with pytest.raises(SecurityError, match="node 2 advertised keys whose signature does not "
                                            "verify"):
        inst.send(wire.SHARE, 1, {**params, **wire.keys_record(swapped)})


def test_one_institution_cannot_hold_two_places(federation: tuple[Path, str]) -> None:
    inst = _institutions(federation)
    params = _params(inst.federation_id)
    adverts = _advertise(inst, params)
    with pytest.raises(SecurityError, match="refuses a second key exchange for the same round"):
        inst.send(wire.SETUP, 3, params)
    # hospital-3's bundle on a second node, which the server numbers 2 (its own valid signature)
    inst.contexts[2] = Context(RUN, 2, inst.contexts[3].node_config, RecordDict(), {})
    adverts[2] = wire.read_keys(inst.send(wire.SETUP, 2, params))[2]
    with pytest.raises(SecurityError, match="'hospital-3', a name already used in this round"):
        inst.send(wire.SHARE, 1, {**params, **wire.keys_record(
            {v: adverts[v] for v in range(2, COUNT + 1)})})


def test_advertisements_signed_for_other_parameters_are_refused(
        federation: tuple[Path, str]) -> None:
    """Neighbours signed the parameters they were told; a server that tells one institution
    different ones (here another graph seed) gets its own signatures refused by the others."""
    inst = _institutions(federation)
    params = _params(inst.federation_id)
    adverts = {v: wire.read_keys(inst.send(wire.SETUP, v, params))[v] for v in range(2, COUNT + 1)}
    other = _params(inst.federation_id, graph_seed=bytes(32))
    inst.send(wire.SETUP, 1, other)
    with pytest.raises(SecurityError, match="signature does not verify"):
        inst.send(wire.SHARE, 1, {**other, **wire.keys_record(
            {v: adverts[v] for v in range(2, COUNT + 1)})})


# -- neighbours the graph does not give ---------------------------------------------------------

def test_neighbours_outside_the_public_graph_or_too_few_are_refused(
        federation: tuple[Path, str]) -> None:
    inst = _institutions(federation, **{"secure_aggregation.neighbours": 2,
                                        "secure_aggregation.max_dropouts": 0})
    params = _params(inst.federation_id, degree=2, threshold=3, max_dropouts=0)
    adverts = _advertise(inst, params)
    graph = neighbour_graph(range(1, COUNT + 1), 2, bytes(range(32)))
    strangers = [v for v in range(2, COUNT + 1) if v not in graph[1]]
    with pytest.raises(SecurityError, match="that are not its neighbours in the round's graph"):
        inst.send(wire.SHARE, 1, {**params, **wire.keys_record(
            {v: adverts[v] for v in strangers})})
    with pytest.raises(SecurityError, match="too few neighbours"):
        inst.send(wire.SHARE, 1, {**params, **wire.keys_record(
            {v: adverts[v] for v in graph[1][:1]})})


# -- more dropouts than allowed, in total --------------------------------------------------------

def test_more_dropouts_than_allowed_in_total_are_refused(
        federation: tuple[Path, str], caplog: pytest.LogCaptureFixture) -> None:
    inst = _institutions(federation)
    params = _params(inst.federation_id)
    _honest_until_masked(inst, params)
    with pytest.raises(SecurityError, match="2 of 5 institutions dropped out, more than "
                                            "max_dropouts=1"):
        inst.send(wire.CONFIRM, 1, {**params, wire.SURVIVORS: [1, 2, 3]})
    _refused(caplog, "consistency check")


# -- the round's terms must be the signed config's ----------------------------------------------

@pytest.mark.parametrize(("change", "problem"), [
    ({"max_dropouts": 2, "threshold": 3}, "max_dropouts=2, but the signed run config fixes 1"),
    ({"clip_range": 64.0}, "clip_range=64, but the signed run config fixes 4"),
    ({"degree": 2, "threshold": 2},
     "degree 2 and threshold 2 for 5 institutions, but the signed run config gives 4 and 4"),
])
def test_round_terms_other_than_the_signed_config_are_refused(
        federation: tuple[Path, str], caplog: pytest.LogCaptureFixture,
        change: dict[str, object], problem: str) -> None:
    """The config says one dropout (threshold 4 of 5 holders); the server claims two, which
    lowers the threshold to 3, thins the graph to threshold 2 of 3 holders, or widens the clip
    range: each valid terms for SecAgg+, none the signed ones."""
    inst = _institutions(federation)
    with pytest.raises(SecurityError, match=problem):
        inst.send(wire.SETUP, 1, _params(inst.federation_id, **change))
    _refused(caplog, "setup")


def test_a_stage_message_with_its_signature_stripped_is_refused(
        federation: tuple[Path, str], caplog: pytest.LogCaptureFixture) -> None:
    """A relay strips the signature, or switches sealing off, in a key-exchange message's
    config, to make the institution advertise unsigned keys and accept unsigned ones."""
    inst = _institutions(federation)
    unsigned = ConfigRecord({key: value for key, value in inst.run_config.items()
                             if key != RUN_CONFIG_SIGNATURE})
    with pytest.raises(SecurityError, match="not signed"):
        replace(inst, run_config=unsigned).send(wire.SETUP, 1, _params(inst.federation_id))
    plaintext = ConfigRecord({**inst.run_config, RUN_CONFIG: to_wire(inst.cfg.model_copy(
        update={"security": inst.cfg.security.model_copy(update={"seal_updates": False})}))})
    with pytest.raises(SecurityError):
        replace(inst, run_config=plaintext).send(wire.SETUP, 2, _params(inst.federation_id))

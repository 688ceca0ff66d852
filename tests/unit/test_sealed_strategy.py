"""The sealed exchange: what the aggregator accepts, what it refuses, and what a client refuses.

Replies are built by hand (as in test_aggregation.py) and sealed with real keys, so every
refusal below comes from the real checks, not from a mock.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.app.message.message import make_message
from tests.unit.flower_identity import pin_task_identity

from fedpeft.common.config import load_config
from fedpeft.common.config.loader import to_wire
from fedpeft.common.crypto import (
    generate_encryption_key,
    generate_signing_key,
    seal_update,
    sign_global,
    verify_global,
)
from fedpeft.common.errors import RunError, SecurityError
from fedpeft.common.runs.metrics_log import MetricsLog
from fedpeft.common.wire.envelopes import (
    envelope_of,
    envelope_record,
    global_context,
    update_context,
)
from fedpeft.common.wire.names import (
    ARRAYS,
    CONFIG,
    INSTITUTION,
    SEALED_UPDATE_STYPE,
    SERVER_ROUND,
    SIGNED_GLOBAL_STYPE,
)
from fedpeft.common.wire.run_record import run_config_record
from fedpeft.server.credentials import ServerKeys, Signer
from fedpeft.server.round_recorder import RoundRecorder
from fedpeft.server.strategies import (
    InstrumentedStrategy,
    PrivateStrategy,
    SealedStrategy,
    build_strategy,
)

FED, RUN = "fed-test", 1
SERVER_SIGN, SERVER_ENC = generate_signing_key(), generate_encryption_key()
INSTITUTION_KEYS = {name: generate_signing_key() for name in ("bank-1", "bank-2", "bank-3", "old")}


def _signers() -> dict[str, Signer]:
    return {name: Signer(name, key.public_key(), revoked=name == "old")
            for name, key in INSTITUTION_KEYS.items()}


KEYS = ServerKeys(FED, SERVER_ENC, SERVER_SIGN, _signers)


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_task_identity(monkeypatch, RUN)


@pytest.fixture
def recorder(tmp_path: Path) -> RoundRecorder:
    return RoundRecorder(MetricsLog(tmp_path / "metrics.jsonl"), parallel_slots=2)


def _meta(node: int) -> Metadata:
    return Metadata(run_id=RUN, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
                    reply_to_message_id="out", group_id="1", created_at=time.time(), ttl=60.0,
                    message_type="train")


def _content(arrays: ArrayRecord, name: str, examples: int) -> RecordDict:
    return RecordDict({
        "arrays": arrays,
        "metrics": MetricRecord({"num-examples": examples, "loss": 0.5, "compute-s": 1.0}),
        INSTITUTION: ConfigRecord({"name": name}),
    })


def _weights(values: list[float]) -> dict[str, np.ndarray]:
    return {"w": np.asarray(values, dtype=np.float32)}


def _plain(node: int, values: list[float], examples: int) -> Message:
    arrays = ArrayRecord({"w": Array(_weights(values)["w"])})
    return make_message(_meta(node), _content(arrays, f"bank-{node}", examples))


def _sealed(node: int, values: list[float], examples: int, *, name: str | None = None,
            server_round: int = 1, run_id: int = RUN, key: object = None,
            arrays: dict[str, np.ndarray] | None = None,
            blob_hook: Callable[[bytes], bytes] = lambda blob: blob) -> Message:
    name = name or f"bank-{node}"
    ctx = update_context(FED, run_id, server_round, name)
    signing = key or INSTITUTION_KEYS.get(name) or generate_signing_key()
    blob = seal_update(arrays or _weights(values), ctx, SERVER_ENC.public_key(), signing,
                       weight=examples)
    record = envelope_record(blob_hook(blob), SEALED_UPDATE_STYPE)
    return make_message(_meta(node), _content(record, name, examples))


class _Grid:
    def get_node_ids(self) -> list[int]:
        return [1, 2]


def _strategy(recorder: RoundRecorder, sealed: bool = True, name: str = "fedavg",
              **overrides: object) -> InstrumentedStrategy:
    cfg = load_config(overrides={"strategy.name": name, **overrides})
    inner = build_strategy(cfg)
    if sealed:
        inner = SealedStrategy(inner, KEYS, run_id=RUN, recorder=recorder)
    return InstrumentedStrategy(inner, recorder)


def _start(strategy: InstrumentedStrategy, initial: list[float],
           server_round: int = 1) -> list[Message]:
    arrays = ArrayRecord({"w": Array(np.asarray(initial, dtype=np.float32))})
    return list(strategy.configure_train(server_round, arrays, ConfigRecord({}), _Grid()))  # type: ignore[arg-type]


# -- accepted updates ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fedavg", "fedadam"])
def test_sealed_updates_aggregate_like_plaintext(name: str, recorder: RoundRecorder) -> None:
    extra = {"strategy.server_learning_rate": 0.1} if name == "fedadam" else {}
    plain = _strategy(recorder, sealed=False, name=name, **extra)
    _start(plain, [1.0, 1.0])
    expected, expected_metrics = plain.aggregate_train(1,
                                                       [_plain(1, [1, 2], 1), _plain(2, [4, 8], 3)])
    sealed = _strategy(recorder, name=name, **extra)
    _start(sealed, [1.0, 1.0])
    arrays, metrics = sealed.aggregate_train(1, [_sealed(1, [1, 2], 1), _sealed(2, [4, 8], 3)])
    np.testing.assert_allclose(arrays["w"].numpy(), expected["w"].numpy(), rtol=1e-6)
    # the next global keeps the float32 manifest institutions seal (FedAdam computes in float64)
    assert arrays["w"].numpy().dtype == np.float32
    assert metrics["loss"] == pytest.approx(expected_metrics["loss"])
    assert metrics["num-examples"] == 4


def test_global_goes_out_signed_once_and_the_inner_strategy_sees_plaintext(
        recorder: RoundRecorder) -> None:
    strategy = _strategy(recorder, name="fedadam")
    messages = _start(strategy, [1.5, -2.0])
    assert sorted(m.metadata.dst_node_id for m in messages) == [1,
                                                                2]  # Flower samples in random order
    blobs = [envelope_of(m.content[ARRAYS], SIGNED_GLOBAL_STYPE) for m in messages]
    # one signature for every recipient (see fedpeft.common.wire.envelopes)
    assert blobs[0] == blobs[1]
    state = verify_global(blobs[0], global_context(FED, RUN, 0), SERVER_SIGN.public_key())
    np.testing.assert_array_equal(state["w"], [1.5, -2.0])
    fedadam = strategy.inner.inner  # type: ignore[attr-defined]
    np.testing.assert_array_equal(fedadam.current_arrays["w"], [1.5, -2.0])
    # training in round 1 carries global version 0: the same global claimed for round 1 is refused
    with pytest.raises(SecurityError, match="round mismatch"):
        verify_global(blobs[0], global_context(FED, RUN, 1), SERVER_SIGN.public_key())


def _tamper(blob: bytes) -> bytes:
    """Flip one bit of the payload (the ciphertext of an update), just before the signature."""
    at = len(blob) - 64 - 5
    return blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1:]


REFUSALS: dict[str, tuple[Callable[[], Message], str]] = {
    "tampered ciphertext": (lambda: _sealed(3, [9, 9], 5, blob_hook=_tamper), "signature"),
    "unknown institution": (lambda: _sealed(3, [9, 9], 5, name="bank-x"), "unknown institution"),
    "forged key": (lambda: _sealed(3, [9, 9], 5, name="bank-3", key=generate_signing_key()),
                   "signature"),
    "revoked institution": (lambda: _sealed(3, [9, 9], 5, name="old"), "revoked"),
    "replay from another round": (lambda: _sealed(3, [9, 9], 5, server_round=2), "round mismatch"),
    "replay from another run": (lambda: _sealed(3, [9, 9], 5, run_id=7), "run mismatch"),
    "wrong shape": (lambda: _sealed(3, [], 5, arrays=_weights([9, 9, 9])), "shape mismatch"),
    "wrong dtype": (lambda: _sealed(3, [], 5, arrays={"w": np.asarray([9, 9], dtype=np.float64)}),
                    "dtype mismatch"),
    "plaintext": (lambda: _plain(3, [9, 9], 5), "unsealed"),
    "NaN values": (lambda: _sealed(3, [float("nan"), 9], 5), "NaN or infinite"),
    "infinite values": (lambda: _sealed(3, [9, float("inf")], 5), "NaN or infinite"),
    "duplicate institution": (lambda: _sealed(3, [9, 9], 5, name="bank-1"), "duplicate"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_update_is_refused_logged_and_recorded(case: str, recorder: RoundRecorder,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    make_bad, reason = REFUSALS[case]
    strategy = _strategy(recorder)
    _start(strategy, [0.0, 0.0])
    good = [_sealed(1, [1, 2], 1), _sealed(2, [4, 8], 3)]
    with caplog.at_level(logging.WARNING, logger="fedpeft.server.strategies.sealed"):
        arrays, metrics = strategy.aggregate_train(1, [*good, make_bad()])
    # the round completes with the two good updates only
    np.testing.assert_allclose(arrays["w"].numpy(), [3.25, 6.5])
    assert metrics["num-examples"] == 4
    warning = caplog.records[-1]
    assert warning.levelno == logging.WARNING
    assert "node 3" in warning.getMessage() and reason in warning.getMessage()
    record = recorder.close(1, {}, server_eval_s=0.0)
    (failure,) = record["failures"]
    assert failure["node_id"] == 3 and failure["phase"] == "sealing" and reason in failure["reason"]
    assert record["time"]["server_sealing_s"] > 0


def test_update_from_another_node_than_registered_is_refused(recorder: RoundRecorder) -> None:
    signers = {**_signers(), "bank-2": Signer("bank-2", INSTITUTION_KEYS["bank-2"].public_key(),
                                              node_id=22)}
    keys = ServerKeys(FED, SERVER_ENC, SERVER_SIGN, lambda: signers)
    strategy = InstrumentedStrategy(SealedStrategy(build_strategy(load_config()), keys, RUN,
                                                   recorder),
                                    recorder)
    _start(strategy, [0.0, 0.0])
    arrays, _ = strategy.aggregate_train(1, [_sealed(1, [1, 2], 1), _sealed(2, [4, 8], 3)])
    np.testing.assert_allclose(arrays["w"].numpy(), [1, 2])
    assert "registered as node 22" in recorder.close(1, {}, 0.0)["failures"][0]["reason"]


def test_round_without_any_acceptable_update_stops_the_run(recorder: RoundRecorder) -> None:
    strategy = _strategy(recorder)
    _start(strategy, [0.0, 0.0])
    with pytest.raises(RunError, match="no update could be accepted.*unknown institution"):
        strategy.aggregate_train(1, [_sealed(1, [1, 2], 1, name="bank-x"), _plain(2, [4, 8], 3)])


def test_replay_of_the_previous_round_is_refused(recorder: RoundRecorder) -> None:
    strategy = _strategy(recorder)
    _start(strategy, [0.0, 0.0])
    strategy.aggregate_train(1, [_sealed(1, [1, 2], 1), _sealed(2, [4, 8], 3)])
    _start(strategy, [3.25, 6.5], server_round=2)
    arrays, _ = strategy.aggregate_train(2, [_sealed(1, [1, 1], 1, server_round=2),
                                            _sealed(2, [4, 8], 3, server_round=1)])
    np.testing.assert_allclose(arrays["w"].numpy(), [1, 1])


# -- the client refuses a bad global -------------------------------------------------------
@pytest.fixture
def client_setup(card_fraud_csv: Path, tiny_bert_dir: str):
    from fedpeft.simulation.credentials import ephemeral_credentials, with_credentials

    cfg = load_config(overrides={
        "model.name": tiny_bert_dir, "model.max_seq_length": 16,
        "data.train": str(card_fraud_csv),
        "data.partition": "iid", "data.labels": ["card", "fraud"], "training.local_steps": 1,
        "training.batch_size": 4, "peft.lora_dropout": 0.0,
    })
    with ephemeral_credentials(["institution-0", "institution-1"]) as (folder, federation_id):
        yield with_credentials(cfg, folder, federation_id), folder


def _server_keys(folder: Path):
    from fedpeft.common.config import SecurityConfig
    from fedpeft.server.credentials import load_server_keys
    return load_server_keys(SecurityConfig(credentials_dir=str(folder)))


def test_client_refuses_tampered_or_unsigned_global_and_keeps_its_adapter(client_setup) -> None:
    from fedpeft.client.learner_cache import learner_for
    from fedpeft.client.rounds import train

    cfg, folder = client_setup
    keys = _server_keys(folder)
    context = Context(run_id=RUN, node_id=5, node_config={"partition-id": 0, "num-partitions": 2},
                      state=RecordDict(), run_config={})
    learner = learner_for(cfg, None)
    initial = learner.get_state()

    def message(arrays: ArrayRecord, server_round: int = 1) -> Message:
        config, _ = run_config_record(to_wire(cfg), keys.federation_id, RUN, 2,
                                      keys.signing_key)
        config[SERVER_ROUND] = server_round
        return Message(RecordDict({ARRAYS: arrays, CONFIG: config}), dst_node_id=5,
                       message_type="train")

    def signed(state: dict[str, np.ndarray], version: int = 0) -> ArrayRecord:
        blob = sign_global(state, global_context(keys.federation_id, RUN, version),
                           keys.signing_key)
        return envelope_record(blob, SIGNED_GLOBAL_STYPE)

    reply = train(message(signed(initial)), context)  # a good global: trains, replies sealed
    update = envelope_of(reply.content[ARRAYS], SEALED_UPDATE_STYPE)
    assert update and reply.content[INSTITUTION]["name"] == "institution-0"
    trained = learner.get_state()
    assert any(not np.array_equal(trained[k], initial[k]) for k in initial)

    other = {key: value + 1.0 for key, value in initial.items()}
    tampered = signed(other, version=1)
    blob = envelope_of(tampered, SIGNED_GLOBAL_STYPE)
    bad_globals = {
        "tampered": (envelope_record(_tamper(blob), SIGNED_GLOBAL_STYPE), "signature"),
        "unsigned": (ArrayRecord({key: Array(value) for key, value in other.items()}),
                     "unsealed"),
        "old round": (signed(other, version=3), "round mismatch"),
        "forged": (envelope_record(sign_global(other, global_context(keys.federation_id, RUN, 1),
                                               generate_signing_key()), SIGNED_GLOBAL_STYPE),
                   "signature"),
    }
    for case, (arrays, reason) in bad_globals.items():
        # round 2 on a restarted node (it remembers round 1 from its ledger): a fresh context
        # per case, since admitting round 2 marks it answered before the global is checked
        fresh = Context(run_id=RUN, node_id=5, node_config=dict(context.node_config),
                        state=RecordDict(), run_config={})
        with pytest.raises(SecurityError, match=reason):
            train(message(arrays, server_round=2), fresh)
        after = learner.get_state()
        for key in trained:
            np.testing.assert_array_equal(after[key], trained[key], err_msg=case)


def test_client_refuses_an_older_signed_global_of_the_same_run(client_setup) -> None:
    """A relay replaying round 1's signed global (with its round number) after round 3's:
    as a train request (a round already trained) and as an evaluation of an older version."""
    from fedpeft.client.learner_cache import learner_for
    from fedpeft.client.rounds import evaluate, train

    cfg, folder = client_setup
    keys = _server_keys(folder)
    context = Context(run_id=RUN, node_id=5, node_config={"partition-id": 0, "num-partitions": 2},
                      state=RecordDict(), run_config={})
    initial = learner_for(cfg, None).get_state()

    def message(server_round: int, kind: str = "train") -> Message:
        version = server_round - 1 if kind == "train" else server_round
        blob = sign_global(initial, global_context(keys.federation_id, RUN, version),
                           keys.signing_key)
        config, _ = run_config_record(to_wire(cfg), keys.federation_id, RUN, 3, keys.signing_key)
        config[SERVER_ROUND] = server_round
        return Message(RecordDict({ARRAYS: envelope_record(blob, SIGNED_GLOBAL_STYPE),
                                   CONFIG: config}), dst_node_id=5, message_type=kind)

    train(message(1), context)
    train(message(3), context)
    with pytest.raises(SecurityError, match="already trained round 3.*replay"):
        train(message(2), context)
    with pytest.raises(SecurityError, match="older than version 2.*replay"):
        evaluate(message(1, "evaluate"), context)


# -- a relay rewriting what travels beside the envelope ------------------------------------
class _Grid3:
    def get_node_ids(self) -> list[int]:
        return [1, 2, 3]


def _rewritten(reply: Message, examples: int) -> Message:
    """The reply with its `num-examples` metric rewritten, as a relay can do."""
    content = RecordDict({key: record for key, record in reply.content.items()})
    content["metrics"] = MetricRecord({**reply.content["metrics"], "num-examples": examples})
    return make_message(reply.metadata, content)


def test_rewriting_num_examples_does_not_change_the_aggregate(recorder: RoundRecorder) -> None:
    """The attack of issue #9: with num-examples rewritten to [1, 0, 0] the aggregate used to
    be institution 1's own adapter, published as the global. The sealed weights decide."""
    honest = [_sealed(1, [1, 2], 2), _sealed(2, [4, 8], 3), _sealed(3, [7, 0], 5)]
    strategy = _strategy(recorder)
    list(strategy.configure_train(1, ArrayRecord({"w": Array(np.zeros(2, np.float32))}),
                                  ConfigRecord({}), _Grid3()))  # type: ignore[arg-type]
    arrays, metrics = strategy.aggregate_train(
        1, [_rewritten(reply, n) for reply, n in zip(honest, (1, 0, 0))])
    expected = (2 * np.array([1, 2]) + 3 * np.array([4, 8]) + 5 * np.array([7, 0])) / 10
    np.testing.assert_allclose(arrays["w"].numpy(), expected, rtol=1e-6)
    assert metrics["num-examples"] == 10


WEIGHT_REFUSALS: dict[str, tuple[Callable[[], Message], str]] = {
    "no sealed weight": (lambda: make_message(_meta(3), _content(envelope_record(seal_update(
        _weights([9, 9]), update_context(FED, RUN, 1, "bank-3"), SERVER_ENC.public_key(),
        INSTITUTION_KEYS["bank-3"]), SEALED_UPDATE_STYPE), "bank-3", 5)), "no sealed weight"),
    "weight above the cap": (lambda: _sealed(3, [9, 9], 10_000_001),
                             "exceeds security.max_update_weight=10000000"),
    "weight rewritten in the header": (
        lambda: _sealed(3, [9, 9], 5, blob_hook=lambda b: b.replace(b'"weight":5', b'"weight":9')),
        "signature"),
    "oversized blob": (lambda: _sealed(3, [9, 9], 5, blob_hook=lambda b: b + bytes(70_000)),
                       "exceeds the .* bytes an update of the expected manifest can take"),
}


@pytest.mark.parametrize("case", list(WEIGHT_REFUSALS))
def test_bad_weight_or_size_is_refused_before_it_counts(case: str,
                                                       recorder: RoundRecorder) -> None:
    make_bad, reason = WEIGHT_REFUSALS[case]
    strategy = _strategy(recorder)
    _start(strategy, [0.0, 0.0])
    arrays, metrics = strategy.aggregate_train(1, [_sealed(1, [1, 2], 1), _sealed(2, [4, 8], 3),
                                                   make_bad()])
    np.testing.assert_allclose(arrays["w"].numpy(), [3.25, 6.5])
    assert metrics["num-examples"] == 4
    (failure,) = recorder.close(1, {}, server_eval_s=0.0)["failures"]
    assert failure["node_id"] == 3
    assert re.search(reason, failure["reason"]), failure["reason"]


def test_oversized_blob_is_refused_before_it_is_hashed(recorder: RoundRecorder) -> None:
    """A registered institution sending 70 kB too much: no digest of it is recorded, since
    the size check comes before anything reads the bytes."""
    strategy = _strategy(recorder)
    _start(strategy, [0.0, 0.0])
    strategy.aggregate_train(1, [_sealed(1, [1, 2], 1),
                                 _sealed(2, [4, 8], 3, blob_hook=lambda b: b + bytes(70_000))])
    record = recorder.close(1, {}, server_eval_s=0.0)
    assert set(record["updates_sha256"]) == {"bank-1"}


# -- revocation: from the registry file to the strategy ------------------------------------
def test_an_institution_revoked_in_the_registry_is_refused_from_the_next_round(
        tmp_path: Path, recorder: RoundRecorder) -> None:
    """`fedpeft federation revoke` edits the registry file between rounds; the running
    strategy re-reads it each round, so the revoked institution's next update is refused."""
    from fedpeft.common.config import SecurityConfig
    from fedpeft.common.crypto import load_signing_private_key
    from fedpeft.deployment.enrolment import revoke_institution
    from fedpeft.deployment.federation_files import simulated_bundle
    from fedpeft.server.credentials import load_server_keys
    from fedpeft.simulation.credentials import ephemeral_credentials

    with ephemeral_credentials(["bank-a", "bank-b"]) as (root, _):
        keys = load_server_keys(SecurityConfig(credentials_dir=str(root)))
        signing = {name: load_signing_private_key(simulated_bundle(root, name).signing_key)
                   for name in ("bank-a", "bank-b")}
        strategy = InstrumentedStrategy(
            SealedStrategy(build_strategy(load_config()), keys, RUN, recorder), recorder)

        def update(node: int, name: str, values: list[float], server_round: int) -> Message:
            ctx = update_context(keys.federation_id, RUN, server_round, name)
            blob = seal_update(_weights(values), ctx, keys.encryption_key.public_key(),
                               signing[name], weight=1)
            return make_message(_meta(node), _content(envelope_record(blob, SEALED_UPDATE_STYPE),
                                                      name, 1))

        _start(strategy, [0.0, 0.0])
        arrays, _ = strategy.aggregate_train(1, [update(1, "bank-a", [1, 1], 1),
                                                 update(2, "bank-b", [3, 3], 1)])
        np.testing.assert_allclose(arrays["w"].numpy(), [2, 2])  # both accepted

        revoke_institution(root, "bank-b")
        _start(strategy, [2.0, 2.0], server_round=2)
        arrays, _ = strategy.aggregate_train(2, [update(1, "bank-a", [1, 1], 2),
                                                 update(2, "bank-b", [9, 9], 2)])
    np.testing.assert_allclose(arrays["w"].numpy(), [1, 1])  # bank-b's update left out
    failures = recorder.close(2, {}, 0.0)["failures"]
    assert [(f["node_id"], f["phase"]) for f in failures] == [(2, "sealing")]
    assert "revoked" in failures[0]["reason"] and "bank-b" in failures[0]["reason"]


# -- participants: only verified signers ---------------------------------------------------------
def test_forged_and_unsigned_replies_are_not_participants_in_the_ledger(tmp_path: Path) -> None:
    """The attacker on the relay adds replies that claim to come from bank-2 (signed with a key
    of its own) and bank-3 (plaintext, unsigned): the aggregate and the signed ledger name only
    bank-1, whose signature verified."""
    from fedpeft.common.audit import verify_ledger
    from fedpeft.server.audit_trail import AuditTrail

    trail = AuditTrail(tmp_path, FED, SERVER_SIGN)
    recorder = RoundRecorder(MetricsLog(tmp_path / "metrics.jsonl"), parallel_slots=2,
                             on_round=trail.round, signed_updates=True)
    strategy = _strategy(recorder)
    _start(strategy, [0.0, 0.0])
    forged = _sealed(2, [9, 9], 1000, key=generate_signing_key())
    unsigned = _plain(3, [7, 7], 1000)
    arrays, _ = strategy.aggregate_train(1, [_sealed(1, [1, 2], 5), forged, unsigned])
    np.testing.assert_allclose(arrays["w"].numpy(), [1, 2])
    record = recorder.close(1, {}, 0.0)
    assert record["participants"] == ["bank-1"] and record["participants_verified"] is True
    assert sorted(f["name"] for f in record["failures"]) == ["bank-2", "bank-3"]
    rounds = _ledger_rounds(tmp_path / "ledger.jsonl")
    assert [r["body"]["participants"] for r in rounds] == [["bank-1"]]
    assert verify_ledger(tmp_path / "ledger.jsonl", SERVER_SIGN.public_key()).ok


def _ledger_rounds(path: Path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == "round"]


def test_unsealed_rounds_say_their_participants_are_unverified(recorder: RoundRecorder) -> None:
    strategy = _strategy(recorder, sealed=False)
    _start(strategy, [0.0, 0.0])
    strategy.aggregate_train(1, [_plain(1, [1, 2], 5), _plain(2, [3, 4], 5)])
    record = recorder.close(1, {}, 0.0)
    assert record["participants"] == ["bank-1", "bank-2"]
    assert record["participants_verified"] is False


def test_the_global_version_a_message_carries() -> None:
    """Training in round r starts from global r - 1, evaluation in round r judges global r;
    no other message carries a global to sign."""
    from fedpeft.common.wire.envelopes import global_version

    assert (global_version("train", 3), global_version("evaluate", 3)) == (2, 3)
    with pytest.raises(ValueError, match="no global adapter in a 'query' message"):
        global_version("query", 3)


# -- issue #14: what the mutation run found untested ---------------------------------------
def test_evaluation_messages_carry_the_global_signed_as_this_rounds_version(
        recorder: RoundRecorder) -> None:
    """Evaluation in round r judges global r: the institutions check that version, so the
    evaluate messages must carry the very arrays handed in, signed for version r."""
    strategy = _strategy(recorder)
    arrays = ArrayRecord({"w": Array(np.asarray([0.25, -4.0], dtype=np.float32))})
    messages = list(strategy.configure_evaluate(3, arrays, ConfigRecord({}), _Grid()))  # type: ignore[arg-type]
    assert sorted(m.metadata.dst_node_id for m in messages) == [1, 2]
    assert {m.metadata.message_type for m in messages} == {"evaluate"}
    for message in messages:
        blob = envelope_of(message.content[ARRAYS], SIGNED_GLOBAL_STYPE)
        state = verify_global(blob, global_context(FED, RUN, 3), SERVER_SIGN.public_key())
        np.testing.assert_array_equal(state["w"], [0.25, -4.0])


def _failed(node: int) -> Message:
    return make_message(_meta(node), error=Error(code=0, reason="institution timed out"))


def test_a_failed_reply_does_not_stop_the_others_from_being_opened(
        recorder: RoundRecorder) -> None:
    """A node that timed out comes first: the sealed updates after it still count."""
    strategy = _strategy(recorder)
    _start(strategy, [0.0, 0.0])
    arrays, metrics = strategy.aggregate_train(
        1, [_failed(3), _sealed(1, [1, 2], 1), _sealed(2, [4, 8], 3)])
    np.testing.assert_allclose(arrays["w"].numpy(), [3.25, 6.5])
    assert metrics["num-examples"] == 4


def test_the_stop_message_names_each_refused_node_and_its_institution(
        recorder: RoundRecorder) -> None:
    """The operator reads why a round could not go on: node, institution ('unnamed' when the
    reply names none) and reason."""
    unnamed = _sealed(1, [1, 2], 1)
    del unnamed.content[INSTITUTION]
    strategy = _strategy(recorder)
    _start(strategy, [0.0, 0.0])
    with pytest.raises(RunError, match=r"node 1 \(unnamed\): reply names no institution; "
                                       r"node 2 \(bank-x\): unknown institution"):
        strategy.aggregate_train(1, [unnamed, _sealed(2, [4, 8], 3, name="bank-x")])


def test_a_duplicate_update_names_the_node_whose_update_was_accepted(
        recorder: RoundRecorder) -> None:
    strategy = _strategy(recorder)
    _start(strategy, [0.0, 0.0])
    strategy.aggregate_train(1, [_sealed(1, [1, 2], 1), _sealed(3, [9, 9], 5, name="bank-1")])
    (failure,) = recorder.close(1, {}, server_eval_s=0.0)["failures"]
    assert "already accepted one from node 1" in failure["reason"]


def test_the_weight_cap_itself_is_accepted_and_one_more_is_refused(
        recorder: RoundRecorder) -> None:
    inner = SealedStrategy(build_strategy(load_config()), KEYS, run_id=RUN, recorder=recorder,
                           max_weight=5)
    strategy = InstrumentedStrategy(inner, recorder)
    _start(strategy, [0.0, 0.0])
    arrays, metrics = strategy.aggregate_train(1, [_sealed(1, [1, 2], 5), _sealed(2, [4, 8], 6)])
    np.testing.assert_allclose(arrays["w"].numpy(), [1, 2])
    assert metrics["num-examples"] == 5
    (failure,) = recorder.close(1, {}, server_eval_s=0.0)["failures"]
    assert failure["node_id"] == 2 and "sealed weight 6 exceeds" in failure["reason"]


def _sealed_without_weight(node: int, values: list[float]) -> Message:
    name = f"bank-{node}"
    blob = seal_update(_weights(values), update_context(FED, RUN, 1, name),
                       SERVER_ENC.public_key(), INSTITUTION_KEYS[name])
    return make_message(_meta(node), _content(envelope_record(blob, SEALED_UPDATE_STYPE), name, 1))


def test_masked_updates_travel_without_a_weight_and_one_with_a_weight_is_refused(
        recorder: RoundRecorder) -> None:
    """Under secure aggregation the weight travels masked: an update that carries it in the
    clear would reveal it, and is refused; the others are accepted without one."""
    inner = SealedStrategy(build_strategy(load_config()), KEYS, run_id=RUN, recorder=recorder,
                           masked=True)
    strategy = InstrumentedStrategy(inner, recorder)
    _start(strategy, [0.0, 0.0])
    arrays, _ = strategy.aggregate_train(1, [_sealed_without_weight(1, [1, 2]),
                                             _sealed_without_weight(2, [3, 4]),
                                             _sealed(3, [9, 9], 5)])
    np.testing.assert_allclose(arrays["w"].numpy(), [2, 3])
    (failure,) = recorder.close(1, {}, server_eval_s=0.0)["failures"]
    assert failure["node_id"] == 3 and "must not carry its weight" in failure["reason"]


def test_a_round_the_privacy_layer_refuses_entirely_leaves_no_new_global(
        recorder: RoundRecorder) -> None:
    """Sealed(Private(FedAvg)), as the run loop composes it: every opened update is far outside
    the clipping bound, so the privacy layer aggregates nothing, and no global comes back."""
    cfg = load_config(overrides={"privacy.enabled": True, "privacy.clip_norm": 1.0})
    private = PrivateStrategy(build_strategy(cfg), cfg, masked=False, recorder=recorder)
    strategy = InstrumentedStrategy(SealedStrategy(private, KEYS, run_id=RUN, recorder=recorder),
                                    recorder)
    _start(strategy, [0.0, 0.0])
    arrays, metrics = strategy.aggregate_train(1, [_sealed(1, [90, 90], 1),
                                                   _sealed(2, [80, 80], 1)])
    assert arrays is None and metrics is None


def test_evaluation_and_the_next_training_send_one_signed_global_with_flowers_metadata(
        recorder: RoundRecorder) -> None:
    """Evaluation in round 1 and training in round 2 carry global 1: signed once, the same
    envelope; the rebuilt messages keep the inner strategy's ttl and group."""
    plain = _strategy(recorder, sealed=False)
    strategy = _strategy(recorder)
    arrays = ArrayRecord({"w": Array(np.asarray([1.0, 2.0], dtype=np.float32))})
    inner = list(plain.configure_train(2, arrays, ConfigRecord({}), _Grid()))  # type: ignore[arg-type]
    evaluated = list(strategy.configure_evaluate(1, arrays, ConfigRecord({}), _Grid()))  # type: ignore[arg-type]
    trained = list(strategy.configure_train(2, arrays, ConfigRecord({}), _Grid()))  # type: ignore[arg-type]
    assert evaluated[0].content[ARRAYS] is trained[0].content[ARRAYS]
    assert {(m.metadata.ttl, m.metadata.group_id) for m in trained} == {
        (m.metadata.ttl, m.metadata.group_id) for m in inner}
    third = list(strategy.configure_train(3, arrays, ConfigRecord({}), _Grid()))  # type: ignore[arg-type]
    blob = envelope_of(third[0].content[ARRAYS], SIGNED_GLOBAL_STYPE)
    verify_global(blob, global_context(FED, RUN, 2), SERVER_SIGN.public_key())  # not version 1


def test_an_update_from_its_registered_node_is_accepted_and_its_digest_recorded(
        recorder: RoundRecorder) -> None:
    import hashlib

    signers = {**_signers(), "bank-2": Signer("bank-2", INSTITUTION_KEYS["bank-2"].public_key(),
                                              node_id=2)}
    keys = ServerKeys(FED, SERVER_ENC, SERVER_SIGN, lambda: signers)
    strategy = InstrumentedStrategy(SealedStrategy(build_strategy(load_config()), keys, RUN,
                                                   recorder), recorder)
    _start(strategy, [0.0, 0.0])
    blobs: list[bytes] = []
    first = _sealed(1, [1, 2], 1)
    update = _sealed(2, [4, 8], 3, blob_hook=lambda blob: blobs.append(blob) or blob)
    for reply in (first, update):  # the sealed weight counts, the metric record is optional
        del reply.content["metrics"]
    arrays, _ = strategy.aggregate_train(1, [first, update])
    np.testing.assert_allclose(arrays["w"].numpy(), [3.25, 6.5])
    record = recorder.close(1, {}, server_eval_s=0.0)
    assert record["failures"] == []
    assert record["updates_sha256"]["bank-2"] == hashlib.sha256(blobs[0]).hexdigest()


def test_a_reply_whose_name_is_not_text_names_no_institution(recorder: RoundRecorder) -> None:
    update = _sealed(1, [1, 2], 1)
    update.content[INSTITUTION] = ConfigRecord({"name": 5})
    strategy = _strategy(recorder)
    _start(strategy, [0.0, 0.0])
    with pytest.raises(RunError, match=r"node 1 \(unnamed\): reply names no institution"):
        strategy.aggregate_train(1, [update])


def test_the_aggregate_keeps_the_globals_tensor_order(recorder: RoundRecorder) -> None:
    """The envelope holds tensors in name order; the saved adapter follows the global's."""
    strategy = _strategy(recorder)
    initial = {"z": np.zeros(2, np.float32), "a": np.zeros(3, np.float32)}
    arrays = ArrayRecord({key: Array(value) for key, value in initial.items()})
    list(strategy.configure_train(1, arrays, ConfigRecord({}), _Grid()))  # type: ignore[arg-type]
    update = {"z": np.ones(2, np.float32), "a": np.ones(3, np.float32)}
    aggregate, _ = strategy.aggregate_train(1, [_sealed(1, [], 1, arrays=update),
                                                _sealed(2, [], 1, arrays=update)])
    assert list(aggregate) == ["z", "a"]

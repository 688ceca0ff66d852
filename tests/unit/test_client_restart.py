"""An institution restarted in the middle of a run remembers the run from its own ledger.

A deployed institution keeps its memory of a run (the last round it trained, the last
version it evaluated, the newest global it accepted, its DP-SGD steps) in Flower's
`Context.state`, which lives in its SuperNode process: killed and started again, the node
gets a fresh, empty context for the same run. Each attack below is a coordinator exploiting
that: it asks the restarted institution again for what it answered before the crash. The
restart is simulated the way Flower does it: the same handlers, the same on-disk ledger,
a new `Context` with empty state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedpeft.client.identity import InstitutionKeys
from fedpeft.client.learner_cache import learner_for
from fedpeft.client.local_data import local_data
from fedpeft.client.rounds import evaluate, train
from fedpeft.client.run_memory import RunMemory, read_memory
from fedpeft.client.stages.ledger import EVALUATION_SENT, RUN_REFUSED, record_event
from fedpeft.common.audit import LEDGER_FILE
from fedpeft.common.config import RunConfig, SecurityConfig, load_config
from fedpeft.common.config.loader import to_wire
from fedpeft.common.crypto import sign_global
from fedpeft.common.crypto.keys import generate_encryption_key, generate_signing_key
from fedpeft.common.errors import SecurityError
from fedpeft.common.privacy import epsilon_for
from fedpeft.common.privacy.lifetime import CLIENT, EXAMPLE, PRIVACY_CHARGE, Charge, charge_body
from fedpeft.common.wire.envelopes import envelope_record, global_context, global_version
from fedpeft.common.wire.names import (
    ARRAYS,
    CONFIG,
    DP_EXAMPLE_EPSILON,
    METRICS,
    NUM_PARTITIONS,
    PARTITION_ID,
    SERVER_ROUND,
    SIGNED_GLOBAL_STYPE,
)
from fedpeft.common.wire.run_record import run_config_record
from fedpeft.server.credentials import load_server_keys
from fedpeft.simulation.credentials import ephemeral_credentials, with_credentials

RUN = 13
ROUNDS = 3
STEPS = 3
"""DP-SGD steps per round (training.local_steps)."""


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TaskIdentity, "_run_id", RUN)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)


class Coordinator:
    """Signs and sends what a coordinator of the federation can: every message is validly
    signed, so only the institution's memory stands between it and a replay."""

    def __init__(self, cfg: RunConfig, folder: Path, federation_id: str) -> None:
        self.cfg = with_credentials(cfg, folder, federation_id)
        self.federation_id = federation_id
        self.key = load_server_keys(SecurityConfig(credentials_dir=str(folder))).signing_key
        self.ledger = folder.parent / "bundles" / "institution-0" / LEDGER_FILE

    def ask(self, message_type: str, server_round: int) -> Message:
        config, _ = run_config_record(to_wire(self.cfg), self.federation_id, RUN, ROUNDS,
                                      self.key)
        config[SERVER_ROUND] = server_round
        version = global_version(message_type, server_round)
        blob = sign_global(learner_for(self.cfg, None).get_state(),
                           global_context(self.federation_id, RUN, version), self.key)
        return Message(RecordDict({ARRAYS: envelope_record(blob, SIGNED_GLOBAL_STYPE),
                                   CONFIG: config}), dst_node_id=5, message_type=message_type)


def _node() -> Context:
    """The institution's context for the run as a freshly (re)started SuperNode has it."""
    return Context(run_id=RUN, node_id=5, node_config={PARTITION_ID: 0, NUM_PARTITIONS: 2},
                   state=RecordDict(), run_config={})


@pytest.fixture
def coordinator(card_fraud_csv: Path,
                tiny_bert_dir: str) -> Iterator[Callable[..., Coordinator]]:
    with ephemeral_credentials(["institution-0", "institution-1"]) as (folder, federation_id):
        def make(**overrides: object) -> Coordinator:
            cfg = load_config(overrides={
                "model.name": tiny_bert_dir, "model.max_seq_length": 16,
                "data.train": str(card_fraud_csv), "data.partition": "iid",
                "data.labels": ["card", "fraud"], "training.local_steps": STEPS,
                "training.batch_size": 4, "peft.lora_dropout": 0.0, **overrides,
            })
            return Coordinator(cfg, folder, federation_id)
        yield make


def _example_level(**more: object) -> dict[str, object]:
    return {"privacy.example_level": True, "privacy.example_noise_multiplier": 0.8,
            "privacy.example_delta": 1e-4, **more}


# -- replays the empty memory of a restarted node would let through ---------------------------
def test_a_round_trained_before_the_restart_is_refused_after_it(coordinator, caplog) -> None:
    """The coordinator asks for round 1 again once the institution is back: a second noisy
    update of the same round (privacy spent twice, masks reused under secure aggregation)."""
    server = coordinator()
    train(server.ask("train", 1), _node())
    restarted = _node()
    with caplog.at_level(logging.WARNING), \
            pytest.raises(SecurityError, match="already trained round 1 .* replay"):
        train(server.ask("train", 1), restarted)
    assert f"memory of run {RUN} restored from its ledger" in caplog.text
    reply = train(server.ask("train", 2), restarted)  # the next round is answered
    assert ARRAYS in reply.content


def test_a_version_evaluated_before_the_restart_is_not_evaluated_again(coordinator) -> None:
    server = coordinator()
    evaluate(server.ask("evaluate", 1), _node())
    with pytest.raises(SecurityError, match="already evaluated version 1"):
        evaluate(server.ask("evaluate", 1), _node())


def test_a_global_older_than_one_accepted_before_the_restart_is_refused(coordinator) -> None:
    """Round 3's training carried global version 2; after the restart an evaluation of the
    older, validly signed version 1 (never evaluated) is a replay of an old global."""
    server = coordinator()
    train(server.ask("train", 3), _node())
    with pytest.raises(SecurityError, match="version 1 is older than version 2"):
        evaluate(server.ask("evaluate", 1), _node())


# -- example-level DP-SGD: the steps taken before the restart still count ---------------------
def _rate(server: Coordinator) -> float:
    """The institution's own Poisson sampling rate of its rows (expected batch 4)."""
    return 4 / len(local_data(server.cfg, _node()).train)


def test_dp_sgd_steps_before_the_restart_count_in_the_reported_epsilon(coordinator) -> None:
    server = coordinator(**_example_level())
    train(server.ask("train", 1), _node())
    metrics = train(server.ask("train", 2), _node()).content[METRICS]
    assert metrics[DP_EXAMPLE_EPSILON] == pytest.approx(
        epsilon_for(0.8, _rate(server), 2 * STEPS, 1e-4))
    sent = [record["body"] for record in map(json.loads, server.ledger.read_text().splitlines())
            if record["kind"] == "update-sent"]
    assert [body["example_steps"] for body in sent] == [STEPS, 2 * STEPS]


def test_the_example_target_epsilon_counts_the_steps_before_the_restart(coordinator) -> None:
    """A target that one round's steps fit and two rounds' do not: without its memory the
    restarted institution would train round 2 from epsilon 0 and spend past its target."""
    rate = _rate(coordinator(**_example_level()))
    one, two = (epsilon_for(0.8, rate, n * STEPS, 1e-4) for n in (1, 2))
    server = coordinator(**_example_level(**{"privacy.example_target_epsilon": (one + two) / 2}))
    train(server.ask("train", 1), _node())
    with pytest.raises(SecurityError, match="example_target_epsilon"):
        train(server.ask("train", 2), _node())


# -- a ledger the institution cannot trust is no memory at all --------------------------------
def test_a_tampered_ledger_is_refused_in_one_line_naming_it(coordinator, caplog) -> None:
    """Round 1's charge edited to forget the round: the restarted institution refuses to
    answer anything of the run (here an evaluation, which writes nothing itself) rather than
    start from an empty memory."""
    server = coordinator()
    train(server.ask("train", 1), _node())
    lines = server.ledger.read_text().splitlines()
    charge = next(i for i, line in enumerate(lines) if '"privacy-charge"' in line)
    lines[charge] = lines[charge].replace('"round":1', '"round":0')
    server.ledger.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.ERROR), pytest.raises(SecurityError) as refused:
        evaluate(server.ask("evaluate", 1), _node())
    reason = str(refused.value)
    assert str(server.ledger) in reason and "\n" not in reason
    assert "signature does not verify" in reason and f"memory of run {RUN}" in reason
    assert any("refused a evaluate request" in r.getMessage() for r in caplog.records)


# -- what the ledger is read for ---------------------------------------------------------------
def _keys(state_dir: Path) -> InstitutionKeys:
    return InstitutionKeys(name="bank-a", federation_id="fed-a", bundle_dir=str(state_dir),
                           state_dir=str(state_dir), signing_key=generate_signing_key(),
                           server_signing_key=generate_signing_key().public_key(),
                           server_encryption_key=generate_encryption_key().public_key())


def test_the_memory_is_read_from_the_runs_own_records(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    path = tmp_path / LEDGER_FILE
    assert read_memory(path, keys, RUN, example_level=True) == RunMemory()  # no ledger yet

    def charge(federation: str, run: int, server_round: int, z: float, q: float) -> None:
        record_event(keys, PRIVACY_CHARGE, charge_body(federation, run, server_round, {
            CLIENT: Charge(None), EXAMPLE: Charge(z, q, STEPS)}))

    charge("fed-a", RUN, 1, 0.8, 0.25)
    charge("fed-a", RUN, 2, 0.7, 0.5)
    charge("fed-a", RUN + 1, 5, 0.1, 1.0)  # another run
    charge("fed-b", RUN, 7, 0.1, 1.0)  # the same run id in another federation
    record_event(keys, EVALUATION_SENT, {"federation_id": "fed-a", "run_id": RUN, "round": 2})
    record_event(keys, RUN_REFUSED, {"federation_id": "fed-a", "run_id": RUN, "reason": "x"})

    assert read_memory(path, keys, RUN, example_level=True) == RunMemory(
        trained=2, evaluated=2, dp_steps=2 * STEPS, dp_noise_multiplier=0.7,
        dp_sampling_rate=0.5)
    memory = read_memory(path, keys, RUN, example_level=False)
    assert (memory.trained, memory.newest_global, memory.dp_steps) == (2, 2, 0)


def test_a_ledger_that_cannot_be_read_is_refused(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    (tmp_path / LEDGER_FILE).mkdir()
    with pytest.raises(SecurityError, match="cannot be read"):
        read_memory(tmp_path / LEDGER_FILE, keys, RUN, example_level=False)

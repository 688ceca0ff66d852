"""A malicious coordinator or relay against one institution's real train and evaluate handlers.

Each attack below is a message an attacker can build: it controls the SuperLink (so it can
rewrite anything in a message) or the ServerApp (so it can also sign with the server key).
The institution is a simulated one with real keys (its bundle) and real data; every refusal
must leave its data, its keys and its adapter as they were, send nothing, and be written to
its own ledger.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from tests.unit.flower_identity import pin_task_identity

from fedpeft.common.config import RunConfig, SecurityConfig, load_config
from fedpeft.common.config.loader import to_wire
from fedpeft.common.crypto import sign_global
from fedpeft.common.errors import SecurityError
from fedpeft.common.modeling.fingerprint import model_sha256
from fedpeft.common.wire.envelopes import envelope_of, envelope_record, global_context
from fedpeft.common.wire.names import (
    ARRAYS,
    CONFIG,
    DP_CLIP_NORM,
    RUN_CONFIG,
    SEALED_UPDATE_STYPE,
    SERVER_ROUND,
    SIGNED_GLOBAL_STYPE,
)
from fedpeft.common.wire.run_record import run_config_record
from fedpeft.server.credentials import ServerKeys, load_server_keys

RUN = 3


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages built here belong to run RUN, as Flower's own would."""
    pin_task_identity(monkeypatch, RUN)


@dataclass(frozen=True)
class Federation:
    cfg: RunConfig
    """The honest run: client-level DP with a fixed bound, sealed."""
    server: ServerKeys
    bundle: Path
    data: Path
    model: str


@pytest.fixture
def federation(card_fraud_csv: Path, tiny_bert_dir: str) -> Iterator[Federation]:
    from fedpeft.deployment.federation_files import simulated_bundle
    from fedpeft.simulation.credentials import ephemeral_credentials, with_credentials

    cfg = load_config(overrides={
        "model.name": tiny_bert_dir, "model.max_seq_length": 16,
        "data.train": str(card_fraud_csv), "data.partition": "iid",
        "data.labels": ["card", "fraud"], "training.local_steps": 1, "training.batch_size": 4,
        "peft.lora_dropout": 0.0, "privacy.enabled": True, "privacy.noise_multiplier": 1.2,
        "privacy.clip_norm": 0.5, "privacy.target_epsilon": 5.0,
    })
    with ephemeral_credentials(["institution-0", "institution-1"]) as (folder, federation_id):
        yield Federation(with_credentials(cfg, folder, federation_id),
                         load_server_keys(SecurityConfig(credentials_dir=str(folder))),
                         simulated_bundle(folder, "institution-0").root,
                         card_fraud_csv,
                         tiny_bert_dir)


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _context(policy: Path | None = None) -> Context:
    node: dict[str, Any] = {"partition-id": 0, "num-partitions": 2}
    if policy is not None:
        node["policy"] = str(policy)
    return Context(run_id=RUN, node_id=5, node_config=node, state=RecordDict(), run_config={})


def _message(fed: Federation, cfg: RunConfig | None = None, *, kind: str = "train",
             server_round: int = 1, num_rounds: int = 2, run_id: int = RUN, signed: bool = True,
             edit: Callable[[ConfigRecord], None] = lambda config: None) -> Message:
    """A message as the server sends it: the signed global and the (signed) run config, then
    whatever the attacker changes in the config record (`edit`)."""
    from fedpeft.client.learner_cache import learner_for

    cfg = cfg or fed.cfg
    version = server_round - 1 if kind == "train" else server_round
    initial = learner_for(fed.cfg, None).get_state()
    blob = sign_global(initial, global_context(fed.server.federation_id, RUN, version),
                       fed.server.signing_key)
    config, _ = run_config_record(to_wire(cfg), fed.server.federation_id, run_id, num_rounds,
                                  fed.server.signing_key if signed else None)
    config[SERVER_ROUND] = server_round
    if cfg.privacy.enabled:
        config[DP_CLIP_NORM] = cfg.privacy.clip_norm
    edit(config)
    return Message(RecordDict({ARRAYS: envelope_record(blob, SIGNED_GLOBAL_STYPE),
                               CONFIG: config}), dst_node_id=5, message_type=kind)


def _snapshot(fed: Federation) -> dict[str, str]:
    """Digest of every file the institution holds (its keys and its data), ledger aside."""
    files = [p for p in fed.bundle.rglob("*") if p.is_file() and p.name != "ledger.jsonl"]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in [*files, fed.data]}


def _ledger(fed: Federation) -> list[dict[str, Any]]:
    path = fed.bundle / "ledger.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _altered(fed: Federation, **changes: Any) -> RunConfig:
    """The honest config with `changes` (dotted keys), as a coordinator would sign it."""
    data = fed.cfg.model_dump(mode="json")
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        data[section][key] = value
    return RunConfig.model_validate(data)


def _switch_privacy_off_in_text(config: ConfigRecord) -> None:
    data = json.loads(str(config[RUN_CONFIG]))
    data["privacy"]["enabled"] = False
    config[RUN_CONFIG] = json.dumps(data)


STRICT = """
require_privacy = true
min_noise_multiplier = 1.0
max_epsilon = 8.0
require_secure_aggregation = false
"""

# (attack, policy text or None, message builder, refusal)
ATTACKS: dict[str, tuple[str | None, Callable[[Federation], Message], str]] = {
    "relay switches privacy off in the signed config": (
        None, lambda f: _message(f, edit=_switch_privacy_off_in_text), "does not verify"),
    "relay strips the signature": (None, lambda f: _message(f, signed=False), "not signed"),
    "relay replays another run's signed config": (
        None, lambda f: _message(f, run_id=RUN + 1), "does not verify"),
    "relay claims more rounds than signed": (
        None, lambda f: _message(f, edit=lambda c: c.__setitem__("num-rounds", 50)),
        "does not verify"),
    "server asks for remote code": (
        None, lambda f: _message(f, _altered(f, **{"model.trust_remote_code": True})),
        "trust_remote_code"),
    "server switches privacy off": (
        STRICT, lambda f: _message(f, _altered(f, **{"privacy.enabled": False})),
        "privacy.enabled = false"),
    "server lowers the noise": (
        STRICT, lambda f: _message(f, _altered(f, **{"privacy.noise_multiplier": 0.3,
                                                     "privacy.target_epsilon": 50.0})),
        "below this institution's floor"),
    "server drops the epsilon target": (
        STRICT, lambda f: _message(f, _altered(f, **{"privacy.target_epsilon": None})),
        "max_epsilon=8.0"),
    "server switches masking off": (
        "require_secure_aggregation = true\n", lambda f: _message(f),
        "secure_aggregation.enabled = false"),
    "server names a model the policy does not allow": (
        'allowed_models = [{name = "other-model"}]\n', lambda f: _message(f),
        "does not allow"),
    "server loosens the fixed clipping bound": (
        None, lambda f: _message(f, edit=lambda c: c.__setitem__(DP_CLIP_NORM, 100.0)),
        "fixes privacy.clip_norm=0.5"),
    "server asks for a round beyond the signed ones": (
        None, lambda f: _message(f, server_round=3), "signed for 2 rounds"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attack_is_refused_and_leaves_the_institution_untouched(
        attack: str, federation: Federation, tmp_path: Path) -> None:
    from fedpeft.client.learner_cache import learner_for
    from fedpeft.client.rounds import train

    policy_text, build, reason = ATTACKS[attack]
    context = _context(_policy(tmp_path, policy_text) if policy_text is not None else None)
    before, adapter = _snapshot(federation), learner_for(federation.cfg, None).get_state()
    with pytest.raises(SecurityError, match=reason):
        train(build(federation), context)
    assert _snapshot(federation) == before
    after = learner_for(federation.cfg, None).get_state()
    assert all(np.array_equal(after[key], adapter[key]) for key in adapter)
    kinds = [line["kind"] for line in _ledger(federation)]
    assert "update-sent" not in kinds and kinds[-1] == "run-refused"
    assert reason.split("=")[0] in _ledger(federation)[-1]["body"]["reason"]


def test_honest_run_within_the_policy_trains_and_sends_a_sealed_update(
        federation: Federation, tmp_path: Path) -> None:
    from fedpeft.client.rounds import train

    digest = model_sha256(federation.model)
    policy = _policy(tmp_path, STRICT + f'allowed_models = [{{name = "{federation.model}", '
                               f'sha256 = "{digest}"}}]\n')
    reply = train(_message(federation), _context(policy))
    assert envelope_of(reply.content[ARRAYS], SEALED_UPDATE_STYPE)
    assert [line["kind"] for line in _ledger(federation)][-1] == "update-sent"
    # with privacy on, nothing about the rows leaves in the clear
    assert dict(reply.content["metrics"]).keys() <= {"num-examples", "compute-s", "seal-s"}
    assert reply.content["metrics"]["num-examples"] == 1


def test_a_replaced_model_folder_is_refused_by_its_pinned_hash(
        federation: Federation, tmp_path: Path) -> None:
    from fedpeft.client.rounds import train

    policy = _policy(tmp_path, f'allowed_models = [{{name = "{federation.model}", '
                               f'sha256 = "{"0" * 64}"}}]\n')
    with pytest.raises(SecurityError, match="content hash .* is not the one"):
        train(_message(federation), _context(policy))


def test_each_global_version_is_evaluated_at_most_once(federation: Federation) -> None:
    """Without privacy an institution evaluates, but a coordinator asking again for the same
    (or an older) version gets a refusal: the validation rows are not an oracle."""
    from fedpeft.client.rounds import evaluate

    cfg = _altered(federation, **{"privacy.enabled": False, "privacy.target_epsilon": None})
    context = _context()
    reply = evaluate(_message(federation, cfg, kind="evaluate", server_round=1), context)
    assert "loss" in reply.content["metrics"]
    with pytest.raises(SecurityError, match="at most one evaluation per global version"):
        evaluate(_message(federation, cfg, kind="evaluate", server_round=1), context)
    with pytest.raises(SecurityError, match="signed for 2 rounds"):
        evaluate(_message(federation, cfg, kind="evaluate", server_round=3), context)


def test_with_privacy_on_an_institution_sends_no_validation_metrics(
        federation: Federation) -> None:
    from fedpeft.client.rounds import evaluate

    with pytest.raises(SecurityError, match="does not send its un-noised validation metrics"):
        evaluate(_message(federation, kind="evaluate", server_round=1), _context())


def test_a_deployed_institution_refuses_plaintext_when_its_policy_requires_sealing(
        federation: Federation, tmp_path: Path) -> None:
    """Consent to plaintext in the node config does not override the institution's policy."""
    from fedpeft.client.rounds import train

    cfg = _altered(federation, **{"security.seal_updates": False})
    context = Context(run_id=RUN, node_id=5, state=RecordDict(), run_config={}, node_config={
        "bundle": str(federation.bundle), "data-path": str(federation.data),
        "name": "institution-0", "allow-plaintext": "true",
        "policy": str(_policy(tmp_path, "require_sealing = true\n"))})
    with pytest.raises(SecurityError, match="policy requires sealed updates"):
        train(_message(federation, cfg, signed=False), context)


def test_a_pinned_model_changed_between_rounds_is_refused(
        federation: Federation, tmp_path: Path) -> None:
    """The hash is kept for the run (a deployed institution handles each message in a fresh
    process), but a file written into the folder after round 1 is caught in round 2."""
    import shutil

    from fedpeft.client.rounds import train

    model = tmp_path / "pinned-model"
    shutil.copytree(federation.model, model)
    cfg = _altered(federation, **{"model.name": str(model)})
    policy = _policy(tmp_path, f'allowed_models = [{{name = "{model}", '
                               f'sha256 = "{model_sha256(str(model))}"}}]\n')
    context = _context(policy)
    train(_message(federation, cfg, server_round=1), context)
    (model / "extra.py").write_text("print('not what was approved')\n")
    with pytest.raises(SecurityError, match="content hash .* is not the one"):
        train(_message(federation, cfg, server_round=2), context)

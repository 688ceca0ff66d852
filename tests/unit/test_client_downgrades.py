"""The institution refuses to weaken its own protections because the run config says so.

The run config arrives unsigned from the coordinator, so a malicious coordinator (or relay)
can ask for unsealed, unclipped or unmasked updates, or name another federation. Each attack
below goes through the client app's real `train` handler with a tiny model and must be
refused with a SecurityError, next to a control that the same message without the downgrade
is answered (so the refusal is the check's, not an unrelated failure).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from tests.unit.flower_identity import pin_task_identity

from fedpeft.client.learner_cache import learner_for
from fedpeft.client.rounds import train
from fedpeft.common.adapter.state import from_array_record, to_array_record
from fedpeft.common.config import RunConfig, load_config
from fedpeft.common.config.loader import to_wire
from fedpeft.common.crypto import sign_global
from fedpeft.common.errors import SecurityError
from fedpeft.common.wire.envelopes import envelope_of, envelope_record, global_context
from fedpeft.common.wire.names import (
    ALLOW_PLAINTEXT,
    ARRAYS,
    BUNDLE,
    CONFIG,
    DATA_PATH,
    DP_CLIP_NORM,
    DP_UNCLIPPED,
    METRICS,
    NODE_NAME,
    NUM_PARTITIONS,
    NUM_ROUNDS,
    PARTITION_ID,
    RUN_CONFIG,
    SEALED_UPDATE_STYPE,
    SERVER_ROUND,
    SIGNED_GLOBAL_STYPE,
)
from fedpeft.common.wire.run_record import run_config_record
from fedpeft.server.credentials import load_server_keys
from fedpeft.simulation.credentials import ephemeral_credentials, with_credentials

RUN = 11
SIMULATED = {PARTITION_ID: 0, NUM_PARTITIONS: 2}


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_task_identity(monkeypatch, RUN)


@pytest.fixture
def make_config(card_fraud_csv: Path, tiny_bert_dir: str):
    def make(**overrides: object) -> RunConfig:
        return load_config(overrides={
            "model.name": tiny_bert_dir, "model.max_seq_length": 16,
            "data.train": str(card_fraud_csv),
            "data.partition": "iid", "data.labels": ["card", "fraud"],
            "training.local_steps": 1, "training.batch_size": 4, "peft.lora_dropout": 0.0,
            **overrides,
        })
    return make


@pytest.fixture
def federation() -> Iterator[tuple[Path, str]]:
    with ephemeral_credentials(["institution-0", "institution-1"]) as made:
        yield made


def _context(node_config: dict[str, object]) -> Context:
    return Context(run_id=RUN, node_id=5, node_config=node_config,  # type: ignore[arg-type]
                   state=RecordDict(), run_config={})


def _plain_message(cfg: RunConfig, **extra: object) -> Message:
    """An unsealed train message carrying the learner's current global (round 1 of 2)."""
    state = learner_for(cfg, None).get_state()
    config = ConfigRecord({RUN_CONFIG: to_wire(cfg), NUM_ROUNDS: 2, SERVER_ROUND: 1, **extra})
    return Message(RecordDict({ARRAYS: to_array_record(state), CONFIG: config}),
                   dst_node_id=5, message_type="train")


# -- sealing: an unsigned run config cannot turn it off for a deployed institution ----------
def test_unsealed_run_is_refused_by_a_deployed_institution_without_its_consent(
        make_config, federation: tuple[Path, str], card_fraud_csv: Path) -> None:
    folder, _ = federation
    cfg = make_config(**{"security.seal_updates": False})
    deployed = {BUNDLE: str(folder / "institutions" / "institution-0"),
                DATA_PATH: str(card_fraud_csv), NODE_NAME: "institution-0"}

    with pytest.raises(SecurityError, match=ALLOW_PLAINTEXT):
        train(_plain_message(cfg), _context(deployed))

    reply = train(_plain_message(cfg), _context({**deployed, ALLOW_PLAINTEXT: "true"}))
    sent = from_array_record(reply.content[ARRAYS])  # its own consent: plaintext tensors
    assert set(sent) == set(learner_for(cfg, None).get_state())


def test_a_run_of_another_federation_is_refused(make_config,
                                                federation: tuple[Path, str]) -> None:
    """The global is validly signed for the institution's own federation: only the run
    config names another one, and the institution goes by its bundle, not by the config."""
    folder, federation_id = federation
    cfg = with_credentials(make_config(), folder, federation_id)
    server = load_server_keys(cfg.security)

    def signed(cfg: RunConfig) -> Message:
        message = _plain_message(cfg)
        config, _ = run_config_record(to_wire(cfg), federation_id, RUN, 2, server.signing_key)
        config[SERVER_ROUND] = 1
        message.content[CONFIG] = config  # the server signs what it sends: honest signature
        state = from_array_record(message.content[ARRAYS])
        blob = sign_global(state, global_context(federation_id, RUN, 0), server.signing_key)
        message.content[ARRAYS] = envelope_record(blob, SIGNED_GLOBAL_STYPE)
        return message

    elsewhere = cfg.model_copy(update={"security": cfg.security.model_copy(
        update={"federation_id": "fed-elsewhere"})})
    with pytest.raises(SecurityError, match="fed-elsewhere"):
        train(signed(elsewhere), _context(SIMULATED))

    reply = train(signed(cfg), _context(SIMULATED))  # its own federation: sealed and sent
    assert envelope_of(reply.content[ARRAYS], SEALED_UPDATE_STYPE)


# -- differential privacy: no bound, no update -----------------------------------------------
def test_a_dp_run_without_a_clipping_bound_is_refused(make_config) -> None:
    cfg = make_config(**{"security.seal_updates": False, "privacy.enabled": True,
                         "privacy.clip_norm": 0.01})
    with pytest.raises(SecurityError, match="clipping bound"):
        train(_plain_message(cfg), _context(SIMULATED))

    message = _plain_message(cfg, **{DP_CLIP_NORM: 0.01})
    reply = train(message, _context(SIMULATED))  # with the bound: answered
    assert from_array_record(reply.content[ARRAYS]).keys() == \
        from_array_record(message.content[ARRAYS]).keys()


def test_a_dp_update_leaves_clipped_to_the_bound_the_message_carries(make_config) -> None:
    """The change sent back is the trained change scaled down to the bound of the message
    (all tensors, L2), however far local training moved the adapter; under a bound it fits,
    it leaves as trained. Training is deterministic here, so both messages train alike."""
    bound = 1e-4
    # adaptive clipping: the bound moves every round, so the institution takes the message's
    # (under fixed clipping it must equal the signed config's, see test_run_config_attacks)
    cfg = make_config(**{"security.seal_updates": False, "privacy.enabled": True,
                         "privacy.clipping": "adaptive", "training.learning_rate": 0.5})
    loose = _plain_message(cfg, **{DP_CLIP_NORM: 1e6})
    tight = _plain_message(cfg, **{DP_CLIP_NORM: bound})
    start = from_array_record(tight.content[ARRAYS])

    def change(message: Message) -> tuple[dict[str, np.ndarray], float]:
        reply = train(message, _context(SIMULATED))
        sent = from_array_record(reply.content[ARRAYS])
        return ({k: sent[k].astype(np.float64) - start[k] for k in start},
                reply.content[METRICS][DP_UNCLIPPED])

    sent, fitted = change(loose)
    learned = learner_for(cfg, None).get_state()  # what local training made of the start
    trained = {k: learned[k].astype(np.float64) - start[k] for k in start}
    clipped, fitted_tight = change(tight)
    norm = float(np.sqrt(sum(float((d ** 2).sum()) for d in trained.values())))
    assert norm > 100 * bound and (fitted, fitted_tight) == (1.0, 0.0)
    for key in start:
        np.testing.assert_allclose(sent[key], trained[key], rtol=1e-5, atol=1e-9, err_msg=key)
        np.testing.assert_allclose(clipped[key], trained[key] * bound / norm,
                                   rtol=1e-2, atol=1e-9, err_msg=key)


# -- secure aggregation: no masking parameters, no update ------------------------------------
def test_a_masked_run_without_masking_parameters_is_refused(make_config) -> None:
    cfg = make_config(**{"security.seal_updates": False, "secure_aggregation.enabled": True,
                         "federation.min_train_clients": 2,
                         "federation.min_available_clients": 2})
    with pytest.raises(SecurityError, match="unmasked"):
        train(_plain_message(cfg), _context(SIMULATED))

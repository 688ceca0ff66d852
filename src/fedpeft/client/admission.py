"""Whether this institution obeys a train or evaluate message at all.

Checked before any model is loaded or row read for the run, in this order:

1. the run config is the one the server signed for this federation, run and number of
   rounds (`fedpeft.common.wire.run_record`), with the server key from the institution's
   own bundle: a relay cannot alter it, replay another run's, or strip the signature;
2. the run asks for nothing the institution's own policy forbids
   (`fedpeft.common.config.policy`): the coordinator can sign a run without noise, not make
   an institution join it;
3. the request fits the signed run: a train round or evaluated version within its rounds,
   each answered at most once (a coordinator that could ask again and again for the
   evaluation of globals it signs would turn the validation rows into an oracle), also across
   a restart of the institution (its memory of the run is rebuilt from its own ledger,
   `fedpeft.client.run_memory`), and a fixed DP clipping bound equal to the signed one;
4. under a lifetime cap in the policy, a train round's client-level charge fits what is left
   of the institution's own lifetime privacy account (`fedpeft.client.privacy_account`): the
   coordinator's per-run budget starts again with every run, this one does not.

A refusal raises SecurityError (Flower sends the error back instead of an update), is logged
and, for an institution with keys, written to its own ledger as `run-refused`.

An unsealed run (security.seal_updates = false) carries no signature: the server may have no
keys at all. A deployed institution takes part only with node config allow-plaintext="true"
and a policy without require_sealing; it then checks the unsigned config against its policy,
which is all it can do.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MessageType

from fedpeft.client.identity import InstitutionKeys, institution_keys
from fedpeft.client.run_memory import ANSWERED, recall
from fedpeft.client.stages.ledger import RUN_REFUSED, record_event
from fedpeft.common.config import RunConfig, from_wire
from fedpeft.common.config.policy import (
    POLICY_FILE,
    InstitutionPolicy,
    check_run,
    load_policy,
)
from fedpeft.common.errors import SecurityError
from fedpeft.common.modeling.fingerprint import folder_sha256, folder_stamp, model_folder
from fedpeft.common.wire.names import (
    ALLOW_PLAINTEXT,
    BUNDLE,
    CONFIG,
    DP_CLIP_NORM,
    NUM_ROUNDS,
    POLICY,
    RUN_CONFIG,
    RUN_CONFIG_SIGNATURE,
    SERVER_ROUND,
)
from fedpeft.common.wire.run_record import RunRecord, verify_run_record

logger = logging.getLogger(__name__)

MODEL_HASH = "fedpeft-model-hash"
"""ConfigRecord in `Context.state`: the pinned model folder's content hash with the stamp it
was computed at. A deployed institution handles every message in a fresh process; without it,
each message would hash the whole model again (0.46 s for MiniLM, minutes for an LLM)."""


def institution_policy(context: Context, keys: InstitutionKeys | None) -> InstitutionPolicy:
    """The node config's policy file, else the bundle's `policy.toml`, else the default.

    The default refuses remote code, and sealing is required of a deployed institution unless
    it consented to plaintext (allow-plaintext); a simulated one has no deployment to protect.
    """
    node = context.node_config
    if POLICY in node:
        return load_policy(Path(str(node[POLICY])))
    if keys is not None and (Path(keys.bundle_dir) / POLICY_FILE).is_file():
        return load_policy(Path(keys.bundle_dir) / POLICY_FILE)
    deployed = BUNDLE in node
    consented = str(node.get(ALLOW_PLAINTEXT, "")).lower() == "true"
    return InstitutionPolicy.model_validate({"require_sealing": deployed and not consented})


def admit(msg: Message, context: Context, cfg: RunConfig, keys: InstitutionKeys | None) -> None:
    """Return only if this institution obeys `msg`; see the module docstring."""
    config = msg.content.config_records[CONFIG]
    try:
        num_rounds = _verified_rounds(msg, config, keys)
        policy = institution_policy(context, keys)
        check_run(policy, cfg, lambda name: _model_sha256(context, name))
        if keys is not None and msg.metadata.message_type == MessageType.TRAIN:
            _check_lifetime(policy, cfg, config, keys)
        recall(context, cfg, keys, msg.metadata.run_id)
        _check_request(msg, context, config, cfg, num_rounds)
    except SecurityError as err:
        record_refusal(msg, keys, str(err))
        raise


def admit_config(msg: Message, context: Context) -> tuple[RunConfig, InstitutionKeys | None]:
    """The run config and this node's keys for a secure-aggregation message, admitted as far
    as such a message can be (checks 1 and 2: it carries no round of its own to check).

    Its run config decides whether the institution signs its keys and checks its neighbours'
    (an unsealed run has no identity), so it is held to the same signature as a train one.
    """
    config = msg.content.config_records.get(CONFIG)
    if config is None or RUN_CONFIG not in config:
        raise SecurityError("secure aggregation message without the run config: refused")
    cfg = from_wire(str(config[RUN_CONFIG]))
    keys = institution_keys(cfg, context, lambda: _partition_name(cfg, context))
    try:
        if keys is not None:  # unsealed: nothing is signed, the policy is all there is
            _verified_rounds(msg, config, keys)
        check_run(institution_policy(context, keys), cfg,
                  lambda name: _model_sha256(context, name))
    except SecurityError as err:
        record_refusal(msg, keys, str(err))
        raise
    return cfg, keys


def _check_lifetime(policy: InstitutionPolicy, cfg: RunConfig, config: ConfigRecord,
                    keys: InstitutionKeys) -> None:
    from fedpeft.client import privacy_account  # numpy and the accountant: train messages only

    privacy_account.check_next_round(keys, policy, privacy_account.CLIENT,
                                     privacy_account.client_charge(cfg, config))


def _partition_name(cfg: RunConfig, context: Context) -> str:
    from fedpeft.client.local_data import local_data  # pandas: a simulated node only

    return local_data(cfg, context).name


def _verified_rounds(msg: Message, config: ConfigRecord, keys: InstitutionKeys | None) -> int:
    """The number of rounds the server signed (unsealed runs: the unsigned one)."""
    rounds = config.get(NUM_ROUNDS)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise SecurityError(f"the message's {NUM_ROUNDS} is {rounds!r}, not a round count")
    if keys is None:
        return rounds
    record = RunRecord.of(str(config[RUN_CONFIG]), keys.federation_id, msg.metadata.run_id,
                          rounds)
    verify_run_record(record, config.get(RUN_CONFIG_SIGNATURE), keys.server_signing_key)
    return rounds


def _model_sha256(context: Context, name: str) -> str:
    """The model folder's hash, computed once per run and again whenever a file changes."""
    folder = model_folder(name)
    stamp = folder_stamp(folder)
    known = context.state.config_records.get(MODEL_HASH)
    if known is not None and known["folder"] == str(folder) and known["stamp"] == stamp:
        return str(known["sha256"])
    digest = folder_sha256(folder)
    context.state[MODEL_HASH] = ConfigRecord({"folder": str(folder), "stamp": stamp,
                                              "sha256": digest})
    return digest


def _check_request(msg: Message, context: Context, config: ConfigRecord, cfg: RunConfig,
                   num_rounds: int) -> None:
    server_round = config.get(SERVER_ROUND)
    if not isinstance(server_round, int) or isinstance(server_round, bool):
        raise SecurityError(f"the message's {SERVER_ROUND} is {server_round!r}, not a round")
    answered = context.state.config_records.get(ANSWERED)
    trained = int(answered["train"]) if answered is not None else 0  # type: ignore[arg-type]
    evaluated = int(answered["evaluate"]) if answered is not None else -1  # type: ignore[arg-type]
    if msg.metadata.message_type == MessageType.TRAIN:
        if not 1 <= server_round <= num_rounds:
            raise SecurityError(f"train request for round {server_round} of a run signed for "
                                f"{num_rounds} rounds: refused")
        if server_round <= trained:
            raise SecurityError(f"train request for round {server_round}, but this institution "
                                f"already trained round {trained} of the run: refused as a replay")
        _check_clip_norm(config, cfg)
        trained = server_round
    else:
        if not 0 <= server_round <= num_rounds:
            raise SecurityError(f"evaluation of global version {server_round} of a run signed "
                                f"for {num_rounds} rounds: refused")
        if server_round <= evaluated:
            raise SecurityError(f"evaluation of global version {server_round}, but this "
                                f"institution already evaluated version {evaluated}: at most "
                                "one evaluation per global version")
        evaluated = server_round
    context.state[ANSWERED] = ConfigRecord({"train": trained, "evaluate": evaluated})


def _check_clip_norm(config: ConfigRecord, cfg: RunConfig) -> None:
    """Under fixed clipping the bound is part of the signed config; the per-round copy the
    privacy layer adds must not loosen it. (Adaptive clipping moves it every round: the
    institution cannot check it, see docs/threat-model-run-config.md.)"""
    privacy = cfg.privacy
    if not privacy.enabled or privacy.clipping != "fixed" or DP_CLIP_NORM not in config:
        return
    sent = config[DP_CLIP_NORM]
    if not isinstance(sent, (int, float)) or not math.isclose(float(sent), privacy.clip_norm):
        raise SecurityError(f"the message's {DP_CLIP_NORM} is {sent!r}, but the signed run "
                            f"config fixes privacy.clip_norm={privacy.clip_norm}: refused")


def record_refusal(msg: Message, keys: InstitutionKeys | None, reason: str) -> None:
    """Log a refusal of `msg` and write it to the institution's ledger as `run-refused`."""
    logger.error("refused a %s request of run %d: %s", msg.metadata.message_type,
                 msg.metadata.run_id, reason)
    if keys is None:
        return
    try:
        record_event(keys, RUN_REFUSED, {
            "run_id": msg.metadata.run_id, "message_type": msg.metadata.message_type,
            "federation_id": keys.federation_id, "reason": reason,
        })
    except (OSError, SecurityError) as err:  # the refusal stands; only its record is lost
        logger.error("could not record the refusal in %s: %s", keys.state_dir, err)

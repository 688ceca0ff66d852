"""The institution's lifetime privacy account, attacked as a malicious coordinator would: start
another run once the first spent the budget, rely on noise it adds itself, or hope the account
reads as empty once its file is gone or edited. The institution is a simulated one with real
keys (its bundle); the second run goes through the real train handler.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from tests.unit.flower_identity import pin_task_identity

from fedpeft.client import privacy_account as account
from fedpeft.client.identity import InstitutionKeys, load_institution_keys
from fedpeft.common.config import RunConfig, load_config
from fedpeft.common.config.loader import to_wire
from fedpeft.common.config.policy import InstitutionPolicy, check_run
from fedpeft.common.crypto import sign_global
from fedpeft.common.errors import SecurityError
from fedpeft.common.privacy import epsilon_for
from fedpeft.common.privacy.account_ledger import AccountMissing
from fedpeft.common.privacy.lifetime import CLIENT, EXAMPLE, Charge
from fedpeft.common.wire.envelopes import envelope_record, global_context
from fedpeft.common.wire.names import (
    ARRAYS,
    CONFIG,
    DP_CLIP_NORM,
    DP_NOISE_STD,
    SERVER_ROUND,
    SIGNED_GLOBAL_STYPE,
)
from fedpeft.common.wire.run_record import run_config_record
from fedpeft.deployment.federation_files import simulated_bundle
from fedpeft.server.credentials import load_server_keys
from fedpeft.simulation.credentials import ephemeral_credentials, with_credentials

RUN = 21
DELTA = 1e-5
SHARE = 0.6
"""The institution's own noise share over the bound (sigma 1.2 over sqrt(4) survivors)."""
NO_EXAMPLE = Charge(None, basis="no example-level DP-SGD")


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_task_identity(monkeypatch, RUN)


@pytest.fixture
def federation() -> Iterator[tuple[Path, str, InstitutionKeys]]:
    with ephemeral_credentials(["institution-0", "institution-1"]) as (folder, federation_id):
        bundle = str(simulated_bundle(folder, "institution-0").root)
        yield folder, federation_id, load_institution_keys(bundle, bundle)


def _masked_dp(card_fraud_csv: Path, tiny_bert_dir: str, **overrides: object) -> RunConfig:
    return load_config(overrides={
        "model.name": tiny_bert_dir, "model.max_seq_length": 16,
        "data.train": str(card_fraud_csv), "data.partition": "iid",
        "data.labels": ["card", "fraud"], "training.local_steps": 1, "training.batch_size": 4,
        "privacy.enabled": True, "privacy.noise_multiplier": 1.2, "privacy.clip_norm": 0.5,
        "privacy.target_epsilon": 5.0, "secure_aggregation.enabled": True,
        "federation.min_train_clients": 2, "federation.min_available_clients": 2,
        **overrides})


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _charges(z: float | None = SHARE) -> dict[str, Charge]:
    return {CLIENT: Charge(z, basis="own noise share under secure aggregation"),
            EXAMPLE: NO_EXAMPLE}


def _records(keys: InstitutionKeys) -> list[dict]:
    return [json.loads(line) for line in account.ledger_path(keys).read_text().splitlines()]


# -- composition ------------------------------------------------------------------------------
def test_rounds_of_several_runs_compose_exactly_as_the_accountant_counts_them(
        federation: tuple[Path, str, InstitutionKeys]) -> None:
    """Two runs of three rounds each: the lifetime epsilon is the accountant's for six rounds
    of the institution's own share, without sampling (rate 1), at the policy's delta; the
    DP-SGD steps likewise, at the institution's own sampling rate of its rows."""
    _, _, keys = federation
    policy = InstitutionPolicy()
    for run in (1, 2):
        for server_round in (1, 2, 3):
            account.charge_round(keys, policy, run, server_round, {
                CLIENT: Charge(SHARE), EXAMPLE: Charge(1.1, 0.02, 7)})
    spent = account.current_account(keys, policy)
    assert spent.runs == {(keys.federation_id, 1), (keys.federation_id, 2)}
    assert spent.epsilon(CLIENT, DELTA) == epsilon_for(SHARE, 1.0, 6, DELTA)
    assert spent.epsilon(EXAMPLE, DELTA) == epsilon_for(1.1, 0.02, 42, DELTA)
    assert spent.epsilon(CLIENT, 1e-7) == epsilon_for(SHARE, 1.0, 6, 1e-7)


def test_central_noise_only_is_not_counted_as_a_local_guarantee(
        card_fraud_csv: Path, tiny_bert_dir: str,
        federation: tuple[Path, str, InstitutionKeys]) -> None:
    _, _, keys = federation
    central = _masked_dp(card_fraud_csv, tiny_bert_dir, **{"secure_aggregation.enabled": False})
    charge = account.client_charge(central, ConfigRecord({DP_CLIP_NORM: 0.5}))
    assert not charge.guaranteed and "coordinator" in charge.basis
    account.charge_round(keys, InstitutionPolicy(), RUN, 1, {CLIENT: charge, EXAMPLE: NO_EXAMPLE})
    assert math.isinf(account.current_account(keys, InstitutionPolicy()).epsilon(CLIENT, DELTA))
    with pytest.raises(SecurityError, match=r"added by the coordinator .* not guaranteed locally"):
        check_run(InstitutionPolicy(max_lifetime_epsilon=50.0), central, lambda name: "")


# -- the coordinator starts another run --------------------------------------------------------
def test_a_second_run_after_the_budget_is_spent_is_refused_by_the_institution(
        card_fraud_csv: Path, tiny_bert_dir: str, tmp_path: Path,
        federation: tuple[Path, str, InstitutionKeys]) -> None:
    from fedpeft.client.learner_cache import learner_for
    from fedpeft.client.rounds import train

    folder, federation_id, keys = federation
    cap = epsilon_for(SHARE, 1.0, 3, DELTA) * 1.001  # room for three rounds, not four
    policy_path = _policy(tmp_path, f"max_lifetime_epsilon = {cap}\n")
    policy = InstitutionPolicy(max_lifetime_epsilon=cap)
    assert account.open_account(keys)
    for server_round in (1, 2, 3):  # run 1: what the institution charged as it took part
        account.charge_round(keys, policy, RUN - 1, server_round, _charges())

    cfg = with_credentials(_masked_dp(card_fraud_csv, tiny_bert_dir), folder, federation_id)
    server = load_server_keys(cfg.security)
    config, _ = run_config_record(to_wire(cfg), federation_id, RUN, 2, server.signing_key)
    config[SERVER_ROUND] = 1
    config[DP_CLIP_NORM] = 0.5
    config[DP_NOISE_STD] = SHARE * 0.5
    blob = sign_global(learner_for(cfg, None).get_state(),
                       global_context(federation_id, RUN, 0), server.signing_key)
    message = Message(RecordDict({ARRAYS: envelope_record(blob, SIGNED_GLOBAL_STYPE),
                                  CONFIG: config}), dst_node_id=5, message_type="train")
    context = Context(run_id=RUN, node_id=5, state=RecordDict(), run_config={}, node_config={
        "partition-id": 0, "num-partitions": 2, "policy": str(policy_path)})

    with pytest.raises(SecurityError, match=r"lifetime client-level epsilon .* "
                                            r"max_lifetime_epsilon="):
        train(message, context)
    last = _records(keys)[-1]
    assert last["kind"] == "run-refused" and "lifetime" in last["body"]["reason"]
    assert [r["kind"] for r in _records(keys)].count("privacy-charge") == 3


def test_the_cap_refusal_is_one_line(federation: tuple[Path, str, InstitutionKeys]) -> None:
    _, _, keys = federation
    policy = InstitutionPolicy(max_lifetime_epsilon=epsilon_for(SHARE, 1.0, 1, DELTA) * 1.001)
    account.open_account(keys)
    account.charge_round(keys, policy, RUN, 1, _charges())
    with pytest.raises(SecurityError,
                       match=r"^this round would take the lifetime client-level epsilon from "
                             r"[0-9.]+ to [0-9.]+ \(delta 1e-05\), past this institution's "
                             r"max_lifetime_epsilon=[0-9.]+: refused$"):
        account.charge_round(keys, policy, RUN, 2, _charges())
    with pytest.raises(SecurityError, match=r"no client-level DP: not guaranteed locally"):
        account.check_next_round(keys, policy, CLIENT, Charge(None, basis="no client-level DP"))


# -- the account cannot be reset ---------------------------------------------------------------
def test_deleting_the_account_does_not_reset_it(
        federation: tuple[Path, str, InstitutionKeys]) -> None:
    _, _, keys = federation
    policy = InstitutionPolicy(max_lifetime_epsilon=100.0)
    account.open_account(keys)
    account.charge_round(keys, policy, RUN, 1, _charges())
    account.ledger_path(keys).unlink()
    with pytest.raises(AccountMissing, match="is missing"):
        account.check_next_round(keys, policy, CLIENT, Charge(SHARE))
    # a later record (a refusal, a charge) re-creates a ledger: it still is not an account
    account.charge_round(keys, InstitutionPolicy(), RUN, 2, _charges())
    with pytest.raises(AccountMissing, match="holds no privacy-account-opened record"):
        account.check_next_round(keys, policy, CLIENT, Charge(SHARE))


@pytest.mark.parametrize("edit", ["lower the charge", "drop a charge", "re-sign"])
def test_editing_the_account_does_not_reset_it(
        edit: str, federation: tuple[Path, str, InstitutionKeys]) -> None:
    _, _, keys = federation
    policy = InstitutionPolicy(max_lifetime_epsilon=100.0)
    account.open_account(keys)
    for server_round in (1, 2):
        account.charge_round(keys, policy, RUN, server_round, _charges())
    path = account.ledger_path(keys)
    lines = path.read_text().splitlines()
    if edit == "lower the charge":
        assert f'"noise_multiplier":{SHARE}' in lines[2]
        lines[2] = lines[2].replace(f'"noise_multiplier":{SHARE}', '"noise_multiplier":60.0')
    elif edit == "drop a charge":
        del lines[2]
    else:  # a ledger of the same records, started and signed by another key
        from fedpeft.common.audit import INSTITUTION, Ledger
        from fedpeft.common.crypto import generate_signing_key

        path.unlink()
        forged = Ledger.create(path, generate_signing_key(), owner=keys.name, role=INSTITUTION)
        forged.append("privacy-account-opened", {"federation_id": keys.federation_id})
        lines = path.read_text().splitlines()
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SecurityError, match="cannot be trusted"):
        account.check_next_round(keys, policy, CLIENT, Charge(SHARE))


# -- the institution reads its own account ---------------------------------------------------
def test_the_institution_reads_and_starts_its_account_with_fedpeft_client_account(
        federation: tuple[Path, str, InstitutionKeys]) -> None:
    from typer.testing import CliRunner

    from fedpeft.cli.main import app

    _, _, keys = federation
    args = ["client", "account", "--bundle", keys.bundle_dir, "--state-dir", keys.state_dir]
    started = CliRunner().invoke(app, [*args, "--start"])
    assert started.exit_code == 0, started.output
    account.charge_round(keys, InstitutionPolicy(), RUN, 1, _charges())
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0, shown.output
    expected = epsilon_for(SHARE, 1.0, 1, DELTA)
    assert f"client-level epsilon at delta 1e-05: {expected:.4g}" in shown.output
    assert "example-level epsilon at delta 1e-05: infinite" in shown.output
    account.ledger_path(keys).unlink()
    missing = CliRunner().invoke(app, args)
    assert missing.exit_code != 0 and isinstance(missing.exception, AccountMissing)

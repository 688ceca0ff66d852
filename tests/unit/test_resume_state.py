"""What a resumed run continues from: the checkpoint file, the strategy's moments, the privacy
accountant, the metrics log and the ledger, each restored exactly or refused with one line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from tests.unit.flower_identity import pin_task_identity

from fedpeft.common.config import load_config, to_wire
from fedpeft.common.crypto import generate_signing_key
from fedpeft.common.errors import ConfigError, SecurityError
from fedpeft.common.privacy import PrivacyAccountant, epsilon_for
from fedpeft.common.runs import checkpoint as checkpoint_module
from fedpeft.common.runs.checkpoint import read_checkpoint, write_checkpoint
from fedpeft.common.runs.metrics_log import MetricsLog, read_metrics
from fedpeft.common.wire.names import ARRAYS, METRICS
from fedpeft.common.wire.run_record import RunRecord
from fedpeft.server.audit_trail import AuditTrail
from fedpeft.server.run_checkpoint import charge_superseded, config_digest
from fedpeft.server.strategies import PrivateStrategy, build_strategy
from fedpeft.server.strategy_state import capture_strategy, restore_strategy

RUN = 5
START = np.linspace(-0.5, 0.5, 16).astype(np.float32)


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_task_identity(monkeypatch, RUN)


class _Grid:
    def get_node_ids(self) -> list[int]:
        return [1, 2]


def _reply(node: int, values: np.ndarray) -> Message:
    meta = Metadata(run_id=RUN, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
                    reply_to_message_id="out", group_id="1", created_at=time.time(), ttl=60.0,
                    message_type="train")
    return make_message(meta, RecordDict({
        ARRAYS: ArrayRecord({"w": Array(values.astype(np.float32))}),
        METRICS: MetricRecord({"num-examples": 10 * node}),
    }))


def _round(strategy, number: int, arrays: ArrayRecord) -> ArrayRecord:  # type: ignore[no-untyped-def]
    list(strategy.configure_train(number, arrays, ConfigRecord({}), _Grid()))
    current = arrays["w"].numpy()
    replies = [_reply(1, current + 0.01 * number), _reply(2, current - 0.003 * number ** 2)]
    aggregated, _ = strategy.aggregate_train(number, replies)
    assert aggregated is not None
    return aggregated


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedavgm"])
def test_restored_strategy_takes_the_same_next_step_as_the_uninterrupted_one(name: str) -> None:
    cfg = load_config(overrides={"strategy.name": name, "strategy.server_learning_rate": 0.1})
    running = build_strategy(cfg)
    arrays = ArrayRecord({"w": Array(START)})
    for number in (1, 2):
        arrays = _round(running, number, arrays)
    meta, saved = capture_strategy(running)
    meta = json.loads(json.dumps(meta))  # as the checkpoint stores it

    resumed, fresh = build_strategy(cfg), build_strategy(cfg)
    restore_strategy(resumed, meta, saved)
    expected = _round(running, 3, arrays)["w"].numpy()
    np.testing.assert_array_equal(_round(resumed, 3, arrays)["w"].numpy(), expected)
    # Without its moments the third step would differ: the state is what makes it equal.
    assert not np.allclose(_round(fresh, 3, arrays)["w"].numpy(), expected)


def test_restored_privacy_layer_goes_on_from_the_saved_epsilon() -> None:
    cfg = load_config(overrides={"privacy.enabled": True, "privacy.noise_multiplier": 1.0,
                                 "privacy.clipping": "adaptive",
                                 "privacy.clipped_count_stddev": 1.0})
    running = PrivateStrategy(build_strategy(cfg), cfg, masked=False)
    arrays = ArrayRecord({"w": Array(START)})
    for number in (1, 2, 3):
        arrays = _round(running, number, arrays)
    meta, saved = capture_strategy(running)

    resumed = PrivateStrategy(build_strategy(cfg), cfg, masked=False)
    restore_strategy(resumed, json.loads(json.dumps(meta)), saved)
    assert resumed.accountant.rounds == 3
    assert resumed.accountant.epsilon == running.accountant.epsilon > 0
    assert resumed.clip_norm == running.clip_norm != cfg.privacy.clip_norm  # adaptive C moved
    assert resumed.adaptive is not None and running.adaptive is not None
    assert resumed.adaptive.clip_norm == running.adaptive.clip_norm


def test_restoring_into_another_chain_is_refused() -> None:
    adam = build_strategy(load_config(overrides={"strategy.name": "fedadam"}))
    meta, saved = capture_strategy(adam)
    with pytest.raises(ValueError, match="do not match"):
        restore_strategy(build_strategy(load_config(overrides={"strategy.name": "fedavgm"})),
                         meta, saved)


def test_accountant_state_round_trips() -> None:
    four = PrivacyAccountant(1.1, 1e-5)
    for _ in range(4):
        four.step(0.5)
    three = PrivacyAccountant(1.1, 1e-5)
    for _ in range(3):
        three.step(0.5)
    resumed = PrivacyAccountant(1.1, 1e-5)
    resumed.restore(*three.state())
    assert resumed.step(0.5) == four.epsilon
    assert resumed.rounds == 4


def test_checkpoint_round_trips_and_refuses_another_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = {"global/a.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    write_checkpoint(tmp_path, {"round": 2, "note": "x"}, arrays)
    loaded = read_checkpoint(tmp_path)
    assert loaded.round == 2 and loaded.meta["note"] == "x"
    np.testing.assert_array_equal(loaded.group("global")["a.weight"], arrays["global/a.weight"])
    assert (tmp_path / "checkpoint" / "state.npz").stat().st_mode & 0o777 == 0o600

    monkeypatch.setattr(checkpoint_module, "__version__", "0.0.1")
    write_checkpoint(tmp_path, {"round": 3}, arrays)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"written by fedpeft 0\.0\.1"):
        read_checkpoint(tmp_path)


def test_missing_checkpoint_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no checkpoint"):
        read_checkpoint(tmp_path)


def test_config_digest_ignores_where_keys_live_but_not_what_is_run() -> None:
    base = load_config(overrides={"security.credentials_dir": "/a"})
    moved = load_config(overrides={"security.credentials_dir": "/b"})
    changed = load_config(overrides={"security.credentials_dir": "/a", "federation.num_rounds": 9})
    assert config_digest(base) == config_digest(moved) != config_digest(changed)


def test_resumed_metrics_log_drops_the_round_after_the_checkpoint(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"round": 0})
    log.append({"round": 1})
    saved = log.nbytes
    log.append({"round": 2})  # written, then the process died before its checkpoint
    with log.path.open("a") as handle:
        handle.write('{"round": 3, "torn')  # and a torn line from a second crash

    resumed = MetricsLog.resume(log.path, saved)
    assert [r["round"] for r in resumed.records] == [0, 1]
    assert resumed.superseded == [{"round": 2}]  # what was cut, the torn line left out
    resumed.append({"round": 2})
    assert [r["round"] for r in read_metrics(log.path)] == [0, 1, 2]


def test_a_round_released_before_the_crash_stays_charged_when_it_is_run_again() -> None:
    """Killed after round 3's record, before its checkpoint (the deployed coordinator crash
    e2e test hit this): round 3's aggregate was released and is released again when the
    round is redone, so the resumed account counts both, not only the checkpoint's 2."""
    cfg = load_config(overrides={"privacy.enabled": True, "privacy.noise_multiplier": 1.0})
    running = PrivateStrategy(build_strategy(cfg), cfg, masked=False)
    arrays = ArrayRecord({"w": Array(START)})
    for number in (1, 2):
        arrays = _round(running, number, arrays)
    meta, saved = capture_strategy(running)  # the checkpoint after round 2
    released = _round(running, 3, arrays)  # round 3 recorded, then the crash
    assert released is not None
    cut = [{"round": 3, "privacy": {"sampling_rate": 1.0, "rounds_charged": 3}},
           {"round": 4}]  # a later line without a charge (a skipped round) charges nothing

    resumed = PrivateStrategy(build_strategy(cfg), cfg, masked=False)
    restore_strategy(resumed, json.loads(json.dumps(meta)), saved)
    assert charge_superseded(resumed, cut) == [3]
    assert resumed.accountant.rounds == 3
    assert resumed.accountant.epsilon == pytest.approx(running.accountant.epsilon)
    assert resumed.accountant.epsilon == pytest.approx(
        epsilon_for(1.0, 1.0, 3, cfg.privacy.delta))
    # Without client-level DP there is no account to charge.
    assert charge_superseded(build_strategy(load_config()), cut) == []


def test_metrics_shorter_than_the_checkpoint_are_refused(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"round": 0})
    with pytest.raises(ConfigError, match="changed since the run stopped"):
        MetricsLog.resume(log.path, log.nbytes + 10)


def test_ledger_continues_only_from_the_checkpointed_head(tmp_path: Path) -> None:
    key = generate_signing_key()
    trail = AuditTrail(tmp_path, "fed", key)
    cfg = load_config()
    record = RunRecord.of(to_wire(cfg), "fed", 1, cfg.federation.num_rounds)
    trail.start(cfg, 1, {"w": START}, record, signed=True)
    records, head = trail.ledger.records, trail.ledger.head
    trail.round({"round": 1, "clients": []})  # the round under way when the run stopped

    resumed = AuditTrail.reopen(tmp_path, key, False, records=records, head=head)
    resumed.resumed(2, 0, head, records, RunRecord.of(to_wire(cfg), "fed", 2,
                                                     cfg.federation.num_rounds))
    last = json.loads((tmp_path / "ledger.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "run-resumed"
    assert last["body"]["superseded_records"] == 1
    assert last["body"]["resumed_after_round"] == 0
    assert last["body"]["superseded_releases_charged"] == []

    with pytest.raises(SecurityError, match="not the head the checkpoint saved"):
        AuditTrail.reopen(tmp_path, key, False, records=records, head="0" * 64)
    with pytest.raises(SecurityError, match="another signer"):
        AuditTrail.reopen(tmp_path, generate_signing_key(), False, records=records, head=head)

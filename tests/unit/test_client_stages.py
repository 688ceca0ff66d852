"""The institution's protection stages, driven one by one on a hand-built round.

What each stage promises the institution: sealing signs and seals the update with its weight
(none for a masked one) and refuses weights the aggregator would refuse; the ledger stage
records the run, round, settings and size of what left; privacy clips and (under masking)
keeps the change for the masking stage; the chain puts the stages in order. Every check
below reads the stage's output the way the next stage, the aggregator or an auditor would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from tests.unit.flower_identity import pin_task_identity

from fedpeft.client.identity import InstitutionKeys
from fedpeft.client.stages.base import Outgoing, RoundInput
from fedpeft.client.stages.chain import chain
from fedpeft.client.stages.ledger import UPDATE_SENT, Recording
from fedpeft.client.stages.masking import Masking, handle_setup
from fedpeft.client.stages.privacy import Privacy
from fedpeft.client.stages.sealing import Sealing, open_global
from fedpeft.common.audit import LEDGER_FILE
from fedpeft.common.config import load_config
from fedpeft.common.config.secure_aggregation import masking_plan
from fedpeft.common.crypto import sign_global
from fedpeft.common.crypto.envelope import open_weighted_update
from fedpeft.common.crypto.keys import generate_encryption_key, generate_signing_key
from fedpeft.common.crypto.secagg import SecAggParams
from fedpeft.common.errors import SecurityError
from fedpeft.common.wire import secagg as wire
from fedpeft.common.wire.envelopes import (
    envelope_of,
    envelope_record,
    global_context,
    update_context,
)
from fedpeft.common.wire.names import (
    ARRAYS,
    DP_CLIP_NORM,
    DP_NOISE_STD,
    DP_UNCLIPPED,
    SEAL_SECONDS,
    SEALED_UPDATE_STYPE,
    SIGNED_GLOBAL_STYPE,
)

RUN = 21
FEDERATION = "fed-stages"
AGGREGATOR = generate_encryption_key()
SERVER = generate_signing_key()
BANK = generate_signing_key()


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_task_identity(monkeypatch, RUN)


def _keys(state_dir: Path) -> InstitutionKeys:
    return InstitutionKeys(name="bank-a", federation_id=FEDERATION, bundle_dir=str(state_dir),
                           state_dir=str(state_dir), signing_key=BANK,
                           server_signing_key=SERVER.public_key(),
                           server_encryption_key=AGGREGATOR.public_key())


def _round(keys: InstitutionKeys | None, config: dict[str, Any] | None = None,
           server_round: int = 3, message_type: str = "train",
           **overrides: object) -> RoundInput:
    cfg = load_config(overrides=dict(overrides))
    msg = Message(RecordDict(), dst_node_id=5, message_type=message_type)
    context = Context(run_id=RUN, node_id=5, node_config={}, state=RecordDict(), run_config={})
    return RoundInput(msg=msg, context=context, cfg=cfg, config=ConfigRecord(config or {}),
                      data=None, learner=None,  # type: ignore[arg-type]
                      received={"w": np.ones(4, dtype=np.float32)}, keys=keys,
                      server_round=server_round)


def _out(weight: int = 3, **ledger: object) -> Outgoing:
    state = {"w": np.arange(4, dtype=np.float32), "b": np.zeros((2, 3), dtype=np.float32)}
    return Outgoing(state=state, delta=None, weight=weight, metrics={"loss": 0.5},
                    ledger=dict(ledger))


def _open(out: Outgoing, server_round: int = 3) -> tuple[dict[str, np.ndarray], int | None]:
    assert out.arrays is not None
    blob = envelope_of(out.arrays, SEALED_UPDATE_STYPE)
    opened = open_weighted_update(blob, update_context(FEDERATION, RUN, server_round, "bank-a"),
                                  AGGREGATOR, {"bank-a": BANK.public_key()})
    return opened.arrays, opened.weight


# -- sealing ---------------------------------------------------------------------------------
def test_sealed_update_carries_its_weight_and_the_ledger_its_hash(tmp_path: Path) -> None:
    before = time.perf_counter()
    out = Sealing(_keys(tmp_path)).apply(_out(weight=3), _round(_keys(tmp_path)))
    arrays, weight = _open(out)
    assert weight == 3
    np.testing.assert_array_equal(arrays["w"], np.arange(4, dtype=np.float32))
    assert out.ledger["form"] == "sealed"
    assert out.arrays is not None
    assert out.ledger["sealed_sha256"] == hashlib.sha256(
        envelope_of(out.arrays, SEALED_UPDATE_STYPE)).hexdigest()
    assert out.metrics["loss"] == 0.5
    assert 0 <= out.metrics[SEAL_SECONDS] <= time.perf_counter() - before


def test_masked_update_is_sealed_without_a_weight(tmp_path: Path) -> None:
    """A masked update's weight travels inside the masked vector: the envelope has none, and
    the weight field (meaningless then) is not checked against the cap."""
    keys = _keys(tmp_path)
    out = Sealing(keys).apply(_out(weight=0, form="masked"), _round(keys))
    _, weight = _open(out)
    assert weight is None
    assert out.ledger["form"] == "sealed, masked"


@pytest.mark.parametrize("weight", [0, -1, 1001])
def test_weights_the_aggregator_would_refuse_are_refused_before_sealing(
        tmp_path: Path, weight: int) -> None:
    keys = _keys(tmp_path)
    rnd = _round(keys, **{"security.max_update_weight": 1000})
    with pytest.raises(SecurityError, match=f"weight {weight} is outside"):
        Sealing(keys).apply(_out(weight=weight), rnd)


@pytest.mark.parametrize("weight", [1, 1000])
def test_weights_at_the_ends_of_the_range_are_sealed(tmp_path: Path, weight: int) -> None:
    keys = _keys(tmp_path)
    rnd = _round(keys, **{"security.max_update_weight": 1000})
    assert _open(Sealing(keys).apply(_out(weight=weight), rnd))[1] == weight


def test_the_same_global_version_is_accepted_again_an_older_one_is_not(tmp_path: Path) -> None:
    """Training in round r and evaluation in round r - 1 carry the same global (version
    r - 1): receiving it twice is normal; an older version after a newer one is a replay."""
    keys = _keys(tmp_path)
    context = Context(run_id=RUN, node_id=5, node_config={}, state=RecordDict(), run_config={})
    state = {"w": np.ones(2, dtype=np.float32)}

    def message(message_type: str, version: int) -> Message:
        blob = sign_global(state, global_context(FEDERATION, RUN, version), SERVER)
        return Message(RecordDict({ARRAYS: envelope_record(blob, SIGNED_GLOBAL_STYPE)}),
                       dst_node_id=5, message_type=message_type)

    open_global(message("evaluate", 2), keys, 2, context)  # version 2
    got = open_global(message("train", 2), keys, 3, context)  # version 2 again
    np.testing.assert_array_equal(got["w"], state["w"])
    with pytest.raises(SecurityError, match="version 1 is older than version 2"):
        open_global(message("train", 1), keys, 2, context)


# -- the institution's ledger ----------------------------------------------------------------
def _records(state_dir: Path) -> list[dict[str, Any]]:
    lines = (state_dir / LEDGER_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("dp", [False, True])
def test_ledger_records_what_left_and_under_which_settings(tmp_path: Path, dp: bool) -> None:
    keys = _keys(tmp_path)
    config = {DP_CLIP_NORM: 0.5, DP_NOISE_STD: 0.25} if dp else {}
    rnd = _round(keys, config, server_round=4, **{"privacy.enabled": dp,
                                                   "privacy.noise_multiplier": 1.25})
    out = _out(form="sealed", sealed_sha256="ab" * 32)
    assert Recording(keys).apply(out, rnd) is out
    record = _records(tmp_path)[-1]
    assert record["kind"] == UPDATE_SENT
    assert record["body"] == {
        "run_id": RUN, "round": 4, "federation_id": FEDERATION,
        "clip_norm": 0.5 if dp else None, "noise_std": 0.25 if dp else None,
        "noise_multiplier": 1.25 if dp else None, "tensors": 2, "values": 10,
        "form": "sealed", "sealed_sha256": "ab" * 32,
    }


# -- privacy ---------------------------------------------------------------------------------
def _delta() -> dict[str, np.ndarray]:
    return {"w": np.array([3.0, 4.0, 0.0, 0.0], dtype=np.float32)}  # norm 5


def test_unmasked_privacy_sends_the_received_adapter_plus_the_clipped_change() -> None:
    rnd = _round(None, {DP_CLIP_NORM: 1.0}, **{"privacy.enabled": True})
    out = Privacy(masked=False).apply(
        Outgoing(state={}, delta=_delta(), weight=7, metrics={}), rnd)
    expected_delta = np.array([0.6, 0.8, 0.0, 0.0], dtype=np.float32)
    assert out.weight == 1 and DP_UNCLIPPED not in out.metrics
    assert out.delta is not None
    np.testing.assert_allclose(out.delta["w"], expected_delta, rtol=1e-5)
    assert out.state["w"].dtype == np.float32
    np.testing.assert_allclose(out.state["w"], 1.0 + expected_delta, rtol=1e-5)


@pytest.mark.parametrize(("bound", "fitted"), [(1.0, 0.0), (10.0, 1.0)])
def test_adaptive_privacy_reports_whether_the_change_fitted(bound: float, fitted: float) -> None:
    rnd = _round(None, {DP_CLIP_NORM: bound}, **{"privacy.enabled": True,
                                                  "privacy.clipping": "adaptive"})
    out = Privacy(masked=False).apply(
        Outgoing(state={}, delta=_delta(), weight=7, metrics={"loss": 0.5}), rnd)
    assert out.metrics == {"loss": 0.5, DP_UNCLIPPED: fitted}
    assert out.weight == 1 and out.delta is not None
    assert float(np.linalg.norm(out.delta["w"])) == pytest.approx(min(bound, 5.0), rel=1e-5)
    np.testing.assert_allclose(out.state["w"], 1.0 + out.delta["w"], rtol=1e-6)


def test_masked_privacy_needs_a_noise_share_and_hands_the_change_on() -> None:
    stage = Privacy(masked=True)
    with pytest.raises(SecurityError, match="no noise share"):
        stage.apply(Outgoing(state={}, delta=_delta(), weight=7, metrics={}),
                    _round(None, {DP_CLIP_NORM: 1.0}, **{"privacy.enabled": True}))
    start = {"w": np.zeros(4, dtype=np.float32)}
    out = stage.apply(Outgoing(state=start, delta=_delta(), weight=7, metrics={}),
                      _round(None, {DP_CLIP_NORM: 1.0, DP_NOISE_STD: 0.0},
                             **{"privacy.enabled": True}))
    assert out.weight == 1 and out.state is start  # masking reads the change, not the state
    assert out.delta is not None
    np.testing.assert_allclose(out.delta["w"], [0.6, 0.8, 0.0, 0.0], rtol=1e-5)


# -- the chain -------------------------------------------------------------------------------
def test_chain_under_dp_and_secure_aggregation_masks_after_clipping() -> None:
    rnd = _round(None, {}, **{"privacy.enabled": True, "secure_aggregation.enabled": True,
                              "security.seal_updates": False,
                              "federation.min_train_clients": 2,
                              "federation.min_available_clients": 2})
    assert [repr(stage) for stage in chain(rnd)] == ["Privacy(masked=True)", "Masking()"]
    assert isinstance(chain(rnd)[1], Masking)


# -- masking: the noise share and the round state it needs -----------------------------------
def _masking_round(std: float, clip_range: float = 100.0) -> RoundInput:
    """A round of 5 institutions tolerating 1 dropout, DP at sigma 1 and C 1: the share the
    4 guaranteed institutions need is 1 / sqrt(4) = 0.5."""
    rnd = _round(None, {DP_CLIP_NORM: 1.0, DP_NOISE_STD: std}, **{
        "privacy.enabled": True, "privacy.noise_multiplier": 1.0, "privacy.clip_norm": 1.0})
    sa = rnd.cfg.secure_aggregation.model_copy(update={"max_dropouts": 1})
    plan = masking_plan(sa, 5)
    params = SecAggParams(
        ring_bits=sa.ring_bits, quantization_bits=sa.quantization_bits, clip_range=clip_range,
        threshold=plan.threshold, context=wire.round_context(rnd.federation_id, RUN, 3),
        participants=5, degree=plan.degree, max_dropouts=1, graph_seed=b"\x01" * 32)
    rnd.msg.content.config_records[wire.RECORD] = ConfigRecord({**params.to_record(),
                                                                wire.ID: 1})
    return rnd


def _masking_out() -> Outgoing:
    return Outgoing(state={}, delta={"w": np.zeros(4, dtype=np.float32)}, weight=1, metrics={})


@pytest.mark.parametrize("std", [0.45, 0.499])
def test_a_noise_share_below_what_the_guaranteed_institutions_need_is_refused(
        std: float, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR), pytest.raises(SecurityError, match="is below 0.5"):
        Masking().apply(_masking_out(), _masking_round(std))
    assert "secure aggregation masking refused: the noise share std" in caplog.text


def test_a_sufficient_share_goes_on_to_masking_which_needs_the_key_exchange(
        caplog: pytest.LogCaptureFixture) -> None:
    """0.5 is enough (the check allows for float rounding): the stage then needs this
    node's key exchange for the round, and without one it refuses, logging why."""
    with caplog.at_level(logging.ERROR), \
            pytest.raises(SecurityError, match="no key exchange for this round"):
        Masking().apply(_masking_out(), _masking_round(0.5))
    assert "secure aggregation masking refused: secure aggregation: no key exchange" \
        in caplog.text


def test_a_noise_share_the_clip_range_would_truncate_is_refused() -> None:
    with pytest.raises(SecurityError, match="refusing to mask: secure_aggregation.clip_range=2"):
        Masking().apply(_masking_out(), _masking_round(0.5, clip_range=2.0))


@pytest.mark.parametrize("sid", ["x", 0])
def test_a_key_exchange_with_a_bad_protocol_id_is_refused(sid: object) -> None:
    record = ConfigRecord({wire.ID: sid})  # type: ignore[dict-item]
    msg = Message(RecordDict({wire.RECORD: record}), dst_node_id=5, message_type="query")
    context = Context(run_id=RUN, node_id=5, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(SecurityError, match="bad protocol id"):
        handle_setup(msg, context)

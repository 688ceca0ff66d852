"""Secure aggregation through Flower's Message API: the strategy's stages against the real
client-side stage handlers, over an in-memory grid that can make institutions vanish.

The models are replaced by known update vectors so that the aggregate can be compared with the
plaintext weighted mean; everything else (wire records, Context.state between stages, masking,
unmasking, the inner FedAvg) is the production code.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    MetricRecord,
    RecordDict,
)
from flwr.app.message.message import make_message
from tests.unit.secure_aggregation.conftest import (
    RUN,
    Grid,
    Updates,
    expected_mean,
    make_strategy,
    run_round,
)

from fedpeft.client.stages.base import Outgoing, RoundInput
from fedpeft.client.stages.chain import chain
from fedpeft.common.adapter.state import to_array_record
from fedpeft.common.config import load_config, to_wire
from fedpeft.common.config.secure_aggregation import NOISE_TAIL_SIGMAS
from fedpeft.common.crypto.secagg import quantization_bound
from fedpeft.common.errors import ConfigError, SecurityError
from fedpeft.common.privacy import clip_update, distributed_noise_std
from fedpeft.common.runs.metrics_log import MetricsLog, read_metrics
from fedpeft.common.wire import secagg as wire
from fedpeft.common.wire.names import (
    ARRAYS,
    DP_UNCLIPPED,
    METRICS,
    NUM_EXAMPLES,
    NUM_ROUNDS,
    RUN_CONFIG,
)
from fedpeft.server.round_recorder import RoundRecorder
from fedpeft.server.strategies import (
    InstrumentedStrategy,
    PrivateStrategy,
    SecureAggregationStrategy,
    build_strategy,
)


@pytest.mark.parametrize(("n", "size"), [(3, 1), (5, 1000), (8, 20000)])
def test_aggregate_equals_weighted_mean(tmp_path: Path, n: int, size: int) -> None:
    strategy, recorder, updates, current = make_strategy(tmp_path, n, size, seed=n)
    grid = Grid(updates)
    arrays, metrics = run_round(strategy, grid, current)
    assert arrays is not None and metrics is not None
    got = arrays["w"].numpy()
    bound = quantization_bound(2.0, 20)
    np.testing.assert_allclose(got, expected_mean(updates, updates, current), atol=bound + 1e-6)
    assert metrics[NUM_EXAMPLES] == sum(w for _, w in updates.values())
    # No reply the server received holds an update in the clear (or its example count).
    plain = [values.astype(np.float32).tobytes()[:64] for values, _ in updates.values()]
    plain += [values.astype(np.float64).tobytes()[:64] for values, _ in updates.values()]
    for content in grid.seen:
        for record in content.array_records.values():
            for array in record.values():
                assert not any(p in bytes(array.data) for p in plain)
        assert all(NUM_EXAMPLES not in m for m in content.metric_records.values())


def test_dropouts_after_key_exchange_and_after_masking(tmp_path: Path) -> None:
    strategy, recorder, updates, current = make_strategy(tmp_path, 6, 500, max_dropouts=2)
    nodes = list(updates)
    # One institution vanishes before sending its masked update, one after sending it.
    grid = Grid(updates, vanish={"train": {nodes[0]}, wire.UNMASK: {nodes[1]}})
    arrays, _ = run_round(strategy, grid, current)
    assert arrays is not None
    included = [n for n in nodes if n != nodes[0]]  # a masked update that arrived counts
    np.testing.assert_allclose(arrays["w"].numpy(), expected_mean(updates, included, current),
                               atol=quantization_bound(2.0, 20) + 1e-6)


def test_too_many_dropouts_abort_the_round_and_keep_the_global(tmp_path: Path) -> None:
    strategy, recorder, updates, current = make_strategy(tmp_path, 5, 100, max_dropouts=1)
    nodes = list(updates)
    grid = Grid(updates, vanish={"train": {nodes[0], nodes[1]}})
    arrays, metrics = run_round(strategy, grid, current)
    assert arrays is None and metrics is None  # Flower keeps the previous global
    record = recorder.close(1, {"accuracy": 0.5}, 0.0)
    aborted = [f for f in record["failures"] if f["node_id"] is None]
    assert aborted and "round aborted" in aborted[0]["reason"]
    assert "max_dropouts" in aborted[0]["reason"]
    assert record["secure_aggregation"]["aborted"]
    assert read_metrics(tmp_path / "metrics.jsonl")[-1]["round"] == 1


def test_threshold_that_would_let_the_server_unmask_is_refused(tmp_path: Path) -> None:
    """Too few institutions this round for the dropout tolerance: no masking with a weaker
    threshold, no message sent, and the run is not ended: the round is aborted and recorded
    (a deployed round can be sized while an institution is offline)."""
    strategy, recorder, updates, current = make_strategy(tmp_path, 3, 10, max_dropouts=2)
    grid = Grid(updates)
    assert run_round(strategy, grid, current) == (None, None)
    assert grid.seen == []
    record = recorder.close(1, {}, 0.0)
    (aborted,) = [f for f in record["failures"] if f["node_id"] is None]
    assert aborted["phase"] == "secure-aggregation"
    assert "3 institutions sampled" in aborted["reason"]
    assert "max_dropouts=2 is too many for 3 institutions" in aborted["reason"]


def test_error_reply_counts_as_a_dropout(tmp_path: Path) -> None:
    strategy, recorder, updates, current = make_strategy(tmp_path, 4, 50, max_dropouts=1)
    grid = Grid(updates)
    arrays = ArrayRecord({"w": Array(current)})
    messages = list(strategy.configure_train(1, arrays, ConfigRecord({}), grid))  # type: ignore[arg-type]
    replies = grid.send_and_receive(messages)
    failed = replies[0]
    replies[0] = make_message(failed.metadata, error=Error(code=0, reason="institution crashed"))
    result, _ = strategy.aggregate_train(1, replies)
    assert result is not None
    survivors = [n for n in updates if n != failed.metadata.src_node_id]
    np.testing.assert_allclose(result["w"].numpy(), expected_mean(updates, survivors, current),
                               atol=quantization_bound(2.0, 20) + 1e-6)


def test_distributed_noise_sums_to_the_target_scale_under_masking(tmp_path: Path) -> None:
    """Each institution adds its share of DP noise before masking; the unmasked sum carries at
    least the central noise sigma * C (exactly it when only the guaranteed m take part)."""
    sigma, clip, n, max_dropouts, size = 1.0, 0.5, 5, 1, 100_000
    strategy, _, updates, current = make_strategy(tmp_path, n, size, max_dropouts=max_dropouts)
    share = distributed_noise_std(sigma, clip, n - max_dropouts)
    rng = np.random.default_rng(5)
    noisy = {node: (rng.normal(0.0, share, size), 1) for node in updates}
    arrays, _ = run_round(strategy, Grid(noisy), np.zeros(size, dtype=np.float32))
    assert arrays is not None
    total = arrays["w"].numpy().astype(np.float64) * n  # equal weights: the sum of the shares
    assert total.std() == pytest.approx(sigma * clip * np.sqrt(n / (n - max_dropouts)), rel=0.02)
    assert total.std() >= sigma * clip


def test_dropouts_at_different_stages_count_together(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One institution misses the key exchange, another its masked update: every secret still
    has enough holders, but two of five are missing from a sum whose DP noise was sized for
    one missing at most: the round is aborted and the global kept."""
    strategy, recorder, updates, current = make_strategy(tmp_path, 5, 100, max_dropouts=1)
    nodes = list(updates)
    grid = Grid(updates, vanish={wire.SETUP: {nodes[0]}, "train": {nodes[1]}})
    arrays, metrics = run_round(strategy, grid, current)
    assert arrays is None and metrics is None
    record = recorder.close(1, {"accuracy": 0.5}, 0.0)
    aborted = [f for f in record["failures"] if f["node_id"] is None]
    assert "2 of 5 institutions dropped out after the masked inputs; more than " \
           "secure_aggregation.max_dropouts=1 allows" in aborted[0]["reason"]
    assert any("round 1 aborted, global adapter unchanged" in r.getMessage()
               for r in caplog.records)


# -- DP under masking, with the institutions' own stages -------------------------------------
class _StagesGrid(Grid):
    """Answers train messages as `fedpeft.client.rounds.train` does once local training is
    done: the round's change goes through the client's own stage chain (privacy -> masking),
    so clipping and the noise share are the client code's, at the level the server sent."""

    def __init__(self, cfg, deltas: dict[int, np.ndarray], current: np.ndarray,
                 vanish: dict[str, set[int]] | None = None, round_shift: int = 0) -> None:
        super().__init__({node: (delta, 1) for node, delta in deltas.items()}, vanish)
        self.cfg, self.current, self.round_shift = cfg, current, round_shift
        self.sent: list[Outgoing] = []
        """What each institution's stages made of its update, as it left."""

    def _handle(self, msg: Message, context: Context) -> Message:
        if msg.metadata.message_type != "train":
            return super()._handle(msg, context)
        config = msg.content["config"]
        received = {"w": self.current}
        delta = {"w": self.updates[context.node_id][0].astype(np.float32)}
        rnd = RoundInput(msg, context, self.cfg, config, data=None,  # type: ignore[arg-type]
                         learner=None, received=received, keys=None,
                         server_round=int(config["server-round"]) + self.round_shift)
        out = Outgoing(state={"w": self.current + delta["w"]}, delta=delta, weight=10,
                       metrics={NUM_EXAMPLES: 10})
        stages = chain(rnd)
        assert [stage.name for stage in stages] == ["privacy", "masking"]
        for stage in stages:
            out = stage.apply(out, rnd)
        self.sent.append(out)
        return Message(RecordDict({ARRAYS: to_array_record(out.state),
                                   METRICS: MetricRecord(out.metrics)}), reply_to=msg)


@pytest.mark.parametrize("dropped", [0, 1])
def test_delivered_noise_variance_through_the_real_stages_is_at_least_the_accounted(
        tmp_path: Path, dropped: int) -> None:
    """The issue's setting (noise multiplier 8.09, 5 institutions, one dropout allowed), with
    the clip range the config now demands. Each institution's change is far above the clip
    norm; the privacy stage clips it and adds its noise share, the masking stage encodes and
    masks it. The noise in the unmasked sum must have at least the variance the accountant
    charges, sigma^2 C^2 per value, also when an institution drops out after the key exchange."""
    sigma, clip, n, size = 8.09, 0.5, 5, 74_883
    needed = clip + NOISE_TAIL_SIGMAS * sigma * clip / np.sqrt(n - 1)
    cfg = load_config(overrides={
        "secure_aggregation.enabled": True, "secure_aggregation.max_dropouts": 1,
        "secure_aggregation.clip_range": float(np.ceil(needed)), "security.seal_updates": False,
        "privacy.enabled": True, "privacy.noise_multiplier": sigma, "privacy.clip_norm": clip,
        "federation.min_train_clients": n, "federation.min_available_clients": n,
    })
    issue = {"secure_aggregation.enabled": True, "privacy.enabled": True,
             "privacy.noise_multiplier": sigma, "privacy.clip_norm": clip,
             "federation.min_train_clients": n, "federation.min_available_clients": n}
    with pytest.raises(ConfigError, match=r"clip_range=4 cannot hold an update clipped to 0.5 "
                                          r"plus a noise share .* at least 12.63"):
        load_config(overrides={**issue, "secure_aggregation.clip_range": 4.0})
    # left unset, the range widens to what the noise share needs, in whole units
    assert load_config(overrides=issue).secure_aggregation.clip_range == 13.0
    recorder = RoundRecorder(MetricsLog(tmp_path / "metrics.jsonl"), parallel_slots=2)
    strategy = SecureAggregationStrategy(
        PrivateStrategy(build_strategy(cfg), cfg, masked=True, recorder=recorder),
        cfg, wire.UNSEALED_FEDERATION, RUN, recorder)
    rng = np.random.default_rng(3)
    deltas = {100 + i: rng.normal(0, 1, size) for i in range(n)}  # norms ~270 >> clip
    current = np.zeros(size, dtype=np.float32)
    vanish = {"train": {100}} if dropped else {}
    grid = _StagesGrid(cfg, deltas, current, vanish)
    arrays = ArrayRecord({"w": Array(current)})
    config = ConfigRecord({RUN_CONFIG: to_wire(cfg), NUM_ROUNDS: 1})
    messages = list(strategy.configure_train(1, arrays, config, grid))  # type: ignore[arg-type]
    result, _ = strategy.aggregate_train(1, grid.send_and_receive(messages))
    assert result is not None
    survivors = [node for node in deltas if node not in vanish.get("train", set())]
    clipped = sum(clip_update({"w": deltas[node]}, clip).delta["w"] for node in survivors)
    noise = result["w"].numpy().astype(np.float64) * len(survivors) - clipped
    accounted = (sigma * clip) ** 2
    tolerance = 5 * np.sqrt(2 / size)  # five standard errors of a sample variance
    assert noise.var() >= accounted * (1 - tolerance)
    # and it is what n - dropped shares of sigma^2 C^2 / (n - 1) add up to
    assert noise.var() == pytest.approx(accounted * len(survivors) / (n - 1), rel=tolerance)


def _private_masked(tmp_path: Path, n: int, sigma: float, clip: float, max_dropouts: int = 1):
    needed = clip + NOISE_TAIL_SIGMAS * sigma * clip / np.sqrt(n - max_dropouts)
    cfg = load_config(overrides={
        "secure_aggregation.enabled": True, "secure_aggregation.max_dropouts": max_dropouts,
        "secure_aggregation.clip_range": max(2.0, float(np.ceil(needed))),
        "security.seal_updates": False,
        "federation.min_train_clients": n, "federation.min_available_clients": n,
        "privacy.enabled": True, "privacy.noise_multiplier": sigma, "privacy.clip_norm": clip,
    })
    recorder = RoundRecorder(MetricsLog(tmp_path / "metrics.jsonl"), parallel_slots=2)
    private = PrivateStrategy(build_strategy(cfg), cfg, masked=True, recorder=recorder)
    strategy = InstrumentedStrategy(SecureAggregationStrategy(
        private, cfg, wire.UNSEALED_FEDERATION, RUN, recorder), recorder)
    return cfg, strategy, recorder


def test_institutions_clip_their_change_before_masking(tmp_path: Path) -> None:
    """No noise: the unmasked mean is the mean of the changes as each institution clipped
    them, so changes 100 times the bound arrive at the bound, with equal weights."""
    n, size, clip = 4, 1000, 0.5
    cfg, strategy, recorder = _private_masked(tmp_path, n, sigma=0.0, clip=clip)
    direction = np.random.default_rng(1).uniform(-1, 1, size)
    direction /= np.linalg.norm(direction)
    deltas = {100 + i: direction * 50.0 * (i + 1) for i in range(n)}
    current = np.zeros(size, dtype=np.float32)
    grid = _StagesGrid(cfg, deltas, current)
    arrays, metrics = run_round(strategy, grid, current)
    assert arrays is not None and metrics is not None
    # whether one update fitted the bound is about that update: it stays at the institution
    assert all(DP_UNCLIPPED not in record for content in grid.seen
               for record in content.metric_records.values())
    # each update left masked: its example count travels inside the masked vector, not
    # beside it; the count of values outside the clip range (none here) and the form do
    assert [(out.metrics, out.ledger) for out in grid.sent] == \
        [({wire.CLIPPED: 0}, {"form": "masked"})] * n
    mean = arrays["w"].numpy().astype(np.float64)
    np.testing.assert_allclose(mean, direction * clip, atol=quantization_bound(2.0, 20) + 1e-6)
    assert metrics[NUM_EXAMPLES] == n  # weight 1 each under DP, not the 10 examples
    assert recorder.close(1, {}, 0.0)["privacy"]["noise"] == "distributed"


def test_the_noise_share_comes_from_the_server_and_sums_to_the_central_scale(
        tmp_path: Path) -> None:
    """The server sends each institution the share for n - max_dropouts participants and the
    institutions add it themselves: the unmasked sum carries sigma * C * sqrt(n / (n - d))."""
    n, max_dropouts, size, sigma, clip = 5, 1, 100_000, 1.0, 0.5
    cfg, strategy, _ = _private_masked(tmp_path, n, sigma, clip, max_dropouts)
    current = np.zeros(size, dtype=np.float32)
    deltas = {100 + i: np.zeros(size) for i in range(n)}
    grid = _StagesGrid(cfg, deltas, current)
    arrays, _ = run_round(strategy, grid, current)
    assert arrays is not None
    total = arrays["w"].numpy().astype(np.float64) * n  # equal weights: the sum of the shares
    assert total.std() == pytest.approx(sigma * clip * np.sqrt(n / (n - max_dropouts)), rel=0.02)
    assert abs(total.mean()) < 5 * total.std() / np.sqrt(size)


def test_an_institution_masks_only_for_the_round_it_is_training(tmp_path: Path) -> None:
    """Masking parameters bound to round 1 delivered with a train message for round 2 (a
    server or relay replaying them) are refused by the institution, not masked."""
    cfg, strategy, _ = _private_masked(tmp_path, 3, sigma=0.0, clip=1.0)
    current = np.zeros(10, dtype=np.float32)
    grid = _StagesGrid(cfg, {100 + i: np.zeros(10) for i in range(3)}, current,
                       round_shift=1)
    with pytest.raises(SecurityError, match="another run or round"):
        run_round(strategy, grid, current)


# -- issue #14: what the mutation run found untested ---------------------------------------
class _FaultyGrid(Grid):
    """One node fails the key advertisement with an error; another answers the share stage
    without a secure-aggregation record."""

    def __init__(self, updates: Updates, crashes: int, empty: int) -> None:
        super().__init__(updates)
        self.crashes, self.empty = crashes, empty

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> list[Message]:
        replies = super().send_and_receive(messages, timeout=timeout)
        return [self._fault(reply) for reply in replies]

    def _fault(self, reply: Message) -> Message:
        kind, node = reply.metadata.message_type, reply.metadata.src_node_id
        if kind == wire.SETUP and node == self.crashes:
            return make_message(reply.metadata, error=Error(code=0, reason="out of memory"))
        if kind == wire.SHARE and node == self.empty:
            return make_message(reply.metadata, RecordDict())
        return reply


def test_stage_failures_are_recorded_per_node_and_the_round_goes_on(tmp_path: Path) -> None:
    strategy, recorder, updates, current = make_strategy(tmp_path, 6, 50, max_dropouts=2)
    nodes = list(updates)
    arrays, _ = run_round(strategy, _FaultyGrid(updates, crashes=nodes[0], empty=nodes[1]), current)
    assert arrays is not None
    np.testing.assert_allclose(arrays["w"].numpy(), expected_mean(updates, nodes[2:], current),
                               atol=quantization_bound(2.0, 20) + 1e-6)
    record = recorder.close(1, {}, 0.0)
    assert record["failures"] == [
        {"node_id": nodes[0], "phase": wire.SETUP, "reason": "out of memory"},
        {"node_id": nodes[1], "phase": "secure-aggregation",
         "reason": f"{wire.SHARE} reply has no secagg record"},
    ]
    facts = record["secure_aggregation"]
    assert {key: facts[key] for key in ("participants", "survivors", "dropped")} == {
        "participants": 6, "survivors": 4, "dropped": 0}
    assert facts["total_weight"] == sum(updates[n][1] for n in nodes[2:])
    assert facts["protocol_bytes_sent"] > 0 and facts["protocol_bytes_received"] > 0
    assert facts["server_s"] > 0


def test_the_settings_line_shows_the_planned_graph_once_a_round_is_planned(
        tmp_path: Path) -> None:
    strategy, _, updates, current = make_strategy(tmp_path, 5, 10)
    inner = strategy.inner
    assert inner.settings() == (  # type: ignore[attr-defined]
        "k=auto, max_dropouts=1, clip_range=2, quantization_bits=20, ring_bits=48")
    arrays = ArrayRecord({"w": Array(current)})
    list(strategy.configure_train(1, arrays, ConfigRecord({}), Grid(updates)))  # type: ignore[arg-type]
    info = inner._round.info  # type: ignore[attr-defined]
    assert inner.settings().startswith(  # type: ignore[attr-defined]
        f"k={info['neighbours']}, threshold={info['threshold']}, max_dropouts=1")


def test_the_clear_metrics_are_averaged_without_counts_timings_or_clipping() -> None:
    from fedpeft.server.strategies.secure_aggregation import _mean_metrics

    records = [MetricRecord({"loss": 1.0, "accuracy": 0.5, "compute-s": 9.0, NUM_EXAMPLES: 10,
                             wire.CLIPPED: 3}),
               MetricRecord({"loss": 3.0, "accuracy": 0.75, "compute-s": 1.0, NUM_EXAMPLES: 30,
                             wire.CLIPPED: 0})]
    assert _mean_metrics(records) == {"loss": 2.0, "accuracy": 0.625}
    assert _mean_metrics([]) == {}
    assert _mean_metrics([MetricRecord({"loss": 2.0})]) == {"loss": 2.0}


def test_an_aborted_round_is_recorded_as_a_secure_aggregation_failure(tmp_path: Path) -> None:
    strategy, recorder, updates, current = make_strategy(tmp_path, 5, 20, max_dropouts=1)
    nodes = list(updates)
    assert run_round(strategy, Grid(updates, vanish={"train": set(nodes[:2])}), current) == (
        None, None)
    record = recorder.close(1, {}, 0.0)
    (aborted,) = [f for f in record["failures"] if f["node_id"] is None]
    assert aborted["phase"] == "secure-aggregation"
    assert aborted["reason"] == f"round aborted: {record['secure_aggregation']['aborted']}"
    assert "max_dropouts" in record["secure_aggregation"]["aborted"]

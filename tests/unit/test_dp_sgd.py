"""Example-level DP-SGD inside one institution (privacy.example_level, Opacus), on tiny models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import Context, Message, RecordDict
from tests.unit.flower_identity import pin_task_identity
from torch.optim.optimizer import register_optimizer_step_pre_hook

from fedpeft.common.config import validate_config
from fedpeft.common.errors import ConfigError, ModelError, SecurityError
from fedpeft.common.privacy import epsilon_for
from fedpeft.common.training import dp_sgd
from fedpeft.common.training.batches import collate
from fedpeft.common.training.learner import Learner, TrainResult
from fedpeft.common.wire.names import DP_EXAMPLE_EPSILON, NON_AVERAGED_METRICS

LABELS = ["neg", "pos"]
TOY = pd.DataFrame({"text": ["good great fine nice"] * 16 + ["bad awful terrible poor"] * 16,
                    "label": [0] * 16 + [1] * 16})
ROWS = len(TOY)
EVERY_ROW = {"batch_size": ROWS, "lr_scheduler": "constant", "local_steps": 2}
"""Poisson sampling at rate 1: every row in every step, so only the noise is random."""


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads; on a busy machine they only wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _learner(tiny_config, model_dir: str, training: dict, privacy: dict | None = None,
             **sections) -> Learner:
    privacy = {"example_level": True, **(privacy or {})}
    return Learner(tiny_config(model_dir, training=training, privacy=privacy, **sections), LABELS)


def _distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a)))


def _left_by_opacus(learner: Learner) -> list[str]:
    model = learner.model
    leftovers = [name for name, p in model.named_parameters()
                 if any(a in vars(p) for a in ("grad_sample", "summed_grad", "_forward_counter"))]
    leftovers += [name for name, m in model.named_modules() if "activations" in vars(m)]
    return leftovers + (["hooks"] if "autograd_grad_sample_hooks" in vars(model) else [])


def _without_dropout(learner: Learner) -> None:
    """The tiny BERT's own dropout would differ between passes; these tests compare passes."""
    for module in learner.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _row_gradients(learner: Learner) -> list[list[torch.Tensor]]:
    """Each TOY row's own gradient, one tensor per trainable parameter (autograd, no Opacus)."""
    model = learner.model
    params = [p for p in model.parameters() if p.requires_grad]
    examples, pad = learner._encode(TOY, "t"), learner.tokenizer.pad_token_id
    rows = []
    for example in examples:
        model.zero_grad(set_to_none=True)
        dp_sgd.per_example_loss(model, collate([example], pad), "classification").sum().backward()
        rows.append([p.grad.detach().clone() for p in params])
    model.zero_grad(set_to_none=True)
    return rows


@contextmanager
def _received_gradients() -> Iterator[list[torch.Tensor]]:
    """The flat gradient every optimizer step receives while the block runs, in order."""
    received: list[torch.Tensor] = []

    def record(optimizer: torch.optim.Optimizer, *_: object) -> None:
        received.append(torch.cat([p.grad.flatten() for group in optimizer.param_groups
                                   for p in group["params"]]))

    handle = register_optimizer_step_pre_hook(record)
    try:
        yield received
    finally:
        handle.remove()


def test_dp_sgd_trains_the_adapter_and_leaves_the_model_clean(tiny_bert_dir, tiny_config) -> None:
    learner = _learner(tiny_config, tiny_bert_dir,
                       {"learning_rate": 0.05, "lr_scheduler": "constant", "local_steps": 4})
    start = learner.get_state()
    result = learner.train(TOY, server_round=1, num_rounds=1)
    assert (result.steps, result.dp_steps, result.num_examples) == (4, 4, ROWS)
    assert result.dp_sampling_rate == 8 / ROWS and np.isfinite(result.loss)
    assert _distance(learner.get_state(), start) > 0
    assert _left_by_opacus(learner) == []
    assert np.isfinite(learner.evaluate(TOY)["loss"])


@pytest.mark.parametrize("accumulation", [1, 4])
def test_the_step_is_the_mean_of_the_rows_clipped_gradients(tiny_bert_dir, tiny_config,
                                                            accumulation) -> None:
    """Noise 0, every row in the step: the gradient AdamW receives is exactly
    (1/32) sum_i clip(g_i, C) over the rows' own gradients g_i, each clipped on its own, which
    a clip of the batch gradient would not give. With accumulation the 32 rows go through in
    4 chunks of 8 and the result is the same."""
    clip = 1e-3
    training = {**EVERY_ROW, "batch_size": ROWS // accumulation, "local_steps": 1,
                "gradient_accumulation_steps": accumulation}
    learner = _learner(tiny_config, tiny_bert_dir, training,
                       {"example_noise_multiplier": 0.0, "example_clip_norm": clip})
    _without_dropout(learner)
    rows = [torch.cat([g.flatten() for g in row]) for row in _row_gradients(learner)]
    norms = torch.stack([torch.linalg.vector_norm(g) for g in rows])
    expected = torch.stack([g * min(1.0, clip / (float(n) + 1e-6))
                            for g, n in zip(rows, norms, strict=True)]).sum(dim=0) / ROWS
    with _received_gradients() as received:
        result = learner.train(TOY, server_round=1, num_rounds=1)
    assert result.dp_sampling_rate == 1.0 and len(received) == result.dp_steps == 1
    assert float(norms.min()) > 10 * clip  # every row was clipped
    assert float(torch.linalg.vector_norm(received[0])) <= clip
    torch.testing.assert_close(received[0], expected, rtol=1e-4, atol=1e-9)


def test_noise_is_fresh_each_round_and_absent_at_zero(tiny_bert_dir, tiny_config) -> None:
    def twice(noise: float) -> list[dict[str, np.ndarray]]:
        learner = _learner(tiny_config, tiny_bert_dir, EVERY_ROW,
                           {"example_noise_multiplier": noise})
        start, states = learner.get_state(), []
        for _ in range(2):
            learner.set_state(start)
            learner.train(TOY, server_round=1, num_rounds=1)
            states.append(learner.get_state())
        return states

    silent, noisy = twice(0.0), twice(1.0)
    assert _distance(*silent) == 0.0  # same rows, no noise: nothing random is left
    assert _distance(*noisy) > 0  # not reproducible from training.seed, by design
    assert _distance(silent[0], noisy[0]) > 0


def test_fedprox_still_pulls_towards_the_round_start(tiny_bert_dir, tiny_config) -> None:
    learner = _learner(tiny_config, tiny_bert_dir,
                       {**EVERY_ROW, "learning_rate": 0.01, "local_steps": 8},
                       {"example_noise_multiplier": 0.0})
    start = learner.get_state()
    learner.train(TOY, server_round=1, num_rounds=1)
    free = _distance(learner.get_state(), start)
    learner.set_state(start)
    learner.train(TOY, server_round=1, num_rounds=1, proximal_mu=1e4)
    assert _distance(learner.get_state(), start) < free / 5


def test_off_is_the_ordinary_path_whatever_the_example_settings(tiny_bert_dir, tiny_config) -> None:
    training = {"learning_rate": 0.1, "local_steps": 2, "gradient_accumulation_steps": 2}
    peft = {"lora_dropout": 0.1}  # draws from the seeded generator: any extra draw would show
    default = Learner(tiny_config(tiny_bert_dir, training=training, peft=peft), LABELS)
    off = _learner(tiny_config, tiny_bert_dir, training,
                   {"example_level": False, "example_noise_multiplier": 3.0,
                    "example_clip_norm": 0.01, "example_delta": 1e-7}, peft=peft)
    results = [learner.train(TOY, server_round=2, num_rounds=3, proximal_mu=0.5)
               for learner in (default, off)]
    assert _distance(default.get_state(), off.get_state()) == 0.0
    assert results[0].loss == results[1].loss and results[1].dp_steps == 0


def test_per_example_loss_is_each_rows_own(tiny_gpt2_dir, tiny_config) -> None:
    """Causal LM: a row's loss is the mean over its own response tokens, whatever the batch;
    one DP-SGD round on GPT-2 (LoRA on Conv1D projections) runs."""
    table = pd.DataFrame({"prompt": ["what colour is the sky?", "name a fruit"] * 4,
                          "response": ["blue", "a ripe yellow banana"] * 4})
    cfg = tiny_config(tiny_gpt2_dir, "causal-lm", training={"local_steps": 2, "batch_size": 4},
                      privacy={"example_level": True})
    learner = Learner(cfg, None)
    examples = learner._encode(table, "t")
    pad = learner.tokenizer.pad_token_id
    with torch.no_grad():
        together = dp_sgd.per_example_loss(learner.model, collate(examples[:2], pad), "causal-lm")
        for row in range(2):
            alone = collate(examples[row:row + 1], pad)
            own = float(learner.model(**alone).loss)
            assert float(together[row]) == pytest.approx(own, rel=1e-4)
    assert learner.train(table, server_round=1, num_rounds=1).dp_steps == 2


def test_a_layer_opacus_cannot_handle_is_named_in_one_line(tiny_bert_dir, tiny_config) -> None:
    learner = _learner(tiny_config, tiny_bert_dir, {"local_steps": 1},
                       peft={"target_modules": ["word_embeddings", "query"]})
    start = learner.get_state()
    with pytest.raises(ModelError, match="word_embeddings.lora_embedding_A") as refused:
        learner.train(TOY, server_round=1, num_rounds=1)
    assert "\n" not in str(refused.value)
    assert _distance(learner.get_state(), start) == 0.0 and _left_by_opacus(learner) == []


@pytest.mark.parametrize(("model", "field"), [({"gradient_checkpointing": True},
                                               "model.gradient_checkpointing"),
                                              ({"precision": "fp16"}, "model.precision")])
def test_unsupported_combinations_are_one_line_config_errors(model, field) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as refused:
        validate_config({"model": model, "privacy": {"example_level": True}})
    assert "\n" not in str(refused.value) and "privacy.example_level" in str(refused.value)


# -- the institution's own epsilon, across rounds ------------------------------------------
def test_epsilon_is_accounted_over_all_steps_in_the_context_state(tiny_config,
                                                                  tiny_bert_dir) -> None:
    from fedpeft.client.rounds import DP_SGD_STATE, _example_epsilon

    privacy = tiny_config(tiny_bert_dir, privacy={"example_level": True,
                                                  "example_noise_multiplier": 1.1}).privacy
    context = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    per_round = TrainResult(loss=0.5, num_examples=ROWS, steps=6, compute_seconds=0.0,
                            dp_steps=6, dp_sampling_rate=0.25)
    first = _example_epsilon(context, privacy, per_round)
    second = _example_epsilon(context, privacy, per_round)
    assert first == epsilon_for(1.1, 0.25, 6, privacy.delta)  # example_delta None: delta
    assert second == epsilon_for(1.1, 0.25, 12, privacy.delta) > first
    assert context.state[DP_SGD_STATE]["steps"] == 12
    assert DP_EXAMPLE_EPSILON in NON_AVERAGED_METRICS
    with pytest.raises(SecurityError, match="did not run DP-SGD"):
        _example_epsilon(context, privacy, TrainResult(0.5, ROWS, 6, 0.0))


def test_client_rounds_report_the_running_epsilon_and_ledger_it(
        card_fraud_csv: Path, tiny_bert_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two train messages through the client app's own `train`, sharing one node context as
    Flower keeps it: the reply carries the cumulative epsilon and no training loss, and the
    institution's ledger records it."""
    from fedpeft.client.learner_cache import learner_for
    from fedpeft.client.rounds import train
    from fedpeft.common.config import SecurityConfig, load_config
    from fedpeft.common.config.loader import to_wire
    from fedpeft.common.crypto import sign_global
    from fedpeft.common.wire.envelopes import envelope_record, global_context
    from fedpeft.common.wire.names import (
        ARRAYS,
        CONFIG,
        METRICS,
        SERVER_ROUND,
        SIGNED_GLOBAL_STYPE,
    )
    from fedpeft.common.wire.run_record import run_config_record
    from fedpeft.server.credentials import load_server_keys
    from fedpeft.simulation.credentials import ephemeral_credentials, with_credentials

    run = 7
    pin_task_identity(monkeypatch, run)
    cfg = load_config(overrides={
        "model.name": tiny_bert_dir, "model.max_seq_length": 16,
        "data.train": str(card_fraud_csv), "data.partition": "iid",
        "data.labels": ["card", "fraud"], "training.local_steps": 3, "training.batch_size": 4,
        "peft.lora_dropout": 0.0, "privacy.example_level": True,
        "privacy.example_noise_multiplier": 0.8, "privacy.example_delta": 1e-4,
    })
    with ephemeral_credentials(["institution-0", "institution-1"]) as (folder, federation_id):
        cfg = with_credentials(cfg, folder, federation_id)
        server = load_server_keys(SecurityConfig(credentials_dir=str(folder)))
        context = Context(run_id=run, node_id=5, node_config={"partition-id": 0,
                                                              "num-partitions": 2},
                          state=RecordDict(), run_config={})
        initial = learner_for(cfg, None).get_state()
        replies = []
        for server_round in (1, 2):
            blob = sign_global(initial, global_context(federation_id, run, server_round - 1),
                               server.signing_key)
            config, _ = run_config_record(to_wire(cfg), federation_id, run, 2, server.signing_key)
            config[SERVER_ROUND] = server_round
            message = Message(RecordDict({
                ARRAYS: envelope_record(blob, SIGNED_GLOBAL_STYPE), CONFIG: config,
            }), dst_node_id=5, message_type="train")
            replies.append(train(message, context).content[METRICS])
        ledgers = list(folder.parent.rglob("ledger.jsonl"))  # bundles/ beside the federation
        lines = [json.loads(line) for path in ledgers for line in path.read_text().splitlines()]

    from fedpeft.client.local_data import local_data
    train_rows = len(local_data(cfg, context).train)
    rate = 4 / train_rows
    for server_round, metrics in enumerate(replies, start=1):
        assert "loss" not in metrics
        assert metrics["num-examples"] == 1  # the count is withheld: its weight goes sealed
        assert metrics[DP_EXAMPLE_EPSILON] == pytest.approx(
            epsilon_for(0.8, rate, 3 * server_round, 1e-4))
    sent = [line["body"] for line in lines if line.get("kind") == "update-sent"]
    assert [body["example_steps"] for body in sent] == [3, 6]
    assert sent[1]["example_epsilon"] == pytest.approx(replies[1][DP_EXAMPLE_EPSILON])
    assert sent[1]["example_delta"] == 1e-4
    # the institution's lifetime account charges the same steps: the same epsilon, exactly
    from fedpeft.common.privacy.lifetime import EXAMPLE, account_of

    assert account_of(lines).epsilon(EXAMPLE, 1e-4) == replies[1][DP_EXAMPLE_EPSILON]


def test_the_noise_has_std_sigma_times_clip_over_the_expected_batch(tiny_bert_dir,
                                                                    tiny_config) -> None:
    """Every row in the step and no dropout: two steps from the same start on the same rows
    differ only by their noise, so the gradients AdamW receives differ by
    (z1 - z2) * sigma * C / 32 with z standard normal per coordinate: std sqrt(2) sigma C / 32
    (Opacus adds N(0, (sigma C)^2) to the clipped sum and divides by the expected batch)."""
    sigma, clip = 4.0, 1e-3
    learner = _learner(tiny_config, tiny_bert_dir, {**EVERY_ROW, "local_steps": 1},
                       {"example_noise_multiplier": sigma, "example_clip_norm": clip})
    _without_dropout(learner)
    start = learner.get_state()
    with _received_gradients() as received:
        for _ in range(2):
            learner.set_state(start)
            learner.train(TOY, server_round=1, num_rounds=1)
    assert len(received) == 2
    difference = (received[0].double() - received[1].double()).numpy()
    expected = np.sqrt(2) * sigma * clip / ROWS
    assert difference.size > 1000  # enough coordinates for a 5 % estimate of the std
    assert difference.std() == pytest.approx(expected, rel=0.05)
    assert abs(difference.mean()) < 5 * expected / np.sqrt(difference.size)


def test_institution_refuses_a_round_past_its_example_target(tiny_config, tiny_bert_dir) -> None:
    """The institution's own stop: rounds 1 and 2 fit under the target, round 3 would not."""
    from fedpeft.client.rounds import _example_budget, _example_epsilon

    target = (epsilon_for(1.1, 0.25, 12, 1e-5) + epsilon_for(1.1, 0.25, 18, 1e-5)) / 2
    privacy = tiny_config(tiny_bert_dir, privacy={
        "example_level": True, "example_noise_multiplier": 1.1,
        "example_target_epsilon": target}).privacy
    context = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    check = _example_budget(context, privacy, "clinic-a")
    assert check is not None
    per_round = TrainResult(loss=0.5, num_examples=ROWS, steps=6, compute_seconds=0.0,
                            dp_steps=6, dp_sampling_rate=0.25)
    for _ in range(2):
        check(6, 0.25)
        _example_epsilon(context, privacy, per_round)
    with pytest.raises(SecurityError, match=r"clinic-a: privacy.example_target_epsilon=.* "
                                            r"reached: this round's 6 DP-SGD steps would take "
                                            r"the example-level epsilon to .*refusing to train"):
        check(6, 0.25)


def test_learner_asks_the_budget_before_any_step(tiny_bert_dir, tiny_config) -> None:
    learner = _learner(tiny_config, tiny_bert_dir, {**EVERY_ROW, "local_steps": 3})
    start = learner.get_state()
    asked: list[tuple[int, float]] = []

    def refuse(steps: int, rate: float) -> None:
        asked.append((steps, rate))
        raise SecurityError("budget reached")

    with pytest.raises(SecurityError, match="budget reached"):
        learner.train(TOY, server_round=1, num_rounds=1, example_budget=refuse)
    assert asked == [(3, 1.0)]
    assert _distance(learner.get_state(), start) == 0.0  # nothing trained


def test_simulation_plans_rounds_within_the_example_target(tiny_bert_dir, tiny_config) -> None:
    from fedpeft.simulation.example_budget import rounds_within_example_budget

    privacy = {"example_level": True, "example_noise_multiplier": 2.0,
               "example_target_epsilon": 3.0}
    cfg = tiny_config(tiny_bert_dir, training={"local_steps": 10, "batch_size": 8},
                      privacy=privacy, federation={"num_rounds": 50})
    allowed = rounds_within_example_budget(cfg, [400, 80])
    # the 80-row institution (rate 0.1) decides: its epsilon after `allowed` rounds fits
    assert epsilon_for(2.0, 0.1, 10 * allowed, 1e-5) <= 3.0 < epsilon_for(
        2.0, 0.1, 10 * (allowed + 1), 1e-5)
    assert 0 < allowed < 50 == rounds_within_example_budget(cfg, [400])


def test_example_target_without_noise_is_refused(tiny_bert_dir, tiny_config) -> None:
    with pytest.raises(ValueError, match=r"example_target_epsilon=3 needs "
                                         r"privacy.example_level=true"):
        tiny_config(tiny_bert_dir, privacy={"example_target_epsilon": 3.0})


# -- a fixed sampling rate (privacy.example_sample_rate) -----------------------------------
def test_a_fixed_rate_divides_the_noisy_sum_by_rate_times_rows(tiny_bert_dir, tiny_config,
                                                              monkeypatch) -> None:
    """At rate 0.5 of 32 rows the expected batch is 16, whatever training.batch_size is: with
    the draw forced to every row (noise 0), AdamW receives the clipped sum over 32 rows / 16,
    twice their mean. The draw is asked for at the configured rate."""
    clip = 1e-3
    learner = _learner(tiny_config, tiny_bert_dir, {**EVERY_ROW, "batch_size": 4, "local_steps": 1},
                       {"example_noise_multiplier": 0.0, "example_clip_norm": clip,
                        "example_sample_rate": 0.5})
    _without_dropout(learner)
    asked: list[tuple[int, float]] = []

    def every_row(rows: int, rate: float, _rng: np.random.Generator) -> np.ndarray:
        asked.append((rows, rate))
        return np.arange(rows)

    monkeypatch.setattr(dp_sgd, "poisson_sample", every_row)
    clipped = []
    for row in _row_gradients(learner):
        grad = torch.cat([g.flatten() for g in row])
        clipped.append(grad * min(1.0, clip / (float(torch.linalg.vector_norm(grad)) + 1e-6)))
    with _received_gradients() as received:
        result = learner.train(TOY, server_round=1, num_rounds=1)
    assert asked == [(ROWS, 0.5)] and result.dp_sampling_rate == 0.5
    torch.testing.assert_close(received[0], torch.stack(clipped).sum(dim=0) / 16,
                               rtol=1e-4, atol=1e-9)


def test_a_fixed_rate_gives_every_institution_the_same_epsilon(tiny_bert_dir,
                                                                tiny_config) -> None:
    """A fixed batch makes the smallest institution set the rounds for all; a fixed rate
    gives institutions of 80 and 4,000 rows the same rate, rounds and epsilon, and the large
    one a 50 times larger expected batch (so 50 times less noise on its mean gradient)."""
    from fedpeft.simulation.example_budget import rounds_within_example_budget

    privacy = {"example_level": True, "example_noise_multiplier": 1.0,
               "example_target_epsilon": 3.0, "example_sample_rate": 0.1}
    cfg = tiny_config(tiny_bert_dir, training={"local_steps": 10, "batch_size": 8},
                      privacy=privacy, federation={"num_rounds": 50})
    assert dp_sgd.sampling_rate(cfg, 80) == dp_sgd.sampling_rate(cfg, 4000) == 0.1
    assert (dp_sgd.expected_batch(cfg, 80), dp_sgd.expected_batch(cfg, 4000)) == (8.0, 400.0)
    allowed = rounds_within_example_budget(cfg, [4000, 80])
    assert allowed == rounds_within_example_budget(cfg, [4000])
    assert epsilon_for(1.0, 0.1, 10 * allowed, 1e-5) <= 3.0 < epsilon_for(
        1.0, 0.1, 10 * (allowed + 1), 1e-5)


@pytest.mark.parametrize(("sections", "message"), [
    ({"privacy": {"example_sample_rate": 0.1}},
     r"privacy.example_sample_rate is set but privacy.example_level=false"),
    ({"privacy": {"example_level": True, "example_sample_rate": 0.1},
      "training": {"local_steps": 5, "gradient_accumulation_steps": 2}},
     r"training.gradient_accumulation_steps=2: privacy.example_sample_rate=0.1 sets"),
    ({"privacy": {"example_level": True, "example_sample_rate": 0.1}},
     r"privacy.example_sample_rate=0.1 needs training.local_steps"),
    ({"privacy": {"example_level": True, "example_sample_rate": 1.5}},
     r"privacy.example_sample_rate"),
])
def test_a_fixed_rate_refuses_what_it_cannot_honour(sections, message) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        validate_config(sections)
    assert "\n" not in str(refused.value)


def test_per_layer_clipping_bounds_each_tensor_by_its_share(tiny_bert_dir, tiny_config) -> None:
    """example_clipping = "per_layer", noise 0, every row in the step: AdamW receives the mean
    over rows of each tensor's own row gradient clipped to C / sqrt(k) on its own, not of the
    whole row gradient clipped to C (which would let the head's large gradient shrink the
    adapter's to nothing)."""
    clip = 1e-3
    learner = _learner(tiny_config, tiny_bert_dir, {**EVERY_ROW, "local_steps": 1},
                       {"example_noise_multiplier": 0.0, "example_clip_norm": clip,
                        "example_clipping": "per_layer"})
    _without_dropout(learner)
    params = [p for p in learner.model.parameters() if p.requires_grad]
    share = clip / np.sqrt(len(params))
    per_row = [torch.cat([g.flatten() * min(1.0, share / (float(g.norm()) + 1e-6))
                          for g in row])
               for row in _row_gradients(learner)]
    with _received_gradients() as received:
        learner.train(TOY, server_round=1, num_rounds=1)
    expected = torch.stack(per_row).sum(dim=0) / ROWS
    torch.testing.assert_close(received[0], expected, rtol=1e-4, atol=1e-9)
    flat = received[0]
    # every tensor's part is within its share, so the whole within C
    offsets = np.cumsum([0] + [p.numel() for p in params])
    assert all(float(torch.linalg.vector_norm(flat[a:b])) <= share * (1 + 1e-4)
               for a, b in zip(offsets[:-1], offsets[1:], strict=True))

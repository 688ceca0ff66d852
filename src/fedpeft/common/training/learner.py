"""The model on one institution: load, adapt, train a round, evaluate, exchange the adapter.

The client app, the server-side evaluator and the centralised/local baselines all use this one
class, so every number fedpeft reports comes from the same training and evaluation code.

What travels depends on `lora.mode` (see `fedpeft.common.lora`): `get_state` returns the update
in the form the federation exchanges, `set_state` takes the global adapter; both are peft's
own adapter state in fedavg mode.

By default each round starts a fresh optimizer (AdamW or SGD with momentum): moments are local
state that FedAvg does not average, computed for a model the server has since replaced.
`training.optimizer_state = "keep"` carries them: `train` takes the previous round's state and
returns the new one, and the caller keeps it (see `fedpeft.common.training.optimizers`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from fedpeft.common.adapter.state import AdapterState
from fedpeft.common.config.models import RunConfig, TrainingConfig
from fedpeft.common.errors import DataError
from fedpeft.common.lora.exchange import SavedLora
from fedpeft.common.lora.modes import exchange_for
from fedpeft.common.lora.ranks import check_rank
from fedpeft.common.metrics import causal_lm_metrics, classification_metrics
from fedpeft.common.modeling.device import (
    autocast,
    grad_scaler,
    no_grad_autocast,
    resolve_device,
    resolve_precision,
)
from fedpeft.common.modeling.loader import load_base_model
from fedpeft.common.modeling.peft_builder import apply_peft
from fedpeft.common.training import dp_sgd
from fedpeft.common.training.batches import IGNORE_INDEX, Example, batches, collate, encode
from fedpeft.common.training.optimizers import OptimizerState, build_optimizer, export_state
from fedpeft.common.training.schedule import round_scheduler

logger = logging.getLogger(__name__)


def plan_round(training: TrainingConfig, num_examples: int) -> tuple[int, int]:
    """(optimizer steps, micro-batches) of one round on `num_examples` training rows."""
    accumulation = training.gradient_accumulation_steps
    if training.local_steps is not None:
        return training.local_steps, training.local_steps * accumulation
    per_epoch = math.ceil(num_examples / training.batch_size)
    micro = max(1, math.ceil(training.epochs_per_round * per_epoch))
    return math.ceil(micro / accumulation), micro


ExampleBudget = Callable[[int, float], None]
"""Called with (DP-SGD steps, sampling rate) before a DP-SGD round starts; raises to refuse it."""


@dataclass(frozen=True)
class TrainResult:
    """One round of local training; `loss` is the mean task loss (without the proximal term).

    Under example-level DP (`privacy.example_level`) `dp_steps` is the number of DP-SGD steps
    taken, each a Poisson-subsampled Gaussian mechanism at rate `dp_sampling_rate`: what the
    caller adds to the institution's running count to account its epsilon. Both are 0 without.
    `optimizer_state` is the optimizer's state at the end of the round when
    `training.optimizer_state` is "keep", else None.
    """

    loss: float
    num_examples: int
    steps: int
    compute_seconds: float
    dp_steps: int = 0
    dp_sampling_rate: float = 0.0
    optimizer_state: OptimizerState | None = None


class Learner:
    """A PEFT-wrapped model on this process's device, with its tokenizer."""

    def __init__(self, cfg: RunConfig, label_names: list[str] | None,
                 rank: int | None = None) -> None:
        """`rank`: this institution's own LoRA rank (ffa/stacking); None is peft.r, the
        federation's, which the server's evaluator and the baselines use."""
        self.rank = check_rank(cfg.peft, cfg.lora, rank, "rank") if rank is not None else cfg.peft.r
        self.cfg = cfg
        self.label_names = list(label_names) if label_names is not None else None
        self.device = resolve_device(cfg.model)
        self.dtype = resolve_precision(cfg.model, self.device)
        # The fresh head (seeded by the loader) and adapter are the same on every institution
        # and rerun; the server's initial adapter overrides them, but baselines start from these.
        base, self._tokenizer = load_base_model(cfg.model, cfg.training.seed, self.label_names)
        # Seeded after loading: a cached base model consumes no random numbers and a fresh
        # one does, so seeding before the load made the adapter's initial weights depend on
        # whether this process had loaded the model before.
        torch.manual_seed(cfg.training.seed)
        self._model = apply_peft(cfg, base, rank)
        if cfg.model.quantization == "none":  # bitsandbytes already placed the weights
            self._model.to(self.device)
        self._model.eval()
        self._exchange = exchange_for(cfg, self._model, self.rank)
        trainable, total = self._model.get_nb_trainable_parameters()
        logger.info("%s + %s: %d of %d parameters trainable (%.2f%%) on %s", cfg.model.name,
                    cfg.peft.method, trainable, total, 100.0 * trainable / total, self.device)

    def use_training(self, training: TrainingConfig) -> None:
        """Train from now on with `training` (the centralized baseline scales local_steps to
        the examples of a whole federated round)."""
        self.cfg = self.cfg.model_copy(update={"training": training})

    @property
    def model(self) -> PeftModel:
        return self._model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    def get_state(self) -> AdapterState:
        """The update to send, as `lora.mode` exchanges it: float32 copies, safe to keep while
        training continues. ffa: no lora_A, B padded to peft.r; stacking: this round's own
        LoRA with the scaling folded into B."""
        return self._exchange.outgoing()

    def set_state(self, state: AdapterState) -> None:
        """Adopt the global adapter; refused whole if it does not fit."""
        self._exchange.adopt(state)

    def saved_form(self, state: AdapterState) -> SavedLora | None:
        """A global adapter as the tensors of a peft LoRA folder; None when it already is the
        model's own adapter state (fedavg)."""
        return self._exchange.saved_form(state)

    def _encode(self, table: pd.DataFrame, what: str) -> list[Example]:
        if table.empty:
            raise DataError(f"{what}: the table has no rows")
        return encode(table, self._tokenizer, self.cfg.model.task, self.cfg.model.max_seq_length)

    def _micro_batches(self, examples: list[Example], count: int,
                       rng: np.random.Generator) -> Iterator[dict[str, torch.Tensor]]:
        """`count` training batches, reshuffling at each pass over the data."""
        pad = self._tokenizer.pad_token_id
        while True:
            for batch in batches(examples, self.cfg.training.batch_size, pad,
                                 order=rng.permutation(len(examples))):
                if count == 0:
                    return
                count -= 1
                yield {key: value.to(self.device) for key, value in batch.items()}

    def _optimizer(self, params: list[torch.nn.Parameter],
                   carried: OptimizerState | None) -> torch.optim.Optimizer:
        keep = self.cfg.training.optimizer_state == "keep"
        return build_optimizer(params, self.cfg.training, carried if keep else None)

    def _kept(self, optimizer: torch.optim.Optimizer,
              params: list[torch.nn.Parameter]) -> OptimizerState | None:
        if self.cfg.training.optimizer_state != "keep":
            return None
        return export_state(optimizer, params)

    def train(self, table: pd.DataFrame, server_round: int, num_rounds: int,
              proximal_mu: float = 0.0,
              optimizer_state: OptimizerState | None = None,
              example_budget: ExampleBudget | None = None) -> TrainResult:
        """One round of local training from the current adapter (stacking: from a fresh
        LoRA on top of the adopted global).

        With `proximal_mu` > 0 the FedProx term mu/2 * ||w - w_start||^2 over the trainable
        parameters is added to every step's loss, keeping heterogeneous institutions from
        drifting far from the global adapter they started the round with.

        With `privacy.example_level` the round is DP-SGD instead (`_train_dp_sgd`); without it
        nothing below differs from a run that never heard of example-level DP.

        `optimizer_state`: the previous round's `TrainResult.optimizer_state`, resumed when
        `training.optimizer_state` is "keep" (ignored otherwise). `example_budget`: under
        example-level DP, checked with this round's steps and sampling rate before any step.
        """
        started = time.perf_counter()
        training = self.cfg.training
        examples = self._encode(table, "training data")
        steps, micro = plan_round(self.cfg.training, len(examples))
        self._exchange.begin_round(server_round)
        params = [p for p in self._model.parameters() if p.requires_grad]
        if self.cfg.privacy.example_level:
            return self._train_dp_sgd(examples, params, steps, server_round, num_rounds,
                                      proximal_mu, started, optimizer_state, example_budget)
        anchors = [p.detach().clone() for p in params] if proximal_mu > 0 else []
        optimizer = self._optimizer(params, optimizer_state)
        scheduler = round_scheduler(optimizer, training, server_round, num_rounds, steps)
        scaler = grad_scaler(self.device, self.dtype)
        torch.manual_seed(training.seed + server_round)  # dropout masks, reproducibly
        rng = np.random.default_rng(training.seed + server_round)

        self._model.train()
        losses: list[float] = []
        done = 0
        try:
            stream = self._micro_batches(examples, micro, rng)
            for _ in range(steps):
                group = min(training.gradient_accumulation_steps, micro - done)
                for _ in range(group):
                    with autocast(self.device, self.dtype):
                        loss = self._model(**next(stream)).loss
                    losses.append(float(loss.detach()))
                    if anchors:
                        loss = loss + proximal_mu / 2 * sum(
                            (p - a).pow(2).sum() for p, a in zip(params, anchors))
                    scaler.scale(loss / group).backward()
                done += group
                if training.max_grad_norm is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, training.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
        finally:
            self._model.eval()
        return TrainResult(loss=float(np.mean(losses)), num_examples=len(examples), steps=steps,
                           compute_seconds=time.perf_counter() - started,
                           optimizer_state=self._kept(optimizer, params))

    def _train_dp_sgd(self, examples: list[Example], params: list[torch.nn.Parameter],
                      steps: int, server_round: int, num_rounds: int, proximal_mu: float,
                      started: float, optimizer_state: OptimizerState | None,
                      example_budget: ExampleBudget | None) -> TrainResult:
        """One round of example-level DP-SGD (see `fedpeft.common.training.dp_sgd`).

        Same optimizer, schedule, step count and FedProx term as the ordinary round; what
        differs: each step's rows are a Poisson sample (expected batch_size *
        gradient_accumulation_steps rows, or privacy.example_sample_rate of them, processed
        in chunks of at most batch_size), each
        row's gradient is clipped to privacy.example_clip_norm, Gaussian noise is added to
        their sum, which is divided by the expected batch; training.max_grad_norm is not
        applied. Not reproducible from training.seed: the sampling and the noise are seeded
        from the OS, or the server could undo them.
        """
        training, task = self.cfg.training, self.cfg.model.task
        rate = dp_sgd.sampling_rate(self.cfg, len(examples))
        if example_budget is not None:
            example_budget(steps, rate)
        expected = dp_sgd.expected_batch(self.cfg, len(examples))
        anchors = [p.detach().clone() for p in params] if proximal_mu > 0 else []
        optimizer = self._optimizer(params, optimizer_state)
        scheduler = round_scheduler(optimizer, training, server_round, num_rounds, steps)
        torch.manual_seed(training.seed + server_round)  # dropout masks (no privacy role)
        sampler = dp_sgd.secret_sampler()
        pad = self._tokenizer.pad_token_id

        def finish() -> None:  # after clipping and noise: data-independent post-processing
            for index, p in enumerate(params):
                p.grad.div_(expected)
                if anchors:
                    p.grad.add_(p.detach() - anchors[index], alpha=proximal_mu)

        self._model.train()
        loss_sum, seen, checked = 0.0, 0, False
        try:
            with dp_sgd.dp_sgd(self._model, params, optimizer, self.cfg, expected,
                               finish) as private:
                for _ in range(steps):
                    chosen = dp_sgd.poisson_sample(len(examples), rate, sampler)
                    if chosen.size == 0:
                        dp_sgd.mark_empty_batch(params)
                    for start in range(0, chosen.size, training.batch_size):
                        rows = [examples[i] for i in chosen[start:start + training.batch_size]]
                        batch = {key: value.to(self.device)
                                 for key, value in collate(rows, pad).items()}
                        with autocast(self.device, self.dtype):
                            losses = dp_sgd.per_example_loss(self._model, batch, task)
                        dp_sgd.backward(losses)
                        if not checked:
                            dp_sgd.check_per_example_gradients(self._model, params, len(rows))
                            checked = True
                        loss_sum += float(losses.detach().sum())
                        seen += len(rows)
                    private.step()
                    private.zero_grad(set_to_none=True)
                    scheduler.step()
        finally:
            self._model.eval()
        # No row drawn in the whole round (tiny q): there is no loss to report.
        loss = loss_sum / seen if seen else float("nan")
        return TrainResult(loss=loss, num_examples=len(examples), steps=steps,
                           compute_seconds=time.perf_counter() - started,
                           dp_steps=steps, dp_sampling_rate=rate,
                           optimizer_state=self._kept(optimizer, params))

    def evaluate(self, table: pd.DataFrame) -> dict[str, float]:
        """classification: loss, accuracy, macro_f1; causal-lm: loss, perplexity."""
        examples = self._encode(table, "evaluation data")
        batch_size, pad = self.cfg.training.eval_batch_size, self._tokenizer.pad_token_id
        if self.cfg.model.task == "classification":
            logits, labels = [], []
            with no_grad_autocast(self.device, self.dtype):
                for batch in batches(examples, batch_size, pad):
                    output = self._model(**{k: v.to(self.device) for k, v in batch.items()})
                    logits.append(output.logits.float().cpu().numpy())
                    labels.append(batch["labels"].numpy())
            assert self.label_names is not None  # load_base_model refuses classification without
            return classification_metrics(np.concatenate(logits), np.concatenate(labels),
                                          len(self.label_names))
        loss_sum, tokens = 0.0, 0
        with no_grad_autocast(self.device, self.dtype):
            for batch in batches(examples, batch_size, pad):
                # The model's loss is the mean over predicted (shifted) label tokens.
                count = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
                output = self._model(**{k: v.to(self.device) for k, v in batch.items()})
                loss_sum += float(output.loss) * count
                tokens += count
        return causal_lm_metrics(loss_sum, tokens)

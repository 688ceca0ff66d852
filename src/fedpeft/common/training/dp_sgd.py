"""Example-level DP-SGD inside one institution (`privacy.example_level`), with Opacus.

One DP-SGD step (Abadi et al. 2016) as `Learner.train` takes it when example-level DP is on:

1. Poisson sampling: every training row joins the step's batch independently with probability
   q = batch_size * gradient_accumulation_steps / rows (capped at 1), or q =
   privacy.example_sample_rate, so the batch size varies around its expectation q * rows and
   may be 0. The sampler is seeded from the OS, not from
   training.seed: subsampling only amplifies privacy if nobody can tell who was sampled.
2. The sampled rows go through the model in chunks of at most training.batch_size (gradient
   accumulation: one logical batch, several backward passes). Opacus's `GradSampleModule` hooks
   record each row's gradient of its own loss for every trainable tensor (LoRA A/B, head).
   The loss of a row depends on that row alone: cross-entropy for classification, the mean
   over its own response tokens for causal LM (not the batch-wide token mean the model would
   compute, which would couple rows).
3. Opacus's `DPOptimizer` clips each row's gradient, over all trainable tensors together, to
   L2 norm C = example_clip_norm (or, with privacy.example_clipping = "per_layer", its
   `DPPerLayerOptimizer` clips each of the k tensors' parts to C / sqrt(k): the same total
   bound C, so the same sensitivity and noise), sums them and adds N(0, (sigma C)^2) per
   coordinate, sigma = example_noise_multiplier, from a generator seeded from the OS
   (`secure_mode`, Opacus's defence against floating-point attacks on the noise).
4. The noisy sum is divided by the EXPECTED batch size (not the drawn one, which would leak
   it) and, under FedProx, the proximal gradient mu (w - w_start) is added. Both are
   post-processing: they do not touch the data, so they cost no privacy. AdamW then steps.

So each step is the Poisson-subsampled Gaussian mechanism with sensitivity C, and `rounds`
steps compose exactly as `fedpeft.common.privacy.epsilon_for(sigma, q, steps, delta)` accounts
them; the institution keeps the running count across rounds (see `client.rounds`).

Known limits: the number of training rows is treated as public (q depends on it); fp16 loss
scaling and gradient checkpointing are refused (the first scales per-row gradients before
clipping, the second re-runs forwards that Opacus's hooks would record twice); and a trainable
layer for which Opacus cannot produce per-row gradients is refused by name, checked on the
first backward pass of every round by comparing the per-row gradients' sum with autograd's.
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from fedpeft.common.config.models import RunConfig
from fedpeft.common.errors import ModelError
from fedpeft.common.training.batches import IGNORE_INDEX

if TYPE_CHECKING:
    from opacus.optimizers import DPOptimizer

_OPACUS_MODULE_ATTRIBUTES = ("activations", "max_batch_len")
_OPACUS_PARAMETER_ATTRIBUTES = ("grad_sample", "summed_grad", "_forward_counter",
                                "_current_grad_sample", "_norm_sample")


def sampling_rate(cfg: RunConfig, rows: int) -> float:
    """q of the Poisson sampling: privacy.example_sample_rate, else a fixed expected batch /
    rows, at most 1.

    A fixed rate gives every institution the same epsilon for the same steps, and the noise
    on its mean gradient falls as its rows grow; a fixed batch makes the smallest institution
    the one whose epsilon sets the noise for all, the others' budgets partly unspent.
    """
    if cfg.privacy.example_sample_rate is not None:
        return cfg.privacy.example_sample_rate
    return min(1.0, cfg.training.batch_size * cfg.training.gradient_accumulation_steps / rows)


def expected_batch(cfg: RunConfig, rows: int) -> float:
    """Rows per DP-SGD step on average (q * rows): what the noisy sum is divided by."""
    if cfg.privacy.example_sample_rate is not None:
        return cfg.privacy.example_sample_rate * rows
    return float(cfg.training.batch_size * cfg.training.gradient_accumulation_steps)


def poisson_sample(rows: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the rows that join this step, each independently with probability `rate`."""
    return np.flatnonzero(rng.random(rows) < rate)


def secret_sampler() -> np.random.Generator:
    """The Poisson sampler's generator, seeded from the OS (see the module docstring)."""
    return np.random.default_rng(secrets.randbits(256))


def per_example_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                     task: str) -> torch.Tensor:
    """Each row's own loss, shape (rows,): the model is called without labels."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"]
    if task == "classification":
        return F.cross_entropy(logits.float(), labels, reduction="none")
    # Prompt tuning prepends virtual tokens to the outputs: the real tokens are the last ones.
    logits = logits[:, -labels.shape[1]:]
    targets = labels[:, 1:]
    token_loss = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets,
                                 ignore_index=IGNORE_INDEX, reduction="none")
    counted = (targets != IGNORE_INDEX).to(token_loss.dtype)
    return (token_loss * counted).sum(dim=1) / counted.sum(dim=1).clamp(min=1.0)


def _layer_names(model: torch.nn.Module) -> dict[int, str]:
    """id(parameter) -> "module.path (ModuleType)" of the module that holds it directly."""
    names: dict[int, str] = {}
    for name, module in model.named_modules():
        for parameter in module.parameters(recurse=False):
            names.setdefault(id(parameter), f"{name or '<model>'} ({type(module).__name__})")
    return names


def _unsupported(layer: str, why: str) -> ModelError:
    return ModelError(f"privacy.example_level: Opacus cannot compute per-example gradients "
                      f"for layer {layer}: {why} (turn example-level DP off for this model)")


def _refuse_layers_with_buffers(model: torch.nn.Module) -> None:
    """Opacus refuses trainable layers with buffers (e.g. batch norm's running statistics,
    which mix rows); say which one in one line instead of its list of exceptions."""
    for name, module in model.named_modules():
        trainable = any(p.requires_grad for p in module.parameters(recurse=False))
        if trainable and next(module.buffers(), None) is not None:
            raise _unsupported(f"{name} ({type(module).__name__})", "it has buffers")


def check_per_example_gradients(model: torch.nn.Module, params: Sequence[torch.nn.Parameter],
                                rows: int) -> None:
    """After one backward pass over `rows` rows: every trainable tensor has one gradient per
    row and they add up to its ordinary gradient. A layer whose parameters are used outside
    its own forward, shared by all rows (prompt tuning) or not hooked by Opacus fails this,
    and is named."""
    names = _layer_names(model)
    for parameter in params:
        layer = names.get(id(parameter), "?")
        per_row = getattr(parameter, "grad_sample", None)
        if parameter.grad is None and per_row is None:
            raise _unsupported(layer, "it receives no gradient")
        if not isinstance(per_row, torch.Tensor):
            raise _unsupported(layer, "no per-example gradient was recorded")
        if parameter.grad is None:
            raise _unsupported(layer, "it has per-example but no ordinary gradient")
        if per_row.shape[0] != rows:
            raise _unsupported(layer, f"it got {per_row.shape[0]} per-example gradients "
                                      f"for a batch of {rows}")
        total, expected = per_row.sum(dim=0).to(parameter.grad.dtype), parameter.grad
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        if total.shape != expected.shape or not torch.allclose(
                total, expected, rtol=1e-2, atol=1e-3 * scale + 1e-8):
            raise _unsupported(layer, "the per-example gradients do not add up to its gradient")


def backward(losses: torch.Tensor) -> None:
    """Backpropagate the sum of the rows' losses (the per-row gradients are then the rows' own).

    PyTorch warns on every pass that the first adapted layer's full backward hook sees no
    input gradients (its input, the frozen embeddings, needs none); Opacus only reads output
    gradients there, so that one warning is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        losses.sum().backward()


def mark_empty_batch(params: Sequence[torch.nn.Parameter]) -> None:
    """A Poisson draw of no rows: zero per-row gradients, so the step is noise alone."""
    for parameter in params:
        parameter.grad_sample = torch.zeros((0, *parameter.shape), dtype=parameter.dtype,
                                            device=parameter.device)


@contextmanager
def dp_sgd(model: torch.nn.Module, params: Sequence[torch.nn.Parameter],
           optimizer: torch.optim.Optimizer, cfg: RunConfig, expected: float,
           finish: Callable[[], None]) -> Iterator[DPOptimizer]:
    """Opacus's per-row gradient hooks on `model` and a `DPOptimizer` around `optimizer` for
    the duration of one round; afterwards the model is as it was (no hooks, no attributes).

    `finish` runs after clipping and noise, before `optimizer` steps (averaging by the
    `expected` batch, FedProx); Opacus only records `expected` (the loss is a sum).
    Opacus is imported here, not at module level: it costs every process half a second.
    """
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer, DPPerLayerOptimizer

    privacy = cfg.privacy
    _refuse_layers_with_buffers(model)
    try:
        hooks = GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=True)
    except NotImplementedError as err:  # pragma: no cover - the buffer check comes first
        raise ModelError(f"privacy.example_level: Opacus refuses this model: "
                         f"{str(err).splitlines()[0]}") from None
    generator = torch.Generator(device=params[0].device if params else "cpu")
    generator.manual_seed(secrets.randbits(63))
    settings = {"noise_multiplier": privacy.example_noise_multiplier,
                "expected_batch_size": max(1, round(expected)), "loss_reduction": "sum",
                "generator": generator, "secure_mode": True}
    private: DPOptimizer
    if privacy.example_clipping == "per_layer":
        tensors = sum(1 for group in optimizer.param_groups for p in group["params"]
                      if p.requires_grad)
        share = privacy.example_clip_norm / math.sqrt(tensors)
        private = DPPerLayerOptimizer(optimizer, max_grad_norm=[share] * tensors, **settings)
    else:
        private = DPOptimizer(optimizer, max_grad_norm=privacy.example_clip_norm, **settings)
    private.attach_step_hook(lambda _optimizer: finish())
    try:
        private.zero_grad(set_to_none=True)
        yield private
    finally:
        hooks.to_standard_module()  # removes the hooks and Opacus's parameter attributes
        for module in model.modules():
            for attribute in _OPACUS_MODULE_ATTRIBUTES:
                if attribute in vars(module):  # not hasattr: peft wrappers forward lookups
                    delattr(module, attribute)
        for parameter in model.parameters():
            parameter.grad = None
            for attribute in _OPACUS_PARAMETER_ATTRIBUTES:
                if attribute in vars(parameter):
                    delattr(parameter, attribute)

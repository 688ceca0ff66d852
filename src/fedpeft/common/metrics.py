"""Evaluation metrics, computed the same way on every institution and on the server.

Macro F1 is reported beside accuracy because institutions' label mixes differ (that is what a
non-IID federation is): a model that ignores a rare class keeps a high accuracy but not a high
macro F1. Every class id is passed to sklearn, so a class absent from one institution's
validation rows still counts (as zero) instead of silently shrinking the average.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import f1_score


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def classification_metrics(logits: np.ndarray, labels: np.ndarray,
                           num_classes: int) -> dict[str, float]:
    """loss (mean cross-entropy), accuracy and macro_f1 over all `num_classes` classes."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    predictions = logits.argmax(axis=1)
    return {
        "loss": _cross_entropy(logits, labels),
        "accuracy": float((predictions == labels).mean()),
        "macro_f1": float(f1_score(labels, predictions, labels=list(range(num_classes)),
                                   average="macro", zero_division=0)),
    }


def causal_lm_metrics(token_loss_sum: float, num_tokens: int) -> dict[str, float]:
    """loss (mean over response tokens) and perplexity = exp(loss)."""
    loss = token_loss_sum / num_tokens
    try:
        perplexity = math.exp(loss)
    except OverflowError:  # an untrained or diverged model; inf is the honest value
        perplexity = math.inf
    return {"loss": loss, "perplexity": perplexity}

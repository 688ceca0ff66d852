"""Classification and causal-LM metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedpeft.common.metrics import causal_lm_metrics, classification_metrics


def test_classification_metrics_count_every_class() -> None:
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    labels = np.array([0, 1, 1, 0])
    metrics = classification_metrics(logits, labels, num_classes=3)
    assert metrics["accuracy"] == pytest.approx(0.75)
    # class 2 never occurs and is never predicted: it still counts, as 0, in the macro average
    f1_class0, f1_class1 = 2 * (2 / 3 * 1) / (2 / 3 + 1), 2 * (1 * 0.5) / 1.5
    assert metrics["macro_f1"] == pytest.approx((f1_class0 + f1_class1 + 0.0) / 3)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert metrics["loss"] == pytest.approx(-np.log(probs[np.arange(4), labels]).mean())


def test_causal_metrics() -> None:
    metrics = causal_lm_metrics(token_loss_sum=6.0, num_tokens=3)
    assert metrics == {"loss": 2.0, "perplexity": pytest.approx(math.exp(2.0))}
    assert causal_lm_metrics(1e6, 1)["perplexity"] == math.inf

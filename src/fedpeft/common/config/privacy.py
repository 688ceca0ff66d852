"""The `[privacy]` section: client-level and (optional) example-level differential privacy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedpeft.common.config.base import StrictModel


class PrivacyConfig(StrictModel):
    """Differential privacy: two independent guarantees, each with its own epsilon.

    Client-level (`enabled`, DP-FedAvg): the unit is one institution. Each round's adapter
    update is clipped to `clip_norm` and the server (or, under secure aggregation, every
    institution) adds Gaussian noise; the server's accountant reports one federation-wide
    epsilon at `delta` over the rounds, in `metrics.jsonl` and `summary.json`. It says what an
    observer of the global adapters learns about whether an institution took part at all.

    Example-level (`example_level`, DP-SGD with Opacus): the unit is one training row of one
    institution. Inside each institution every optimizer step draws a Poisson sample of its rows
    (each row independently, expected batch training.batch_size *
    training.gradient_accumulation_steps, or `example_sample_rate` x its rows), clips each row's
    gradient over the trainable parameters to `example_clip_norm` and adds Gaussian noise of std
    `example_noise_multiplier` * `example_clip_norm` to their sum. Whatever leaves the
    institution (its updates, whoever sees them, including the aggregator) is then (epsilon,
    delta)-DP with respect to adding or removing one of its training rows. Each institution
    accounts its own epsilon, at `example_delta`, over all the DP-SGD steps it has taken in the
    run (RDP accountant of the Poisson-subsampled Gaussian, sampling rate = expected batch / its
    training rows, which are treated as public, or the fixed rate), and reports it as the reply
    metric `dp-example-epsilon` and in its own ledger. Its validation rows are not covered, so
    with either guarantee on an institution does not evaluate for the server
    (`withholds_statistics`); the number of rows is treated as public by the accountant, but
    travels only sealed.

    The two are accounted separately and neither epsilon includes the other: they bound
    different things (a row vs. a whole institution) and neither is derived from the other.
    They can be used together; example-level DP does not need `enabled`.
    """

    enabled: bool = Field(False, description="Clip every update and add Gaussian noise to the sum.")
    noise_multiplier: float = Field(
        1.0, ge=0, description="Noise standard deviation as a multiple of the clipping norm."
    )
    clipping: Literal["fixed", "adaptive"] = Field(
        "fixed", description="adaptive: the norm follows a quantile of the update norms."
    )
    clip_norm: float = Field(1.0, gt=0, description="L2 bound of one update (initial if adaptive).")
    target_quantile: float = Field(0.5, gt=0, lt=1, description="Adaptive clipping quantile.")
    clip_learning_rate: float = Field(0.2, gt=0, description="Adaptive clipping step size.")
    clipped_count_stddev: float | None = Field(
        None, ge=0, description="Adaptive: noise on the clipped-count; None: participants / 20."
    )
    delta: float = Field(1e-5, gt=0, lt=1, description="The delta of (epsilon, delta)-DP.")
    target_epsilon: float | None = Field(
        None, gt=0, description="Stop before the round that would exceed this epsilon."
    )
    max_norm_factor: float = Field(
        1.5, gt=1,
        description="Updates whose norm exceeds this multiple of the clip norm are refused.",
    )
    example_level: bool = Field(
        False,
        description="DP-SGD (Opacus) on each institution's own training: per-row clipping, "
        "Poisson-sampled batches and Gaussian noise, with the institution's own epsilon. "
        "training.max_grad_norm is not applied on top (example_clip_norm replaces it).",
    )
    example_noise_multiplier: float = Field(
        1.0, ge=0,
        description="DP-SGD noise std as a multiple of example_clip_norm; 0 clips without "
        "noise (no guarantee: epsilon is infinite).",
    )
    example_clip_norm: float = Field(
        1.0, gt=0, description="DP-SGD: L2 bound of one training row's gradient per step."
    )
    example_clipping: Literal["flat", "per_layer"] = Field(
        "flat",
        description="DP-SGD: flat clips each row's gradient over all trainable tensors "
        "together to example_clip_norm; per_layer clips each tensor's part to "
        "example_clip_norm / sqrt(tensors), the same total bound and noise. A fresh "
        "classification head's gradient can be 99% of a row's norm, leaving the adapter "
        "almost nothing under flat clipping; per_layer gives every tensor its own share.",
    )
    example_sample_rate: float | None = Field(
        None, gt=0, le=1,
        description="DP-SGD: every institution draws each row into a step with this "
        "probability (expected batch rate x its rows), instead of an expected batch of "
        "training.batch_size x gradient_accumulation_steps rows whatever its size. Every "
        "institution then spends the same epsilon, and a large one adds less noise per row; "
        "training.batch_size only sizes the chunks a step is computed in.",
    )
    example_delta: float | None = Field(
        None, gt=0, lt=1,
        description="The delta of the example-level epsilon; None: privacy.delta. It should "
        "be well below 1 / (an institution's training rows).",
    )

    example_target_epsilon: float | None = Field(
        None, gt=0,
        description="Each institution refuses a round whose DP-SGD steps would take its "
        "example-level epsilon past this; a simulation plans its rounds to stay within it.",
    )

    @model_validator(mode="after")
    def _example_target_needs_noise(self) -> PrivacyConfig:
        if self.example_target_epsilon is not None and (
                not self.example_level or self.example_noise_multiplier == 0):
            raise ValueError(
                f"privacy.example_target_epsilon={self.example_target_epsilon:g} needs "
                "privacy.example_level=true and privacy.example_noise_multiplier > 0")
        return self

    @property
    def withholds_statistics(self) -> bool:
        """With either guarantee on, no un-noised per-institution statistic leaves an
        institution: no training loss, no validation metrics, no example count in the clear
        (the FedAvg weight travels sealed or masked; 1 stands in for it in the metrics)."""
        return self.enabled or self.example_level

    @property
    def effective_example_delta(self) -> float:
        """`example_delta`, or `delta` when it is not set."""
        return self.delta if self.example_delta is None else self.example_delta

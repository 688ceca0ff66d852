"""Load the frozen base model and its tokenizer, once per process.

A simulation actor or a long-lived institution process builds a `Learner` whenever the setup
changes and the server evaluator builds one too; reading the checkpoint each time would
dominate small rounds. So one pristine (never PEFT-wrapped) copy is kept per process and every
caller gets its own deep copy: peft edits the model it wraps in place, so sharing one instance
would let two learners write into each other's layers.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from peft import prepare_model_for_kbit_training
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from fedpeft.common.config.models import ModelConfig
from fedpeft.common.errors import ConfigError, ModelError
from fedpeft.common.modeling.device import quantization_config
from fedpeft.common.modeling.resolve import resolve_model_path

logger = logging.getLogger(__name__)

_Loaded = tuple[PreTrainedModel, PreTrainedTokenizerBase]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars for the duration of a load or save.

    Every institution reloads each run; a table of "newly initialised" head weights and a
    progress bar per load would bury the round log. What matters is logged by us instead.
    """
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # peft reads a property that transformers 5 deprecates; nothing for our users to do.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_error(name: str, path: str, err: Exception) -> ModelError:
    detail = " ".join(str(err).split())
    if not Path(path).is_dir():  # resolve_model_path left a hub name: the download failed
        return ModelError(f"{name}: model could not be found locally or downloaded from the "
                          f"Hugging Face hub ({detail})")
    return ModelError(f"{path}: cannot load the model ({detail})")


def _tokenizer(name: str, path: str, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _load_error(name, path, err) from None
    if tokenizer.pad_token is None:
        # GPT-2 and Llama ship without a pad token. Padding is masked out of attention and
        # loss, so reusing end-of-sequence is safe and needs no new embedding row.
        if tokenizer.eos_token is None:
            raise ModelError(f"{name}: the tokenizer has neither a pad nor an end-of-sequence "
                             "token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _model(name: str, path: str, task: str, labels: tuple[str, ...] | None, trust_remote_code: bool,
           quantization: BitsAndBytesConfig | None) -> PreTrainedModel:
    kwargs: dict[str, object] = {"trust_remote_code": trust_remote_code}
    if quantization is not None:
        kwargs.update(quantization_config=quantization,
                      device_map={"": torch.cuda.current_device()})
    if task == "classification":
        assert labels is not None
        model_cls = AutoModelForSequenceClassification
        kwargs.update(num_labels=len(labels), problem_type="single_label_classification",
                      id2label=dict(enumerate(labels)),
                      label2id={label: i for i, label in enumerate(labels)})
    else:
        model_cls = AutoModelForCausalLM
    try:
        with quiet_transformers():
            model, info = model_cls.from_pretrained(path, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as err:
        raise _load_error(name, path, err) from None
    if info["missing_keys"]:
        logger.info("%s: newly initialised (trained with the adapter): %s", name,
                    ", ".join(sorted(info["missing_keys"])))
    return model


@functools.lru_cache(maxsize=1)
def _pristine(name: str, path: str, task: str, labels: tuple[str, ...] | None,
              trust_remote_code: bool, seed: int) -> _Loaded:
    # The seed is part of the key because it decides the freshly initialised head.
    torch.manual_seed(seed)
    tokenizer = _tokenizer(name, path, trust_remote_code)
    model = _model(name, path, task, labels, trust_remote_code, quantization=None)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _labels(task: str, label_names: list[str] | None) -> tuple[str, ...] | None:
    if task != "classification":
        return None
    if not label_names or len(label_names) < 2:
        raise ConfigError(f"data.labels={label_names!r}: classification needs at least two class "
                          "names")
    return tuple(label_names)


def load_base_model(model_cfg: ModelConfig, seed: int, label_names: list[str] | None, *,
                    cache: bool = True) -> _Loaded:
    """A base model and tokenizer owned by the caller, with a pad token set on both.

    Classification loads a sequence-classification head sized to `label_names` (id order);
    causal-lm loads the language-model head. `cache=False` is for one-off loads (exporting a
    merged model), which should not hold a second copy in memory. The quantized (GPU) path
    always loads fresh: bitsandbytes weights live on the GPU and cannot be deep-copied.
    `seed` (training.seed) initialises a fresh classification head.
    """
    name, task, remote = model_cfg.name, model_cfg.task, model_cfg.trust_remote_code
    path = resolve_model_path(name)
    labels = _labels(task, label_names)
    quantization = quantization_config(model_cfg)
    if quantization is None:
        load = _pristine if cache else _pristine.__wrapped__
        loaded = load(name, path, task, labels, remote, seed)
        model, tokenizer = copy.deepcopy(loaded) if cache else loaded
    else:
        torch.manual_seed(seed)
        tokenizer = _tokenizer(name, path, remote)
        model = _model(name, path, task, labels, remote, quantization)
        model.config.pad_token_id = tokenizer.pad_token_id
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=model_cfg.gradient_checkpointing)
    if model_cfg.gradient_checkpointing:
        _enable_checkpointing(model)
    return model, tokenizer


def _enable_checkpointing(model: PreTrainedModel) -> None:
    # Non-reentrant checkpointing works with a frozen embedding layer, which PEFT always has.
    # transformers 5 renamed the method (the old name warns); 4.x only has the old one.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False

"""Write adapters in peft's own format, and merge them into standalone models.

An adapter folder is exactly what `PeftModel.from_pretrained(base, folder)` reads
(adapter_config.json + adapter_model.safetensors), plus the tokenizer, plus the class names
for classification: peft records the base model but not the head's labels, and without them a
merged classifier could not be rebuilt with the right size or label names.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from peft import PeftConfig, PeftModel, TaskType
from peft.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import save_file

from fedpeft.common.adapter.state import adapter_state, load_adapter_state
from fedpeft.common.config.models import ModelConfig, TrainingConfig
from fedpeft.common.errors import ConfigError, ModelError
from fedpeft.common.lora.exchange import SavedLora
from fedpeft.common.lora.keys import base_model_name, lora_a_key, lora_modules
from fedpeft.common.modeling.loader import load_base_model, quiet_transformers

if TYPE_CHECKING:
    from fedpeft.common.training.learner import Learner

LABELS_FILE = "fedpeft_labels.json"
_TASKS = {TaskType.SEQ_CLS: "classification", TaskType.CAUSAL_LM: "causal-lm"}


def _class_names(model: PeftModel) -> list[str]:
    id2label = model.config.id2label
    return [id2label[i] for i in range(len(id2label))]


def _save_own_form(model: PeftModel, state: Mapping[str, np.ndarray], out: Path) -> None:
    """The model's own adapter is swapped out only for the write and restored afterwards, so
    a learner can save the best round's adapter while it holds a later one."""
    current = adapter_state(model)
    load_adapter_state(model, state)
    try:
        with quiet_transformers():
            model.save_pretrained(out, save_embedding_layers=False)  # see state.peft_state_dict
    finally:
        load_adapter_state(model, current)


def _save_lora(model: PeftModel, saved: SavedLora, out: Path) -> None:
    """A LoRA whose ranks may differ from the model's, per layer: written the way peft's
    save_pretrained writes (config + safetensors of the same keys), from the model's config
    with r, alpha and their per-layer patterns set so every layer scales by `saved.scaling`.

    Pattern keys are regex-escaped full layer names: peft matches them as a regex suffix.
    """
    ranks = {module: int(saved.tensors[lora_a_key(module)].shape[0])
             for module in lora_modules(saved.tensors)}
    rank = Counter(ranks.values()).most_common(1)[0][0]
    config = copy.deepcopy(model.peft_config[model.active_adapter])
    config.r, config.lora_alpha, config.use_rslora = rank, saved.scaling * rank, False
    others = {re.escape(base_model_name(module)): r for module, r in ranks.items() if r != rank}
    config.rank_pattern = others
    config.alpha_pattern = {pattern: saved.scaling * r for pattern, r in others.items()}
    config.inference_mode = True
    config.save_pretrained(str(out))
    save_file({key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
               for key, value in saved.tensors.items()},
              str(out / SAFETENSORS_WEIGHTS_NAME), metadata={"format": "pt"})


def save_adapter(source: Learner | PeftModel, state: Mapping[str, np.ndarray],
                 out_dir: str | Path) -> Path:
    """Save `state` (not necessarily the model's current adapter) as a peft adapter folder.

    From a learner, `state` is a global adapter of its `lora.mode`; ffa and stacking globals
    are not the model's own adapter form (ffa leaves A out, stacking has its own ranks), so
    the learner turns them into LoRA tensors (`Learner.saved_form`) written directly.
    """
    model = source if isinstance(source, PeftModel) else source.model
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = None if isinstance(source, PeftModel) else source.saved_form(dict(state))
    if saved is None:
        _save_own_form(model, state, out)
    else:
        _save_lora(model, saved, out)
    if not isinstance(source, PeftModel):
        source.tokenizer.save_pretrained(out)
    if model.peft_config[model.active_adapter].task_type == TaskType.SEQ_CLS:
        (out / LABELS_FILE).write_text(json.dumps({"labels": _class_names(model)}, indent=2) + "\n")
    return out


def _adapter_config(adapter_dir: Path) -> PeftConfig:
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelError(f"{adapter_dir}: no adapter_config.json, not a peft adapter folder")
    config = PeftConfig.from_pretrained(str(adapter_dir))
    if not config.base_model_name_or_path:
        raise ModelError(f"{adapter_dir / 'adapter_config.json'}: base_model_name_or_path is empty")
    if config.task_type not in _TASKS:
        raise ModelError(f"{adapter_dir / 'adapter_config.json'}: task_type {config.task_type!r} "
                         f"is not one fedpeft trains ({', '.join(map(str, _TASKS))})")
    return config


def _labels(adapter_dir: Path) -> list[str]:
    path = adapter_dir / LABELS_FILE
    try:
        return list(json.loads(path.read_text())["labels"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"{path}: missing or unreadable; the classifier's labels are "
                         "unknown") from None


def export_merged(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """A standalone Hugging Face model: the base with the adapter folded into its weights.

    Only methods that change existing weights can be merged; prompt-learning methods add
    virtual tokens that exist only inside peft, so they raise a ConfigError instead.
    """
    adapter_dir, out = Path(adapter_dir), Path(out_dir)
    peft_config = _adapter_config(adapter_dir)
    method = str(peft_config.peft_type.value).lower()
    if peft_config.is_prompt_learning:
        raise ConfigError(f"peft method {method!r} adds virtual tokens and cannot be merged into "
                          f"the base model; load {adapter_dir} with PeftModel.from_pretrained")
    task = _TASKS[peft_config.task_type]
    model_cfg = ModelConfig(name=peft_config.base_model_name_or_path, task=task, device="cpu")
    labels = _labels(adapter_dir) if task == "classification" else None
    base, tokenizer = load_base_model(model_cfg, TrainingConfig().seed, labels, cache=False)
    with quiet_transformers():
        model = PeftModel.from_pretrained(base, str(adapter_dir))
    try:
        merged = model.merge_and_unload()
    except (AttributeError, NotImplementedError, ValueError) as err:
        raise ConfigError(f"peft method {method!r} cannot be merged into the base model "
                          f"({' '.join(str(err).split())})") from None
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out

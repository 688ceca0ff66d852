"""Where `model.name` points: local folders, the packaged default, hub names."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest

from fedpeft.common.config.models import DEFAULT_MODEL
from fedpeft.common.errors import ModelError
from fedpeft.common.modeling import resolve
from fedpeft.common.modeling.loader import load_base_model
from fedpeft.common.modeling.resolve import resolve_model_path


def test_local_folder_resolves_to_absolute_path(tiny_bert_dir: str) -> None:
    assert resolve_model_path(tiny_bert_dir) == str(Path(tiny_bert_dir).resolve())


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no config.json, not a Hugging Face model folder"):
        resolve_model_path(str(tmp_path))


def test_missing_local_path_is_refused_not_downloaded(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model folder"):
        resolve_model_path(str(tmp_path / "absent"))


def test_default_model_resolves_to_packaged_copy() -> None:
    path = Path(resolve_model_path(DEFAULT_MODEL))
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def test_default_model_stays_a_hub_name_without_the_package(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolve, "_PACKAGED_MODEL", ("no_such_package_fedpeft", "model"))
    assert resolve_model_path(DEFAULT_MODEL) == DEFAULT_MODEL


def test_offline_hub_name_fails_as_model_error(monkeypatch: pytest.MonkeyPatch,
                                               tiny_config) -> None:
    # Offline mode makes the hub lookup fail at once instead of after its network retries.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = tiny_config("fedpeft-tests/no-such-model")
    with pytest.raises(ModelError, match="could not be found locally or downloaded"):
        load_base_model(cfg.model, cfg.training.seed, ["a", "b"])

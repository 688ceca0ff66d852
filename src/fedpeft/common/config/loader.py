"""Load a `RunConfig` from TOML plus overrides, and write the effective config back out.

Overrides are dotted keys (`training.learning_rate=1e-4`), applied on top of the file before
validation, so the CLI, the TOML file and a server-sent config all go through one validator
and every error names the dotted field that was wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tomli_w
import tomllib
from pydantic import ValidationError

from fedpeft.common.config.models import RunConfig
from fedpeft.common.errors import ConfigError


def _describe(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    # Cross-field rules name their dotted fields in the message; a section prefix is noise.
    field = ".".join(str(part) for part in first["loc"])
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    message = first["msg"].removeprefix("Value error, ")
    more = len(err.errors()) - 1
    tail = f"; and {more} more problem(s)" if more else ""
    where = f"{source}: {field}" if field and not message.startswith(f"{field}.") else source
    return f"{where}: {message}{shown}{tail}"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def validate_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a nested dict, turning pydantic's report into one line naming the field."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read TOML (if given), apply dotted overrides (None values are skipped), validate."""
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, dotted, value)
    return validate_config(data, source)


def to_toml(config: RunConfig) -> str:
    """The effective config as TOML (None values are omitted: TOML has no null)."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(to_toml(config), encoding="utf-8")


def to_wire(config: RunConfig) -> str:
    """Compact JSON sent to clients inside a ConfigRecord."""
    return config.model_dump_json()


def from_wire(text: str) -> RunConfig:
    try:
        return RunConfig.model_validate(json.loads(text))
    except (ValidationError, json.JSONDecodeError) as err:
        raise ConfigError(f"run config received from the server is invalid: {err}") from None

"""The Flower App that `flwr run` submits to a deployed federation, and its run config.

A Flower App Bundle (FAB) is a zip built from an app folder's `pyproject.toml` and files. fedpeft
ships no code in it: the components are names of the installed `fedpeft` package
(`fedpeft.server.app:app`, `fedpeft.client.app:app`), which every SuperLink and SuperNode host
already has, so nothing is installed at run time (runtime dependency installation stays off and
the hosts need no network). The folder holds only `pyproject.toml`, written from this module, so
the bundle is identical for every run of one fedpeft version and each node unpacks it once.

What changes per run travels as the run config: one key holding the whole validated
`RunConfig` as JSON, rather than a path, because the machine submitting the run and the
SuperLink host that runs the ServerApp need not share a disk. Paths inside it (test data, run
folder parent) are paths on the SuperLink host and must be absolute, since the ServerApp's
working directory is Flower's, not the coordinator's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

import fedpeft
from fedpeft.common.config import RunConfig, from_wire, to_wire
from fedpeft.common.errors import ConfigError

CONFIG_KEY = "fedpeft-config"
"""Run config key holding `RunConfig` as JSON (the same encoding the clients receive)."""

RESUME_KEY = "fedpeft-resume"
"""Run config key holding the absolute path (on the SuperLink host) of an interrupted run
folder to continue, or "" for a new run."""

SERVER_APP = "fedpeft.server.app:app"
CLIENT_APP = "fedpeft.client.app:app"


def app_pyproject() -> dict[str, Any]:
    """The Flower App metadata: fedpeft's own components, no dependencies to install."""
    return {
        "project": {
            "name": "fedpeft",
            "version": fedpeft.__version__,
            "description": "Federated parameter-efficient fine-tuning (fedpeft deployment app)",
            "license": "Apache-2.0",
            "dependencies": [],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fedpeft",
                    "components": {"serverapp": SERVER_APP, "clientapp": CLIENT_APP},
                    # An empty default: `flwr run --run-config` may only override declared keys.
                    "config": {CONFIG_KEY: "", RESUME_KEY: ""},
                }
            }
        },
    }


def write_app_dir(directory: Path) -> Path:
    """Create `directory` with only `pyproject.toml` in it: `flwr run` bundles all it holds."""
    directory.mkdir()
    (directory / "pyproject.toml").write_text(tomli_w.dumps(app_pyproject()), encoding="utf-8")
    return directory


def write_run_overrides(path: Path, cfg: RunConfig, resume: Path | None = None) -> Path:
    """The `--run-config` TOML file carrying this run's config (and the folder it resumes)."""
    overrides = {CONFIG_KEY: to_wire(cfg), RESUME_KEY: "" if resume is None else str(resume)}
    path.write_text(tomli_w.dumps(overrides), encoding="utf-8")
    return path


def check_deployable(cfg: RunConfig) -> RunConfig:
    """`cfg` if a ServerApp on the SuperLink host can run it, else one ConfigError naming the field.

    Deployed institutions map their own label column to ids with the federation's label list,
    so it must be fixed before the run; nobody sees all the training data to derive it.
    """
    if cfg.model.task == "classification" and not cfg.data.labels:
        raise ConfigError(
            "data.labels: a deployed classification run needs the federation's label names "
            "in id order, e.g. labels = [\"billing\", \"fraud\"] under [data]"
        )
    if not cfg.data.test:
        raise ConfigError("data.test: a deployed run needs the coordinator's test file "
                          "(--test-data)")
    for field, value in (("data.test", cfg.data.test), ("output.dir", cfg.output.dir)):
        if not Path(value).is_absolute():
            raise ConfigError(f"{field}={value!r}: must be an absolute path on the SuperLink host")
    creds = cfg.security.credentials_dir
    if cfg.security.seal_updates and not (creds and Path(creds).is_absolute()):
        raise ConfigError(
            f"security.credentials_dir={creds!r}: a sealed run needs the federation folder's "
            "absolute path on the SuperLink host (`fedpeft run --dir` sets it)"
        )
    if not cfg.output.run_name:
        raise ConfigError("output.run_name: a deployed run must be named before it is submitted")
    return cfg


@dataclass(frozen=True)
class DeployedRun:
    """A checked run config and the test file it names on the SuperLink host."""

    cfg: RunConfig
    test_path: str
    resume: Path | None = None
    """The interrupted run folder to continue, on the SuperLink host."""


def read_run_config(run_config: dict[str, Any]) -> DeployedRun:
    """The run in a ServerApp's `context.run_config`, checked for deployment."""
    text = run_config.get(CONFIG_KEY)
    if not isinstance(text, str) or not text:
        raise ConfigError(
            f"run config key {CONFIG_KEY!r} is empty: submit deployed runs with `fedpeft run`"
        )
    cfg = check_deployable(from_wire(text))
    resume = str(run_config.get(RESUME_KEY) or "")
    if resume and not Path(resume).is_absolute():
        raise ConfigError(f"run config key {RESUME_KEY!r}={resume!r}: must be an absolute path "
                          "on the SuperLink host")
    return DeployedRun(cfg, str(cfg.data.test), Path(resume) if resume else None)

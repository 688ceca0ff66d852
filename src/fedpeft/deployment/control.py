"""The coordinator's side of the SuperLink's Control API, through Flower's own `flwr` CLI.

Registering a SuperNode's key, unregistering it and submitting a run are `flwr` commands;
fedpeft runs them with a connection config it writes into its own FLWR_HOME (inside the
federation folder), so the coordinator's personal `~/.flwr` is neither needed nor touched, and
the connection always verifies the SuperLink against the federation's CA.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from fedpeft.common.errors import ConfigError, DeploymentError
from fedpeft.deployment.flower_exec import (
    FlowerCommand,
    flower_env,
    flower_executable,
    run_in_foreground,
)

CONNECTION = "fedpeft"
"""Name of the connection in `$FLWR_HOME/config.toml`, passed to every `flwr` command."""

CONTROL_TIMEOUT_S = 60.0
"""Register, unregister and status calls are single requests; a minute means unreachable."""


@dataclass(frozen=True)
class ControlConnection:
    """Where the Control API is and how to trust it (the CA, or nothing when insecure)."""

    address: str
    flwr_home: Path
    root_certificates: Path | None

    def write(self) -> None:
        """(Re)write `config.toml` so that `flwr ... fedpeft` reaches this SuperLink."""
        if ":" not in self.address:
            raise ConfigError(f"--superlink-control {self.address!r}: expected HOST:PORT")
        entry: dict[str, Any] = {"address": self.address}
        if self.root_certificates is None:
            entry["insecure"] = True
        elif not self.root_certificates.is_file():
            raise ConfigError(f"{self.root_certificates}: CA certificate not found")
        else:
            entry["root-certificates"] = str(self.root_certificates.resolve())
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        config = {"superlink": {"default": CONNECTION, CONNECTION: entry}}
        (self.flwr_home / "config.toml").write_text(tomli_w.dumps(config), encoding="utf-8")

    def command(self, *args: str) -> FlowerCommand:
        return FlowerCommand([flower_executable("flwr"), *args])

    def call_json(self, *args: str) -> dict[str, Any]:
        """Run a `flwr ... --format json` command; its JSON answer, or a DeploymentError."""
        self.write()
        command = self.command(*args, "--format", "json")
        try:
            done = subprocess.run(command.argv, env=flower_env(self.flwr_home), capture_output=True,
                                  text=True, timeout=CONTROL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise DeploymentError(
                f"SuperLink Control API at {self.address} did not answer within "
                f"{CONTROL_TIMEOUT_S:.0f}s ({' '.join(args[:2])})"
            ) from None
        answer = _json_answer(done.stdout)
        if done.returncode != 0 or not answer.get("success", False):
            reason = _one_line(str(answer.get("error-message") or done.stderr or done.stdout))
            raise DeploymentError(
                f"`flwr {' '.join(args[:2])}` against {self.address} failed: {reason}"
            )
        return answer

    def run_streaming(self, *args: str) -> int:
        """Run a `flwr` command with its output on this terminal; its exit code."""
        self.write()
        return run_in_foreground(self.command(*args), flower_env(self.flwr_home))


def register_node(connection: ControlConnection, public_key: Path, name: str) -> int:
    """Allow the SuperNode holding `public_key`'s private half to connect; its node id."""
    answer = connection.call_json("supernode", "register", str(public_key), CONNECTION,
                                  "--name", name)
    return int(answer["node-id"])


def unregister_node(connection: ControlConnection, node_id: int) -> None:
    """Refuse the SuperNode `node_id` from now on (Flower deletes its key)."""
    connection.call_json("supernode", "unregister", str(node_id), CONNECTION)


def _json_answer(stdout: str) -> dict[str, Any]:
    """The JSON object `flwr --format json` prints; empty when it printed none."""
    start = stdout.find("{")
    if start < 0:
        return {}
    try:
        answer = json.loads(stdout[start:])
    except json.JSONDecodeError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _one_line(text: str) -> str:
    """Flower's multi-line error text as one line, without blank lines or help URLs."""
    lines = [line.strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not line.startswith("For more information")]
    return " ".join(kept) or "no error message"


def submit_run(connection: ControlConnection, app_dir: Path, overrides: Path) -> int:
    """Start the app in `app_dir` with the run config in `overrides`; the SuperLink's run id."""
    answer = connection.call_json("run", str(app_dir), CONNECTION, "--run-config", str(overrides))
    return int(answer["run-id"])


def stream_logs(connection: ControlConnection, run_id: int) -> None:
    """Print the run's ServerApp log on this terminal until the run ends."""
    code = connection.run_streaming("log", str(run_id), CONNECTION, "--stream")
    if code != 0:
        raise DeploymentError(f"`flwr log {run_id}` exited with code {code}")


def run_status(connection: ControlConnection, run_id: int) -> RunStatus:
    """The run's status as the SuperLink reports it, e.g. `finished:completed`."""
    answer = connection.call_json("ls", CONNECTION, "--run-id", str(run_id))
    runs = answer.get("runs") or []
    if not runs:
        raise DeploymentError(f"SuperLink at {connection.address} knows no run {run_id}")
    return RunStatus(str(runs[0]["status"]), str(runs[0].get("status-details") or ""))


@dataclass(frozen=True)
class RunStatus:
    """`flwr ls` status text (`pending`, `running`, `finished:completed|failed|stopped`)."""

    text: str
    details: str

    @property
    def finished(self) -> bool:
        return self.text.startswith("finished")

    @property
    def completed(self) -> bool:
        return self.text == "finished:completed"

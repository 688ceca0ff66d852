"""Running Flower's own executables (`flower-superlink`, `flower-supernode`, `flwr`) as children.

fedpeft does not re-implement Flower's servers: it builds their command lines and runs them.
Three things hold for every such child:

- it finds Flower's helper executables (`flower-superexec`, `flwr-serverapp`, ...) on PATH,
  because the SuperLink and SuperNode launch them by name; the interpreter's own `bin/` goes
  first, so a deployment never picks up another Flower from the system;
- it never reaches the internet: usage telemetry, the update check and runtime dependency
  installation (`uv sync` of an app's dependencies) are all off, so an institution's network
  policy can forbid outbound traffic without breaking anything;
- its command line is logged for the operator, but never the location of private key files.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from fedpeft.common.errors import ConfigError

logger = logging.getLogger(__name__)

REDACTED = "REDACTED"

OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}
"""Environment that keeps every Flower process (and the app processes it spawns) offline."""

LOW_LATENCY_ENV = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"}
"""SuperExec (which starts a ServerApp or ClientApp process per task) polls for tasks every
1 s by default, adding up to 1 s to every message an institution receives; 0.1 s costs one
small local request per poll. (The SuperNode's 3 s sleep when it finds no message is fixed in
Flower 1.39 and cannot be set.)"""

_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class FlowerCommand:
    """A Flower command line plus the flags whose values must not appear in logs."""

    argv: list[str]
    secret_flags: frozenset[str] = field(default_factory=frozenset)

    def display(self) -> str:
        """The command as a shell line, with the value after each secret flag replaced."""
        shown: list[str] = []
        hide_next = False
        for arg in self.argv:
            shown.append(REDACTED if hide_next else arg)
            hide_next = arg in self.secret_flags
        return shlex.join(shown)


def split_address(address: str, flag: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT` (IPv6 hosts in brackets), or a ConfigError naming `flag`."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{flag} {address!r}: expected HOST:PORT with a port from 1 to 65535")
    return host.strip("[]"), int(port)


def flower_executable(name: str) -> str:
    """Absolute path of a Flower console script installed next to this interpreter."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise ConfigError(
            f"{path}: Flower executable not found; install fedpeft with its dependencies "
            "(flwr 1.39) into this environment"
        )
    return str(path)


def flower_env(flwr_home: Path | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a Flower child: offline settings, PATH, and its own FLWR_HOME.

    FLWR_HOME is where Flower keeps installed app bundles and the `flwr` connection config;
    giving each fedpeft role its own keeps runs of different federations apart.
    """
    env = dict(os.environ if base is None else base)
    env.update(OFFLINE_ENV)
    for key, value in LOW_LATENCY_ENV.items():
        env.setdefault(key, value)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env["PATH"]]) if env.get("PATH") else bin_dir
    if flwr_home is not None:
        flwr_home.mkdir(parents=True, exist_ok=True)
        env["FLWR_HOME"] = str(flwr_home.resolve())
    return env


def run_in_foreground(command: FlowerCommand, env: Mapping[str, str],
                      on_line: Callable[[str], None] | None = None) -> int:
    """Run `command` until it exits, passing Ctrl-C and SIGTERM on to it; its exit code.

    The child gets the signal rather than being killed, so the SuperLink or SuperNode can shut
    down its own helper processes and close its database cleanly. With `on_line`, the child's
    output (stdout and stderr) is passed through this process's stdout line by line and each
    line is also given to `on_line` (Flower's exit codes do not tell its errors apart: every
    error exits with 1, the reason is only in the output).
    """
    logger.info("starting: %s", command.display())
    piped = on_line is not None
    child = subprocess.Popen(command.argv, env=dict(env),
                             stdout=subprocess.PIPE if piped else None,
                             stderr=subprocess.STDOUT if piped else None)

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    reader = None
    if on_line is not None and child.stdout is not None:
        # A thread, not a loop until end of file: the child's own children (Flower's SuperExec)
        # inherit the pipe and may outlive it, so the pipe may never close.
        reader = threading.Thread(target=_pass_through, args=(child.stdout, on_line), daemon=True)
        reader.start()
    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED_SIGNALS}
    try:
        code = child.wait()
        if reader is not None:
            reader.join(timeout=_DRAIN_S)
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_DRAIN_S = 2.0
"""How long the child's last output may take to be read after it exited."""


def _pass_through(stream: IO[bytes], on_line: Callable[[str], None]) -> None:
    for raw in stream:
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
        on_line(raw.decode("utf-8", errors="replace"))

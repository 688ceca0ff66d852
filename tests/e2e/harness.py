"""What the end-to-end tests share: real processes, their logs, triggers, a loopback federation.

Every process is started in its own session, so that stopping its process group also stops
the helpers it spawned (Flower's SuperExec, ServerApp and ClientApp processes), and every one
is stopped by its id in a `finally` block (`processes`), whether the test passed or not.

Fault injection follows NVIDIA FLARE's integration tests: a trigger (a line appearing in a log
or in metrics.jsonl) fires an action (kill -9, SIGSTOP/SIGCONT, a restart). `wait_for` is the
only way a test waits: it polls, and on timeout fails with the tail of the logs that would say
why, instead of hanging. Timeouts here are hang guards on a shared 2-core machine, never speed
checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

FEDPEFT = [sys.executable, "-m", "fedpeft.cli.main"]
STOP_TIMEOUT_S = 10.0
"""How long a process has to end after SIGTERM before its group gets SIGKILL."""

WORDS = {"billing": ["invoice", "charge", "refund", "bill"],
         "fraud": ["stolen", "unauthorized", "scam", "suspicious"]}
"""Two labels a tiny BERT separates from a dozen rows: each row names one of its label's words."""


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of `path` (empty if it does not exist yet), for failure messages."""
    if not path.exists():
        return f"({path} does not exist)"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return f"--- {path.name} (last {len(text)} lines) ---\n" + "\n".join(text)


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             logs: tuple[Path, ...] = (), alive: subprocess.Popen[bytes] | None = None) -> None:
    """Return as soon as `condition()` holds; fail after `timeout` s (or as soon as `alive`
    exits) with `what` and the tails of `logs`."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        exited = alive is not None and alive.poll() is not None
        if exited or time.monotonic() >= deadline:
            reason = (f"the process exited ({alive.returncode})" if exited and alive
                      else f"not within {timeout:g} s")
            raise AssertionError(f"waiting for {what}: {reason}\n"
                                 + "\n".join(tail(log) for log in logs))
        time.sleep(0.1)


def wait_for_port(port: int, timeout: float, logs: tuple[Path, ...] = ()) -> None:
    """Return once something accepts connections on 127.0.0.1:`port`."""
    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0
    wait_for(listening, timeout, f"a listener on 127.0.0.1:{port}", logs)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSON-lines file that may be being written (a torn last line is
    left out); [] while it does not exist."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


class StallingProxy:
    """A TCP relay from 127.0.0.1:`port` to 127.0.0.1:`target` that can stall the link.

    `partition()` stops relaying bytes in both directions without closing anything (and holds
    new connections), as when a VPN or a route drops every packet: TLS sessions, gRPC calls and
    heartbeats hang and time out on their own clocks, while the processes behind it keep
    running. `heal()` lets the held bytes through. Used as a context manager, it stops its
    threads and closes every socket on exit.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = [self._server]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def partition(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> StallingProxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _wait_flowing(self) -> None:
        self._flowing.wait()
        if self._closed.is_set():
            raise OSError("proxy closed")

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
                self._wait_flowing()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                self._wait_flowing()
                data = src.recv(65536)
                if not data:
                    break
                self._wait_flowing()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class Processes:
    """Long-running children with their logs (LOGS/NAME.log); all stopped by process group id."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str],
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `argv` in its own session, stdout and stderr to `log_path(name)`."""
        with self.log_path(name).open("wb") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                       env=self.env if env is None else env,
                                       start_new_session=True)
        self.started.append(process)
        return process

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def log(self, name: str) -> str:
        return self.log_path(name).read_text(encoding="utf-8", errors="replace")

    @staticmethod
    def signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Send `sig` to the process group `process` leads (its helpers included)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """kill -9 the whole group and reap the leader."""
        self.signal_group(process, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)

    def stop_all(self) -> None:
        """SIGTERM (and SIGCONT, for a group left stopped) to every group, then SIGKILL to
        whatever is left in it and to every descendant found before, by pid: the SuperLink
        starts its SuperExec in a session of its own, so the ServerApp is not in the
        SuperLink's group. Safe to call twice."""
        descendants = _descendants({process.pid for process in self.started})
        for process in reversed(self.started):
            if process.poll() is None:
                self.signal_group(process, signal.SIGTERM)
            self.signal_group(process, signal.SIGCONT)
        for process in reversed(self.started):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_TIMEOUT_S)
            # Flower's helpers (superexec, app processes) share the group: end any left.
            self.signal_group(process, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)
        for pid in descendants:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def command_line(pid: int) -> str:
    """`pid`'s command line, arguments joined by spaces ("" once it has ended)."""
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", errors="replace").strip()


def alive(pid: int) -> bool:
    """Whether `pid` still runs: a zombie (killed, not yet reaped by a parent that is not
    ours, such as Flower's SuperExec) counts as ended."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def descendants(process: subprocess.Popen[bytes]) -> dict[int, str]:
    """Every live process below `process`, by pid, with its command line. Collect it before
    a kill: an orphan is re-parented to init and is below `process` no more."""
    return {pid: command_line(pid) for pid in _descendants({process.pid})}


def kill_pids(pids: Collection[int]) -> None:
    """kill -9 each of `pids` (one that has already ended is skipped) and wait until none of
    them runs (they are not our children: their parents reap them)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in pids), STOP_TIMEOUT_S,
             f"processes {sorted(pids)} to end after SIGKILL")


def _descendants(roots: set[int]) -> set[int]:
    """Every live process below `roots` (from /proc), by pid."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


@contextmanager
def processes(logs: Path, env: dict[str, str]) -> Iterator[Processes]:
    """A `Processes` whose children are all stopped when the block ends, however it ends."""
    logs.mkdir(parents=True, exist_ok=True)
    started = Processes(logs, env)
    try:
        yield started
    finally:
        started.stop_all()


def cli(env: dict[str, str], *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`fedpeft ARGS`, which must succeed."""
    done = subprocess.run([*FEDPEFT, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"fedpeft {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def write_csv(path: Path, rows: int, offset: int) -> Path:
    """`rows` labelled rows alternating billing/fraud (starting at `offset`)."""
    labels = sorted(WORDS)
    lines = ["text,label"]
    for i in range(rows):
        label = labels[(i + offset) % 2]
        lines.append(f"my {WORDS[label][i % 4]} question number {i},{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_run_config(path: Path, model_dir: str, *, rounds: int, round_timeout: float,
                     quorum: int | None = None, below_quorum: str | None = None,
                     max_dropouts: int | None = None, lora_mode: str | None = None) -> Path:
    """A loopback deployment test's run configuration, written to `path`: the tiny model on
    the CPU, `rounds` rounds of the three institutions with secure aggregation, on the labels
    of `write_csv`. A setting given as None is left out of the file (its default applies).

    Client-side evaluation is off: each message to a SuperNode starts a fresh ClientApp process
    that imports torch and loads the model, and this machine has two cores for five processes.
    min_train_clients = 3 sizes every round to all three institutions (a round sized while one
    is offline would otherwise leave it out).
    """
    def line(key: str, value: object) -> str:
        return "" if value is None else f"{key} = {json.dumps(value)}\n"

    lora = "" if lora_mode is None else f"\n[lora]\n{line('mode', lora_mode)}"
    path.write_text(f"""
[model]
name = "{model_dir}"
max_seq_length = 16
device = "cpu"

[federation]
num_rounds = {rounds}
fraction_evaluate = 0.0
min_evaluate_clients = 0
min_available_clients = 3
min_train_clients = 3
{line("quorum", quorum)}{line("below_quorum", below_quorum)}round_timeout = {round_timeout}

[training]
batch_size = 4
local_steps = 1

[data]
labels = ["billing", "fraud"]

[secure_aggregation]
enabled = true
{line("max_dropouts", max_dropouts)}{lora}""", encoding="utf-8")
    return path

@dataclass
class Loopback:
    """A federation on 127.0.0.1 under `root`: folders, addresses and the environment.

    `enrol` makes the federation and the institutions' bundles as operators do (each
    institution makes its own keys, the coordinator enrols their public requests, each
    completes its bundle from the public reply); `start_superlink` and `register` bring the
    SuperLink up with TLS and node authentication; `join` starts one institution's SuperNode.
    """

    root: Path
    env: dict[str, str]
    fleet: int
    control: int

    @classmethod
    def under(cls, root: Path, **extra_env: str) -> Loopback:
        env = {**os.environ, "HOME": str(root / "home"), "FLWR_HOME": str(root / "flwr-home"),
               **extra_env}
        return cls(root, env, free_port(), free_port())

    @property
    def fed(self) -> Path:
        return self.root / "FED"

    @property
    def fleet_address(self) -> str:
        return f"127.0.0.1:{self.fleet}"

    @property
    def control_address(self) -> str:
        return f"127.0.0.1:{self.control}"

    def bundle(self, name: str) -> Path:
        return self.root / "sites" / name

    def state(self, name: str) -> Path:
        return self.root / "state" / name

    def enrol(self, names: tuple[str, ...]) -> None:
        cli(self.env, "federation", "init", "--dir", str(self.fed), "--address", "127.0.0.1")
        for name in names:
            cli(self.env, "institution", "init", name, "--dir", str(self.bundle(name)))
            cli(self.env, "federation", "add-institution", name, "--dir", str(self.fed),
                "--request", str(self.bundle(name) / "enrolment-request.json"))
        for name in names:  # each roster (peers.json) names them all
            cli(self.env, "institution", "complete", "--bundle", str(self.bundle(name)),
                "--from", str(self.fed / "institutions" / name))

    def start_superlink(self, procs: Processes,
                        name: str = "superlink") -> subprocess.Popen[bytes]:
        """`fedpeft server start` (log LOGS/NAME.log) on this federation's ports and state
        database, the same every time: a restarted SuperLink finds its nodes and runs again."""
        superlink = procs.start(name, [
            *FEDPEFT, "server", "start", "--dir", str(self.fed),
            "--fleet-address", self.fleet_address, "--control-address", self.control_address])
        wait_for_port(self.control, 60, (procs.log_path(name),))
        return superlink

    def register(self, names: tuple[str, ...]) -> None:
        for name in names:
            cli(self.env, "federation", "register", name, "--dir", str(self.fed),
                "--superlink-control", self.control_address)

    @classmethod
    def for_faults(cls, root: Path, model_dir: str, names: tuple[str, ...], *, rounds: int,
                   round_timeout: float) -> FaultFederation:
        """The federation the fault tests break: `names` enrolled, 12 rows each and a test
        set, and a run of `rounds` rounds where quorum 2 lets a round count without one
        institution (skipped below it; secure aggregation tolerating one dropout)."""
        fed = cls.under(root, OMP_NUM_THREADS="1")
        fed.enrol(names)
        data = root / "data"
        data.mkdir()
        csv = {name: write_csv(data / f"{name}.csv", 12, i) for i, name in enumerate(names)}
        config = write_run_config(root / "run.toml", model_dir, rounds=rounds,
                                  round_timeout=round_timeout, quorum=2, below_quorum="skip",
                                  max_dropouts=1)
        return FaultFederation(fed, csv, write_csv(data / "test.csv", 12, 0), config)

    def join_argv(self, name: str, data: Path, *extra: str,
                  superlink: str | None = None) -> list[str]:
        """`fedpeft client join` for institution `name`, with its own state and work folders
        (the same ones every time: a restarted institution finds its ledger again), dialling
        `superlink` (default: the Fleet API itself; e.g. a `StallingProxy` in front of it)."""
        return [*FEDPEFT, "client", "join", "--superlink", superlink or self.fleet_address,
                "--bundle", str(self.bundle(name)), "--state-dir", str(self.state(name)),
                "--data", str(data), "--port", str(free_port()),
                "--work-dir", str(self.root / "work" / name), *extra]

    def run_argv(self, config: Path, test_csv: Path, name: str) -> list[str]:
        """`fedpeft run` of `config` on this federation, into `root/runs/NAME`, streamed."""
        return [*FEDPEFT, "run", "--dir", str(self.fed), "--config", str(config),
                "--test-data", str(test_csv), "--superlink-control", self.control_address,
                "--out", str(self.root / "runs"), "--name", name, "--stream"]

    def resume_argv(self, run_dir: Path) -> list[str]:
        """`fedpeft run --resume RUN_DIR` on this federation, streamed: the operator's command
        after a coordinator crash (the run's own config.toml, no other run setting)."""
        return [*FEDPEFT, "run", "--dir", str(self.fed), "--resume", str(run_dir),
                "--superlink-control", self.control_address, "--stream"]


class FaultFederation(NamedTuple):
    """`Loopback.for_faults`: the federation, each institution's data, the test set, the run
    configuration."""

    fed: Loopback
    csv: dict[str, Path]
    test_csv: Path
    config: Path

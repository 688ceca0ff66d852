"""Starting an institution's SuperNode (`flower-supernode`) from its bundle.

The SuperNode dials out to the SuperLink (institutions open no inbound port), trusts only the
federation's CA, and proves its identity with the bundle's authentication key. It passes the
institution's data file and name to fedpeft's ClientApp through Flower's node config; the data
itself never leaves the machine, only adapter updates do.

The bundle is only read (it may be a read-only mount or a Kubernetes Secret); what the
institution writes, its own ledger, goes to a separate state folder, which is created and
proven writable here, before the SuperNode starts: a read-only state folder then stops
`client join` with one line instead of failing every sealed reply of every round.

The institution's policy (`--policy FILE`, else `policy.toml` in its bundle) is validated here,
at start-up, so a mistyped field fails before the SuperNode connects rather than at the first
run; its absolute path travels to the ClientApp in the node config.

Restart after a crash: Flower 1.39's SuperLink keeps a node online until two heartbeat
intervals (2 x 30 s) after its last heartbeat, and refuses to activate a node it holds online;
Flower's SuperNode then exits at once ("[code: 2004] Failed to activate SuperNode", its code
305, though the process exit status is 1 as after any error) instead of retrying. An
institution whose SuperNode was killed (kill -9, a power cut, an OOM kill) and is started
again at once would be refused for up to a minute and stay down.
`serve_supernode` therefore starts it again while it exits after saying so, for up to
REJOIN_WINDOW_S (or `--max-wait`, if given). The SuperLink still decides: a key that is not
registered keeps being refused, and `client join` ends with its exit code and one line saying
what to check.

App pinning: Flower 1.39's `--trusted-entities` accepts only app bundles that carry
verifications issued by the Flower platform (the SuperLink adds them when it fetches an app
from the platform); a federation's own SuperLink has none to add, so with trusted entities set
every run would be refused, and Flower offers no pin by bundle hash. fedpeft therefore does not
pin the bundle: see docs/threat-model-run-config.md for what that leaves open.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fedpeft.common.audit import LEDGER_FILE
from fedpeft.common.config.policy import POLICY_FILE, load_policy
from fedpeft.common.errors import ConfigError, DataError
from fedpeft.common.wire.names import BUNDLE, DATA_PATH, LORA_RANK, NODE_NAME, POLICY, STATE_DIR
from fedpeft.deployment.federation_files import InstitutionBundle, default_state_dir
from fedpeft.deployment.flower_exec import (
    FlowerCommand,
    flower_executable,
    run_in_foreground,
    split_address,
)

logger = logging.getLogger(__name__)

DEFAULT_NODE_PORT = 9094
"""The SuperNode's local Runtime API (its ClientApp processes call it); loopback only."""

REFUSED = "Failed to initialize the connection to the SuperLink"
"""What Flower's SuperNode prints (with its own code 305, "[code: 2004] Failed to activate
SuperNode" when refused) before it exits with status 1, like after any other error."""
REJOIN_WINDOW_S = 2 * 30.0 + 15.0
"""How long `serve_supernode` keeps starting a refused SuperNode again: Flower 1.39's SuperLink
holds a node online for HEARTBEAT_PATIENCE (2) x HEARTBEAT_DEFAULT_INTERVAL (30 s) after its
last heartbeat, plus time for the SuperNode to start."""
REJOIN_RETRY_S = 3.0
"""Pause between two starts of a refused SuperNode."""


@dataclass(frozen=True)
class SuperNodeSettings:
    """Everything `fedpeft client join` decides about the SuperNode process."""

    superlink: str
    bundle: InstitutionBundle
    data_path: Path
    flwr_home: Path
    port: int = DEFAULT_NODE_PORT
    insecure: bool = False
    max_wait_seconds: float | None = None
    lora_rank: int | None = None
    """This institution's LoRA rank under heterogeneous ranks (node config `lora-rank`)."""
    state_dir: Path | None = None
    """Writable folder for the institution's ledger; None: `BUNDLE-state` beside the bundle."""
    policy: Path | None = None
    """The institution's policy file; None: the bundle's policy.toml, else the default."""


def node_config(data_path: Path, name: str, bundle_root: Path | None = None,
                lora_rank: int | None = None, state_dir: Path | None = None,
                policy: Path | None = None) -> str:
    """`--node-config` text: Flower parses `key="value"` pairs, with no escape for quotes.

    The bundle folder is how the ClientApp finds its signing key and the server's keys, the
    state folder where it keeps its ledger."""
    pairs = [(DATA_PATH, str(data_path)), (NODE_NAME, name)]
    if bundle_root is not None:
        pairs.append((BUNDLE, str(bundle_root)))
    if state_dir is not None:
        pairs.append((STATE_DIR, str(state_dir)))
    if policy is not None:
        pairs.append((POLICY, str(policy)))
    for key, value in pairs:
        if '"' in value or "\n" in value:
            raise ConfigError(f"{key} {value!r}: must not contain double quotes or line breaks")
    text = " ".join(f'{key}="{value}"' for key, value in pairs)
    if lora_rank is not None:
        if lora_rank < 1:
            raise ConfigError(f"--lora-rank {lora_rank}: must be at least 1")
        text += f" {LORA_RANK}={lora_rank}"
    return text


def prepare_state_dir(path: Path) -> Path:
    """`path`, created (0700) if needed and proven writable now (ConfigError if not)."""
    path = path.expanduser().resolve()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
        ledger = path / LEDGER_FILE
        if ledger.exists() and not os.access(ledger, os.W_OK):
            raise PermissionError(f"{LEDGER_FILE} is read-only")
    except OSError as err:
        raise ConfigError(
            f"--state-dir {path}: cannot write there ({err.strerror or err}); the institution "
            "keeps its ledger in it: give a writable folder (the bundle may stay read-only)"
        ) from None
    return path


def supernode_command(settings: SuperNodeSettings) -> FlowerCommand:
    """The `flower-supernode` command line for `settings` (checks the files it names exist
    and that the state folder is writable)."""
    bundle = settings.bundle
    name = bundle.manifest().name
    split_address(settings.superlink, "--superlink")
    if not 0 < settings.port < 65536:
        raise ConfigError(f"--port {settings.port}: expected a port from 1 to 65535")
    data_path = settings.data_path.expanduser().resolve()
    if not data_path.is_file():
        raise DataError(f"--data {settings.data_path}: file not found")
    state_dir = prepare_state_dir(settings.state_dir or default_state_dir(bundle.root))
    argv = [flower_executable("flower-supernode"), "--superlink", settings.superlink]
    if settings.insecure:
        logger.warning(
            "SuperNode started with --insecure: the SuperLink at %s is not authenticated and "
            "adapter updates cross the network unencrypted", settings.superlink,
        )
        argv.append("--insecure")
    else:
        for path in (bundle.ca_cert, bundle.node_auth_key):
            if not path.is_file():
                raise ConfigError(f"{path}: missing; the institution bundle is incomplete")
        argv += [
            "--root-certificates", str(bundle.ca_cert),
            "--auth-supernode-private-key", str(bundle.node_auth_key),
        ]
    argv += ["--port", str(settings.port), "--node-config",
             node_config(data_path, name, bundle.root, settings.lora_rank, state_dir,
                         _checked_policy(settings))]
    if settings.max_wait_seconds is not None:
        argv += ["--max-wait-time", str(settings.max_wait_seconds)]
    return FlowerCommand(argv, secret_flags=frozenset({"--auth-supernode-private-key"}))



def _checked_policy(settings: SuperNodeSettings) -> Path | None:
    """The policy file to pass on (absolute), after validating it; the bundle's own
    policy.toml is validated too, though the ClientApp finds it by itself."""
    if settings.policy is not None:
        path = settings.policy.expanduser().resolve()
        load_policy(path)
        return path
    bundled = settings.bundle.root / POLICY_FILE
    if bundled.is_file():
        load_policy(bundled)
    return None


def serve_supernode(command: FlowerCommand, env: Mapping[str, str],
                    max_wait: float | None = None,
                    run: Callable[..., int] = run_in_foreground,
                    clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> int:
    """Run the SuperNode in the foreground; its exit code.

    While it exits because it could not connect or was refused (it printed REFUSED: e.g. the
    SuperLink still holds this institution's previous, crashed session online, see the module
    docstring), start it again every REJOIN_RETRY_S seconds for up to `max_wait` seconds, or
    REJOIN_WINDOW_S. `run(command, env, on_line=...)` runs it once.
    """
    window = REJOIN_WINDOW_S if max_wait is None else max_wait
    started = clock()
    refused: list[bool] = []
    while True:
        refused.clear()
        code = run(command, env, on_line=lambda line: refused.append(REFUSED in line))
        waited = clock() - started
        if code == 0 or not any(refused) or waited + REJOIN_RETRY_S >= window:
            break
        logger.warning("the SuperNode could not connect or was refused by the SuperLink (it "
                       "holds a crashed session online for up to a minute); starting it again "
                       "in %g s (%.0f of %.0f s waited)", REJOIN_RETRY_S, waited, window)
        sleep(REJOIN_RETRY_S)
    if code != 0 and any(refused):
        logger.error("the SuperLink did not accept this SuperNode for %.0f s: check the "
                     "address, that the federation's CA signed its certificate, and that this "
                     "institution is registered (fedpeft federation register)", clock() - started)
    return code

"""Starting an institution's SuperNode (`flower-supernode`) from its bundle.

The SuperNode dials out to the SuperLink (institutions open no inbound port), trusts only the
federation's CA, and proves its identity with the bundle's authentication key. It passes the
institution's data file and name to fedpeft's ClientApp through Flower's node config; the data
itself never leaves the machine, only adapter updates do.

The bundle is only read (it may be a read-only mount or a Kubernetes Secret); what the
institution writes, its own ledger, goes to a separate state folder, which is created and
proven writable here, before the SuperNode starts: a read-only state folder then stops
`client join` with one line instead of failing every sealed reply of every round.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fedpeft.common.audit import LEDGER_FILE

from fedpeft.common.errors import ConfigError, DataError
from fedpeft.deployment.federation_files import InstitutionBundle, default_state_dir
from fedpeft.deployment.flower_exec import (
    FlowerCommand,
    flower_executable,
    split_address,
)
from fedpeft.common.wire.names import BUNDLE, DATA_PATH, LORA_RANK, NODE_NAME, STATE_DIR

logger = logging.getLogger(__name__)

DEFAULT_NODE_PORT = 9094
"""The SuperNode's local Runtime API (its ClientApp processes call it); loopback only."""


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


def node_config(data_path: Path, name: str, bundle_root: Path | None = None,
                lora_rank: int | None = None, state_dir: Path | None = None) -> str:
    """`--node-config` text: Flower parses `key="value"` pairs, with no escape for quotes.

    The bundle folder is how the ClientApp finds its signing key and the server's keys, the
    state folder where it keeps its ledger."""
    pairs = [(DATA_PATH, str(data_path)), (NODE_NAME, name)]
    if bundle_root is not None:
        pairs.append((BUNDLE, str(bundle_root)))
    if state_dir is not None:
        pairs.append((STATE_DIR, str(state_dir)))
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
             node_config(data_path, name, bundle.root, settings.lora_rank, state_dir)]
    if settings.max_wait_seconds is not None:
        argv += ["--max-wait-time", str(settings.max_wait_seconds)]
    return FlowerCommand(argv, secret_flags=frozenset({"--auth-supernode-private-key"}))


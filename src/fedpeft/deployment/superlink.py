"""Starting the federation's SuperLink (`flower-superlink`) from a federation folder.

Secure by default: TLS with the federation's own CA and certificate on every API, and
SuperNode authentication, so only institutions whose keys the coordinator registered can
connect. `insecure=True` turns both off (Flower cannot authenticate nodes without TLS) and is
meant for a throwaway test on one machine; it is logged as a warning every time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fedpeft.common.errors import ConfigError
from fedpeft.deployment.federation_files import FederationFolder
from fedpeft.deployment.flower_exec import (
    FlowerCommand,
    flower_executable,
    split_address,
)

logger = logging.getLogger(__name__)

STATE_DB = "state.db"

DEFAULT_FLEET_ADDRESS = "0.0.0.0:9092"
"""Where institutions' SuperNodes connect (gRPC); Flower's customary Fleet API port."""

DEFAULT_CONTROL_ADDRESS = "127.0.0.1:9093"
"""Control API (`flwr run`, node registration) and Runtime API (the ServerApp) share this HTTP
port in Flower 1.39. Loopback by default: whoever reaches it can submit runs and register
nodes, so exposing it is a decision the coordinator makes explicitly."""


@dataclass(frozen=True)
class SuperLinkSettings:
    """Everything `fedpeft server start` decides about the SuperLink process."""

    federation: FederationFolder
    fleet_address: str = DEFAULT_FLEET_ADDRESS
    control_address: str = DEFAULT_CONTROL_ADDRESS
    insecure: bool = False
    state_dir: Path | None = None
    """Where the database and Flower's app folder go; None: the federation's `server/` folder.
    Separate so that credentials can be mounted read-only in a container."""

    @property
    def state(self) -> Path:
        return self.state_dir if self.state_dir is not None else self.federation.server_dir

    @property
    def flwr_home(self) -> Path:
        """FLWR_HOME of the SuperLink: where its ServerApp processes unpack app bundles."""
        return self.state / "flwr-home"


def superlink_command(settings: SuperLinkSettings) -> FlowerCommand:
    """The `flower-superlink` command line for `settings`.

    Checks the files it names exist, and warns here rather than at exec time so that every
    insecure command line is announced, however it ends up being run.
    """
    folder = settings.federation.require()
    split_address(settings.fleet_address, "--fleet-address")
    control_host, control_port = split_address(settings.control_address, "--control-address")
    argv = [flower_executable("flower-superlink")]
    if settings.insecure:
        logger.warning(
            "SuperLink started with --insecure: no TLS and no SuperNode authentication; "
            "any process that reaches %s can join and read every message",
            settings.fleet_address,
        )
        argv.append("--insecure")
    else:
        for path in (folder.ca_cert, folder.server_cert, folder.server_key):
            if not path.is_file():
                raise ConfigError(f"{path}: missing; the federation folder is incomplete")
        argv += [
            "--ssl-ca-certfile", str(folder.ca_cert),
            "--ssl-certfile", str(folder.server_cert),
            "--ssl-keyfile", str(folder.server_key),
            "--enable-supernode-auth",
        ]
    argv += [
        "--database", str(settings.state / STATE_DB),
        "--disable-runtime-dependency-installation",
        "--fleet-api-type", "grpc-rere",
        "--fleet-api-address", settings.fleet_address,
        "--host", control_host,
        "--port", str(control_port),
    ]
    return FlowerCommand(argv, secret_flags=frozenset({"--ssl-keyfile"}))


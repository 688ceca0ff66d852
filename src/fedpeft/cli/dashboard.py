"""`fedpeft dashboard`: serve the live dashboard of a runs folder.

Loopback by default: the page shows institution names, refusals and privacy spending, which
stay on the coordinator's machine unless the operator decides otherwise, and then only
behind a token.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

import typer

from fedpeft.cli.display import console
from fedpeft.common.errors import ConfigError, DataError

TOKEN_ENV = "FEDPEFT_DASHBOARD_TOKEN"
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def dashboard(
    runs_dir: Annotated[Path, typer.Argument(help="Folder holding run folders.")] = Path("runs"),
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8050,
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on; anything but loopback needs --token.")] = "127.0.0.1",
    token: Annotated[str | None, typer.Option(
        "--token", envvar=TOKEN_ENV,
        help=f"Secret every request must carry (or set {TOKEN_ENV}, which keeps it out of the "
             "process list); required with a non-loopback --host.")] = None,
) -> None:
    """A local web page of the runs in RUNS_DIR with live curves, participants, refusals,
    epsilon and protections; it reads the run folders and never writes to them."""
    import uvicorn

    from fedpeft.dashboard.app import create_app

    if not runs_dir.is_dir():
        raise DataError(f"{runs_dir}: runs folder not found")
    loopback = _is_loopback(host)
    if not loopback and not token:
        raise ConfigError(f"--host {host}: listening beyond loopback needs --token (or {TOKEN_ENV})")
    if token is not None and len(token) < 16:
        raise ConfigError("--token: use at least 16 characters (e.g. `openssl rand -hex 16`)")
    wildcard = host in ("0.0.0.0", "::")
    allowed = ("*",) if wildcard else tuple(dict.fromkeys((*_LOOPBACK_NAMES, host)))
    shown = "127.0.0.1" if loopback else host
    console.print(f"[bold]fedpeft dashboard[/] of {runs_dir}: http://{shown}:{port}/"
                  + ("  (append ?token=... once)" if token else ""))
    os.environ.pop(TOKEN_ENV, None)  # not inherited by anything this process might start
    uvicorn.run(create_app(runs_dir, token=token, allowed_hosts=allowed), host=host, port=port,
                log_level="warning")

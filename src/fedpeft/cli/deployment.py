"""`fedpeft federation|server|institution|client ...` and `fedpeft run`: a federation across
machines.

The coordinator creates the federation's credentials and enrols institutions (`federation`),
runs the SuperLink (`server start`) and submits runs (`run`); each institution makes its own
keys and completes its bundle with the coordinator's public reply (`institution`), then joins
(`client join`). No private key crosses from one party to the other. The commands
only decide and check; the processes are Flower's own, run in the foreground so that a
service manager or container runtime supervises them directly.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fedpeft.cli import options as opt
from fedpeft.cli.display import console
from fedpeft.common.config import load_config
from fedpeft.common.errors import ConfigError, RunError
from fedpeft.common.runs.folder import default_run_name
from fedpeft.deployment.app_bundle import check_deployable, write_app_dir, write_run_overrides
from fedpeft.deployment.bundle import complete_bundle, init_bundle
from fedpeft.deployment.control import (
    ControlConnection,
    register_node,
    run_status,
    stream_logs,
    submit_run,
    unregister_node,
)
from fedpeft.deployment.enrolment import (
    add_institution,
    forget_node_id,
    init_federation,
    record_node_id,
    revoke_institution,
)
from fedpeft.deployment.federation_files import (
    FederationFolder,
    InstitutionBundle,
    InstitutionRecord,
)
from fedpeft.deployment.flower_exec import (
    FlowerCommand,
    flower_env,
    run_in_foreground,
    split_address,
)
from fedpeft.deployment.superlink import (
    DEFAULT_CONTROL_ADDRESS,
    DEFAULT_FLEET_ADDRESS,
    SuperLinkSettings,
    superlink_command,
)
from fedpeft.deployment.supernode import (
    DEFAULT_NODE_PORT,
    SuperNodeSettings,
    serve_supernode,
    supernode_command,
)

federation_app = typer.Typer(help="Federation credentials and institutions (coordinator).",
                             no_args_is_help=True)
server_app = typer.Typer(help="The federation's SuperLink (coordinator).", no_args_is_help=True)
client_app = typer.Typer(help="An institution's SuperNode.", no_args_is_help=True)
institution_app = typer.Typer(help="An institution's own keys and bundle (institution).",
                              no_args_is_help=True)

FedDir = Annotated[Path, typer.Option("--dir", help="Federation folder (from `federation init`).")]
ControlAddress = Annotated[
    str | None,
    typer.Option("--superlink-control", help="SuperLink Control API HOST:PORT, to register keys "
                 "with a running SuperLink."),
]
Insecure = Annotated[
    bool, typer.Option("--insecure", help="No TLS and no node authentication (local tests only).")
]
InstitutionName = Annotated[str, typer.Argument(help="Institution name (letters, digits, . _ -).")]

STATUS_POLL_S = 0.5
STATUS_WAIT_S = 30.0
"""After the log stream ends, how long the SuperLink may take to record the final status."""


def _say(text: str) -> None:
    """One message per line: paths, commands and fingerprints must stay copy-pasteable."""
    console.print(text, soft_wrap=True, highlight=False)


def _connection(folder: FederationFolder, address: str, insecure: bool) -> ControlConnection:
    return ControlConnection(address, folder.cli_flwr_home, None if insecure else folder.ca_cert)


def _register(folder: FederationFolder, record: InstitutionRecord, address: str,
              insecure: bool) -> None:
    node_id = register_node(_connection(folder, address, insecure),
                            folder.reply(record.name).node_auth_pub, record.name)
    record_node_id(folder.root, record.name, node_id)
    _say(f"[green]registered[/] {record.name} with the SuperLink at {address} "
                  f"(node id {node_id})")


def _serve(command: FlowerCommand, flwr_home: Path) -> None:
    """Show the command line (private key paths redacted), run it, exit with its code."""
    _say(f"[bold]starting:[/] {escape(command.display())}")
    code = run_in_foreground(command, flower_env(flwr_home))
    raise typer.Exit(code)


@federation_app.command("init")
def federation_init(
    directory: FedDir,
    addresses: Annotated[list[str], typer.Option(
        "--address", help="Host name or IP address institutions dial (repeatable).")],
) -> None:
    """Create the federation's CA, SuperLink certificate and server keys."""
    manifest = init_federation(directory, addresses)
    folder = FederationFolder(directory)
    _say(f"[green]federation {manifest.federation_id} created:[/] {folder.root}")
    _say(f"  CA certificate SHA-256      {manifest.ca_fingerprint}")
    _say(f"  server signing key SHA-256  {manifest.server_signing_fingerprint}")
    _say(f"  server sealing key SHA-256  {manifest.server_encryption_fingerprint}")
    _say("Publish these fingerprints to institutions through a second channel.")


@federation_app.command("add-institution")
def federation_add_institution(
    name: InstitutionName,
    directory: FedDir,
    request: Annotated[Path, typer.Option(
        "--request", help="The institution's enrolment-request.json (public keys only).")],
    superlink_control: ControlAddress = None,
    insecure: Insecure = False,
) -> None:
    """Register an institution's public keys and write the public reply it completes its
    bundle with; register it with a SuperLink when one is given."""
    folder = FederationFolder(directory)
    record = add_institution(folder.root, name, request)
    _say(f"[green]institution {name} enrolled[/] (signing key SHA-256 "
         f"{record.signing_fingerprint})")
    _say(f"Hand this folder back to {name} (public files only): {folder.reply(name).root}")
    if superlink_control:
        _register(folder, record, superlink_control, insecure)
    else:
        _say("Once the SuperLink runs, allow it to connect with:\n"
                      f"  fedpeft federation register {name} --dir {folder.root} "
                      "--superlink-control HOST:PORT")


@federation_app.command("register")
def federation_register(
    name: InstitutionName,
    directory: FedDir,
    superlink_control: Annotated[str, typer.Option(
        "--superlink-control", help="SuperLink Control API HOST:PORT.")],
    insecure: Insecure = False,
) -> None:
    """Allow an enrolled institution's SuperNode to connect to a running SuperLink."""
    folder = FederationFolder(directory)
    registry = folder.registry()
    record = registry.institutions.get(name)
    if record is None:
        raise ConfigError(f"{folder.registry_path}: no institution {name!r}; add it first")
    if record.status != "active":
        raise ConfigError(f"{folder.registry_path}: institution {name!r} is {record.status}")
    _register(folder, record, superlink_control, insecure)


@federation_app.command("revoke")
def federation_revoke(
    name: InstitutionName,
    directory: FedDir,
    superlink_control: ControlAddress = None,
    insecure: Insecure = False,
) -> None:
    """Mark an institution revoked, and remove its key from the SuperLink when one is given."""
    folder = FederationFolder(directory)
    record = revoke_institution(folder.root, name)
    _say(f"[yellow]institution {name} is revoked[/] in {folder.registry_path}")
    if record.node_id is None:
        return
    if not superlink_control:
        _say(f"It is still registered as SuperLink node {record.node_id}; remove it with:\n"
                      f"  fedpeft federation revoke {name} --dir {folder.root} "
                      "--superlink-control HOST:PORT")
        return
    unregister_node(_connection(folder, superlink_control, insecure), record.node_id)
    forget_node_id(folder.root, name)
    _say(f"[yellow]unregistered[/] node {record.node_id} from the SuperLink at {superlink_control}")


@server_app.command("start")
def server_start(
    directory: FedDir,
    fleet_address: Annotated[str, typer.Option(
        "--fleet-address", help="Where SuperNodes connect (gRPC, TLS).")] = DEFAULT_FLEET_ADDRESS,
    control_address: Annotated[str, typer.Option(
        "--control-address", help="Control API for `fedpeft run` and key registration.")]
    = DEFAULT_CONTROL_ADDRESS,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="Writable folder for the database (default: DIR/server).")] = None,
    insecure: Insecure = False,
) -> None:
    """Run the SuperLink in the foreground (TLS and SuperNode authentication on)."""
    settings = SuperLinkSettings(FederationFolder(directory), fleet_address, control_address,
                                 insecure, state_dir)
    _serve(superlink_command(settings), settings.flwr_home)


@institution_app.command("init")
def institution_init(
    name: InstitutionName,
    bundle: Annotated[Path, typer.Option("--dir", help="New bundle folder for this institution.")],
) -> None:
    """Make this institution's key pairs here and the enrolment request to send the coordinator."""
    request = init_bundle(bundle, name)
    folder = InstitutionBundle(bundle)
    _say(f"[green]bundle created:[/] {folder.root} (private keys 0600; they never leave it)")
    _say(f"Send the coordinator only: {folder.request_path}")
    _say(f"  signing key SHA-256  {request.signing_fingerprint}")
    _say("Read this fingerprint to the coordinator through a second channel.")


@institution_app.command("complete")
def institution_complete(
    bundle: Annotated[Path, typer.Option("--bundle", help="This institution's bundle folder.")],
    reply: Annotated[Path, typer.Option(
        "--from", help="The coordinator's reply folder (FED/institutions/NAME).")],
) -> None:
    """Check the coordinator's reply and add its public files to the bundle."""
    manifest = complete_bundle(bundle, reply)
    _say(f"[green]bundle complete:[/] {InstitutionBundle(bundle).root} "
         f"(federation {manifest.federation_id})")
    _say(f"  CA certificate SHA-256      {manifest.ca_fingerprint}")
    _say(f"  server signing key SHA-256  {manifest.server_signing_fingerprint}")
    _say(f"  server sealing key SHA-256  {manifest.server_encryption_fingerprint}")
    _say("Compare them with the fingerprints the coordinator published out of band.")


@client_app.command("join")
def client_join(
    superlink: Annotated[str, typer.Option("--superlink", help="SuperLink Fleet API HOST:PORT.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Institution bundle folder.")],
    data: Annotated[Path, typer.Option("--data", help="This institution's data file.")],
    port: Annotated[int, typer.Option("--port", help="Local port of the SuperNode's runtime API.")]
    = DEFAULT_NODE_PORT,
    work_dir: Annotated[Path | None, typer.Option(
        "--work-dir", help="Where Flower unpacks app bundles (default ~/.fedpeft/NAME).")] = None,
    max_wait: Annotated[float | None, typer.Option(
        "--max-wait", help="Give up after this many seconds without a SuperLink connection.")]
    = None,
    lora_rank: Annotated[int | None, typer.Option(
        "--lora-rank", help="This institution's LoRA rank when the federation uses "
        "heterogeneous ranks (lora.mode ffa or stacking); at most the run's peft.r.")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="Writable folder for this institution's ledger (default: "
        "BUNDLE-state beside the bundle); the bundle itself may be read-only.")] = None,
    policy: Annotated[Path | None, typer.Option(
        "--policy", help="This institution's policy (TOML): allowed models, required sealing, "
        "masking and DP floors; default: BUNDLE/policy.toml, else sealing required and no "
        "remote code.")] = None,
    insecure: Insecure = False,
) -> None:
    """Run this institution's SuperNode in the foreground; training data stays here."""
    institution = InstitutionBundle(bundle)
    name = institution.manifest().name
    home = work_dir if work_dir is not None else Path.home() / ".fedpeft" / name
    settings = SuperNodeSettings(superlink, institution, data, home, port, insecure, max_wait,
                                 lora_rank, state_dir, policy)
    command = supernode_command(settings)
    _say(f"[bold]starting:[/] {escape(command.display())}")
    raise typer.Exit(serve_supernode(command, flower_env(settings.flwr_home), max_wait))


@client_app.command("account")
def client_account(
    bundle: Annotated[Path, typer.Option("--bundle", help="Institution bundle folder.")],
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="This institution's state folder (default: BUNDLE-state).")] = None,
    policy: Annotated[Path | None, typer.Option(
        "--policy", help="Policy file whose lifetime_delta and caps to show (default: "
        "BUNDLE/policy.toml).")] = None,
    start: Annotated[bool, typer.Option(
        "--start", help="Open the account (required by a lifetime cap). Never start a new one "
        "to replace a lost ledger: that forgets what was spent.")] = False,
    expect_head: Annotated[str | None, typer.Option(
        "--expect-head", help="Fail unless the ledger ends at this head (kept elsewhere): "
        "catches a cut tail or a rolled-back state folder.")] = None,
) -> None:
    """Show this institution's lifetime privacy account, verified with its own key."""
    from fedpeft.cli.account import account_report

    for line in account_report(bundle, state_dir, policy, start, expect_head):
        _say(escape(line))


@client_app.command("model-hash")
def client_model_hash(
    model: Annotated[str, typer.Argument(help="Model folder (or the name the run config uses).")],
) -> None:
    """Print the content hash of a model folder, for allowed_models.sha256 in a policy."""
    from fedpeft.common.modeling.fingerprint import model_sha256

    console.print(model_sha256(model))


def run(
    directory: FedDir,
    test_data: Annotated[Path | None, typer.Option(
        "--test-data", help="Test file on the SuperLink host (relative: to this directory).")]
    = None,
    config: opt.ConfigFile = None,
    superlink_control: Annotated[str, typer.Option(
        "--superlink-control", help="SuperLink Control API HOST:PORT.")] = DEFAULT_CONTROL_ADDRESS,
    stream: Annotated[bool, typer.Option("--stream", help="Follow the run's log until it ends.")]
    = False,
    rounds: opt.Rounds = None,
    model: opt.Model = None,
    peft: opt.Method = None,
    strategy: opt.Strategy = None,
    out: Annotated[str | None, typer.Option(
        "--out", help="Parent folder for the run folder, on the SuperLink host.")] = None,
    name: opt.RunName = None,
    sets: opt.Sets = None,
    insecure: Insecure = False,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue this interrupted run folder (NAME.partial or NAME.failed on "
                         "the SuperLink host) from its last complete round, with its own "
                         "config.toml.")] = None,
) -> None:
    """Submit a run to a deployed federation; its run folder is written on the SuperLink host."""
    folder = FederationFolder(directory).require()
    split_address(superlink_control, "--superlink-control")
    if resume is not None:
        _resume_run(folder, resume.expanduser().absolute(), superlink_control, insecure, stream,
                    given=[config, test_data, rounds, model, peft, strategy, out, name, sets])
        return
    if test_data is None:
        raise ConfigError("--test-data: a deployed run needs the coordinator's test file")
    cfg = opt.build_config(config, rounds=rounds, model=model, peft=peft, strategy=strategy,
                           test_data=str(test_data.expanduser().absolute()), out=out, name=name,
                           sets=sets)
    if cfg.security.seal_updates and cfg.security.credentials_dir is None:
        # The SuperLink host opens updates with the server keys of this federation folder.
        security = cfg.security.model_copy(update={
            "credentials_dir": str(folder.root), "federation_id": folder.manifest().federation_id})
        cfg = cfg.model_copy(update={"security": security})
    run_name = cfg.output.run_name or default_run_name("run")
    output_dir = Path(cfg.output.dir).expanduser().absolute()
    output = cfg.output.model_copy(update={"dir": str(output_dir), "run_name": run_name})
    cfg = check_deployable(cfg.model_copy(update={"output": output}))
    connection = _connection(folder, superlink_control, insecure)
    with tempfile.TemporaryDirectory(prefix="fedpeft-app-") as scratch:
        app_dir = write_app_dir(Path(scratch) / "app")
        run_id = submit_run(connection, app_dir,
                            write_run_overrides(Path(scratch) / "run.toml", cfg))
    run_folder = output_dir / run_name
    _say(f"[green]run {run_id} submitted;[/] run folder on the SuperLink host: {run_folder}")
    if not stream:
        _say(f"Follow it with:  FLWR_HOME={folder.cli_flwr_home} flwr log {run_id} fedpeft")
        return
    _follow(connection, run_id, run_folder)


def _resume_run(folder: FederationFolder, run_dir: Path, superlink_control: str, insecure: bool,
                stream: bool, given: list[object]) -> None:
    """Submit the continuation of `run_dir`, checked first so a refusal changes nothing."""
    if any(value not in (None, []) for value in given):
        raise ConfigError("--resume continues a run with its own config.toml: drop --config, "
                          "--test-data, --set and the other run settings")
    from fedpeft.common.runs.checkpoint import read_checkpoint
    from fedpeft.common.runs.folder import RunFolder
    from fedpeft.server.run_checkpoint import check_resumable

    run = RunFolder.resolve(run_dir)
    cfg = check_deployable(load_config(run_dir / "config.toml"))
    checkpoint = read_checkpoint(run_dir)
    check_resumable(checkpoint, cfg, run)
    connection = _connection(folder, superlink_control, insecure)
    with tempfile.TemporaryDirectory(prefix="fedpeft-app-") as scratch:
        app_dir = write_app_dir(Path(scratch) / "app")
        overrides = write_run_overrides(Path(scratch) / "run.toml", cfg, resume=run_dir)
        run_id = submit_run(connection, app_dir, overrides)
    _say(f"[green]run {run_id} submitted:[/] continues {run_dir} after round {checkpoint.round}")
    if stream:
        _follow(connection, run_id, run.final_path)


def _follow(connection: ControlConnection, run_id: int, run_folder: Path) -> None:
    stream_logs(connection, run_id)
    status = run_status(connection, run_id)
    deadline = time.monotonic() + STATUS_WAIT_S
    while not status.finished and time.monotonic() < deadline:
        time.sleep(STATUS_POLL_S)
        status = run_status(connection, run_id)
    if not status.completed:
        details = f": {status.details}" if status.details else ""
        raise RunError(f"run {run_id} ended as {status.text or 'unknown'}{details}; see "
                       f"{run_folder}.failed")
    _say(f"[green]run {run_id} completed:[/] {run_folder}")

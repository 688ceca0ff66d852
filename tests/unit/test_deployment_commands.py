"""Deployment without processes: command lines, federation files, registry states, run config."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
import tomllib
from typer.testing import CliRunner

from fedpeft.cli.main import app
from fedpeft.common.config import RunConfig, to_wire
from fedpeft.common.errors import ConfigError, DataError
from fedpeft.deployment.app_bundle import (
    CONFIG_KEY,
    RESUME_KEY,
    app_pyproject,
    check_deployable,
    read_run_config,
    write_run_overrides,
)
from fedpeft.deployment.bundle import complete_bundle, init_bundle
from fedpeft.deployment.control import ControlConnection
from fedpeft.deployment.enrolment import (
    add_institution,
    forget_node_id,
    init_federation,
    record_node_id,
    revoke_institution,
)
from fedpeft.deployment.federation_files import FederationFolder, InstitutionBundle
from fedpeft.deployment.flower_exec import REDACTED, FlowerCommand, flower_env, split_address
from fedpeft.deployment.superlink import SuperLinkSettings, superlink_command
from fedpeft.deployment.supernode import SuperNodeSettings, node_config, supernode_command

runner = CliRunner()


def _enrol(root: Path, name: str, bundles: Path) -> InstitutionBundle:
    """Both sides of enrolment: the institution's init, the coordinator's add, completion."""
    bundle = InstitutionBundle(bundles / name)
    init_bundle(bundle.root, name)
    add_institution(root, name, bundle.request_path)
    complete_bundle(bundle.root, FederationFolder(root).reply(name).root)
    return bundle


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> FederationFolder:
    root = tmp_path_factory.mktemp("fed") / "FED"
    init_federation(root, ["fl.example.org", "10.0.0.5"])
    _enrol(root, "bank-a", root.parent / "bundles")
    return FederationFolder(root)


@pytest.fixture(scope="module")
def bank_a(fed: FederationFolder) -> InstitutionBundle:
    return InstitutionBundle(fed.root.parent / "bundles" / "bank-a")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# --- SuperLink command ------------------------------------------------------------------------

def test_superlink_has_tls_and_node_auth_by_default(fed: FederationFolder) -> None:
    argv = superlink_command(SuperLinkSettings(fed)).argv
    assert _value(argv, "--ssl-ca-certfile") == str(fed.ca_cert)
    assert _value(argv, "--ssl-certfile") == str(fed.server_cert)
    assert _value(argv, "--ssl-keyfile") == str(fed.server_key)
    assert "--enable-supernode-auth" in argv and "--insecure" not in argv
    assert _value(argv, "--database") == str(fed.server_dir / "state.db")
    assert "--disable-runtime-dependency-installation" in argv
    assert _value(argv, "--fleet-api-type") == "grpc-rere"
    assert _value(argv, "--fleet-api-address") == "0.0.0.0:9092"
    assert (_value(argv, "--host"), _value(argv, "--port")) == ("127.0.0.1", "9093")


def test_superlink_state_can_live_outside_the_credentials(fed: FederationFolder,
                                                         tmp_path: Path) -> None:
    settings = SuperLinkSettings(fed, state_dir=tmp_path / "state")
    assert _value(superlink_command(settings).argv,
                  "--database") == str(tmp_path / "state" / "state.db")
    assert settings.flwr_home == tmp_path / "state" / "flwr-home"


def test_superlink_insecure_is_explicit_and_warns(fed: FederationFolder,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        argv = superlink_command(SuperLinkSettings(fed, insecure=True)).argv
    assert "--insecure" in argv
    assert "--enable-supernode-auth" not in argv and "--ssl-keyfile" not in argv
    assert any("--insecure" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


def test_superlink_command_line_hides_the_key_path(fed: FederationFolder) -> None:
    shown = superlink_command(SuperLinkSettings(fed)).display()
    assert str(fed.server_key) not in shown and REDACTED in shown
    assert str(fed.server_cert) in shown


@pytest.mark.parametrize("address", ["9092", "host:", ":9092", "host:0", "host:70000", "host:x"])
def test_bad_addresses_name_the_flag(fed: FederationFolder, address: str) -> None:
    with pytest.raises(ConfigError, match="--fleet-address"):
        superlink_command(SuperLinkSettings(fed, fleet_address=address))


def test_split_address_handles_ipv6() -> None:
    assert split_address("[::1]:9092", "--x") == ("::1", 9092)


def test_superlink_refuses_a_folder_that_is_not_a_federation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a federation folder"):
        superlink_command(SuperLinkSettings(FederationFolder(tmp_path)))


# --- SuperNode command ------------------------------------------------------------------------

def _node(bundle: InstitutionBundle, tmp_path: Path, **changes: object) -> SuperNodeSettings:
    data = tmp_path / "my data.csv"
    data.write_text("text,label\nx,billing\n")
    base: dict[str, object] = {"superlink": "fl.example.org:9092", "bundle": bundle,
                               "data_path": data, "flwr_home": tmp_path / "home",
                               "state_dir": tmp_path / "state"}
    return SuperNodeSettings(**{**base, **changes})  # type: ignore[arg-type]


def test_supernode_trusts_the_ca_and_proves_its_key(bank_a: InstitutionBundle,
                                                    tmp_path: Path) -> None:
    argv = supernode_command(_node(bank_a, tmp_path)).argv
    assert _value(argv, "--superlink") == "fl.example.org:9092"
    assert _value(argv, "--root-certificates") == str(bank_a.ca_cert)
    assert _value(argv, "--auth-supernode-private-key") == str(bank_a.node_auth_key)
    assert _value(argv, "--port") == "9094"
    assert _value(argv, "--node-config") == (
        f'data-path="{(tmp_path / "my data.csv").resolve()}" name="bank-a" '
        f'bundle="{bank_a.root}" state-dir="{tmp_path / "state"}"'
    )
    ranked = supernode_command(_node(bank_a, tmp_path, lora_rank=4)).argv
    assert _value(ranked, "--node-config").endswith(" lora-rank=4")
    assert "--insecure" not in argv and "--max-wait-time" not in argv


def test_supernode_state_defaults_beside_the_bundle(tmp_path: Path) -> None:
    root = tmp_path / "FED"
    init_federation(root, ["127.0.0.1"])
    bundle = _enrol(root, "clinic", tmp_path / "site")
    argv = supernode_command(_node(bundle, tmp_path, state_dir=None)).argv
    state = tmp_path / "site" / "clinic-state"
    assert f'state-dir="{state}"' in _value(argv, "--node-config")
    assert state.is_dir() and _mode(state) == 0o700


def test_supernode_refuses_an_unwritable_state_folder_at_start(bank_a: InstitutionBundle,
                                                               tmp_path: Path) -> None:
    """A state folder that cannot be written (here: below a file, which fails even for root)
    stops `client join` with one line before any SuperNode starts."""
    blocker = tmp_path / "read-only-mount"
    blocker.write_text("")
    result = runner.invoke(app, ["client", "join", "--superlink", "127.0.0.1:9092",
                                 "--bundle", str(bank_a.root), "--data", str(blocker),
                                 "--state-dir", str(blocker / "state")])
    assert isinstance(result.exception, ConfigError), result.output
    message = str(result.exception)
    assert message.startswith(f"--state-dir {blocker / 'state'}: cannot write there")
    assert "\n" not in message


def test_supernode_command_line_hides_the_key_path(bank_a: InstitutionBundle,
                                                   tmp_path: Path) -> None:
    shown = supernode_command(_node(bank_a, tmp_path)).display()
    assert str(bank_a.node_auth_key) not in shown and REDACTED in shown


def test_supernode_insecure_warns(bank_a: InstitutionBundle, tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        argv = supernode_command(_node(bank_a, tmp_path, insecure=True)).argv
    assert "--insecure" in argv and "--root-certificates" not in argv
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_supernode_refuses_missing_data(bank_a: InstitutionBundle, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data .*missing.csv: file not found"):
        supernode_command(_node(bank_a, tmp_path, data_path=tmp_path / "missing.csv"))


def test_supernode_refuses_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a complete institution bundle"):
        supernode_command(_node(InstitutionBundle(tmp_path), tmp_path))


def test_node_config_refuses_quotes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data-path"):
        node_config(tmp_path / 'a"b.csv', "bank-a")


def test_flower_env_is_offline_and_finds_flower_helpers(tmp_path: Path) -> None:
    env = flower_env(tmp_path / "home", base={"PATH": "/usr/bin"})
    assert env["FLWR_TELEMETRY_ENABLED"] == "0"
    assert env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert env["FLWR_HOME"] == str((tmp_path / "home").resolve())
    first = Path(env["PATH"].split(":")[0])
    assert (first / "flower-superexec").is_file()


def test_superexec_polls_for_tasks_every_tenth_of_a_second_unless_the_operator_says() -> None:
    assert flower_env(None, base={})["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] == "0.1"
    chosen = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "2"}
    assert flower_env(None, base=chosen)["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] == "2"


def test_display_redacts_only_secret_values() -> None:
    command = FlowerCommand(["x", "--key", "/k", "--cert", "/c"], frozenset({"--key"}))
    assert command.display() == f"x --key {REDACTED} --cert /c"


# --- federation files -------------------------------------------------------------------------

def test_init_writes_private_keys_0600_and_a_manifest(fed: FederationFolder) -> None:
    for key in (fed.ca_key, fed.server_key, fed.server_signing_key, fed.server_encryption_key):
        assert _mode(key) == 0o600, key
    for public in (fed.ca_cert, fed.server_cert, fed.server_signing_pub, fed.server_encryption_pub):
        assert _mode(public) == 0o644, public
    manifest = fed.manifest()
    assert manifest.addresses == ["fl.example.org", "10.0.0.5"]
    assert len(manifest.ca_fingerprint) == 64
    assert fed.registry().institutions.keys() == {"bank-a"}


def test_server_certificate_covers_the_addresses_and_loopback(fed: FederationFolder) -> None:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(fed.server_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(v) for v in sans.get_values_for_type(x509.DNSName)}
    ips = {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    assert names == {"fl.example.org", "localhost"} and ips == {"10.0.0.5", "127.0.0.1"}


def test_init_refuses_an_existing_federation(fed: FederationFolder) -> None:
    with pytest.raises(ConfigError, match="already exists"):
        init_federation(fed.root, ["x.example.org"])


def test_init_with_a_bad_address_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--address"):
        init_federation(tmp_path / "FED", ["not a host!"])
    assert list(tmp_path.iterdir()) == []


def test_bundle_holds_what_the_institution_needs(fed: FederationFolder,
                                                 bank_a: InstitutionBundle) -> None:
    assert _mode(bank_a.root) == 0o700
    assert _mode(bank_a.node_auth_key) == 0o600 and _mode(bank_a.signing_key) == 0o600
    assert bank_a.node_auth_key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert bank_a.node_auth_pub.read_text().startswith("ecdsa-sha2-nistp256 ")
    assert bank_a.ca_cert.read_bytes() == fed.ca_cert.read_bytes()
    assert bank_a.server_signing_pub.read_bytes() == fed.server_signing_pub.read_bytes()
    assert bank_a.server_encryption_pub.read_bytes() == fed.server_encryption_pub.read_bytes()
    assert bank_a.manifest().federation_id == fed.manifest().federation_id
    record = fed.registry().institutions["bank-a"]
    assert record.status == "active" and record.node_id is None
    assert record.node_auth_public_key == bank_a.node_auth_pub.read_text().strip()
    assert record.signing_public_key == bank_a.signing_pub.read_text()


@pytest.mark.parametrize("name", ["", "a b", "../x", "-x", 'q"'])
def test_add_institution_refuses_bad_names(fed: FederationFolder, bank_a: InstitutionBundle,
                                          name: str) -> None:
    with pytest.raises(ConfigError, match="institution name"):
        add_institution(fed.root, name, bank_a.request_path)


def test_registry_lifecycle(tmp_path: Path) -> None:
    root = tmp_path / "FED"
    init_federation(root, ["127.0.0.1"])
    clinic = _enrol(root, "clinic", tmp_path / "site")
    record_node_id(root, "clinic", 42)
    assert FederationFolder(root).registry().institutions["clinic"].node_id == 42
    revoked = revoke_institution(root, "clinic")
    assert revoked.status == "revoked" and revoked.revoked_at is not None
    assert revoke_institution(root, "clinic") == revoked  # repeatable, first revocation kept
    forget_node_id(root, "clinic")
    stored = FederationFolder(root).registry().institutions["clinic"]
    assert stored.status == "revoked" and stored.node_id is None
    with pytest.raises(ConfigError, match="already exists \\(revoked\\)"):
        add_institution(root, "clinic", clinic.request_path)
    with pytest.raises(ConfigError, match="no institution 'nobody'"):
        revoke_institution(root, "nobody")


def test_cli_federation_commands(tmp_path: Path) -> None:
    root = tmp_path / "FED"
    result = runner.invoke(app,
                           ["federation", "init", "--dir", str(root), "--address", "127.0.0.1"])
    assert result.exit_code == 0, result.output
    bundle = tmp_path / "lab-bundle"
    result = runner.invoke(app, ["institution", "init", "lab", "--dir", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "PRIVATE KEY" not in result.output and "enrolment-request.json" in result.output
    result = runner.invoke(app, ["federation", "add-institution", "lab", "--dir", str(root),
                                 "--request", str(bundle / "enrolment-request.json")])
    assert result.exit_code == 0, result.output
    assert "fedpeft federation register lab" in result.output
    assert "PRIVATE KEY" not in result.output
    result = runner.invoke(app, ["institution", "complete", "--bundle", str(bundle),
                                 "--from", str(root / "institutions" / "lab")])
    assert result.exit_code == 0, result.output
    assert FederationFolder(root).manifest().ca_fingerprint in result.output
    result = runner.invoke(app, ["federation", "revoke", "lab", "--dir", str(root)])
    assert result.exit_code == 0, result.output
    registry = json.loads((root / "institutions.json").read_text())
    assert registry["institutions"]["lab"]["status"] == "revoked"
    result = runner.invoke(app, ["federation", "register", "lab", "--dir", str(root),
                                 "--superlink-control", "127.0.0.1:1"])
    assert isinstance(result.exception, ConfigError) and "revoked" in str(result.exception)


# --- control connection and run config --------------------------------------------------------

def test_connection_config_verifies_with_the_ca(fed: FederationFolder, tmp_path: Path) -> None:
    ControlConnection("10.0.0.5:9093", tmp_path / "home", fed.ca_cert).write()
    config = tomllib.loads((tmp_path / "home" / "config.toml").read_text())
    assert config["superlink"]["default"] == "fedpeft"
    assert config["superlink"]["fedpeft"] == {"address": "10.0.0.5:9093",
                                              "root-certificates": str(fed.ca_cert)}


def test_insecure_connection_config(tmp_path: Path) -> None:
    ControlConnection("127.0.0.1:9093", tmp_path / "home", None).write()
    config = tomllib.loads((tmp_path / "home" / "config.toml").read_text())
    assert config["superlink"]["fedpeft"]["insecure"] is True


def _deployable(tmp_path: Path) -> RunConfig:
    return RunConfig.model_validate({
        "data": {"labels": ["a", "b"], "test": str(tmp_path / "test.csv")},
        "output": {"dir": str(tmp_path / "runs"), "run_name": "r1"},
        "security": {"credentials_dir": str(tmp_path / "FED")},
    })


def test_run_config_round_trips_through_the_overrides_file(tmp_path: Path) -> None:
    cfg = _deployable(tmp_path)
    overrides = tomllib.loads(write_run_overrides(tmp_path / "run.toml", cfg).read_text())
    run = read_run_config(overrides)
    assert run.cfg == cfg and run.test_path == str(tmp_path / "test.csv")


def test_a_resumed_run_names_its_folder_on_the_superlink_host(tmp_path: Path) -> None:
    cfg = _deployable(tmp_path)
    folder = tmp_path / "runs" / "r1.failed"
    overrides = tomllib.loads(write_run_overrides(tmp_path / "run.toml", cfg, folder).read_text())
    assert read_run_config(overrides).resume == folder
    assert read_run_config({**overrides, RESUME_KEY: ""}).resume is None
    with pytest.raises(ConfigError, match="fedpeft-resume.*absolute path"):
        read_run_config({**overrides, RESUME_KEY: "runs/r1.failed"})


def test_app_pyproject_names_installed_components() -> None:
    app_cfg = app_pyproject()["tool"]["flwr"]["app"]
    assert app_cfg["components"] == {"serverapp": "fedpeft.server.app:app",
                                     "clientapp": "fedpeft.client.app:app"}
    assert app_cfg["config"] == {CONFIG_KEY: "", RESUME_KEY: ""}


@pytest.mark.parametrize(("update", "field"), [
    ({"data": {"labels": None, "test": "/t.csv"}}, "data.labels"),
    ({"data": {"labels": ["a"], "test": None}}, "data.test"),
    ({"data": {"labels": ["a"], "test": "t.csv"}}, "data.test"),
    ({"output": {"dir": "runs", "run_name": "r"}}, "output.dir"),
    ({"output": {"dir": "/runs", "run_name": None}}, "output.run_name"),
    ({"security": {"credentials_dir": None}}, "security.credentials_dir"),
    ({"security": {"credentials_dir": "FED"}}, "security.credentials_dir"),
])
def test_check_deployable_names_the_field(update: dict, field: str) -> None:
    base = {"data": {"labels": ["a"], "test": "/t.csv"},
            "output": {"dir": "/runs", "run_name": "r"},
            "security": {"credentials_dir": "/FED"}}
    cfg = RunConfig.model_validate({**base, **update})
    with pytest.raises(ConfigError, match=field.replace(".", "\\.")):
        check_deployable(cfg)


def test_empty_run_config_says_how_to_submit() -> None:
    with pytest.raises(ConfigError, match="fedpeft run"):
        read_run_config({CONFIG_KEY: ""})
    with pytest.raises(ConfigError, match="data.labels"):
        read_run_config({CONFIG_KEY: to_wire(RunConfig())})


def test_a_deployed_institution_writes_its_ledger_to_its_state_folder(
    bank_a: InstitutionBundle, tmp_path: Path
) -> None:
    """The ClientApp reads keys from the (read-only) bundle and writes only to `state-dir`."""
    from flwr.app import Context, RecordDict

    from fedpeft.client.identity import institution_keys
    from fedpeft.client.stages.ledger import record_sent

    before = {p.name: p.read_bytes() for p in bank_a.root.iterdir()}
    state = tmp_path / "state"
    node = {"bundle": str(bank_a.root), "state-dir": str(state), "name": "bank-a"}
    context = Context(run_id=1, node_id=1, node_config=node, state=RecordDict(), run_config={})
    keys = institution_keys(RunConfig(), context, lambda: "bank-a")
    assert keys is not None and keys.state_dir == str(state)
    state.mkdir()
    record_sent(keys, {"round": 1})
    assert (state / "ledger.jsonl").is_file()
    assert {p.name: p.read_bytes() for p in bank_a.root.iterdir()} == before
    default = institution_keys(RunConfig(), Context(
        run_id=1, node_id=1, node_config={"bundle": str(bank_a.root)}, state=RecordDict(),
        run_config={}), lambda: "bank-a")
    assert default is not None and default.state_dir == str(bank_a.root.parent / "bank-a-state")


def test_supernode_passes_a_valid_policy_and_refuses_a_bad_one_at_start(
        bank_a: InstitutionBundle, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("require_privacy = true\nmin_noise_multiplier = 1.0\n")
    argv = supernode_command(_node(bank_a, tmp_path, policy=policy)).argv
    assert f'policy="{policy.resolve()}"' in _value(argv, "--node-config")
    policy.write_text("min_noise_multipler = 1.0\n")  # misspelt: refused before connecting
    with pytest.raises(ConfigError, match="policy.toml: min_noise_multipler: Extra inputs"):
        supernode_command(_node(bank_a, tmp_path, policy=policy))
    bundled = bank_a.root / "policy.toml"
    bundled.write_text("max_epsilon = -1\n")
    try:
        with pytest.raises(ConfigError, match="policy.toml: max_epsilon: Input should be greater"):
            supernode_command(_node(bank_a, tmp_path))
    finally:
        bundled.unlink()  # the bundle is shared by this module's tests


def test_client_model_hash_prints_what_a_policy_pins(tmp_path: Path) -> None:
    from fedpeft.common.errors import ModelError
    from fedpeft.common.modeling.fingerprint import folder_sha256

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "weights.bin").write_bytes(b"\x00" * 10)
    result = runner.invoke(app, ["client", "model-hash", str(model)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == folder_sha256(model)
    (model / "weights.bin").write_bytes(b"\x01" * 10)  # one changed byte, another hash
    assert runner.invoke(app, ["client", "model-hash", str(model)]).output.strip() != \
        result.output.strip()
    missing = runner.invoke(app, ["client", "model-hash", str(tmp_path / "none")])
    assert isinstance(missing.exception, ModelError)  # `fedpeft` prints it and exits 2
    assert "none: no such model folder" in str(missing.exception)

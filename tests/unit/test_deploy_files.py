"""The files in deploy/ agree with the CLI: commands parse, ports and mounts line up.

No container engine runs here, so the files are checked by reading them: every `fedpeft`
command they contain must name an existing subcommand and only options it accepts, and the
ports and mounts must match what those commands are told to use.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import typer.main
import yaml

from fedpeft.cli.main import app
from fedpeft.deployment.supernode import DEFAULT_NODE_PORT
from fedpeft.deployment.flower_exec import OFFLINE_ENV
from fedpeft.deployment.superlink import DEFAULT_FLEET_ADDRESS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
FLEET_PORT = int(DEFAULT_FLEET_ADDRESS.rsplit(":", 1)[1])
IMAGE = "fedpeft:0.1.0"


def _check_cli(args: list[str]) -> click.Command:
    """The click command `args` invokes, after checking every option in `args` exists on it."""
    command: click.Command = typer.main.get_command(app)
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in command.commands, f"fedpeft has no command {name!r} ({args})"
        command = command.commands[name]
    known = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for token in rest:
        if token.startswith("--"):
            assert token.split("=")[0] in known, f"{token} is not an option of {args[:2]}"
    return command


def _option(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _k8s(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if doc]


def test_dockerfile_runs_fedpeft_offline() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["fedpeft"]' in text
    assert "download.pytorch.org/whl/cpu" in text
    assert re.search(r"pip install .*/wheels/fedpeft-\*\.whl", text)
    for key, value in OFFLINE_ENV.items():
        assert f"{key}={value}" in text
    exposed = re.search(r"^EXPOSE (.+)$", text, re.M)
    assert exposed and str(FLEET_PORT) in exposed.group(1).split()


def test_compose_services_use_the_cli_consistently() -> None:
    services = _compose()["services"]
    link = services["superlink"]
    assert _check_cli(link["command"]).name == "start"
    fleet = _option(link["command"], "--fleet-address")
    assert fleet == DEFAULT_FLEET_ADDRESS
    assert f"{FLEET_PORT}:{FLEET_PORT}" in link["ports"]
    control_port = _option(link["command"], "--control-address").rsplit(":", 1)[1]
    assert f"127.0.0.1:{control_port}:{control_port}" in link["ports"]  # never public
    assert f"./federation:{_option(link['command'], '--dir')}:ro" in link["volumes"]
    state = _option(link["command"], "--state-dir")
    assert any(v.split(":")[1] == state and not v.endswith(":ro") for v in link["volumes"])
    institutions = [name for name in services if name != "superlink"]
    assert len(institutions) == 3
    for name in institutions:
        service = services[name]
        args = service["command"]
        assert _check_cli(args).name == "join"
        assert _option(args, "--superlink") == f"superlink:{FLEET_PORT}"
        assert int(_option(args, "--port")) == DEFAULT_NODE_PORT
        # the bundle (the institution's own keys) read-only, its state folder writable
        assert f"./institutions/{name}:{_option(args, '--bundle')}:ro" in service["volumes"]
        assert f"./institutions/{name}-state:{_option(args, '--state-dir')}" in service["volumes"]
        assert any(v.endswith(f":{_option(args, '--data')}:ro") for v in service["volumes"])
        assert str(DEFAULT_NODE_PORT) in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["superlink"]["condition"] == "service_healthy"
    for service in services.values():
        assert service["image"] == IMAGE and service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert "healthcheck" in service
    assert str(FLEET_PORT) in " ".join(link["healthcheck"]["test"])


def test_kubernetes_superlink() -> None:
    docs = {doc["kind"]: doc for doc in _k8s("superlink.yaml") if doc["kind"] != "Service"}
    services = [doc for doc in _k8s("superlink.yaml") if doc["kind"] == "Service"]
    assert {"Secret", "PersistentVolumeClaim", "Deployment"} <= docs.keys()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert container["image"] == IMAGE and _check_cli(args).name == "start"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["credentials"]["mountPath"] == _option(args, "--dir")
    assert mounts["credentials"]["readOnly"] is True
    assert _option(args, "--state-dir").startswith(mounts["state"]["mountPath"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret = volumes["credentials"]["secret"]
    assert secret["secretName"] == docs["Secret"]["metadata"]["name"]
    assert {i["key"] for i in secret["items"]} == set(docs["Secret"]["stringData"])
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["fleet"] == FLEET_PORT == int(_option(args, "--fleet-address").rsplit(":", 1)[1])
    assert ports["control"] == int(_option(args, "--control-address").rsplit(":", 1)[1])
    by_type = {s["spec"]["type"]: s["spec"]["ports"][0] for s in services}
    assert by_type["LoadBalancer"]["port"] == FLEET_PORT  # institutions come from outside
    assert by_type["ClusterIP"]["targetPort"] == "control"  # the Control API does not


def test_kubernetes_institution() -> None:
    docs = {doc["kind"]: doc for doc in _k8s("institution.yaml")}
    assert "Service" not in docs  # a SuperNode only dials out
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert container["image"] == IMAGE and _check_cli(args).name == "join"
    assert _option(args, "--superlink").endswith(f":{FLEET_PORT}")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[_option(args, "--bundle")]["readOnly"] is True
    state = next(m for m in mounts.values() if _option(args, "--state-dir").startswith(m["mountPath"]))
    assert not state.get("readOnly", False)
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert claims[state["name"]] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert mounts[str(Path(_option(args, "--data")).parent)]["readOnly"] is True
    bundle_secret = next(v for v in pod["volumes"] if "secret" in v)["secret"]
    assert bundle_secret["secretName"] == docs["Secret"]["metadata"]["name"]
    assert {"ca.pem", "supernode-auth", "institution.json"} <= set(docs["Secret"]["stringData"])
    assert str(_option(args, "--port")) in " ".join(container["livenessProbe"]["exec"]["command"])


def _readme_commands() -> list[list[str]]:
    text = (DEPLOY / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("fedpeft "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_readme_has_commands_for_every_role() -> None:
    text = (DEPLOY / "README.md").read_text()
    for role in ("Coordinator", "Institution", "Compliance officer"):
        assert re.search(rf"^##.*{role}", text, re.M | re.I), role
    firsts = {tuple(c[:2]) for c in _readme_commands()}
    assert {("federation", "init"), ("federation", "add-institution"), ("server", "start"),
            ("client", "join"), ("federation", "revoke")} <= firsts
    assert any(c[0] == "run" for c in _readme_commands())


@pytest.mark.parametrize("args", _readme_commands(), ids=lambda a: " ".join(a[:2]))
def test_readme_commands_parse(args: list[str]) -> None:
    _check_cli(args)

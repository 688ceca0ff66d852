"""The dashboard's HTTP side: JSON of healthy and damaged run folders, what the page withholds
with DP, file serving confined to the run, and the token and Host checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from fedpeft.dashboard.app import TOKEN_COOKIE, create_app

from .conftest import EPSILONS, round_record, tear_last_line, tear_middle_line

TOKEN = "0123456789abcdef0123"


def _client(runs_dir: Path, token: str | None = None, base: str = "http://127.0.0.1") -> TestClient:
    return TestClient(create_app(runs_dir, token=token), base_url=base)


def test_runs_json_lists_every_state_and_damage(write_run, runs_dir: Path) -> None:
    write_run("done", dp=True)
    write_run("broken", state="failed", rounds=1)
    tear_last_line(write_run("live", state="running", rounds=2))
    tear_middle_line(write_run("torn"))
    (write_run("no-summary") / "summary.json").unlink()
    (runs_dir / "not-a-run").mkdir()

    body = _client(runs_dir).get("/api/runs").json()
    runs = {run["id"]: run for run in body["runs"]}
    assert set(runs) == {"done", "broken", "live", "torn", "no-summary"}
    assert (runs["done"]["status"], runs["done"]["rounds_done"], runs["done"]["epsilon"],
            runs["done"]["target_epsilon"]) == ("completed", 3, EPSILONS[-1], 5.0)
    assert runs["broken"]["status"] == "failed"
    assert runs["broken"]["error"] == "RuntimeError: institution bank-c refused the global adapter"
    assert (runs["live"]["status"], runs["live"]["rounds_done"], runs["live"]["problems"]) == ("running", 2, [])
    assert runs["torn"]["problems"] == [f"{runs_dir / 'torn' / 'metrics.jsonl'} line 2: not JSON (cut or edited)"]
    assert runs["no-summary"]["status"] == "unreadable"


def test_run_json_has_curves_participants_refusals_and_protections(write_run, runs_dir: Path) -> None:
    write_run("plain")
    detail = _client(runs_dir).get("/api/runs/plain").json()
    assert detail["charts"]["test"]["series"]["accuracy"] == [
        [n, pytest.approx(round_record(n, dp=False)["server_eval"]["accuracy"])] for n in range(4)]
    assert detail["charts"]["traffic"]["series"]["MB sent"] == [[n, 1.5 * n] for n in (1, 2, 3)]
    assert detail["charts"]["institutions_train"]["series"]["bank-b"] == [[n, pytest.approx(0.8)] for n in (1, 2, 3)]
    round_two = detail["rounds"][1]
    assert round_two["contributed"] == ["bank-a", "bank-b"]
    assert round_two["failures"] == [{"institution": "bank-c", "phase": "sealing",
                                      "reason": "signature does not verify"}]
    assert ["per-institution curves", "shown"] in detail["protections"]
    assert "config.toml" in detail["files"] and "summary.json" in detail["files"]


def test_with_dp_the_page_shows_epsilon_against_target_and_no_institution_curve(write_run, runs_dir: Path) -> None:
    write_run("private", dp=True)
    client = _client(runs_dir)
    detail = client.get("/api/runs/private").json()
    assert detail["charts"]["epsilon"]["series"]["epsilon"] == [[1, 0.9], [2, 1.5], [3, 2.1]]
    assert detail["charts"]["epsilon"]["target"] == 5.0
    assert not [name for name in detail["charts"] if name.startswith("institutions")]
    assert ["per-institution curves", "withheld: DP or secure aggregation is on"] in detail["protections"]
    page = client.get("/runs/private").text
    assert 'data-chart="epsilon"' in page and "target 5" in page


def test_a_run_still_writing_and_then_torn_never_breaks_a_page(write_run, runs_dir: Path) -> None:
    live = write_run("live", state="running", rounds=1)
    client = _client(runs_dir)
    tear_last_line(live)
    assert client.get("/api/runs/live").json()["rounds_done"] == 1
    (live / "metrics.jsonl").write_bytes(b"\xff\xfe garbage \x00\n{\"round\": 1}\n")
    (live / "config.toml").write_text("[privacy\n", encoding="utf-8")
    for path in ("/", "/live/runs", "/runs/live", "/live/runs/live", "/api/runs/live"):
        assert client.get(path).status_code == 200, path
    detail = client.get("/api/runs/live").json()
    assert detail["rounds_done"] == 1
    assert f"{live / 'config.toml'}: not valid TOML" in detail["problems"]
    (live / "metrics.jsonl").unlink()
    assert client.get("/runs/live").status_code == 200  # started, nothing recorded yet


def test_institution_names_are_escaped(write_run, runs_dir: Path) -> None:
    run = write_run("evil")
    metrics = run / "metrics.jsonl"
    evil = "<script>alert(1)</script>"
    metrics.write_text(metrics.read_text(encoding="utf-8").replace("bank-a", evil), encoding="utf-8")
    page = _client(runs_dir).get("/runs/evil").text
    assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize("path", ["/runs/evil/files/../../secret.txt", "/runs/evil/files/metrics.jsonl",
                                  "/runs/evil/files/adapter/../../../secret.txt", "/runs/..%2F/files/x",
                                  "/api/runs/..", "/runs/evil/files/adapter/escape"])
def test_only_the_run_files_the_page_links_are_served(write_run, runs_dir: Path, path: str) -> None:
    run = write_run("evil")
    (runs_dir.parent / "secret.txt").write_text("patient list", encoding="utf-8")
    (run / "adapter" / "escape").symlink_to(runs_dir.parent / "secret.txt")
    response = _client(runs_dir).get(path)
    assert response.status_code == 404
    assert "patient list" not in response.text


def test_the_adapter_and_config_are_served(write_run, runs_dir: Path) -> None:
    write_run("done")
    client = _client(runs_dir)
    assert "adapter/adapter_config.json" in client.get("/api/runs/done").json()["files"]
    assert client.get("/runs/done/files/adapter/adapter_config.json").json() == {"r": 8}
    assert "[federation]" in client.get("/runs/done/files/config.toml").text


def test_every_request_needs_the_token_when_one_is_set(write_run, runs_dir: Path) -> None:
    write_run("done")
    client = _client(runs_dir, token=TOKEN)
    for path in ("/", "/api/runs", "/runs/done", "/static/live.js", "/runs/done/files/config.toml"):
        assert client.get(path).status_code == 401, path
    assert client.get("/api/runs", headers={"Authorization": "Bearer wrong-token-wrong"}).status_code == 401
    assert client.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    first = client.get(f"/?token={TOKEN}")
    assert first.status_code == 200
    assert f"{TOKEN_COOKIE}={TOKEN}" in first.headers["set-cookie"]
    assert "HttpOnly" in first.headers["set-cookie"] and "SameSite=Strict" in first.headers["set-cookie"]
    assert client.get("/api/runs").status_code == 200  # the cookie now carries it


def test_a_foreign_host_header_is_refused(write_run, runs_dir: Path) -> None:
    """DNS rebinding: a page on attacker.example resolving to 127.0.0.1 reads nothing."""
    write_run("done")
    assert _client(runs_dir, base="http://attacker.example:8050").get("/api/runs").status_code == 400
    assert _client(runs_dir).get("/api/runs").headers["content-security-policy"].startswith("default-src 'self'")


def test_unknown_run_is_404(runs_dir: Path) -> None:
    runs_dir.mkdir()
    assert _client(runs_dir).get("/api/runs/nope").status_code == 404
    assert json.loads(_client(runs_dir).get("/api/runs").text)["runs"] == []


def test_key_names_of_a_sealed_simulation_show_as_the_banks_names(write_run, runs_dir: Path) -> None:
    from fedpeft.deployment.federation_files import credential_name

    run = write_run("banks")
    bank = "Alder Federal Bank"
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text(encoding="utf-8").replace('"bank-a"', json.dumps(credential_name(bank))),
                       encoding="utf-8")
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    summary["institutions"] = [bank, "bank-b", "bank-c"]
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    detail = _client(runs_dir).get("/api/runs/banks").json()
    assert detail["rounds"][0]["contributed"] == [bank, "bank-b", "bank-c"]
    assert bank in detail["charts"]["institutions_train"]["series"]


def test_a_new_round_shows_at_the_next_request(write_run, runs_dir: Path) -> None:
    """Pages are cached between changes of the run's files, never past one."""
    from fedpeft.common.runs.metrics_log import MetricsLog

    live = write_run("live", state="running", rounds=1)
    client = _client(runs_dir)
    assert client.get("/api/runs/live").json()["rounds_done"] == 1
    assert client.get("/api/runs/live").json()["rounds_done"] == 1
    MetricsLog(live / "metrics.jsonl").append(round_record(2, dp=False))
    detail = client.get("/api/runs/live").json()
    assert detail["rounds_done"] == 2 and detail["rounds"][-1]["round"] == 2
    assert "round 2 of 3" in client.get("/live/runs/live").text
    assert client.get("/api/runs").json()["runs"][0]["rounds_done"] == 2


def test_accepted_updates_are_the_verified_signers_not_the_claimed_names(write_run, runs_dir: Path) -> None:
    """A relay can write any name into a reply; a sealed run's record lists who really signed."""
    run = write_run("sealed")
    metrics = run / "metrics.jsonl"
    lines = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
    for record in lines[1:]:
        record["participants"] = ["bank-a"]  # only bank-a's signature verified
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    detail = _client(runs_dir).get("/api/runs/sealed").json()
    assert [r["contributed"] for r in detail["rounds"]] == [["bank-a"]] * 3

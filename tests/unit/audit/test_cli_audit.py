"""`fedpeft audit verify`: the verdict, the pinning warning and exit codes 0 and 4.

Every test goes through the real `fedpeft` application (`fedpeft.cli.main.app`), as a
compliance officer's shell would."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedpeft.cli import main as cli_main
from fedpeft.cli.main import app
from fedpeft.common.audit import Ledger, verify_ledger
from fedpeft.common.crypto import (
    SigningPrivateKey,
    fingerprint,
    generate_signing_key,
    save_public_key,
)
from fedpeft.common.errors import ConfigError, SecurityError

runner = CliRunner()


@pytest.fixture(scope="module")
def key() -> SigningPrivateKey:
    return generate_signing_key()


@pytest.fixture()
def run_folder(tmp_path: Path, key: SigningPrivateKey) -> Path:
    folder = tmp_path / "run-1"
    folder.mkdir()
    ledger = Ledger.create(folder / "ledger.jsonl", key, owner="FED-1", role="coordinator")
    ledger.append("round", {"round": 1, "institutions": ["bank-a"]})
    ledger.append("run-end", {"rounds": 1})
    return folder


def _pem(tmp_path: Path, key: SigningPrivateKey) -> Path:
    path = tmp_path / "signing.pub"
    save_public_key(key.public_key(), path)
    return path


def _break(run_folder: Path) -> None:
    ledger = run_folder / "ledger.jsonl"
    ledger.write_bytes(ledger.read_bytes().replace(b'"bank-a"', b'"bank-z"'))


def test_verify_a_run_folder_without_a_pinned_key(run_folder: Path, key: SigningPrivateKey) -> None:
    result = runner.invoke(app, ["audit", "verify", str(run_folder)])
    assert result.exit_code == 0, result.output
    assert "verified" in result.output
    assert fingerprint(key.public_key()) in result.output
    assert "signer key not pinned" in result.output and "--key" in result.output


def test_verify_with_the_pinned_key(
    run_folder: Path, key: SigningPrivateKey, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["audit", "verify", str(run_folder / "ledger.jsonl"),
                                       "--key", str(_pem(tmp_path, key))])
    assert result.exit_code == 0, result.output
    assert "not pinned" not in result.output


def test_a_broken_ledger_is_a_security_error(run_folder: Path) -> None:
    _break(run_folder)
    result = runner.invoke(app, ["audit", "verify", str(run_folder)])
    assert isinstance(result.exception, SecurityError) and result.exception.exit_code == 4
    message = str(result.exception)
    assert message.startswith(f"{run_folder / 'ledger.jsonl'}: record 1 (line 2): ")
    assert "\n" not in message
    assert "BROKEN at record 1" in result.output


def test_a_ledger_signed_by_another_key_fails_the_pin(run_folder: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", "verify", str(run_folder),
                                       "--key", str(_pem(tmp_path, generate_signing_key()))])
    assert isinstance(result.exception, SecurityError)
    assert "record 0 (line 1)" in str(result.exception)
    assert "not the pinned key" in str(result.exception)


def test_a_folder_without_a_ledger(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", "verify", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and "no ledger.jsonl" in str(result.exception)


def test_fedpeft_audit_verify_exits_4_with_one_red_line(
    run_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the console-script entry point, as the `fedpeft` command runs it."""
    monkeypatch.setattr(sys, "argv", ["fedpeft", "audit", "verify", str(run_folder)])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert exited.value.code == 0
    _break(run_folder)
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert exited.value.code == 4
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ledger.jsonl: record 1 (line 2):" in errors[0]


# --- a cut tail: an incomplete coordinator ledger and --expect-head --------------------------

def _cut_tail(run_folder: Path) -> None:
    """What an attacker who controls the coordinator's disk does: drop the run-end record."""
    ledger = run_folder / "ledger.jsonl"
    ledger.write_bytes(b"".join(ledger.read_bytes().splitlines(keepends=True)[:-1]))


def test_a_coordinator_ledger_cut_before_run_end_fails(run_folder: Path) -> None:
    _cut_tail(run_folder)
    result = runner.invoke(app, ["audit", "verify", str(run_folder)])
    assert isinstance(result.exception, SecurityError) and result.exception.exit_code == 4
    assert str(result.exception).startswith(f"{run_folder / 'ledger.jsonl'}: no run-end record")
    assert "--allow-incomplete" in str(result.exception)
    allowed = runner.invoke(app, ["audit", "verify", str(run_folder), "--allow-incomplete"])
    assert allowed.exit_code == 0, allowed.output
    assert "accepted with --allow-incomplete" in allowed.output


def test_an_institution_ledger_needs_no_run_end(tmp_path: Path, key: SigningPrivateKey) -> None:
    ledger = Ledger.create(tmp_path / "ledger.jsonl", key, owner="bank-a", role="institution")
    ledger.append("update-sent", {"round": 1})
    result = runner.invoke(app, ["audit", "verify", str(tmp_path / "ledger.jsonl")])
    assert result.exit_code == 0, result.output


def test_expect_head_pins_the_last_record(run_folder: Path) -> None:
    head = verify_ledger(run_folder / "ledger.jsonl").head
    assert head is not None
    result = runner.invoke(app, ["audit", "verify", str(run_folder), "--expect-head", head.upper()])
    assert result.exit_code == 0, result.output
    _cut_tail(run_folder)
    cut = runner.invoke(app, ["audit", "verify", str(run_folder), "--expect-head", head,
                              "--allow-incomplete"])
    assert isinstance(cut.exception, SecurityError) and cut.exception.exit_code == 4
    assert f"not the expected {head}" in str(cut.exception)


def test_expect_head_refuses_a_malformed_hash_and_several_ledgers(run_folder: Path) -> None:
    result = runner.invoke(app, ["audit", "verify", str(run_folder), "--expect-head", "abc"])
    assert isinstance(result.exception, ConfigError) and "64 hexadecimal" in str(result.exception)
    result = runner.invoke(app, ["audit", "verify", str(run_folder), str(run_folder),
                                 "--expect-head", "ab" * 32])
    assert isinstance(result.exception, ConfigError) and "exactly one ledger" in str(result.exception)


def test_cut_ledger_exits_non_zero_through_the_entry_point(
    run_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _cut_tail(run_folder)
    monkeypatch.setattr(sys, "argv", ["fedpeft", "audit", "verify", str(run_folder)])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert exited.value.code == 4
    assert "no run-end record" in capsys.readouterr().err

"""`write_report`: the files, what the Markdown states, the ledger verdict, escaping, and
saying plainly which protections a run did not have."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from fedpeft.common.errors import DataError
from fedpeft.common.runs.metrics_log import read_metrics
from fedpeft.report import read_run, write_report
from fedpeft.report.content import build_document
from fedpeft.report.markdown import render_markdown


def _section(markdown: str, title: str) -> str:
    start = markdown.index(f"## {title}")
    end = markdown.find("\n## ", start + 1)
    return markdown[start:] if end < 0 else markdown[start:end]


def test_the_report_files_and_what_the_markdown_states(make_run) -> None:
    run = make_run()
    paths = write_report(run)
    assert paths.markdown == run / "report.md" and paths.html == run / "report.html"
    assert {p.name for p in paths.plots} == {"quality.png", "loss.png", "epsilon.png"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths.plots)
    md = paths.markdown.read_text(encoding="utf-8")
    records = read_metrics(run / "metrics.jsonl")
    epsilons = [r["privacy"]["epsilon"] for r in records if "privacy" in r]
    [refusal] = [f["reason"] for r in records for f in r.get("failures", [])]

    for name in ("bank-a", "bank-b", "bank-c"):
        assert name in _section(md, "Who took part")
    assert "| 2 | bank-a, bank-b | bank-a, bank-b | bank-c (sealing) |" in md
    dp = _section(md, "Guarantees in force")
    assert len(epsilons) == 3
    for epsilon in epsilons:
        assert f"| {epsilon:.3f} |" in dp
    assert "epsilon = 1.953, delta = 1e-05" in dp
    assert f"| 2 | bank-c | sealing | {refusal} |" in _section(md, "Refusals and failures")
    assert "4.77e-07 (= 8 / (2^24 - 1))" in dp  # quantisation bound from config.toml
    assert "Simulation on one machine: no network" in dp and "TLS: on" not in dp

    ledger = _section(md, "Audit ledger")
    assert "**verified**" in ledger and "| Records | 6 |" in ledger
    assert f"fedpeft audit verify {run} --key FED/server/signing.pub" in ledger
    assert "**yes** (record count, head and signer agree" in ledger
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ledger"]["head"] in ledger and summary["ledger"]["signer"] in ledger

    digest = hashlib.sha256((run / "config.toml").read_bytes()).hexdigest()
    assert f"| Config SHA-256 | `{digest}` |" in md
    assert "`" + "c" * 64 + "`" in _section(md, "What was exchanged")  # bank-c's sealed update
    assert "![" in md and "(report/epsilon.png)" in md


def test_a_tampered_ledger_is_reported_failed_at_its_record(make_run) -> None:
    run = make_run()
    ledger = run / "ledger.jsonl"
    lines = ledger.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b'"round":2', b'"round":9')  # record 3: round 2's record
    ledger.write_bytes(b"\n".join(lines))
    md = write_report(run).markdown.read_text(encoding="utf-8")
    section = _section(md, "Audit ledger")
    assert "**FAILED at record 3**: record 3 (line 4): " in section
    assert "signed ledger **FAILED**" in md
    assert "**verified**" not in section


def test_a_cut_ledger_tail_disagrees_with_the_summary(make_run) -> None:
    run = make_run()
    ledger = run / "ledger.jsonl"
    ledger.write_bytes(b"".join(ledger.read_bytes().splitlines(keepends=True)[:-1]))
    section = _section(write_report(run).markdown.read_text(encoding="utf-8"), "Audit ledger")
    assert "**verified**" in section  # a prefix of a ledger is a valid ledger...
    assert "**no**: no run-end record" in section  # ...but not a complete one
    assert "**NO**: summary.json says 6 records" in section


def test_html_escapes_a_malicious_institution_name(make_run) -> None:
    evil = "<script>alert(1)</script>"
    run = make_run(institutions=(evil, "bank-b"))
    paths = write_report(run)
    page = paths.html.read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert re.findall(r"<img [^>]*src=\"([^\":]*):", page) == ["data"] * 3  # embedded plots only
    md = paths.markdown.read_text(encoding="utf-8")
    assert "<script" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md


def test_a_run_without_privacy_or_secure_aggregation_says_so(make_run) -> None:
    run = make_run(dp=False, secagg=False)
    (run / "report").mkdir()
    (run / "report" / "epsilon.png").write_bytes(b"stale plot of an earlier report")
    paths = write_report(run)
    md = paths.markdown.read_text(encoding="utf-8")
    assert "secure aggregation **no**; differential privacy **no**" in md
    guarantees = _section(md, "Guarantees in force")
    assert "### Secure aggregation\n\n**Off**" in guarantees
    assert "### Differential privacy\n\n**Off**" in guarantees
    assert "no (epsilon, delta) bound" in guarantees
    for invented in ("SecAgg+", "epsilon =", "Quantisation", "threshold", "masked under"):
        assert invented not in md
    assert "not masked (no secure aggregation)" in md
    assert not (run / "report" / "epsilon.png").exists()
    assert {p.name for p in paths.plots} == {"quality.png", "loss.png"}


def test_rewriting_replaces_the_report_without_leftovers(make_run) -> None:
    run = make_run(ledger=False)
    write_report(run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "model": "other-model"}))
    md = write_report(run).markdown.read_text(encoding="utf-8")
    assert "| Base model | other-model |" in md
    assert "**No ledger.jsonl**" in md and "signed ledger **none**" in md
    leftovers = [p.name for p in run.rglob("*") if p.name.startswith(".") or "tmp" in p.name]
    assert leftovers == []


def test_a_deployment_run_states_what_it_records_about_transport(make_run) -> None:
    run = make_run()
    summary = json.loads((run / "summary.json").read_text())
    summary.update(kind="federated-deployment", deployment=True, tls=True)
    summary["privacy"].update(stopped_early=True, rounds_planned=5, rounds_allowed=3)
    (run / "summary.json").write_text(json.dumps(summary))
    md = render_markdown(build_document(read_run(run), {}, run))
    transport = _section(md, "Guarantees in force")
    assert "TLS: **on** (gRPC over TLS" in transport
    assert "SuperNode authentication: not recorded" in transport
    assert "--insecure" in transport
    assert "keys are made for the run" not in transport
    assert "**yes**: stopped before exceeding the target epsilon (3 of 5 planned" in transport


def test_a_failed_run_without_a_summary(tmp_path: Path) -> None:
    run = tmp_path / "sim-2.failed"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"round": 0, "server_eval": {"loss": 2.0}}\n')
    (run / "error.txt").write_text("RunError: every institution failed round 1\n")
    md = write_report(run).markdown.read_text(encoding="utf-8")
    assert "# Run report: sim-2" in md
    assert "| Status | **failed**: RunError: every institution failed round 1 |" in md
    assert "Sealing of updates: not recorded" in md
    assert "Differential privacy: not recorded" in md
    assert "**No config.toml**" in md


@pytest.mark.parametrize("missing", ["folder", "metrics"])
def test_not_a_run_folder_is_a_data_error_naming_the_path(tmp_path: Path, missing: str) -> None:
    run = tmp_path / "nothing-here"
    if missing == "metrics":
        run.mkdir()
    with pytest.raises(DataError) as raised:
        write_report(run)
    message = str(raised.value)
    assert "\n" not in message
    expected = run if missing == "folder" else run / "metrics.jsonl"
    assert message.startswith(f"{expected}: ")
    assert not (run / "report.md").exists()


def test_summary_counts_each_institution_once_when_rounds_use_key_names(make_run) -> None:
    """A sealed simulation of the built-in data: summary.json lists the banks' names, the
    rounds the folder-safe names of their keys; the report counts five, not nine or ten."""
    from fedpeft.deployment.federation_files import credential_name

    banks = ("Alder Federal Bank", "Brightwater Credit Union", "Corvid",
             "Dunmore Savings & Loan", "Eastgate Commercial Bank")
    run = make_run(institutions=banks)
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8")
    for bank in banks:
        lines = lines.replace(json.dumps(bank), json.dumps(credential_name(bank)))
    assert credential_name("Alder Federal Bank") in lines
    (run / "metrics.jsonl").write_text(lines, encoding="utf-8")

    facts = read_run(run)
    assert facts.institutions == banks
    assert facts.rounds[1].failures[0].institution == "Eastgate Commercial Bank"
    md = write_report(run).markdown.read_text(encoding="utf-8")
    listed = ", ".join(banks).replace("&", "&amp;")  # Markdown escapes the ampersand
    assert f"| Institutions | 5: {listed} |" in _section(md, "Summary")


def test_each_institution_s_lifetime_account_is_shown_and_a_tampered_one_is_not_read(
        make_run, server_key) -> None:
    """A simulation copies each institution's ledger to institutions/<name>/; the report folds
    its privacy charges (epsilon exactly the accountant's) and refuses an edited copy."""
    from fedpeft.common.audit import INSTITUTION, Ledger
    from fedpeft.common.privacy import epsilon_for
    from fedpeft.common.privacy.lifetime import CLIENT, EXAMPLE, Charge, charge_body

    run = make_run()
    for name in ("alder", "birch"):
        (run / "institutions" / name).mkdir(parents=True)
        ledger = Ledger.create(run / "institutions" / name / "ledger.jsonl", server_key,
                               owner=name, role=INSTITUTION)
        for server_round in (1, 2):
            ledger.append("privacy-charge", charge_body("fed", 1, server_round, {
                CLIENT: Charge(0.6), EXAMPLE: Charge(None, basis="no example-level DP-SGD")}))
    birch = run / "institutions" / "birch" / "ledger.jsonl"
    birch.write_text(birch.read_text().replace('"noise_multiplier":0.6', '"noise_multiplier":9',
                                               1))
    section = _section(write_report(run).markdown.read_text(encoding="utf-8"),
                       "Institutions' lifetime privacy accounts")
    alder, tampered = section.split("**birch**")
    assert f"client-level epsilon at delta 1e-05: {epsilon_for(0.6, 1.0, 2, 1e-5):.4g}" in alder
    assert "example-level epsilon at delta 1e-05: infinite" in alder
    assert "**not readable**" in tampered and "cannot be trusted" in tampered

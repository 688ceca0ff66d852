"""What the report says, section by section, decided once for both Markdown and HTML.

The rule throughout: state what the run folder records, say "not recorded" where it records
nothing, and never describe a protection the run did not have (`view.RunView` decides what
was on; `guarantees` words the protections).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from fedpeft.report.accounts import accounts_section
from fedpeft.report.document import (
    Block,
    Bullets,
    Command,
    Document,
    Fields,
    Figure,
    Heading,
    Line,
    Paragraph,
    Section,
    Span,
    Table,
    bold,
    code,
    line,
)
from fedpeft.report.facts import CONFIG_FILE, RunFacts
from fedpeft.report.guarantees import (
    form_line,
    guarantees_section,
    protection_line,
    round_form,
)
from fedpeft.report.view import (
    BAD,
    GOOD,
    NOT_RECORDED,
    SHOWN_METRICS,
    WARN,
    RunView,
    as_text,
    best_text,
    bytes_text,
    fedpeft_version,
    final_eval,
    fixed4,
    is_number,
    kind_text,
    metrics_text,
    names_text,
    numeric,
    round_list,
)

VERIFY_KEY = "FED/server/signing.pub"


def build_document(facts: RunFacts, figures: Mapping[str, Figure], run_arg: Path) -> Document:
    """The whole report for `facts`; `figures` by name (quality, loss, epsilon) when drawn;
    `run_arg` is the run folder as the user named it (quoted in the commands shown)."""
    view = RunView(facts)
    sections = [
        _summary(view),
        _metrics(view, figures),
        _participation(view),
        _exchange(view),
        guarantees_section(view, figures),
        _failures(view),
        _ledger(view, run_arg),
        accounts_section(facts.run_dir),
        _configuration(view),
    ]
    return Document(
        title=f"Run report: {facts.name}",
        subtitle=line("Generated ", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                      f" by fedpeft {fedpeft_version()} from the run folder ", code(str(run_arg)),
                      ". Every statement below comes from the files in that folder."),
        sections=tuple(sections),
    )


def _summary(view: RunView) -> Section:
    facts = view.facts
    summary = facts.summary
    status = Span(facts.status, GOOD if facts.status == "completed" else BAD)
    status_line = line(status, *((f": {facts.error}",) if facts.error else ()))
    planned, planned_src = view.value("rounds", "federation", "num_rounds")
    if facts.is_baseline:
        planned = summary.get("epochs", planned)
    unit = "epochs" if facts.is_baseline else "rounds"
    rounds = f"{len(facts.rounds)} {unit} recorded"
    if planned is not None:
        rounds += f" of {planned} planned{planned_src}"
    model, model_src = view.value("model", "model", "name")
    task, task_src = view.value("task", "model", "task")
    method, method_src = view.value("peft_method", "peft", "method")
    method_text = as_text(method) + method_src
    rank = facts.setting("peft", "r")
    if method == "lora" and rank is not None:
        method_text = f"lora, rank r = {rank}{method_src}"
    mode, mode_src = view.lora_mode
    strategy, strategy_src = view.value("strategy", "strategy", "name")
    items: list[tuple[str, Line]] = [
        ("Run", line(facts.name)),
        ("Kind", line(kind_text(facts))),
        ("Status", status_line),
        ("Rounds", line(rounds)),
        ("Institutions", line(f"{len(facts.institutions)}: {', '.join(facts.institutions)}"
                              if facts.institutions else NOT_RECORDED)),
        ("Base model", line(as_text(model) + model_src)),
        ("Task", line(as_text(task) + task_src)),
        ("PEFT method", line(method_text)),
        ("LoRA mode", line(as_text(mode) + mode_src if method in ("lora", None)
                           else f"n/a ({method} is not LoRA)")),
        ("Strategy", line(as_text(strategy) + strategy_src)),
        ("Best", line(best_text(summary))),
        ("Initial test metrics", line(metrics_text(facts.initial_eval))),
        ("Final test metrics", line(metrics_text(final_eval(facts)))),
        ("Protection", protection_line(view)),
        ("Config SHA-256", line(code(facts.config_sha256) if facts.config_sha256
                                else "no config.toml")),
    ]
    blocks: list[Block] = [Fields(tuple(items))]
    if facts.is_baseline:
        blocks.append(Paragraph(line(
            bold("Not a federated run. "),
            "A centralized baseline pools every institution's training data on one machine; a "
            "local baseline trains each institution alone. Nothing was exchanged between "
            "institutions, and none of the federated protections below apply.")))
    return Section("Summary", tuple(blocks))


def _metrics(view: RunView, figures: Mapping[str, Figure]) -> Section:
    records = view.facts.records
    names = [n for n in SHOWN_METRICS if any(n in numeric(r.get("server_eval")) for r in records)]
    blocks: list[Block] = [figures[name] for name in ("quality", "loss") if name in figures]
    if names:
        rows = tuple(
            (line(str(r["round"]) if r["round"] else "0 (initial)"),
             *(line(fixed4(numeric(r.get("server_eval")).get(n))) for n in names),
             line(fixed4(numeric(r.get("train")).get("loss"))))
            for r in records
        )
        blocks.append(Table(("round", *(f"test {n}" for n in names), "training loss"), rows))
    else:
        blocks.append(Paragraph(line("No test-set metrics were recorded.")))
    return Section("Model quality per round", tuple(blocks))


def _participation(view: RunView) -> Section:
    facts = view.facts
    if not facts.rounds:
        return Section("Who took part", (Paragraph(line("No round was recorded.")),))
    blocks: list[Block] = [Paragraph(line(
        "For each round: the institutions whose update the aggregator received and accepted, "
        "those that evaluated the new global adapter on their own validation data, and those "
        "that failed or were refused (details under ", bold("Refusals and failures"), ")."))]
    blocks.append(Table(
        ("round", "update accepted", "evaluated locally", "failed or refused"),
        tuple((line(str(r.number)), line(names_text(r.contributed)), line(names_text(r.evaluated)),
               line(names_text(tuple(f"{f.institution} ({f.phase})" for f in r.failures))))
              for r in facts.rounds),
    ))
    fingerprints = view.fingerprints
    rows = []
    for name in facts.institutions:
        contributed = [r.number for r in facts.rounds if name in r.contributed]
        failed = [r.number for r in facts.rounds
                  if any(f.institution == name for f in r.failures)]
        rows.append((
            line(name),
            line(f"{len(contributed)} of {len(facts.rounds)}"),
            line(round_list(failed) if failed else "none"),
            line(code(fingerprints[name]) if name in fingerprints else NOT_RECORDED),
        ))
    blocks.append(Heading("Institutions"))
    blocks.append(Table(("institution", "rounds with an accepted update", "rounds with a failure",
                         "signing key fingerprint (SHA-256)"), tuple(rows)))
    return Section("Who took part", tuple(blocks))


def _exchange(view: RunView) -> Section:
    facts = view.facts
    if facts.is_baseline:
        return Section("What was exchanged", (Paragraph(line(
            "Nothing: a baseline run has no federation (see Summary).")),))
    summary = facts.summary
    method, _ = view.value("peft_method", "peft", "method")
    task, _ = view.value("task", "model", "task")
    head = " and its classification head" if task == "classification" else ""
    blocks: list[Block] = [Paragraph(line(
        "By design of fedpeft, only the adapter", f" ({method})" if method else "", head,
        " travel" if head else " travels", " between the institutions and the aggregator: "
        "never training data, and never the base model's weights, which every site loads on "
        "its own."))]
    bullets: list[Line] = []
    adapter, full = summary.get("adapter_bytes"), summary.get("full_model_bytes")
    if is_number(adapter):
        size = f"Global adapter: {bytes_text(adapter)}"
        if is_number(full) and adapter:
            size += (f"; the full model it adapts is {bytes_text(full)} "
                     f"({full / adapter:.0f}x larger)")
        bullets.append(line(size + "."))
    mode, mode_src = view.lora_mode
    mode_text = {
        "ffa": "lora.mode = ffa: the A matrices are frozen from a seed every institution shares, "
               "so only the B matrices (and any head) travel, and averaging them is exact",
        "stacking": "lora.mode = stacking: the aggregator concatenates every institution's own "
                    "LoRA factors, so it sees each institution's adapter",
        "fedavg": "lora.mode = fedavg: LoRA A and B matrices are averaged separately",
    }.get(mode) if method in ("lora", None) else None
    if mode_text:
        bullets.append(line(mode_text + mode_src + "."))
    bullets.append(form_line(view))
    blocks.append(Bullets(tuple(bullets)))
    if facts.rounds:
        blocks.append(Paragraph(line(
            "Traffic as counted by the server: every message of the round in each direction "
            "(global adapter out, updates and metrics in, and any secure-aggregation protocol "
            "messages).")))
        blocks.append(Table(
            ("round", "sent by server", "received by server", "updates accepted", "form"),
            tuple((line(str(r.number)), line(bytes_text(r.bytes_sent)),
                   line(bytes_text(r.bytes_received)),
                   line(str(len(r.contributed))), line(round_form(view, r)))
                  for r in facts.rounds),
        ))
    digests = [(r.number, name, digest) for r in facts.rounds
               for name, digest in sorted(r.updates_sha256.items())]
    blocks.append(Heading("SHA-256 of each sealed update, as received"))
    if digests:
        blocks.append(Paragraph(line(
            "Recorded before the update was opened, whether it was then accepted or refused: "
            "an institution can compare these with the digests of what it sent.")))
        blocks.append(Table(("round", "institution", "SHA-256"), tuple(
            (line(str(number)), line(name), line(code(digest)))
            for number, name, digest in digests)))
    else:
        reason = ("updates were not sealed" if view.sealed is False
                  else "metrics.jsonl has no updates_sha256")
        blocks.append(Paragraph(line(f"None recorded ({reason}).")))
    return Section("What was exchanged, and in what form", tuple(blocks))


def _failures(view: RunView) -> Section:
    failures = [f for r in view.rounds for f in r.failures]
    if not failures:
        body: Block = Paragraph(line(
            "None: no institution failed or was refused in any recorded round."))
    else:
        body = Table(("round", "institution", "phase", "reason"), tuple(
            (line(str(f.round)), line(f.institution), line(f.phase), line(f.reason))
            for f in failures))
    return Section("Refusals and failures", (body,))


def _ledger(view: RunView, run_arg: Path) -> Section:
    ledger = view.facts.ledger
    command = Command(f"fedpeft audit verify {shlex.quote(str(run_arg))} --key {VERIFY_KEY}")
    if not ledger.present:
        why = ("audit.ledger = false in config.toml"
               if view.facts.setting("audit", "ledger") is False
               else "this run kept none, or it was removed")
        return Section("Audit ledger", (Paragraph(line(
            Span("No ledger.jsonl", WARN),
            f" in the run folder ({why}): this run has no signed audit trail to verify.")),))
    report = ledger.report
    items: list[tuple[str, Line]] = [("File", line(code(ledger.path.name)))]
    if report is None:
        items.append(("Status", line(Span("FAILED", BAD), f": {ledger.error}")))
    else:
        status = (line(Span("verified", GOOD), ": the hash chain and every signature check out")
                  if report.ok else
                  line(Span(f"FAILED at record {report.first_bad}", BAD), f": {report.reason}"))
        complete = {True: line("yes (ends with a run-end record)"),
                    False: line(Span("no", WARN), ": no run-end record (the run did not finish, "
                                "or the ledger's tail was cut)"),
                    None: line("n/a (not a coordinator ledger)")}[report.complete]
        verified = "" if report.ok else " (before the first bad one)"
        items += [
            ("Status", status),
            ("Records", line(f"{report.records}{verified}")),
            ("Head (SHA-256 of the last record)",
             line(code(report.head) if report.head else "none")),
            ("Signer key fingerprint", line(code(report.signer) if report.signer else "none")),
            ("Owner", line(f"{report.owner or '?'} ({report.role or '?'})")),
            ("Complete", complete),
            ("Matches summary.json", _ledger_vs_summary(view)),
        ]
    blocks: list[Block] = [Fields(tuple(items))]
    if ledger.summary.get("ephemeral_key") is True:
        blocks.append(Paragraph(line(
            Span("Signed with a key made for this run", WARN),
            " (no federation signing key was available): the ledger shows that no record was "
            "altered after signing, not who wrote it.")))
    blocks.append(Paragraph(line(
        "This report checks the hash chain and the signatures, but it cannot know whose key "
        "signed the ledger. To check that the coordinator signed it, run this with the "
        "coordinator's public signing key (FED is the coordinator's federation folder; each "
        "institution also has the key as server-signing.pub in its bundle):")))
    blocks.append(command)
    return Section("Audit ledger", tuple(blocks))


def _configuration(view: RunView) -> Section:
    facts = view.facts
    if facts.config_sha256 is None:
        return Section("Configuration", (Paragraph(line(
            Span("No config.toml", WARN), " in the run folder: the effective configuration "
            "was not recorded.")),))
    return Section("Configuration", (
        Paragraph(line("The effective configuration of the run (defaults, file and flags "
                       "merged) is ", code(CONFIG_FILE), " in the run folder. SHA-256 of its "
                       "bytes: ", code(facts.config_sha256), ". To check a copy:")),
        Command(f"sha256sum {shlex.quote(str(facts.run_dir / CONFIG_FILE))}"),
    ))


def _ledger_vs_summary(view: RunView) -> Line:
    ledger = view.facts.ledger
    report = ledger.report
    recorded = ledger.summary
    if report is None or not report.ok:
        return line("n/a (the ledger did not verify)")
    server = view.security.get("server_signing")
    if all(recorded.get(key) is None for key in ("head", "records", "signer")) and server is None:
        return line(f"{NOT_RECORDED} (summary.json has no ledger head to compare with)")
    problems = []
    if recorded.get("records") is not None and recorded["records"] != report.records:
        problems.append(f"summary.json says {recorded['records']} records")
    if recorded.get("head") is not None and recorded["head"] != report.head:
        problems.append(f"summary.json names head {recorded['head']}")
    if recorded.get("signer") is not None and recorded["signer"] != report.signer:
        problems.append(f"summary.json names signer {recorded['signer']}")
    if server is not None and recorded.get("ephemeral_key") is not True and server != report.signer:
        problems.append(f"the server signing key in summary.json is {server}")
    if problems:
        return line(Span("NO", BAD), ": " + "; ".join(problems)
                    + " (the ledger's tail may have been cut, or a file replaced)")
    agreed = "record count, head and signer agree"
    if server is not None and server == report.signer:
        agreed += "; the signer is the server signing key named in summary.json"
    return line(Span("yes", GOOD), f" ({agreed})")

"""What the report says, section by section, decided once for both Markdown and HTML.

The rule throughout: state what the run folder records, say "not recorded" where it records
nothing, and never describe a protection the run did not have. Where `summary.json` is silent
the effective `config.toml` is used, and the text says so.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from fedpeft.common.report.document import (
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
from fedpeft.common.report.facts import CONFIG_FILE, RoundFacts, RunFacts

NOT_RECORDED = "not recorded"
FROM_CONFIG = " (per config.toml)"
SHOWN_METRICS = ("accuracy", "macro_f1", "loss", "perplexity")
VERIFY_KEY = "FED/server/signing.pub"

_GOOD = "good"
_BAD = "bad"
_WARN = "warn"


def build_document(facts: RunFacts, figures: Mapping[str, Figure], run_arg: Path) -> Document:
    """The whole report for `facts`; `figures` by name (quality, loss, epsilon) when drawn;
    `run_arg` is the run folder as the user named it (quoted in the commands shown)."""
    view = _View(facts)
    sections = [
        _summary(view),
        _metrics(view, figures),
        _participation(view),
        _exchange(view),
        _guarantees(view, figures),
        _failures(view),
        _ledger(view, run_arg),
        _configuration(view),
    ]
    return Document(
        title=f"Run report: {facts.name}",
        subtitle=line("Generated ", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                      f" by fedpeft {_version()} from the run folder ", code(str(run_arg)),
                      ". Every statement below comes from the files in that folder."),
        sections=tuple(sections),
    )


class _View:
    """`RunFacts` with the report's questions answered: each protection on, off or unknown,
    and where the answer came from."""

    def __init__(self, facts: RunFacts) -> None:
        self.facts = facts
        self.security = facts.section("security")
        self.privacy = facts.section("privacy")
        self.rounds = facts.rounds
        self.sealed, self.sealed_src = self._flag(
            self.security.get("sealed_updates"), facts.setting("security", "seal_updates"),
            any(r.updates_sha256 for r in self.rounds))
        self.secagg, self.secagg_src = self._flag(
            self.security.get("secure_aggregation"),
            facts.setting("secure_aggregation", "enabled"),
            any(r.secure_aggregation for r in self.rounds))
        self.dp, self.dp_src = self._flag(
            self.privacy.get("enabled"), facts.setting("privacy", "enabled"),
            any(r.privacy for r in self.rounds))
        self.deployment = self._deployment()

    @staticmethod
    def _flag(recorded: Any, configured: Any, evidence: bool) -> tuple[bool | None, str]:
        """On/off from the summary, else from the config, else on if a round record shows
        the protection at work; None when nothing says."""
        if isinstance(recorded, bool):
            return recorded, ""
        if isinstance(configured, bool):
            return configured, FROM_CONFIG
        return (True, " (seen in metrics.jsonl)") if evidence else (None, "")

    def _deployment(self) -> bool | None:
        recorded = self.facts.summary.get("deployment")
        if isinstance(recorded, bool):
            return recorded
        kind = self.facts.kind
        if kind == "federated-deployment":
            return True
        if kind in ("federated", "centralized", "local"):
            return False
        return None

    def value(self, summary_key: str, section: str, key: str) -> tuple[Any, str]:
        """A run fact from `summary.json`, else from `config.toml` (saying so)."""
        recorded = self.facts.summary.get(summary_key)
        if recorded is not None:
            return recorded, ""
        configured = self.facts.setting(section, key)
        return (configured, FROM_CONFIG) if configured is not None else (None, "")

    def privacy_value(self, key: str) -> tuple[Any, str]:
        """A privacy fact: the summary, else the last round that recorded it, else the config."""
        if self.privacy.get(key) is not None:
            return self.privacy[key], ""
        for facts in reversed(self.rounds):
            if facts.privacy and facts.privacy.get(key) is not None:
                return facts.privacy[key], " (last round's record)"
        configured = self.facts.setting("privacy", key)
        return (configured, FROM_CONFIG) if configured is not None else (None, "")

    @property
    def lora_mode(self) -> tuple[Any, str]:
        if self.security.get("lora_mode") is not None:
            return self.security["lora_mode"], ""
        configured = self.facts.setting("lora", "mode")
        return (configured, FROM_CONFIG) if configured is not None else (None, "")

    @property
    def fingerprints(self) -> dict[str, str]:
        institutions = self.security.get("institutions")
        if not isinstance(institutions, dict):
            return {}
        return {str(name): str(value) for name, value in institutions.items()}


# -- sections ---------------------------------------------------------------------------------
def _summary(view: _View) -> Section:
    facts = view.facts
    summary = facts.summary
    status = Span(facts.status, _GOOD if facts.status == "completed" else _BAD)
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
    method_text = _text(method) + method_src
    rank = facts.setting("peft", "r")
    if method == "lora" and rank is not None:
        method_text = f"lora, rank r = {rank}{method_src}"
    mode, mode_src = view.lora_mode
    strategy, strategy_src = view.value("strategy", "strategy", "name")
    items: list[tuple[str, Line]] = [
        ("Run", line(facts.name)),
        ("Kind", line(_kind(facts))),
        ("Status", status_line),
        ("Rounds", line(rounds)),
        ("Institutions", line(f"{len(facts.institutions)}: {', '.join(facts.institutions)}"
                              if facts.institutions else NOT_RECORDED)),
        ("Base model", line(_text(model) + model_src)),
        ("Task", line(_text(task) + task_src)),
        ("PEFT method", line(method_text)),
        ("LoRA mode", line(_text(mode) + mode_src if method in ("lora", None)
                           else f"n/a ({method} is not LoRA)")),
        ("Strategy", line(_text(strategy) + strategy_src)),
        ("Best", line(_best(summary))),
        ("Initial test metrics", line(_metrics_text(facts.initial_eval))),
        ("Final test metrics", line(_metrics_text(_final_eval(facts)))),
        ("Protection", _protection_line(view)),
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


def _metrics(view: _View, figures: Mapping[str, Figure]) -> Section:
    records = view.facts.records
    names = [n for n in SHOWN_METRICS if any(n in _numbers(r.get("server_eval")) for r in records)]
    blocks: list[Block] = [figures[name] for name in ("quality", "loss") if name in figures]
    if names:
        rows = tuple(
            (line(str(r["round"]) if r["round"] else "0 (initial)"),
             *(line(_num(_numbers(r.get("server_eval")).get(n))) for n in names),
             line(_num(_numbers(r.get("train")).get("loss"))))
            for r in records
        )
        blocks.append(Table(("round", *(f"test {n}" for n in names), "training loss"), rows))
    else:
        blocks.append(Paragraph(line("No test-set metrics were recorded.")))
    return Section("Model quality per round", tuple(blocks))


def _participation(view: _View) -> Section:
    facts = view.facts
    if not facts.rounds:
        return Section("Who took part", (Paragraph(line("No round was recorded.")),))
    blocks: list[Block] = [Paragraph(line(
        "For each round: the institutions whose update the aggregator received and accepted, "
        "those that evaluated the new global adapter on their own validation data, and those "
        "that failed or were refused (details under ", bold("Refusals and failures"), ")."))]
    blocks.append(Table(
        ("round", "update accepted", "evaluated locally", "failed or refused"),
        tuple((line(str(r.number)), line(_names(r.contributed)), line(_names(r.evaluated)),
               line(_names(tuple(f"{f.institution} ({f.phase})" for f in r.failures))))
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
            line(_round_list(failed) if failed else "none"),
            line(code(fingerprints[name]) if name in fingerprints else NOT_RECORDED),
        ))
    blocks.append(Heading("Institutions"))
    blocks.append(Table(("institution", "rounds with an accepted update", "rounds with a failure",
                         "signing key fingerprint (SHA-256)"), tuple(rows)))
    return Section("Who took part", tuple(blocks))


def _exchange(view: _View) -> Section:
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
    if _is_number(adapter):
        size = f"Global adapter: {_bytes(adapter)}"
        if _is_number(full) and adapter:
            size += f"; the full model it adapts is {_bytes(full)} ({full / adapter:.0f}x larger)"
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
    bullets.append(_form_line(view))
    blocks.append(Bullets(tuple(bullets)))
    if facts.rounds:
        blocks.append(Paragraph(line(
            "Traffic as counted by the server: every message of the round in each direction "
            "(global adapter out, updates and metrics in, and any secure-aggregation protocol "
            "messages).")))
        blocks.append(Table(
            ("round", "sent by server", "received by server", "updates accepted", "form"),
            tuple((line(str(r.number)), line(_bytes(r.bytes_sent)), line(_bytes(r.bytes_received)),
                   line(str(len(r.contributed))), line(_round_form(view, r)))
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
            (line(str(number)), line(name), line(code(digest))) for number, name, digest in digests)))
    else:
        reason = ("updates were not sealed" if view.sealed is False
                  else "metrics.jsonl has no updates_sha256")
        blocks.append(Paragraph(line(f"None recorded ({reason}).")))
    return Section("What was exchanged, and in what form", tuple(blocks))


def _guarantees(view: _View, figures: Mapping[str, Figure]) -> Section:
    blocks: list[Block] = []
    if view.facts.is_baseline:
        blocks.append(Paragraph(line("None apply: a baseline run has no federation.")))
        return Section("Guarantees in force", tuple(blocks))
    blocks += [Heading("Transport"), Paragraph(_transport(view))]
    blocks += [Heading("Sealing and signatures"), *_sealing(view)]
    blocks += [Heading("Secure aggregation"), *_secure_aggregation(view)]
    blocks += [Heading("Differential privacy"), *_privacy(view, figures)]
    return Section("Guarantees in force", tuple(blocks))


def _failures(view: _View) -> Section:
    failures = [f for r in view.rounds for f in r.failures]
    if not failures:
        body: Block = Paragraph(line(
            "None: no institution failed or was refused in any recorded round."))
    else:
        body = Table(("round", "institution", "phase", "reason"), tuple(
            (line(str(f.round)), line(f.institution), line(f.phase), line(f.reason))
            for f in failures))
    return Section("Refusals and failures", (body,))


def _ledger(view: _View, run_arg: Path) -> Section:
    ledger = view.facts.ledger
    command = Command(f"fedpeft audit verify {shlex.quote(str(run_arg))} --key {VERIFY_KEY}")
    if not ledger.present:
        why = ("audit.ledger = false in config.toml"
               if view.facts.setting("audit", "ledger") is False
               else "this run kept none, or it was removed")
        return Section("Audit ledger", (Paragraph(line(
            Span("No ledger.jsonl", _WARN),
            f" in the run folder ({why}): this run has no signed audit trail to verify.")),))
    report = ledger.report
    items: list[tuple[str, Line]] = [("File", line(code(ledger.path.name)))]
    if report is None:
        items.append(("Status", line(Span("FAILED", _BAD), f": {ledger.error}")))
    else:
        status = (line(Span("verified", _GOOD), ": the hash chain and every signature check out")
                  if report.ok else
                  line(Span(f"FAILED at record {report.first_bad}", _BAD), f": {report.reason}"))
        complete = {True: line("yes (ends with a run-end record)"),
                    False: line(Span("no", _WARN), ": no run-end record (the run did not finish, "
                                "or the ledger's tail was cut)"),
                    None: line("n/a (not a coordinator ledger)")}[report.complete]
        verified = "" if report.ok else " (before the first bad one)"
        items += [
            ("Status", status),
            ("Records", line(f"{report.records}{verified}")),
            ("Head (SHA-256 of the last record)", line(code(report.head) if report.head else "none")),
            ("Signer key fingerprint", line(code(report.signer) if report.signer else "none")),
            ("Owner", line(f"{report.owner or '?'} ({report.role or '?'})")),
            ("Complete", complete),
            ("Matches summary.json", _ledger_vs_summary(view)),
        ]
    blocks: list[Block] = [Fields(tuple(items))]
    if ledger.summary.get("ephemeral_key") is True:
        blocks.append(Paragraph(line(
            Span("Signed with a key made for this run", _WARN),
            " (no federation signing key was available): the ledger shows that no record was "
            "altered after signing, not who wrote it.")))
    blocks.append(Paragraph(line(
        "This report checks the hash chain and the signatures, but it cannot know whose key "
        "signed the ledger. To check that the coordinator signed it, run this with the "
        "coordinator's public signing key (FED is the coordinator's federation folder; each "
        "institution also has the key as server-signing.pub in its bundle):")))
    blocks.append(command)
    return Section("Audit ledger", tuple(blocks))


def _configuration(view: _View) -> Section:
    facts = view.facts
    if facts.config_sha256 is None:
        return Section("Configuration", (Paragraph(line(
            Span("No config.toml", _WARN), " in the run folder: the effective configuration "
            "was not recorded.")),))
    return Section("Configuration", (
        Paragraph(line("The effective configuration of the run (defaults, file and flags "
                       "merged) is ", code(CONFIG_FILE), " in the run folder. SHA-256 of its "
                       "bytes: ", code(facts.config_sha256), ". To check a copy:")),
        Command(f"sha256sum {shlex.quote(str(facts.run_dir / CONFIG_FILE))}"),
    ))


# -- guarantees -------------------------------------------------------------------------------
def _transport(view: _View) -> Line:
    if view.deployment is False:
        return line("Simulation on one machine: no network was involved, so no transport "
                    "security (TLS) applies or was needed.")
    if view.deployment is None:
        return line(f"{NOT_RECORDED}: summary.json does not say whether this was a simulation "
                    "or a deployment.")
    summary = view.facts.summary
    tls, auth = summary.get("tls"), summary.get("node_auth")
    parts: list[str | Span] = ["Deployment across the network (Flower SuperLink and SuperNodes). "]
    parts += ["TLS: ", *_switch(tls, "gRPC over TLS with the federation's own CA"), ". "]
    parts += ["SuperNode authentication: ",
              *_switch(auth, "only registered institutions' SuperNodes may connect"), "."]
    if tls is None or auth is None:
        parts.append(" fedpeft deployments use both unless the SuperLink was started with "
                     "--insecure; this run folder does not record which.")
    return line(*parts)


def _switch(value: Any, on_text: str) -> list[str | Span]:
    if value is True:
        return [Span("on", _GOOD), f" ({on_text})"]
    if value is False:
        return [Span("OFF", _BAD)]
    if value is None:
        return [NOT_RECORDED]
    if isinstance(value, dict):
        return [", ".join(f"{k} {_text(v)}" for k, v in value.items())]
    return [_text(value)]


def _sealing(view: _View) -> list[Block]:
    security = view.security
    if view.sealed is None:
        return [Paragraph(line(f"Sealing of updates: {NOT_RECORDED}."))]
    if view.sealed is False:
        where = ("were exchanged" if view.deployment is False else
                 "crossed the network and rested in the SuperLink's database")
        return [Paragraph(line(
            Span("Updates were not sealed", _BAD), f"{view.sealed_src}: security.seal_updates "
            f"= false, so adapters {where} unencrypted and unsigned, and global adapters were "
            "not signed by the server."))]
    bullets = [
        line(Span("Sealed", _GOOD), view.sealed_src, ": every update is encrypted end to end to "
             "the aggregator (X25519 key agreement, HKDF, AES-256-GCM), bound to the "
             "federation, run, round and institution, so the SuperLink and anything on the path "
             "see only ciphertext."),
        line("Signed: every update is signed by its institution (Ed25519) and an update whose "
             "signature or binding does not verify is refused (listed under Refusals and "
             "failures); every global adapter is signed by the server (Ed25519)."),
    ]
    if view.deployment is False and view.facts.config is not None \
            and view.facts.setting("security", "credentials_dir") is None:
        bullets.append(line("In a simulation the keys are made for the run and deleted after it."))
    blocks: list[Block] = [Bullets(tuple(bullets))]
    keys = [(label, security.get(key)) for label, key in (
        ("Federation", "federation_id"),
        ("Server signing key (Ed25519) fingerprint", "server_signing"),
        ("Server encryption key (X25519) fingerprint", "server_encryption"))]
    blocks.append(Fields(tuple(
        (label, line(code(str(value)) if value is not None else NOT_RECORDED))
        for label, value in keys)))
    if view.fingerprints:
        blocks.append(Paragraph(line(
            "Institutions' signing key fingerprints are listed under Who took part.")))
    return blocks


def _secure_aggregation(view: _View) -> list[Block]:
    facts = view.facts
    if view.secagg is None:
        return [Paragraph(line(f"Secure aggregation: {NOT_RECORDED}."))]
    if view.secagg is False:
        seen = ("each institution's update on its own once it has opened its seal"
                if view.sealed else "each institution's update on its own")
        return [Paragraph(line(Span("Off", _WARN), f"{view.secagg_src}: the aggregator sees "
                               f"{seen}."))]
    def setting(key: str) -> Any:
        return facts.setting("secure_aggregation", key)

    clip, bits = setting("clip_range"), setting("quantization_bits")
    neighbours, dropouts = setting("neighbours"), setting("max_dropouts")
    if _is_number(clip) and isinstance(bits, int) and bits > 0:
        bound = clip / (2 ** bits - 1)
        quantisation = (f"each update value clipped to +/- {clip:g} and encoded on 2^{bits} "
                        f"levels: the decoded average is within {bound:.3g} "
                        f"(= {clip:g} / (2^{bits} - 1)) of the plain average for values inside "
                        "that range")
    else:
        quantisation = f"{NOT_RECORDED} (no [secure_aggregation] clip_range/quantization_bits)"
    items: tuple[tuple[str, Line], ...] = (
        ("Status", line(Span("on", _GOOD), view.secagg_src, ": SecAgg+-style masking, the "
                        "aggregator learns only the sum of the updates, never one "
                        "institution's update")),
        ("Dropouts tolerated per round",
         line(f"{dropouts} (after the key exchange)" if dropouts is not None else NOT_RECORDED)),
        ("Neighbours", line(str(neighbours) if neighbours is not None
                            else "default: every other institution up to 5, then 2 ceil(log2 n)"
                            if facts.config is not None else NOT_RECORDED,
                            " (actual per round below)")),
        ("Threshold", line("shares of an institution's secrets needed to rebuild them: fewer "
                           "colluding institutions, even together with the aggregator, learn "
                           "nothing about one update (per round below)")),
        ("Quantisation", line(quantisation)),
    )
    blocks: list[Block] = [Fields(items)]
    rows = []
    for r in facts.rounds:
        info = r.secure_aggregation
        if info is None:
            continue
        aborted = info.get("aborted")
        outcome = (line(Span("ABORTED", _BAD), f": {aborted}") if aborted
                   else line("aggregated"))
        rows.append((line(str(r.number)),
                     *(line(_text(info.get(key))) for key in
                       ("participants", "neighbours", "threshold", "survivors", "dropped")),
                     outcome))
    if rows:
        blocks.append(Table(("round", "participants", "neighbours", "threshold", "survivors",
                             "dropped", "outcome"), tuple(rows)))
    else:
        blocks.append(Paragraph(line("No round recorded secure-aggregation facts.")))
    return blocks


def _privacy(view: _View, figures: Mapping[str, Figure]) -> list[Block]:
    if view.dp is None:
        return [Paragraph(line(f"Differential privacy: {NOT_RECORDED}."))]
    if view.dp is False:
        return [Paragraph(line(
            Span("Off", _WARN), f"{view.dp_src}: no (epsilon, delta) bound limits what the "
            "global adapter reveals about any one institution's data. Sealing and secure "
            "aggregation protect updates on their way and at the aggregator; they do not limit "
            "what the resulting model itself reveals."))]
    value = view.privacy_value
    noise, noise_src = value("noise")
    noise_text = {"central": "central: the server adds Gaussian noise to the sum of the "
                             "clipped updates",
                  "distributed": "distributed: each institution adds its share of the noise "
                                 "before masking, so the sum carries the full noise"
                  }.get(noise, _text(noise))
    clipping, clipping_src = value("clipping")
    clip_norm, clip_src = value("clip_norm")
    clip_text = f"{_text(clipping)}{clipping_src}, L2 norm bound {_text(clip_norm)}{clip_src}"
    if clipping == "adaptive":
        clip_text += " (initial; it follows a quantile of the update norms)"
    epsilon, eps_src = value("epsilon")
    delta, delta_src = value("delta")
    charged = [r for r in view.rounds if r.privacy and _is_number(r.privacy.get("epsilon"))]
    final = (line(Span(f"epsilon = {_eps(epsilon)}, delta = {_text(delta)}", "bold"),
                  f" after {len(charged)} round(s){eps_src}")
             if _is_number(epsilon) else line(NOT_RECORDED))
    target, _ = value("target_epsilon")
    planned = view.privacy.get("rounds_planned")
    if planned is None:
        planned = view.value("rounds", "federation", "num_rounds")[0]
    allowed = view.privacy.get("rounds_allowed")
    stopped = view.privacy.get("stopped_early")
    if stopped is True:
        stop_line = line(Span("yes", _WARN), f": stopped before exceeding the target epsilon "
                         f"({_text(allowed)} of {_text(planned)} planned rounds run)")
    elif stopped is False:
        stop_line = line(f"no ({_text(allowed) if allowed is not None else len(charged)} of "
                         f"{_text(planned)} planned rounds within the budget)")
    else:
        stop_line = line(NOT_RECORDED)
    rate, rate_src = value("sampling_rate")
    items: list[tuple[str, Line]] = [
        ("Status", line(Span("on", _GOOD), view.dp_src, ": client-level differential privacy "
                        "(DP-FedAvg); the unit protected is one institution's whole contribution, "
                        "so the bound holds for each of its records too")),
        ("Final (epsilon, delta)", final),
        ("Target epsilon", line(_eps(target) if _is_number(target) else "none set")),
        ("Stopped early at the target", stop_line),
        ("Noise", line(noise_text + noise_src)),
        ("Noise multiplier", line(_text(value("noise_multiplier")[0])
                                  + value("noise_multiplier")[1])),
        ("Clipping", line(clip_text)),
        ("Sampling rate", line(_text(rate) + rate_src)),
    ]
    blocks: list[Block] = [Fields(tuple(items))]
    if _is_number(rate) and rate < 1:
        blocks.append(Paragraph(line(
            "With a sampling rate below 1 the epsilon assumes Poisson sampling of institutions; "
            "Flower samples a fixed number, so it is the customary approximation, not a proof.")))
    if charged:
        blocks.append(Paragraph(line("Cumulative (epsilon, delta) after each round, from the "
                                     "RDP accountant:")))
        blocks.append(Table(
            ("round", "epsilon (cumulative)", "delta", "noise multiplier", "clip norm", "noise",
             "sampling rate"),
            tuple((line(str(r.number)), line(_eps(r.privacy.get("epsilon"))),
                   *(line(_text(r.privacy.get(key))) for key in
                     ("delta", "noise_multiplier", "clip_norm", "noise", "sampling_rate")))
                  for r in charged if r.privacy)))
    if "epsilon" in figures:
        blocks.append(figures["epsilon"])
    return blocks


def _protection_line(view: _View) -> Line:
    def state(value: bool | None) -> Span:
        return {True: Span("yes", _GOOD), False: Span("no", _WARN)}.get(value, Span(NOT_RECORDED))

    ledger = view.facts.ledger
    if not ledger.present:
        ledger_span = Span("none", _WARN)
    elif ledger.report is not None and ledger.report.ok:
        ledger_span = Span("verified", _GOOD)
    else:
        ledger_span = Span("FAILED", _BAD)
    return line("sealed updates ", state(view.sealed), "; secure aggregation ",
                state(view.secagg), "; differential privacy ", state(view.dp),
                "; signed ledger ", ledger_span)


def _form_line(view: _View) -> Line:
    if view.sealed is True:
        sealed = "sealed to the aggregator and signed by their institution"
    elif view.sealed is False:
        sealed = "NOT sealed: sent in the clear"
    else:
        sealed = f"sealing {NOT_RECORDED}"
    if view.secagg is True:
        masked = "masked under secure aggregation (only their sum can be unmasked)"
    elif view.secagg is False:
        masked = "not masked (no secure aggregation)"
    else:
        masked = f"secure aggregation {NOT_RECORDED}"
    style = _BAD if view.sealed is False else ""
    return line("Updates were ", Span(sealed, style), "; ", masked, ".")


def _round_form(view: _View, facts: RoundFacts) -> str:
    parts = []
    if view.sealed is True:
        parts.append("sealed")
    elif view.sealed is False:
        parts.append("in the clear")
    if facts.secure_aggregation is not None or (view.secagg is True and facts.contributed):
        parts.append("masked")
    return " + ".join(parts) if parts else NOT_RECORDED


def _ledger_vs_summary(view: _View) -> Line:
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
        return line(Span("NO", _BAD), ": " + "; ".join(problems)
                    + " (the ledger's tail may have been cut, or a file replaced)")
    agreed = "record count, head and signer agree"
    if server is not None and server == report.signer:
        agreed += "; the signer is the server signing key named in summary.json"
    return line(Span("yes", _GOOD), f" ({agreed})")


# -- formatting -------------------------------------------------------------------------------
def _kind(facts: RunFacts) -> str:
    kind = facts.kind
    described = {
        "federated": "federated, simulated on one machine",
        "federated-deployment": "federated deployment across institutions",
        "centralized": "centralized baseline (all data pooled)",
        "local": "local-only baseline (each institution alone)",
    }.get(kind or "")
    return described or (kind if kind else NOT_RECORDED)


def _best(summary: dict[str, Any]) -> str:
    metric, value, number = (summary.get("best_metric"), summary.get("best_value"),
                             summary.get("best_round"))
    if not _is_number(value):
        return NOT_RECORDED
    return f"test {metric or 'metric'} {value:.4f} in round {_text(number)}"


def _final_eval(facts: RunFacts) -> dict[str, float]:
    final = facts.summary.get("final")
    if isinstance(final, dict):
        return {k: float(v) for k, v in final.items() if _is_number(v)}
    return facts.rounds[-1].server_eval if facts.rounds else {}


def _metrics_text(metrics: dict[str, float]) -> str:
    shown = [f"{name} {metrics[name]:.4f}" for name in SHOWN_METRICS if name in metrics]
    return ", ".join(shown) if shown else NOT_RECORDED


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(names) if names else "none"


def _round_list(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def _numbers(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {k: float(v) for k, v in value.items() if _is_number(v)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _eps(value: Any) -> str:
    return f"{value:.3f}" if _is_number(value) else _text(value)


def _bytes(value: int | float | None) -> str:
    if value is None:
        return NOT_RECORDED
    if value >= 1e6:
        return f"{value / 1e6:.2f} MB"
    if value >= 1e3:
        return f"{value / 1e3:.1f} kB"
    return f"{int(value)} B"


def _text(value: Any) -> str:
    if value is None:
        return NOT_RECORDED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _version() -> str:
    try:
        return metadata.version("fedpeft")
    except metadata.PackageNotFoundError:
        return "(version unknown)"


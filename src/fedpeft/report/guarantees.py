"""The "Guarantees in force" section: transport, sealing and signatures, secure aggregation
and differential privacy, each stated as the run folder records it and nothing more."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedpeft.report.document import (
    Block,
    Bullets,
    Fields,
    Figure,
    Heading,
    Line,
    Paragraph,
    Section,
    Span,
    Table,
    code,
    line,
)
from fedpeft.report.facts import RoundFacts
from fedpeft.report.view import (
    BAD,
    GOOD,
    NOT_RECORDED,
    WARN,
    RunView,
    as_text,
    eps_text,
    is_number,
)


def guarantees_section(view: RunView, figures: Mapping[str, Figure]) -> Section:
    blocks: list[Block] = []
    if view.facts.is_baseline:
        blocks.append(Paragraph(line("None apply: a baseline run has no federation.")))
        return Section("Guarantees in force", tuple(blocks))
    blocks += [Heading("Transport"), Paragraph(_transport(view))]
    blocks += [Heading("Sealing and signatures"), *_sealing(view)]
    blocks += [Heading("Secure aggregation"), *_secure_aggregation(view)]
    blocks += [Heading("Differential privacy"), *_privacy(view, figures)]
    return Section("Guarantees in force", tuple(blocks))


def _transport(view: RunView) -> Line:
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
        return [Span("on", GOOD), f" ({on_text})"]
    if value is False:
        return [Span("OFF", BAD)]
    if value is None:
        return [NOT_RECORDED]
    if isinstance(value, dict):
        return [", ".join(f"{k} {as_text(v)}" for k, v in value.items())]
    return [as_text(value)]


def _sealing(view: RunView) -> list[Block]:
    security = view.security
    if view.sealed is None:
        return [Paragraph(line(f"Sealing of updates: {NOT_RECORDED}."))]
    if view.sealed is False:
        where = ("were exchanged" if view.deployment is False else
                 "crossed the network and rested in the SuperLink's database")
        return [Paragraph(line(
            Span("Updates were not sealed", BAD), f"{view.sealed_src}: security.seal_updates "
            f"= false, so adapters {where} unencrypted and unsigned, and global adapters were "
            "not signed by the server."))]
    path = ("" if view.deployment is False else ", so the SuperLink's database and anything on "
            "the network path see only ciphertext")
    bullets = [
        line(Span("Sealed", GOOD), view.sealed_src, ": every update is encrypted end to end to "
             "the aggregator (X25519 key agreement, HKDF, AES-256-GCM), bound to the "
             f"federation, run, round and institution{path}."),
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


def _secure_aggregation(view: RunView) -> list[Block]:
    facts = view.facts
    if view.secagg is None:
        return [Paragraph(line(f"Secure aggregation: {NOT_RECORDED}."))]
    if view.secagg is False:
        seen = ("each institution's update on its own once it has opened its seal"
                if view.sealed else "each institution's update on its own")
        return [Paragraph(line(Span("Off", WARN), f"{view.secagg_src}: the aggregator sees "
                               f"{seen}."))]
    clip, bits, neighbours, dropouts = (
        facts.setting("secure_aggregation", key)
        for key in ("clip_range", "quantization_bits", "neighbours", "max_dropouts"))
    if is_number(clip) and isinstance(bits, int) and bits > 0:
        bound = clip / (2 ** bits - 1)
        quantisation = (f"each update value clipped to +/- {clip:g} and encoded on 2^{bits} "
                        f"levels: the decoded average is within {bound:.3g} "
                        f"(= {clip:g} / (2^{bits} - 1)) of the plain average for values inside "
                        "that range")
    else:
        quantisation = f"{NOT_RECORDED} (no [secure_aggregation] clip_range/quantization_bits)"
    items: tuple[tuple[str, Line], ...] = (
        ("Status", line(Span("on", GOOD), view.secagg_src, ": SecAgg+-style masking, the "
                        "aggregator learns only the sum of the updates, never one "
                        "institution's update")),
        ("Dropouts tolerated per round",
         line(f"{dropouts} (in total, over all stages of a round)" if dropouts is not None
              else NOT_RECORDED)),
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
        outcome = (line(Span("ABORTED", BAD), f": {aborted}") if aborted
                   else line("aggregated"))
        rows.append((line(str(r.number)),
                     *(line(as_text(info.get(key))) for key in
                       ("participants", "neighbours", "threshold", "survivors", "dropped")),
                     outcome))
    if rows:
        blocks.append(Table(("round", "participants", "neighbours", "threshold", "survivors",
                             "dropped", "outcome"), tuple(rows)))
    else:
        blocks.append(Paragraph(line("No round recorded secure-aggregation facts.")))
    return blocks


def _privacy(view: RunView, figures: Mapping[str, Figure]) -> list[Block]:
    if view.dp is None:
        return [Paragraph(line(f"Differential privacy: {NOT_RECORDED}."))]
    if view.dp is False:
        return [Paragraph(line(
            Span("Off", WARN), f"{view.dp_src}: no (epsilon, delta) bound limits what the "
            "global adapter reveals about any one institution's data. Sealing and secure "
            "aggregation protect updates on their way and at the aggregator; they do not limit "
            "what the resulting model itself reveals."))]
    value = view.privacy_value
    noise, noise_src = value("noise")
    noise_text = {"central": "central: the server adds Gaussian noise to the sum of the "
                             "clipped updates",
                  "distributed": "distributed: each institution adds its share of the noise "
                                 "before masking, so the sum carries the full noise"
                  }.get(noise, as_text(noise))
    clipping, clipping_src = value("clipping")
    clip_norm, clip_src = value("clip_norm")
    clip_text = f"{as_text(clipping)}{clipping_src}, L2 norm bound {as_text(clip_norm)}{clip_src}"
    if clipping == "adaptive":
        clip_text += " (initial; it follows a quantile of the update norms)"
    epsilon, eps_src = value("epsilon")
    delta, delta_src = value("delta")
    charged = [r for r in view.rounds if r.privacy and is_number(r.privacy.get("epsilon"))]
    final = (line(Span(f"epsilon = {eps_text(epsilon)}, delta = {as_text(delta)}", "bold"),
                  f" after {len(charged)} round(s){eps_src}")
             if is_number(epsilon) else line(NOT_RECORDED))
    target, _ = value("target_epsilon")
    planned = view.privacy.get("rounds_planned")
    if planned is None:
        planned = view.value("rounds", "federation", "num_rounds")[0]
    allowed = view.privacy.get("rounds_allowed")
    stopped = view.privacy.get("stopped_early")
    if stopped is True:
        stop_line = line(Span("yes", WARN), f": stopped before exceeding the target epsilon "
                         f"({as_text(allowed)} of {as_text(planned)} planned rounds run)")
    elif stopped is False:
        stop_line = line(f"no ({as_text(allowed) if allowed is not None else len(charged)} of "
                         f"{as_text(planned)} planned rounds within the budget)")
    else:
        stop_line = line(NOT_RECORDED)
    rate, rate_src = value("sampling_rate")
    items: list[tuple[str, Line]] = [
        ("Status", line(Span("on", GOOD), view.dp_src, ": client-level differential privacy "
                        "(DP-FedAvg); the unit protected is one institution's whole contribution, "
                        "so the bound holds for each of its records too")),
        ("Final (epsilon, delta)", final),
        ("Target epsilon", line(eps_text(target) if is_number(target) else "none set")),
        ("Stopped early at the target", stop_line),
        ("Noise", line(noise_text + noise_src)),
        ("Noise multiplier", line(as_text(value("noise_multiplier")[0])
                                  + value("noise_multiplier")[1])),
        ("Clipping", line(clip_text)),
        ("Sampling rate", line(as_text(rate) + rate_src)),
    ]
    blocks: list[Block] = [Fields(tuple(items))]
    if is_number(rate) and rate < 1:
        blocks.append(Paragraph(line(
            "With a sampling rate below 1 the epsilon assumes Poisson sampling of institutions; "
            "Flower samples a fixed number, so it is the customary approximation, not a proof.")))
    if charged:
        blocks.append(Paragraph(line("Cumulative (epsilon, delta) after each round, from the "
                                     "RDP accountant:")))
        blocks.append(Table(
            ("round", "epsilon (cumulative)", "delta", "noise multiplier", "clip norm", "noise",
             "sampling rate"),
            tuple((line(str(r.number)), line(eps_text(r.privacy.get("epsilon"))),
                   *(line(as_text(r.privacy.get(key))) for key in
                     ("delta", "noise_multiplier", "clip_norm", "noise", "sampling_rate")))
                  for r in charged if r.privacy)))
    if "epsilon" in figures:
        blocks.append(figures["epsilon"])
    return blocks


def protection_line(view: RunView) -> Line:
    def state(value: bool | None) -> Span:
        if value is None:
            return Span(NOT_RECORDED)
        return Span("yes", GOOD) if value else Span("no", WARN)

    ledger = view.facts.ledger
    if not ledger.present:
        ledger_span = Span("none", WARN)
    elif ledger.report is not None and ledger.report.ok:
        ledger_span = Span("verified", GOOD)
    else:
        ledger_span = Span("FAILED", BAD)
    return line("sealed updates ", state(view.sealed), "; secure aggregation ",
                state(view.secagg), "; differential privacy ", state(view.dp),
                "; signed ledger ", ledger_span)


def form_line(view: RunView) -> Line:
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
    return line("Updates were ", Span(sealed, BAD if view.sealed is False else ""), "; ",
                masked, ".")


def round_form(view: RunView, facts: RoundFacts) -> str:
    parts = []
    if view.sealed is True:
        parts.append("sealed")
    elif view.sealed is False:
        parts.append("in the clear")
    if facts.secure_aggregation is not None or (view.secagg is True and facts.contributed):
        parts.append("masked")
    return " + ".join(parts) if parts else NOT_RECORDED

"""The report's questions answered once from `RunFacts`: which protections were on, off or
not recorded, and where each answer came from; plus the formatting every section shares.

Where `summary.json` is silent the effective `config.toml` answers, and the text says so
(`FROM_CONFIG`); where neither says anything the answer is "not recorded", never a default.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Final

from fedpeft.report.facts import RunFacts

NOT_RECORDED = "not recorded"
FROM_CONFIG = " (per config.toml)"
SHOWN_METRICS = ("accuracy", "macro_f1", "loss", "perplexity")

GOOD: Final = "good"
BAD: Final = "bad"
WARN: Final = "warn"


class RunView:
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


def kind_text(facts: RunFacts) -> str:
    kind = facts.kind
    described = {
        "federated": "federated, simulated on one machine",
        "federated-deployment": "federated deployment across institutions",
        "centralized": "centralized baseline (all data pooled)",
        "local": "local-only baseline (each institution alone)",
    }.get(kind or "")
    return described or (kind if kind else NOT_RECORDED)


def best_text(summary: dict[str, Any]) -> str:
    metric, value, number = (summary.get("best_metric"), summary.get("best_value"),
                             summary.get("best_round"))
    if not is_number(value):
        return NOT_RECORDED
    # Runs since issue #10 select best/ on validation; older summaries selected on test.
    on = "validation" if summary.get("best_selected_on") == "validation" else "test"
    return f"{on} {metric or 'metric'} {value:.4f} in round {as_text(number)}"


def final_eval(facts: RunFacts) -> dict[str, float]:
    final = facts.summary.get("final")
    if isinstance(final, dict):
        return {k: float(v) for k, v in final.items() if is_number(v)}
    return facts.rounds[-1].server_eval if facts.rounds else {}


def metrics_text(metrics: dict[str, float]) -> str:
    shown = [f"{name} {metrics[name]:.4f}" for name in SHOWN_METRICS if name in metrics]
    return ", ".join(shown) if shown else NOT_RECORDED


def names_text(names: tuple[str, ...]) -> str:
    return ", ".join(names) if names else "none"


def round_list(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def numeric(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {k: float(v) for k, v in value.items() if is_number(v)}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fixed4(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def eps_text(value: Any) -> str:
    return f"{value:.3f}" if is_number(value) else as_text(value)


def bytes_text(value: int | float | None) -> str:
    if value is None:
        return NOT_RECORDED
    if value >= 1e6:
        return f"{value / 1e6:.2f} MB"
    if value >= 1e3:
        return f"{value / 1e3:.1f} kB"
    return f"{int(value)} B"


def as_text(value: Any) -> str:
    if value is None:
        return NOT_RECORDED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def fedpeft_version() -> str:
    try:
        return metadata.version("fedpeft")
    except metadata.PackageNotFoundError:
        return "(version unknown)"

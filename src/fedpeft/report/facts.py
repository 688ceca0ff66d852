"""Everything a run folder says about a run, read once into `RunFacts`.

The run folder is evidence handed to someone else: its files may be incomplete (a failed or
older run), written by another version, or edited. So every key is optional here, a missing
one becomes None (shown as "not recorded"), and nothing is inferred that the folder does not
state. Only a folder that is not a run folder at all (no `metrics.jsonl`) is refused.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpeft.common.audit import LEDGER_FILE, LedgerReport, verify_ledger
from fedpeft.common.errors import DataError, FedpeftError
from fedpeft.common.runs.folder import FAILED_SUFFIX, PARTIAL_SUFFIX
from fedpeft.common.runs.metrics_log import read_metrics
from fedpeft.deployment.federation_files import credential_name

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
ERROR_FILE = "error.txt"


@dataclass(frozen=True)
class Failure:
    """One failure or refusal of a round, as the round record states it."""

    round: int
    institution: str
    """The institution's name; `node N` when only its node id is known; `(whole round)`."""
    phase: str
    reason: str


@dataclass(frozen=True)
class RoundFacts:
    """One federated round (number >= 1) of `metrics.jsonl`."""

    number: int
    contributed: tuple[str, ...]
    """Institutions whose training reply (their update) was received and accepted."""
    evaluated: tuple[str, ...]
    """Institutions that evaluated the global adapter on their own validation data."""
    failures: tuple[Failure, ...]
    bytes_sent: int | None
    bytes_received: int | None
    updates_sha256: dict[str, str]
    """SHA-256 of each institution's sealed update as it arrived; empty when not recorded."""
    secure_aggregation: dict[str, Any] | None
    privacy: dict[str, Any] | None
    server_eval: dict[str, float]
    train: dict[str, float]


@dataclass(frozen=True)
class LedgerFacts:
    """The run's signed ledger: whether it exists, and what verifying it found."""

    path: Path
    present: bool
    report: LedgerReport | None
    """The verification outcome (None when the file is absent)."""
    error: str | None
    """Why the ledger could not even be read (a folder in its place, unreadable)."""
    summary: dict[str, Any]
    """What `summary.json` says about the ledger (`file`, `head`, `records`, `signer`)."""


@dataclass(frozen=True)
class RunFacts:
    """One run folder, read and checked; the single input of the Markdown and HTML reports."""

    run_dir: Path
    name: str
    status: str
    """`completed`, `failed`, `in progress`, or what `summary.json` says."""
    error: str | None
    """The first line of `error.txt` for a failed run."""
    summary: dict[str, Any]
    config: dict[str, Any] | None
    """`config.toml` as TOML tables (None when absent): read, not validated, so a config
    written by another version still reports."""
    config_sha256: str | None
    """SHA-256 of the bytes of `config.toml`."""
    records: list[dict[str, Any]]
    """Every record of `metrics.jsonl` that has a round number (0 is the initial model)."""
    rounds: tuple[RoundFacts, ...]
    ledger: LedgerFacts
    institutions: tuple[str, ...] = field(default=())
    """Every institution the run names: the summary's list, then any other seen in a round."""

    def section(self, name: str) -> dict[str, Any]:
        """A section of `summary.json` that should be a table; {} when absent or not a table."""
        value = self.summary.get(name)
        return value if isinstance(value, dict) else {}

    def setting(self, section: str, key: str) -> Any:
        """`[section] key` of `config.toml`, or None when the file or the key is absent."""
        table = (self.config or {}).get(section)
        return table.get(key) if isinstance(table, dict) else None

    @property
    def kind(self) -> str | None:
        kind = self.summary.get("kind")
        return kind if isinstance(kind, str) else None

    @property
    def is_baseline(self) -> bool:
        return self.kind in ("centralized", "local")

    @property
    def initial_eval(self) -> dict[str, float]:
        for record in self.records:
            if record["round"] == 0:
                return _numbers(record.get("server_eval"))
        return {}


def read_run(run_dir: Path) -> RunFacts:
    """Read the run folder `run_dir`; DataError (one line naming the path) if it is not one."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise DataError(f"{run_dir}: run folder not found")
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a folder (expected a run folder)")
    metrics_path = run_dir / METRICS_FILE
    if not metrics_path.is_file():
        raise DataError(f"{metrics_path}: not found (not a run folder?)")
    try:
        raw = read_metrics(metrics_path)
    except (ValueError, OSError) as err:
        raise DataError(f"{metrics_path}: not readable as JSON lines ({_one_line(err)})") from None
    records = [r for r in raw if isinstance(r, dict) and _is_int(r.get("round"))]
    records.sort(key=lambda r: r["round"])
    summary = _read_summary(run_dir / SUMMARY_FILE)
    config, config_sha256 = _read_config(run_dir / CONFIG_FILE)
    names = _node_names(records)
    aliases = display_names(summary)
    rounds = tuple(_round(record, names, aliases) for record in records if record["round"] > 0)
    status, error = _status(run_dir, summary)
    return RunFacts(
        run_dir=run_dir,
        name=_run_name(run_dir),
        status=status,
        error=error,
        summary=summary,
        config=config,
        config_sha256=config_sha256,
        records=records,
        rounds=rounds,
        ledger=_ledger(run_dir, summary),
        institutions=_institutions(summary, rounds),
    )


# -- files ------------------------------------------------------------------------------------
def _read_summary(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not valid JSON ({_one_line(err)})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def _read_config(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    if not path.is_file():
        return None, None
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        return tomllib.loads(data.decode("utf-8")), digest
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid TOML ({_one_line(err)})") from None


def _ledger(run_dir: Path, summary: dict[str, Any]) -> LedgerFacts:
    recorded = summary.get("ledger")
    recorded = recorded if isinstance(recorded, dict) else {}
    path = run_dir / LEDGER_FILE
    if not path.exists():
        return LedgerFacts(path, present=False, report=None, error=None, summary=recorded)
    try:
        report = verify_ledger(path)
    except (FedpeftError, OSError) as err:
        return LedgerFacts(path, present=True, report=None, error=_one_line(err),
                           summary=recorded)
    return LedgerFacts(path, present=True, report=report, error=None, summary=recorded)


def _status(run_dir: Path, summary: dict[str, Any]) -> tuple[str, str | None]:
    error_file = run_dir / ERROR_FILE
    error = None
    if error_file.is_file():
        lines = error_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        error = lines[0] if lines else None
    if run_dir.name.endswith(FAILED_SUFFIX):
        return "failed", error
    if run_dir.name.endswith(PARTIAL_SUFFIX):
        return "in progress (or interrupted)", error
    status = summary.get("status")
    return (str(status) if status is not None else "not recorded (no summary.json)"), error


def _run_name(run_dir: Path) -> str:
    name = run_dir.resolve().name
    for suffix in (PARTIAL_SUFFIX, FAILED_SUFFIX):
        name = name.removesuffix(suffix)
    return name


# -- round records ----------------------------------------------------------------------------
def _node_names(records: list[dict[str, Any]]) -> dict[Any, str]:
    """node id -> institution name, from every round's replies (failures often lack names)."""
    names: dict[Any, str] = {}
    for record in records:
        for client in _dicts(record.get("clients")):
            if client.get("node_id") is not None and isinstance(client.get("name"), str):
                names.setdefault(client["node_id"], client["name"])
    return names


def display_names(summary: dict[str, Any]) -> dict[str, str]:
    """credential name -> the name `summary.json` lists: a sealed simulation's institutions
    report the folder-safe name of their keys (`Corvid`, `Alder-Federal-Bank-1a2b3c4d`), the
    summary lists the data's names (`Alder Federal Bank`); both mean one institution."""
    listed = summary.get("institutions")
    if not isinstance(listed, list):
        return {}
    return {credential_name(str(name)): str(name) for name in listed}


def _round(record: dict[str, Any], names: dict[Any, str], aliases: dict[str, str]) -> RoundFacts:
    clients = _dicts(record.get("clients"))

    def named(name: str) -> str:
        return aliases.get(name, name)

    traffic = record.get("bytes") if isinstance(record.get("bytes"), dict) else {}
    updates = record.get("updates_sha256")
    participants = record.get("participants")  # verified signers in a sealed run
    contributed = ([str(p) for p in participants] if isinstance(participants, list)
                   else [_client_name(c) for c in clients if "train" in c])
    return RoundFacts(
        number=record["round"],
        contributed=tuple(sorted({named(name) for name in contributed})),
        evaluated=tuple(sorted({named(_client_name(c)) for c in clients if "evaluate" in c})),
        failures=tuple(_failure(record["round"], f, {k: named(v) for k, v in names.items()},
                                named) for f in _dicts(record.get("failures"))),
        bytes_sent=_int_or_none(traffic.get("sent")),
        bytes_received=_int_or_none(traffic.get("received")),
        updates_sha256=({str(k): str(v) for k, v in updates.items()}
                        if isinstance(updates, dict) else {}),
        secure_aggregation=_dict_or_none(record.get("secure_aggregation")),
        privacy=_dict_or_none(record.get("privacy")),
        server_eval=_numbers(record.get("server_eval")),
        train=_numbers(record.get("train")),
    )


def _failure(number: int, failure: dict[str, Any], names: dict[Any, str],
             named: Callable[[str], str]) -> Failure:
    node = failure.get("node_id")
    if isinstance(failure.get("name"), str):
        who = named(failure["name"])
    elif node is None:
        who = "(whole round)"
    else:
        who = names.get(node, f"node {node}")
    return Failure(round=number, institution=who, phase=str(failure.get("phase", "?")),
                   reason=str(failure.get("reason", "not recorded")))


def _client_name(client: dict[str, Any]) -> str:
    name = client.get("name")
    return name if isinstance(name, str) else f"node {client.get('node_id', '?')}"


def _institutions(summary: dict[str, Any], rounds: tuple[RoundFacts, ...]) -> tuple[str, ...]:
    named = summary.get("institutions")
    ordered = [str(n) for n in named] if isinstance(named, list) else []
    seen = set(ordered)
    for facts in rounds:
        for name in (*facts.contributed, *facts.evaluated,
                     *(f.institution for f in facts.failures if f.institution != "(whole round)")):
            if name not in seen:
                seen.add(name)
                ordered.append(name)
    return tuple(ordered)


# -- small helpers ----------------------------------------------------------------------------
def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _numbers(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    return None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())

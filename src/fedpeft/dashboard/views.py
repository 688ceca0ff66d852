"""What the dashboard shows of a run, as plain data: built from the run folder's files only.

The same dictionaries are served as JSON (`/api/...`) and rendered into the page, so a script
and a person see the same thing. Everything here copes with a run still being written (see
`common.runs.catalog`), and per-institution numbers follow the rule of the tracking tools:
shown only when the run has neither DP nor secure aggregation.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fedpeft.common.runs.catalog import RunSnapshot, SnapshotCache, list_runs, numbers
from fedpeft.common.runs.folder import FAILED_SUFFIX, PARTIAL_SUFFIX
from fedpeft.report.facts import display_names

Series = dict[str, list[tuple[float, float]]]

LINKED_FILES = ("report.html", "report.md", "config.toml", "summary.json", "run.log", "error.txt",
                "ledger.jsonl")
"""Single files of a run folder the page links to (and the only ones it serves, with the
adapter folders `adapter/`, `best/` and the report's and run's plots)."""
SERVED_FOLDERS = ("adapter", "best", "plots", "report")


def find_run(runs_dir: Path, run_id: str) -> Path | None:
    """The folder of run `run_id` (its folder name, any state) directly under `runs_dir`;
    None for anything else, including names that try to leave `runs_dir`."""
    if not run_id or "/" in run_id or "\\" in run_id or run_id in {".", ".."}:
        return None
    for suffix in ("", PARTIAL_SUFFIX, FAILED_SUFFIX):
        candidate = runs_dir / f"{run_id}{suffix}"
        if candidate.is_dir() and candidate.resolve().parent == runs_dir.resolve():
            return candidate
    return None


def per_institution_shown(run: RunSnapshot) -> bool:
    return not (run.setting("privacy", "enabled") is True
                or run.setting("privacy", "example_level") is True
                or run.setting("secure_aggregation", "enabled") is True)


def _age_seconds(moment: datetime | None) -> float | None:
    return None if moment is None else (datetime.now(timezone.utc) - moment).total_seconds()


def run_row(run: RunSnapshot) -> dict[str, Any]:
    """One run in the list of runs."""
    return {
        "id": run.name, "status": run.status, "kind": run.kind,
        "rounds_done": run.rounds_done, "rounds_planned": run.rounds_planned,
        "final": run.final_eval, "epsilon": run.epsilon, "target_epsilon": run.target_epsilon,
        "started": run.started.isoformat() if run.started else None,
        "updated_seconds_ago": _age_seconds(run.updated),
        "error": run.error, "problems": run.problems,
        "note": "; ".join(filter(None, [run.error, *run.problems])),
    }


def runs_index(runs_dir: Path, cache: SnapshotCache) -> list[dict[str, Any]]:
    return [run_row(run) for run in list_runs(runs_dir, cache.read)]


def _section_series(records: list[dict[str, Any]], section: str, names: tuple[str, ...] | None = None,
                    prefix: str = "") -> Series:
    series: Series = {}
    for record in records:
        for name, value in numbers(record.get(section)).items():
            if name != "num-examples" and (names is None or name in names):
                series.setdefault(prefix + name, []).append((record["round"], value))
    return series


def _name(entry: dict[str, Any], aliases: dict[str, str], default: str = "?") -> str:
    """An institution's name as the summary lists it (see `report.facts.display_names`)."""
    name = str(entry.get("name", entry.get("node_id", default)))
    return aliases.get(name, name)


def _institution_series(records: list[dict[str, Any]], section: str, key: str,
                        aliases: dict[str, str]) -> Series:
    series: Series = {}
    for record in records:
        for client in record.get("clients") or []:
            value = client.get(section, {}).get(key) if isinstance(client, dict) and isinstance(
                client.get(section), dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(_name(client, aliases), []).append((record["round"], float(value)))
    return series


def _charts(run: RunSnapshot) -> dict[str, dict[str, Any]]:
    records = run.records
    loss = _section_series(records, "server_eval", ("loss",), "test ") | _section_series(
        records, "train", ("loss",), "train ")
    traffic = {f"MB {k}": [(x, y / 1e6) for x, y in pts]
               for k, pts in _section_series(records, "bytes", ("sent", "received")).items()}
    timing = _section_series(records, "time", ("local_compute_s", "framework_s", "server_eval_s"))
    charts: dict[str, dict[str, Any]] = {
        "test": {"title": "test metrics (coordinator's test set)",
                 "series": _section_series(records, "server_eval", ("accuracy", "macro_f1", "perplexity"))},
        "loss": {"title": "loss", "series": loss},
        "traffic": {"title": "traffic per round (MB)", "series": traffic, "from_zero": True},
        "time": {"title": "time per round (s)", "series": {k.removesuffix("_s"): v for k, v in timing.items()},
                 "from_zero": True},
        "epsilon": {"title": "epsilon spent", "series": _section_series(records, "privacy", ("epsilon",)),
                    "target": run.target_epsilon, "from_zero": True},
    }
    if per_institution_shown(run):
        for section, key, title in (("train", "loss", "local training loss per institution"),
                                    ("evaluate", "accuracy", "local validation accuracy per institution"),
                                    ("test", "accuracy", "test accuracy per institution")):
            series = _institution_series(records, section, key, display_names(run.summary))
            if series:
                charts[f"institutions_{section}"] = {"title": title, "series": series}
    return {name: chart for name, chart in charts.items() if chart["series"]}


def _rounds(run: RunSnapshot) -> list[dict[str, Any]]:
    rows = []
    aliases = display_names(run.summary)
    for record in run.records:
        if record["round"] == 0:
            continue
        clients = [c for c in record.get("clients") or [] if isinstance(c, dict)]
        failures = [f for f in record.get("failures") or [] if isinstance(f, dict)]
        # A sealed run records the verified signers; reply names are claims anyone can write.
        signed = record.get("participants")
        contributed = ([aliases.get(str(p), str(p)) for p in signed] if isinstance(signed, list)
                       else [_name(c, aliases) for c in clients if "train" in c])
        rows.append({
            "round": record["round"],
            "contributed": sorted(contributed),
            "evaluated": sorted(_name(c, aliases) for c in clients if "evaluate" in c),
            "failures": [{"institution": _name(f, aliases, "(whole round)"),
                          "phase": str(f.get("phase", "?")), "reason": str(f.get("reason", "not recorded"))}
                         for f in failures],
        })
    return rows


def protections(run: RunSnapshot) -> list[tuple[str, str]]:
    """(protection, what is in force) from config.toml, completed by summary.json."""
    setting = run.setting
    recorded = run.summary.get("security")
    security: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    rows: list[tuple[str, str]] = []
    sealed = security.get("sealed_updates", setting("security", "seal_updates"))
    rows.append(("sealed updates", "on: signed and encrypted to the coordinator" if sealed
                 else "off: adapters travel in plaintext" if sealed is False else "not recorded"))
    if setting("secure_aggregation", "enabled") is True:
        rows.append(("secure aggregation", "on: the coordinator sees only the sum of updates"))
    else:
        rows.append(("secure aggregation", "off"))
    if setting("privacy", "enabled") is True:
        spent = "not yet charged" if run.epsilon is None else f"{run.epsilon:.3f}"
        target = "" if run.target_epsilon is None else f" of target {run.target_epsilon:g}"
        rows.append(("client-level DP",
                     (f"on: noise multiplier {setting('privacy', 'noise_multiplier')}, clip norm "
                      f"{setting('privacy', 'clip_norm')}, delta {setting('privacy', 'delta')}; "
                      f"epsilon {spent}{target}")))
    else:
        rows.append(("client-level DP", "off"))
    if setting("privacy", "example_level") is True:
        rows.append(("example-level DP-SGD", "on"))
    mode = security.get("lora_mode", setting("lora", "mode"))
    if mode:
        rows.append(("LoRA exchange", str(mode)))
    ledger = run.summary.get("ledger")
    if isinstance(ledger, dict):
        rows.append(("signed ledger", f"{ledger.get('records', '?')} records, head {str(ledger.get('head', '?'))[:16]}…"))
    elif setting("audit", "ledger") is True:
        rows.append(("signed ledger", "on (ledger.jsonl)"))
    rows.append(("per-institution curves", "shown" if per_institution_shown(run)
                 else "withheld: DP or secure aggregation is on"))
    return rows


def _links(run: RunSnapshot) -> list[str]:
    links = [name for name in LINKED_FILES if (run.path / name).is_file()]
    for folder in ("adapter", "best"):
        if (run.path / folder).is_dir():
            links += sorted(f"{folder}/{p.name}" for p in (run.path / folder).iterdir() if p.is_file())
    return links


def run_detail(run: RunSnapshot) -> dict[str, Any]:
    """Everything the page of one run shows."""
    return {**run_row(run), "charts": _charts(run), "rounds": _rounds(run),
            "protections": protections(run), "files": _links(run),
            "folder": run.path.name}

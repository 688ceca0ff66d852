"""The numbers a tracking tool gets from one round record, and which of them it may get.

A tracking tool is a second place the numbers live, often shared more widely than the run
folder. Server-side numbers (test metrics on the coordinator's test set, aggregate training
loss, traffic, time, epsilon) describe the federation. Per-institution numbers describe one
institution's data: with DP on, the run promises that what leaves the coordinator does not
single out one institution, and with secure aggregation the coordinator is meant to see only
sums; in both cases they are left out here.
"""

from __future__ import annotations

from typing import Any

from fedpeft.common.config import RunConfig

_SECTIONS = (("server_eval", "test"), ("train", "train"), ("client_eval", "institutions_mean"))
_NOT_A_METRIC = {"num-examples"}


def per_institution_allowed(cfg: RunConfig) -> bool:
    """False when any protection in force promises not to expose one institution's numbers."""
    return not (cfg.privacy.enabled or cfg.privacy.example_level or cfg.secure_aggregation.enabled)


def _numbers(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _NOT_A_METRIC}


def _list(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def round_scalars(record: dict[str, Any], per_institution: bool) -> dict[str, float]:
    """`tag -> value` for one `metrics.jsonl` record (tags grouped as `section/name`)."""
    scalars: dict[str, float] = {}
    for section, prefix in _SECTIONS:
        scalars |= {f"{prefix}/{k}": v for k, v in _numbers(record.get(section)).items()}
    traffic = _numbers(record.get("bytes"))
    scalars |= {f"traffic_MB/{k}": v / 1e6 for k, v in traffic.items()}
    scalars |= {f"time_s/{k.removesuffix('_s')}": v for k, v in _numbers(record.get("time")).items()}
    privacy = _numbers(record.get("privacy"))
    if "epsilon" in privacy:
        scalars["privacy/epsilon"] = privacy["epsilon"]
    masked = _numbers(record.get("secure_aggregation"))
    if "survivors" in masked:
        scalars["secure_aggregation/survivors"] = masked["survivors"]
    clients = _list(record.get("clients"))
    if record.get("round", 0) > 0:
        scalars["round/contributors"] = float(sum(1 for c in clients if "train" in c))
        scalars["round/failures"] = float(len(_list(record.get("failures"))))
    if per_institution:
        for client in clients:
            name = str(client.get("name", client.get("node_id", "?")))
            for section in ("train", "evaluate", "test"):
                for key, value in _numbers(client.get(section)).items():
                    scalars[f"institution/{name}/{section}_{key}"] = value
    return scalars

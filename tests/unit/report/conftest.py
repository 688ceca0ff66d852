"""Synthetic run folders for the report tests: what a federated run leaves behind, without
running one (config.toml, metrics.jsonl, summary.json and a real signed ledger)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from fedpeft.common.audit import Ledger
from fedpeft.common.config import RunConfig, save_config
from fedpeft.common.crypto import SigningPrivateKey, fingerprint, generate_signing_key

EPSILONS = (0.912, 1.487, 1.953)
REFUSAL = "signature does not verify (update altered in transit)"


@pytest.fixture(scope="session")
def server_key() -> SigningPrivateKey:
    return generate_signing_key()


def _record(number: int, names: Sequence[str], *, dp: bool, secagg: bool, sealed: bool) -> dict:
    if number == 0:
        return {"round": 0, "server_eval": {"accuracy": 0.2, "macro_f1": 0.1, "loss": 1.6}}
    failing = names[-1] if number == 2 else None
    ok = [n for n in names if n != failing]
    record: dict[str, Any] = {
        "round": number,
        "server_eval": {"accuracy": 0.5 + 0.1 * number, "macro_f1": 0.4 + 0.1 * number,
                        "loss": 1.2 - 0.2 * number},
        "train": {"loss": 1.0 - 0.1 * number, "num-examples": 300},
        "client_eval": {"accuracy": 0.6},
        "clients": [{"node_id": 100 + i, "name": n, "train": {"loss": 0.9, "num-examples": 100},
                     "evaluate": {"accuracy": 0.6}} for i, n in enumerate(names) if n in ok],
        "failures": ([{"node_id": 100 + len(names) - 1, "name": failing, "phase": "sealing",
                       "reason": REFUSAL}] if failing else []),
        "bytes": {"sent": 1_500_000, "received": 1_200_000, "train_sent": 1_000_000,
                  "train_received": 900_000},
        "time": {"round_s": 3.0, "local_compute_s": 2.0, "server_eval_s": 0.5,
                 "framework_s": 0.5},
    }
    if sealed:
        record["updates_sha256"] = {n: f"{i:x}" * 64 for i, n in enumerate(names, start=10)}
    if secagg:
        record["secure_aggregation"] = {
            "participants": len(names), "neighbours": len(names) - 1, "threshold": len(names) - 1,
            "survivors": len(ok), "dropped": len(names) - len(ok), "total_weight": 300,
            "server_s": 0.1, "protocol_bytes_sent": 1000, "protocol_bytes_received": 1000}
    if dp:
        record["privacy"] = {"epsilon": EPSILONS[number - 1], "delta": 1e-5,
                             "noise_multiplier": 1.1, "clip_norm": 1.0, "clipping": "fixed",
                             "noise": "distributed" if secagg else "central",
                             "sampling_rate": 1.0, "rounds_charged": number}
    return record


@pytest.fixture()
def make_run(tmp_path: Path, server_key: SigningPrivateKey) -> Callable[..., Path]:
    """make_run(name=..., dp=, secagg=, sealed=, ledger=, institutions=) -> run folder."""

    def make(name: str = "sim-1", *, dp: bool = True, secagg: bool = True, sealed: bool = True,
             ledger: bool = True, institutions: Sequence[str] = ("bank-a", "bank-b", "bank-c"),
             ) -> Path:
        run = tmp_path / name
        run.mkdir()
        cfg = RunConfig.model_validate({
            "federation": {"num_rounds": 3},
            "privacy": {"enabled": dp, "noise_multiplier": 1.1, "target_epsilon": 5.0},
            "secure_aggregation": {"enabled": secagg, "clip_range": 8.0,
                                   "quantization_bits": 24},
            "security": {"seal_updates": sealed},
        })
        save_config(cfg, run / "config.toml")
        records = [_record(n, institutions, dp=dp, secagg=secagg, sealed=sealed)
                   for n in range(4)]
        (run / "metrics.jsonl").write_text(
            "".join(json.dumps(r, sort_keys=True) + "\n" for r in records), encoding="utf-8")
        summary: dict[str, Any] = {
            "kind": "federated", "status": "completed", "task": "classification",
            "model": "all-MiniLM-L6-v2", "peft_method": "lora", "strategy": "fedavg",
            "institutions": list(institutions), "rounds": 3, "best_round": 3,
            "best_metric": "macro_f1", "best_value": 0.7, "final": records[-1]["server_eval"],
            "adapter_bytes": 300_000, "full_model_bytes": 91_000_000, "deployment": False,
            "security": {"sealed_updates": sealed, "secure_aggregation": secagg,
                         "lora_mode": "fedavg"},
        }
        if sealed:
            summary["security"].update(
                server_signing=fingerprint(server_key.public_key()), server_encryption="e" * 64,
                federation_id="FED-1",
                institutions={n: f"{i}" * 64 for i, n in enumerate(institutions, start=1)})
        if dp:
            summary["privacy"] = {"enabled": True, "epsilon": EPSILONS[-1], "delta": 1e-5,
                                  "noise_multiplier": 1.1, "clipping": "fixed", "clip_norm": 1.0,
                                  "target_epsilon": 5.0, "rounds_planned": 3,
                                  "rounds_allowed": 3, "stopped_early": False,
                                  "noise": "distributed" if secagg else "central"}
        if ledger:
            book = Ledger.create(run / "ledger.jsonl", server_key, owner="FED-1",
                                 role="coordinator")
            book.append("run-start", {"rounds_planned": 3})
            for record in records[1:]:
                book.append("round", {"round": record["round"],
                                      "participants": sorted(c["name"] for c in record["clients"])})
            book.append("run-end", {"rounds_completed": 3})
            summary["ledger"] = {"file": "ledger.jsonl", "head": book.head,
                                 "records": book.records, "signer": book.signer}
        (run / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        return run

    return make

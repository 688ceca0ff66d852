"""Accuracy under the protections on Financial PhraseBank (issues #4 and #5 benchmarks).

Each variant is a full simulated federation (packaged MiniLM, LoRA r=8 on query/value, Dirichlet
label skew, ROUNDS rounds of one local epoch) that differs from the plain FedAvg run only in the
settings it names: secure aggregation, the LoRA aggregation mode (fedavg, ffa, heterogeneous
ranks, stacking), or client-level differential privacy at a target epsilon (the noise multiplier
is the smallest that keeps the RDP accountant's epsilon after ROUNDS rounds at the target).

    .venv/bin/python bench/protection_accuracy.py --variants plain secagg ffa ranks dp-8 \
        [--rounds 4]

Each variant's outcome is kept in bench/results/protection/<variant>-<clients>.json, so variants
can run separately; the table is printed from whichever files exist. The data's licence forbids
shipping it: it is read from ../shared and never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from fedpeft.common.config import load_config
from fedpeft.common.privacy import epsilon_for
from fedpeft.common.runs.metrics_log import read_metrics
from fedpeft.simulation.federated import simulate

HERE = Path(__file__).resolve().parent
DELTA = 1e-5

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "secagg": {"secure_aggregation.enabled": True},
    "ffa": {"lora.mode": "ffa", "secure_aggregation.enabled": True},
    "ranks": {"lora.mode": "ffa", "lora.ranks": [8, 4, 2], "secure_aggregation.enabled": True},
    "stacking": {"lora.mode": "stacking", "lora.ranks": [8, 4, 2]},
    "dp-1": {"privacy.target_epsilon": 1.0},
    "dp-3": {"privacy.target_epsilon": 3.0},
    "dp-8": {"privacy.target_epsilon": 8.0},
}


def noise_for(target: float, rounds: int) -> float:
    """The smallest noise multiplier (to 1e-3) whose epsilon after `rounds` full-participation
    rounds stays within `target` at DELTA."""
    low, high = 0.05, 200.0
    while high - low > 1e-3:
        mid = (low + high) / 2
        if epsilon_for(mid, 1.0, rounds, DELTA) > target:
            low = mid
        else:
            high = mid
    return high


def settings(variant: str, rounds: int, clients: int, data: Path, out: Path) -> dict[str, Any]:
    overrides = dict(VARIANTS[variant])
    if "privacy.target_epsilon" in overrides:
        overrides.update({"privacy.enabled": True, "privacy.delta": DELTA,
                          "privacy.clip_norm": 1.0,
                          "privacy.noise_multiplier": noise_for(overrides["privacy.target_epsilon"],
                                                                rounds)})
    return {
        "data.train": str(data / "train.csv"), "data.test": str(data / "test.csv"),
        "data.text_column": "sentence", "data.label_column": "label",
        "data.partition": "dirichlet:0.5", "simulation.num_clients": clients,
        "federation.num_rounds": rounds, "federation.fraction_evaluate": 0.0,
        "model.max_seq_length": 64, "peft.r": 8, "peft.target_modules": ["query", "value"],
        "training.local_epochs": 1, "training.batch_size": 16, "training.learning_rate": 3e-3,
        "output.dir": str(out / "runs"),
        "output.run_name": f"{variant}-{clients}-{time.strftime('%H%M%S')}",
        **overrides,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path,
                        default=HERE.parent.parent / "shared/data/financial_phrasebank")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "protection")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for variant in args.variants:
        overrides = settings(variant, args.rounds, args.clients, args.data, args.out)
        started = time.perf_counter()
        report = simulate(load_config(overrides=overrides))
        records = read_metrics(report.path / "metrics.jsonl")
        trained = [r for r in records if r["round"] > 0]
        outcome = {
            "variant": variant, "clients": args.clients, "settings": overrides,
            "final": report.summary["final"], "wall_s": time.perf_counter() - started,
            "macro_f1_per_round": [r["server_eval"].get("macro_f1") for r in records],
            "epsilon": report.summary.get("privacy", {}).get("epsilon"),
            "round_s": [r["time"]["round_s"] for r in trained],
            "train_bytes_per_round": [r["bytes"]["train_sent"] + r["bytes"]["train_received"]
                                      for r in trained],
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                       f"load {os.getloadavg()[0]:.1f}",
        }
        (args.out / f"{variant}-{args.clients}.json").write_text(json.dumps(outcome, indent=1))
        print(f"{variant} x{args.clients}: macro-F1 {outcome['final'].get('macro_f1'):.3f} "
              f"accuracy {outcome['final'].get('accuracy'):.3f} epsilon {outcome['epsilon']} "
              f"{outcome['wall_s']:.0f}s", flush=True)
    print("| variant | institutions | macro-F1 | accuracy | epsilon | wall s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for path in sorted(args.out.glob("*.json")):
        o = json.loads(path.read_text())
        print(f"| {o['variant']} | {o['clients']} | {o['final'].get('macro_f1'):.3f} | "
              f"{o['final'].get('accuracy'):.3f} | {o['epsilon']} | {o['wall_s']:.0f} |")


if __name__ == "__main__":
    main()

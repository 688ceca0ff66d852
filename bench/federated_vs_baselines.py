"""Federated vs centralized vs local-only on Financial PhraseBank (issue #2 benchmark).

Runs the three with the packaged MiniLM, LoRA r=8 on query/value, 5 institutions with
Dirichlet(0.5) label skew, ROUNDS rounds of one local epoch (the baselines train the same
number of epochs), and writes a JSON result and a Markdown table under bench/results/.

    .venv/bin/python bench/federated_vs_baselines.py [--rounds 8] \
        [--kinds federated centralized local]

Each kind's outcome is kept in bench/results/<kind>.json, so the three can run separately;
the comparison table is computed from whichever of those files exist once all three do.

The data's licence forbids shipping it: it is read from ../shared and never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from fedpeft.common.config import load_config
from fedpeft.common.runs.metrics_log import read_metrics
from fedpeft.simulation.baselines import run_baseline
from fedpeft.simulation.federated import simulate

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path,
                        default=HERE.parent.parent / "shared/data/financial_phrasebank")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--kinds", nargs="+", default=["federated", "centralized", "local"],
                        choices=["federated", "centralized", "local"])
    args = parser.parse_args()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = {
        "data.train": str(args.data / "train.csv"),
        "data.test": str(args.data / "test.csv"),
        "data.text_column": "sentence",
        "data.label_column": "label",
        "data.partition": f"dirichlet:{args.alpha}",
        "simulation.num_clients": args.clients,
        "federation.num_rounds": args.rounds,
        "model.max_seq_length": 64,
        "peft.r": 8,
        "peft.target_modules": ["query", "value"],
        "training.local_epochs": 1,
        "training.batch_size": 16,
        "training.learning_rate": 3e-3,
        "output.dir": str(args.out / f"runs-{stamp}"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in args.kinds:
        cfg = load_config(overrides={**base, "output.run_name": kind})
        started = time.perf_counter()
        report = simulate(cfg) if kind == "federated" else run_baseline(kind, cfg)
        outcome = {"summary": report.summary, "wall_s": time.perf_counter() - started,
                   "records": read_metrics(report.path / "metrics.jsonl"), "settings": base}
        (args.out / f"{kind}.json").write_text(json.dumps(outcome, indent=1))
        print(kind, json.dumps(report.summary["final"]), f"{outcome['wall_s']:.0f}s", flush=True)
    kinds = ("federated", "centralized", "local")
    if not all((args.out / f"{kind}.json").is_file() for kind in kinds):
        return
    results = {kind: json.loads((args.out / f"{kind}.json").read_text()) for kind in kinds}

    fed_rounds = [r for r in results["federated"]["records"] if r["round"] > 0]
    per_round_bytes = statistics.mean(r["bytes"]["train_sent"] + r["bytes"]["train_received"]
                                      for r in fed_rounds)
    clients_per_round = statistics.mean(len(r["clients"]) for r in fed_rounds)
    full_bytes = results["federated"]["summary"]["full_model_bytes"]
    compute = statistics.mean(r["time"]["local_compute_s"] for r in fed_rounds)
    framework = statistics.mean(r["time"]["framework_s"] for r in fed_rounds)
    table = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "federated": results["federated"]["summary"]["final"],
        "centralized": results["centralized"]["summary"]["final"],
        "local_mean": results["local"]["summary"]["final"],
        "local_per_institution": results["local"]["summary"]["per_institution"],
        "adapter_bytes": results["federated"]["summary"]["adapter_bytes"],
        "full_model_bytes": full_bytes,
        "train_traffic_bytes_per_round": per_round_bytes,
        "full_model_traffic_bytes_per_round": 2 * full_bytes * clients_per_round,
        "traffic_reduction_x": 2 * full_bytes * clients_per_round / per_round_bytes,
        "round_local_compute_s": compute,
        "round_framework_s": framework,
        "framework_share_of_compute": framework / compute,
        "wall_s": {k: v["wall_s"] for k, v in results.items()},
    }
    out = args.out / "federated_vs_baselines.json"
    out.write_text(json.dumps(table, indent=2))
    print(json.dumps(table, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()

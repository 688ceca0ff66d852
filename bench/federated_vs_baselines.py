"""Federated vs centralized vs local-only on Financial PhraseBank (issues #2 and #10).

Runs the three with the packaged MiniLM, LoRA r=8 on query/value, N institutions with
Dirichlet(ALPHA) label skew and one training recipe (rounds, local steps or epochs, peak
learning rate, fraction of institutions sampled per round); the baselines train with the same
recipe (see `fedpeft.simulation.baselines`). Each run is timed and its peak memory measured:
the resident memory of this process and every process it starts (Ray's own and its actors),
summed, sampled every half second.

    .venv/bin/python bench/federated_vs_baselines.py --clients 5 --rounds 20 --local-steps 10 \
        --lr 5e-3 --kinds federated centralized local --tag c5

Each kind's outcome is kept in bench/results/<tag>-<kind>.json, so the kinds can run separately;
a comparison is printed once all three exist. `--rows N` / `--test-rows N` use a seeded sample
of N training / test rows, to fit runs onto a small, shared machine.
`--set FIELD=VALUE` passes any further config field (e.g. example-level DP settings).

The data's licence forbids shipping it: it is read from ../shared and never copied into the
repository (a row sample is written to a temporary folder and deleted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

import pandas as pd
import psutil

from fedpeft.cli.options import parse_sets
from fedpeft.common.config import RunConfig, load_config
from fedpeft.common.runs.metrics_log import read_metrics
from fedpeft.simulation.baselines import run_baseline
from fedpeft.simulation.federated import RunReport, simulate

HERE = Path(__file__).resolve().parent
KINDS = ("federated", "centralized", "local")


class PeakMemory:
    """Peak of the summed resident memory of this process and all its descendants."""

    def __init__(self, interval: float = 0.5) -> None:
        self.peak = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(self._interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _settings(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "data.train": str(_sample_rows(args.data / "train.csv", args.rows, folder)),
        "data.test": str(_sample_rows(args.data / "test.csv", args.test_rows, folder)),
        "data.text_column": "sentence",
        "data.label_column": "label",
        "data.partition": f"dirichlet:{args.alpha}",
        "simulation.num_clients": args.clients,
        "federation.num_rounds": args.rounds,
        "federation.fraction_train": args.fraction_train,
        "federation.fraction_evaluate": args.fraction_train,
        "model.max_seq_length": 64,
        "peft.r": 8,
        "peft.target_modules": ["query", "value"],
        "training.batch_size": 16,
        "training.learning_rate": args.lr,
    }
    if args.local_steps is not None:
        settings["training.local_steps"] = args.local_steps
    else:
        settings["training.local_epochs"] = args.local_epochs
    settings.update(parse_sets(args.sets))
    return settings


def _sample_rows(source: Path, rows: int | None, folder: Path) -> Path:
    """`source`, or a seeded sample of `rows` of its rows written to `folder`."""
    if rows is None:
        return source
    path = folder / source.name
    pd.read_csv(source).sample(n=rows, random_state=0).to_csv(path, index=False)
    return path


RAY_START_ATTEMPTS = 4
"""Ray gives its node 30 s to start (hard-coded); on a machine loaded far beyond its cores it
sometimes misses that, before any round ran. Such a run is simply started again."""


def _simulate_retrying(cfg: RunConfig) -> RunReport:
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            return simulate(cfg.model_copy(update={"output": cfg.output.model_copy(
                update={"run_name": f"{cfg.output.run_name}-{attempt}"})}))
        except RuntimeError as err:
            if attempt == RAY_START_ATTEMPTS:
                raise
            print(f"simulation failed to start ({err}); attempt {attempt + 1}", flush=True)
    raise AssertionError("unreachable")


def _run(kind: str, settings: dict[str, Any], out: Path, tag: str) -> dict[str, Any]:
    cfg = load_config(overrides={**settings, "output.dir": str(out / "runs"),
                                 "output.run_name": f"{tag}-{kind}-{time.strftime('%H%M%S')}"})
    started = time.perf_counter()
    with PeakMemory() as memory:
        report = (_simulate_retrying(cfg) if kind == "federated"
                  else run_baseline(kind, cfg))  # type: ignore[arg-type]
    return {"summary": report.summary, "wall_s": time.perf_counter() - started,
            "peak_rss_bytes": memory.peak, "run_folder": str(report.path),
            "records": read_metrics(report.path / "metrics.jsonl"), "settings": settings}


def _compare(out: Path, tag: str) -> None:
    results = {kind: json.loads((out / f"{tag}-{kind}.json").read_text()) for kind in KINDS}
    fed_rounds = [r for r in results["federated"]["records"] if r["round"] > 0]
    steady = fed_rounds[1:] or fed_rounds  # the first round also loads the model
    compute = statistics.mean(r["time"]["local_compute_s"] for r in steady)
    framework = statistics.mean(r["time"]["framework_s"] for r in steady)
    table = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        **{kind: results[kind]["summary"]["final"] for kind in ("federated", "centralized")},
        "local_mean": results["local"]["summary"]["final"],
        "federated_best_round_on_validation": results["federated"]["summary"]["best_round"],
        "round_local_compute_s": compute,
        "round_framework_s": framework,
        "framework_share_of_compute": framework / compute if compute else None,
        "wall_s": {k: v["wall_s"] for k, v in results.items()},
        "peak_rss_mb": {k: v["peak_rss_bytes"] / 2**20 for k, v in results.items()},
    }
    path = out / f"{tag}-comparison.json"
    path.write_text(json.dumps(table, indent=2))
    print(json.dumps(table, indent=2))
    print(f"written {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path,
                        default=HERE.parent.parent / "shared/data/financial_phrasebank")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--local-steps", type=int, default=None)
    parser.add_argument("--local-epochs", type=float, default=1.0)
    parser.add_argument("--fraction-train", type=float, default=1.0)
    parser.add_argument("--rows", type=int, default=None, help="Sample this many training rows.")
    parser.add_argument("--test-rows", type=int, default=None, help="Sample this many test rows.")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--tag", default="fpb")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(args, Path(tmp))
        for kind in args.kinds:
            outcome = _run(kind, settings, args.out, args.tag)
            (args.out / f"{args.tag}-{kind}.json").write_text(json.dumps(outcome, indent=1))
            print(kind, json.dumps(outcome["summary"]["final"]), f"{outcome['wall_s']:.0f}s",
                  f"peak {outcome['peak_rss_bytes'] / 2**20:.0f} MiB", flush=True)
    if all((args.out / f"{args.tag}-{kind}.json").is_file() for kind in KINDS):
        _compare(args.out, args.tag)


if __name__ == "__main__":
    main()

"""What an institution's admission of one message costs: the run record's signature, the
policy check, and (when the policy pins a model) hashing the model folder.

In a deployment Flower starts a fresh ClientApp process per message, so the model hash is
computed once per message, not once per run: that is the number that matters.

    PYTHONPATH=src python bench/admission_overhead.py [--model DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from fedpeft.common.config import RunConfig, to_wire
from fedpeft.common.config.policy import InstitutionPolicy, check_run
from fedpeft.common.crypto import generate_signing_key
from fedpeft.common.modeling.fingerprint import folder_sha256
from fedpeft.common.modeling.resolve import resolve_model_path
from fedpeft.common.wire.run_record import RunRecord, sign_run_record, verify_run_record


def _median_ms(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=RunConfig().model.name)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    cfg = RunConfig.model_validate({"model": {"name": args.model},
                                    "privacy": {"enabled": True, "target_epsilon": 8.0}})
    text = to_wire(cfg)
    key = generate_signing_key()
    record = RunRecord.of(text, "fed", 1, 10)
    signature = sign_run_record(record, key)
    policy = InstitutionPolicy(require_privacy=True, min_noise_multiplier=1.0, max_epsilon=8.0)
    folder = resolve_model_path(args.model)
    from pathlib import Path
    size = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    rows = {
        "server: sign the run record (once per run)": _median_ms(
            lambda: sign_run_record(RunRecord.of(text, "fed", 1, 10), key), args.repeat),
        "institution: rebuild and verify the run record": _median_ms(
            lambda: verify_run_record(RunRecord.of(text, "fed", 1, 10), signature,
                                      key.public_key()), args.repeat),
        "institution: policy check (no pinned model)": _median_ms(
            lambda: check_run(policy, cfg, lambda name: ""), args.repeat),
        f"institution: hash the model folder ({size / 1e6:.1f} MB)": _median_ms(
            lambda: folder_sha256(Path(folder)), max(3, args.repeat // 5)),
    }
    print(f"config text {len(text)} bytes; median of {args.repeat} runs")
    for label, ms in rows.items():
        print(f"| {label} | {ms:.3f} ms |")


if __name__ == "__main__":
    main()

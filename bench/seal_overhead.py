"""Cost of sealing and signing adapters (issue #3 benchmark).

Times seal_update/open_update (institution -> aggregator) and sign_global/verify_global
(aggregator -> institution) and their byte overhead for (a) the default MiniLM LoRA r=8 q/v
adapter with its head, taken from a real Learner, and (b) a LoRA-shaped adapter of 13.6M
float32 parameters (the size of a 7B model's LoRA r=32 on q/v), and compares them with one
round of local training of the MiniLM adapter on 200 built-in rows.

    .venv/bin/python bench/seal_overhead.py
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np
import pandas as pd

from fedpeft.common.config import RunConfig
from fedpeft.common.crypto import (
    Manifest,
    UpdateContext,
    generate_encryption_key,
    generate_signing_key,
    open_update,
    seal_update,
    sign_global,
    verify_global,
)
from fedpeft.common.data.builtin import generate_bank_support
from fedpeft.common.training.learner import Learner


def lora_shaped(total: int, rank: int, hidden: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    layer = 0
    while sum(a.size for a in arrays.values()) + 2 * rank * hidden <= total:
        arrays[f"layers.{layer}.lora_A.weight"] = rng.standard_normal((rank, hidden),
                                                                      dtype=np.float32)
        arrays[f"layers.{layer}.lora_B.weight"] = rng.standard_normal((hidden, rank),
                                                                      dtype=np.float32)
        layer += 1
    return arrays


def timed(reps: int, fn) -> float:
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    train, _ = generate_bank_support(0)
    labels = sorted(train["label"].unique())
    rows = train.sample(200, random_state=0).reset_index(drop=True)
    table = pd.DataFrame({"text": rows["text"], "label": rows["label"].map(labels.index)})
    learner = Learner(RunConfig.model_validate({"model": {"max_seq_length": 64}}), labels)
    train_s = min(learner.train(table, 1, 1).compute_seconds for _ in range(2))
    print(f"MiniLM LoRA r=8 q/v: one local epoch of 200 rows, batch 16: {train_s:.2f} s")

    aggregator = generate_encryption_key()
    institution, server = generate_signing_key(), generate_signing_key()
    ctx = UpdateContext(federation_id="fed", run_id=1, server_round=1, node="bank-a",
                        direction="update")
    gctx = ctx.model_copy(update={"direction": "global"})
    signers = {"bank-a": institution.public_key()}
    for label, arrays in [("MiniLM LoRA r=8 q/v + head", learner.get_state()),
                          ("13.6M params (LoRA r=32 on q/v of a 7B model)",
                           lora_shaped(13_600_000, 32, 4096))]:
        raw = sum(a.nbytes for a in arrays.values())
        manifest = Manifest.of(arrays)
        blob = seal_update(arrays, ctx, aggregator.public_key(), institution)
        glob = sign_global(arrays, gctx, server)
        reps = 7 if raw < 10_000_000 else 3
        t_seal = timed(reps, lambda: seal_update(arrays, ctx, aggregator.public_key(), institution))
        t_open = timed(reps, lambda: open_update(blob, ctx, aggregator, signers, manifest))
        t_sign = timed(reps, lambda: sign_global(arrays, gctx, server))
        t_verify = timed(reps, lambda: verify_global(glob, gctx, server.public_key(), manifest))
        total = t_seal + t_open + t_sign + t_verify
        print(f"{label}: {len(arrays)} tensors, {raw:,} B raw")
        print(f"  update blob +{len(blob) - raw:,} B ({100 * (len(blob) - raw) / raw:.3f}%), "
              f"global blob +{len(glob) - raw:,} B ({100 * (len(glob) - raw) / raw:.3f}%)")
        print(f"  seal {t_seal * 1e3:.1f} ms, open {t_open * 1e3:.1f} ms, sign {t_sign * 1e3:.1f} "
              "ms, "
              f"verify {t_verify * 1e3:.1f} ms; all four {total * 1e3:.1f} ms "
              f"= {100 * total / train_s:.2f}% of the MiniLM local epoch above")


if __name__ == "__main__":
    main()

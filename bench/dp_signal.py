"""Where a DP-SGD step's signal goes, on Financial PhraseBank (issue #10 benchmark).

Example-level DP-SGD adds the same noise to every trainable value, so what it can learn depends
on how a row's clipped gradient is spread over those values. Two measurements explain why the
federated DP-SGD runs in docs/benchmarks.md stay at the majority class:

1. Per-row gradients at the start of training (the packaged MiniLM, a fresh head, LoRA on the
   given modules; FFA, so only B and the head train) on ROWS training rows, without dropout:
   each trainable tensor's median row norm, the head's share of a row's squared norm, and the
   norm of the mean clipped gradient that reaches the adapter and the head under flat and
   per-layer clipping at the given bounds (the noise std per value is sigma x C / batch for
   both, so the ratio of these norms to C is what the noise competes with).
2. Linear probes of the frozen encoder (logistic regression on all training rows, macro-F1 on
   the test rows): what a trained head alone can reach on the [CLS] pooler output that
   BERT-style sequence classification uses, against the mean of the token embeddings that the
   sentence-transformers model was trained for.

    .venv/bin/python bench/dp_signal.py --rows 160 --targets query,value \
        --targets encoder.layer.5.attention.self.query,encoder.layer.5.attention.self.value

Results: bench/results/dp_signal.json. The data's licence forbids shipping it: it is read from
../shared and never copied.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedpeft.common.config import validate_config
from fedpeft.common.training import dp_sgd
from fedpeft.common.training.batches import collate
from fedpeft.common.training.learner import Learner

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "financial_phrasebank"
LABELS = ["negative", "neutral", "positive"]
CLIPS = (0.1, 1.0)


def _table(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path).rename(columns={"sentence": "text"})
    table["label"] = table["label"].map(LABELS.index)
    return table


def row_gradients(targets: list[str], rows: pd.DataFrame) -> tuple[torch.Tensor, list[str],
                                                                     list[int]]:
    """(rows x trainable values) gradients of each row's own loss, tensor names and sizes."""
    cfg = validate_config({"model": {"max_seq_length": 64}, "lora": {"mode": "ffa"},
                           "peft": {"target_modules": targets}})
    learner = Learner(cfg, LABELS)
    model = learner.model
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    examples, pad = learner._encode(rows, "rows"), learner.tokenizer.pad_token_id
    grads = []
    for example in examples:
        model.zero_grad(set_to_none=True)
        dp_sgd.per_example_loss(model, collate([example], pad), "classification").sum().backward()
        grads.append(torch.cat([p.grad.flatten() for _, p in named]))
    return torch.stack(grads), [n for n, _ in named], [p.numel() for _, p in named]


def signal(grads: torch.Tensor, names: list[str], sizes: list[int]) -> dict[str, Any]:
    """Norm shares and the mean clipped gradient per part, flat and per-layer clipped."""
    edges = np.cumsum([0, *sizes])
    parts = [grads[:, a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]
    head = [i for i, name in enumerate(names) if "lora_" not in name]
    norms = grads.norm(dim=1)
    head_sq = sum(parts[i].norm(dim=1) ** 2 for i in head)
    out: dict[str, Any] = {
        "trainable_values": int(grads.shape[1]),
        "adapter_values": int(sum(sizes[i] for i in range(len(sizes)) if i not in head)),
        "row_norm_median": float(norms.median()),
        "head_share_of_row_norm_sq": float((head_sq / norms**2).mean()),
        "tensor_row_norm_median": {name: round(float(p.norm(dim=1).median()), 5)
                                   for name, p in zip(names, parts, strict=True)},
    }
    for clip in CLIPS:
        share = clip / math.sqrt(len(parts))
        flat = [p * torch.clamp(clip / (norms + 1e-6), max=1.0)[:, None] for p in parts]
        layered = [p * torch.clamp(share / (p.norm(dim=1) + 1e-6), max=1.0)[:, None]
                   for p in parts]
        for mode, clipped in (("flat", flat), ("per_layer", layered)):
            means = [c.mean(dim=0) for c in clipped]
            adapter = torch.cat([m for i, m in enumerate(means) if i not in head]).norm()
            on_head = torch.cat([means[i] for i in head]).norm()
            out[f"{mode}_C{clip:g}"] = {"adapter_over_C": float(adapter) / clip,
                                        "head_over_C": float(on_head) / clip}
    return out


def probes(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
    """Macro-F1 of a logistic-regression head on frozen [CLS]-pooler and mean-pooled features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from transformers import AutoModel, AutoTokenizer

    from fedpeft.common.modeling.resolve import packaged_default_model

    path = str(packaged_default_model())
    tokenizer, encoder = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    encoder.eval()

    def features(table: pd.DataFrame) -> dict[str, np.ndarray]:
        found: dict[str, list[np.ndarray]] = {"cls_pooler": [], "mean_pooled": []}
        with torch.no_grad():
            for start in range(0, len(table), 64):
                batch = tokenizer(list(table.text[start:start + 64]), padding=True,
                                  truncation=True, max_length=64, return_tensors="pt")
                output = encoder(**batch)
                mask = batch["attention_mask"].unsqueeze(-1).float()
                found["cls_pooler"].append(output.pooler_output.numpy())
                found["mean_pooled"].append(
                    ((output.last_hidden_state * mask).sum(1) / mask.sum(1)).numpy())
        return {key: np.concatenate(value) for key, value in found.items()}

    train_x, test_x = features(train), features(test)
    results = {}
    for key in train_x:
        for strength in (0.1, 1.0, 10.0):
            model = LogisticRegression(C=strength, max_iter=3000).fit(train_x[key], train.label)
            results[f"{key}_C{strength:g}"] = float(
                f1_score(test.label, model.predict(test_x[key]), average="macro"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--rows", type=int, default=160)
    parser.add_argument("--targets", action="append", default=[],
                        help="Comma-separated LoRA target modules; repeat for several.")
    args = parser.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"{args.data}/train.csv not found: the data lives in ../shared")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    train, test = _table(args.data / "train.csv"), _table(args.data / "test.csv")
    rows = train.sample(args.rows, random_state=0)
    result: dict[str, Any] = {"machine": platform.platform(), "rows": args.rows,
                              "gradients": {}, "probes": probes(train, test)}
    for targets in args.targets or ["query,value"]:
        grads, names, sizes = row_gradients(targets.split(","), rows)
        result["gradients"][targets] = signal(grads, names, sizes)
    out = HERE / "results" / "dp_signal.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Differential privacy, budget and ledgers in a simulated federation: the run stops before the
budget, every round's epsilon is recorded, and both kinds of ledger verify and agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedpeft.common.audit import verify_ledger
from fedpeft.common.config import load_config
from fedpeft.common.privacy import epsilon_for
from fedpeft.common.runs.metrics_log import read_metrics
from fedpeft.report import write_report
from fedpeft.server.round_recorder import PUBLIC_CLIENT_METRICS
from fedpeft.simulation.federated import simulate

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("masked", [False, True])
def test_private_run_stops_at_budget_and_ledgers_agree(write_words_csv, tiny_bert_dir: str,
                                                       tmp_path: Path, masked: bool) -> None:
    sigma, delta = 1.5, 1e-5
    eps = [epsilon_for(sigma, 1.0, rounds, delta) for rounds in (1, 2, 3)]
    target = (eps[1] + eps[2]) / 2  # two rounds fit, the third would not
    train, test = write_words_csv(seed=2, per_label=20, test_rows=10)
    cfg = load_config(overrides={
        "model.name": tiny_bert_dir, "model.max_seq_length": 16, "data.train": train,
        "data.test": test, "data.partition": "iid", "simulation.num_clients": 3,
        "federation.num_rounds": 4, "training.local_steps": 2, "training.batch_size": 8,
        "privacy.enabled": True,
        "privacy.noise_multiplier": sigma, "privacy.delta": delta,
        "privacy.target_epsilon": target, "privacy.clip_norm": 0.5,
        "secure_aggregation.enabled": masked,
        "output.dir": str(tmp_path / "runs"), "output.run_name": "dp",
    })
    report = simulate(cfg)

    records = read_metrics(report.path / "metrics.jsonl")
    assert [r["round"] for r in records] == [0, 1, 2]
    charged = [r["privacy"]["epsilon"] for r in records[1:]]
    assert charged == pytest.approx(eps[:2], rel=1e-9)
    assert all(r["privacy"]["noise"] == ("distributed" if masked else "central")
               for r in records[1:])
    privacy = report.summary["privacy"]
    assert privacy["stopped_early"] is True and privacy["rounds_allowed"] == 2
    assert privacy["epsilon"] <= target

    coordinator = verify_ledger(report.path / "ledger.jsonl")
    assert coordinator.ok and coordinator.complete
    assert coordinator.records == report.summary["ledger"]["records"]
    assert coordinator.head == report.summary["ledger"]["head"]
    lines = [json.loads(line) for line in (report.path / "ledger.jsonl").read_text().splitlines()]
    rounds = [line["body"] for line in lines if line["kind"] == "round"]
    assert [body["privacy"]["epsilon"] for body in rounds] == pytest.approx(eps[:2], rel=1e-9)
    # What each institution says it sent is what the coordinator says it received.
    institutions = sorted((report.path / "institutions").glob("*/ledger.jsonl"))
    assert len(institutions) == 3
    for path in institutions:
        assert verify_ledger(path).ok
        own = [json.loads(line) for line in path.read_text().splitlines()]
        sent = [record["body"] for record in own if record["kind"] == "update-sent"]
        charges = [record["body"] for record in own if record["kind"] == "privacy-charge"]
        assert [c["round"] for c in charges] == [1, 2]  # its lifetime account: each round
        assert all((c["client"]["noise_multiplier"] is None) != masked for c in charges)
        name = path.parent.name
        assert [s["round"] for s in sent] == [1, 2]
        for body in sent:
            received = next(b for b in rounds if b["round"] == body["round"])
            assert received["updates_sha256"][name] == body["sealed_sha256"]
            assert body["clip_norm"] == 0.5
            assert body["form"] == ("sealed, masked" if masked else "sealed")

    _no_per_institution_statistic(report.path, records, lines)


WITHHELD = ("loss", "accuracy", "macro_f1", "num-examples", "dp-unclipped", "secagg-clipped")


def _no_per_institution_statistic(run: Path, records: list[dict], ledger: list[dict]) -> None:
    """Inventory of what a private run publishes about one institution: metrics.jsonl, the
    coordinator's ledger and the report hold its name, hardware timings and update digests,
    never its loss, validation metrics, example count or clipping facts."""
    for record in records[1:]:
        assert record["client_eval"] == {}  # no federated evaluation was asked for
        assert record["failures"] == []  # ... nor refused
        for client in record["clients"]:
            for phase in ("train", "evaluate"):
                assert set(client.get(phase, {})) <= PUBLIC_CLIENT_METRICS, client
            assert "evaluate" not in client
    for line in ledger:
        if line["kind"] == "round":
            assert set(line["body"]) <= {"round", "participants", "participants_verified",
                                         "updates_sha256", "failures",
                                         "secure_aggregation", "privacy", "global_sha256",
                                         "server_eval"}
            assert isinstance(line["body"]["participants"], list)
    paths = write_report(run)
    for path in (paths.markdown, paths.html):
        text = path.read_text(encoding="utf-8")
        for key in WITHHELD:
            assert f"{key}:" not in text and f'"{key}"' not in text, (path.name, key)

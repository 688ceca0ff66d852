"""A real deployment on loopback: SuperLink with TLS and node authentication, three SuperNodes,
secure aggregation of FFA-LoRA updates with one institution on a smaller rank, signed ledger.

Institutions make their own keys (`institution init`), the coordinator enrols their public
requests, and each institution completes its bundle from the public reply; the bundles are
then made read-only, as a container mount makes them, and each institution writes only to
its own state folder.

Everything goes through the `fedpeft` command line in separate processes, as operators run it.
Each process is started in its own session and stopped through its process id (its process
group, so Flower's helper processes go with it) in a `finally` block.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from fedpeft.common.adapter.export import export_merged
from fedpeft.common.audit import verify_ledger
from fedpeft.common.crypto import load_signing_public_key
from fedpeft.deployment.flower_exec import flower_env

from .harness import (
    FEDPEFT,
    Loopback,
    cli,
    free_port,
    processes,
    write_csv,
    write_run_config,
)

pytestmark = pytest.mark.e2e

INSTITUTIONS = ("bank-a", "bank-b", "bank-c")
NEEDLE = 4
"""Values per searched slice (16 bytes): a rank-4 institution's padded B rows differ from the
global in runs of 4 values only, and 16 given bytes do not turn up by chance."""
RANKS = {"bank-c": 4}
"""Heterogeneous ranks: bank-c trains rank 4 of the federation's 8 (`client join --lora-rank`)."""
RUN_TIMEOUT_S = 1200.0
"""A hang guard, not a speed check: on a shared 2-core machine two rounds can take minutes."""


@contextmanager
def _read_only(folders: list[Path]) -> Iterator[dict[Path, dict[str, bytes]]]:
    """The folders made read-only (0500, files 0400) for the block, restored afterwards; yields
    their content so the test can show nothing was written into them (root ignores modes)."""
    modes = {path: path.stat().st_mode & 0o777 for folder in folders
             for path in [folder, *folder.iterdir()]}
    content = {folder: {p.name: p.read_bytes() for p in folder.iterdir()} for folder in folders}
    try:
        for path in modes:
            path.chmod(0o500 if path.is_dir() else 0o400)
        yield content
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def test_federation_over_tls_with_node_auth(tmp_path: Path, tiny_bert_dir: str) -> None:
    fed = Loopback.under(tmp_path)
    env = fed.env
    data = tmp_path / "data"
    data.mkdir()
    test_csv = write_csv(data / "test.csv", 12, 0)
    fed.enrol((*INSTITUTIONS, "rogue", "no-ca"))
    bundles = [fed.bundle(name) for name in INSTITUTIONS]
    logs = tmp_path / "logs"
    config = write_run_config(tmp_path / "run.toml", tiny_bert_dir, rounds=2,
                              round_timeout=600, lora_mode="ffa")

    with _read_only(bundles) as bundle_content, processes(logs, env) as procs:
        fed.start_superlink(procs)
        fed.register((*INSTITUTIONS, "no-ca"))  # "rogue" is deliberately never registered
        registry = json.loads((fed.fed / "institutions.json").read_text())
        assert registry["institutions"]["rogue"]["node_id"] is None

        for index, name in enumerate(INSTITUTIONS):
            rank = ["--lora-rank", str(RANKS[name])] if name in RANKS else []
            procs.start(name, fed.join_argv(name, write_csv(data / f"{name}.csv", 12, index),
                                            *rank))
        rogue = procs.start("rogue", [
            *FEDPEFT, "client", "join", "--superlink", fed.fleet_address,
            "--bundle", str(fed.bundle("rogue")), "--data", str(test_csv),
            "--port", str(free_port()), "--work-dir", str(tmp_path / "rogue"), "--max-wait", "15",
        ])
        no_ca_bundle = fed.bundle("no-ca")
        no_ca = procs.start("no-ca",
                            [  # Flower's SuperNode as is: without a CA it uses system roots
            str(Path(sys.executable).parent / "flower-supernode"), "--superlink", fed.fleet_address,
            "--auth-supernode-private-key", str(no_ca_bundle / "supernode-auth"),
            "--port", str(free_port()), "--max-wait-time", "15",
        ], env=flower_env(None, env))

        run = subprocess.run(
            fed.run_argv(config, test_csv, "loopback"),
            env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
        )
        assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"

        # Refusals: the unregistered key is turned away at activation, the node without the
        # federation's CA at the TLS handshake; neither ever takes part in a round.
        assert rogue.wait(timeout=60) != 0
        assert "Failed to activate SuperNode" in procs.log("rogue")
        assert no_ca.wait(timeout=60) != 0
        assert "CERTIFICATE_VERIFY_FAILED" in procs.log("no-ca")
        command_line = procs.log("superlink").split("\n", 1)[0]
        assert "--enable-supernode-auth" in command_line
        assert "server.key" not in command_line
        for bundle in bundles:  # read-only bundles: nothing was written into them
            assert {p.name: p.read_bytes() for p in bundle.iterdir()} == bundle_content[bundle]

    folder = tmp_path / "runs" / "loopback"
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if r["round"] > 0]
    assert [r["round"] for r in trained] == [1, 2]
    for record in trained:
        assert sorted(c["name"] for c in record["clients"]) == list(INSTITUTIONS)
        assert not record["failures"]
        masked = record["secure_aggregation"]
        assert (masked["participants"], masked["survivors"], masked["dropped"]) == (3, 3, 0)
        assert all("num-examples" not in c["train"] for c in record["clients"])
    assert records[-1]["server_eval"]["loss"] < records[0]["server_eval"]["loss"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["security"]["sealed_updates"] is True
    assert sorted(summary["security"]["institutions"]) == sorted((*INSTITUTIONS, "no-ca", "rogue"))
    # The ledger verifies against the server's key from the federation folder, and each
    # institution's own ledger quotes the same sealed bytes the coordinator received.
    cli(env, "audit", "verify", str(folder), "--key", str(fed.fed / "server" / "signing.pub"),
         "--expect-head", summary["ledger"]["head"])
    ledger = verify_ledger(folder / "ledger.jsonl",
                           load_signing_public_key(fed.fed / "server" / "signing.pub"))
    assert ledger.ok and ledger.key_pinned and ledger.complete
    lines = (folder / "ledger.jsonl").read_text().splitlines()
    rounds = [json.loads(line)["body"] for line in lines if json.loads(line)["kind"] == "round"]
    assert [r["participants"] for r in rounds] == [list(INSTITUTIONS)] * 2
    for name in INSTITUTIONS:
        cli(env, "audit", "verify", str(fed.state(name) / "ledger.jsonl"),
            "--key", str(fed.bundle(name) / "signing.pub"))
        own = [json.loads(line) for line in
               (fed.state(name) / "ledger.jsonl").read_text().splitlines()]
        sent = [record["body"] for record in own if record["kind"] == "update-sent"]
        charged = [record["body"] for record in own if record["kind"] == "privacy-charge"]
        assert len(charged) == len(sent), f"{name}: every update sent was charged"
        assert len(sent) == len(trained), f"{name}: {len(sent)} updates in its own ledger"
        for body, record in zip(sent, trained, strict=True):
            assert record["updates_sha256"][name] == body["sealed_sha256"]
    cli(env, "report", str(folder))
    assert "secure aggregation" in (folder / "report.md").read_text().lower()
    merged = export_merged(folder / "adapter", tmp_path / "merged")
    assert (merged / "config.json").is_file()
    _assert_no_update_at_rest(folder, records[1], data, [fed.fed / "server", logs])


def _assert_no_update_at_rest(run: Path, round_one: dict, data: Path, places: list[Path]) -> None:
    """No institution's round-1 update appears in the clear in the SuperLink's files or logs.

    The updates are rebuilt here, not taken from the run: local training is deterministic
    (fixed seed, no dropout, one step), so the test trains each institution's step again
    from the same initial adapter on the same rows. The rebuild is checked against the run
    (each institution's reported training loss must match exactly) so the search below cannot
    pass by looking for the wrong bytes. Needles are 16-byte slices where each update differs
    from the initial adapter and from the round-1 global (the updates' weighted mean), both of
    which travel in the clear, signed: short enough to lie within one SQLite page, so deleted rows
    left in free pages are searched too.
    """
    from flwr.app import Context, RecordDict

    from fedpeft.client.learner_cache import learner_for
    from fedpeft.client.local_data import local_data
    from fedpeft.common.config import load_config
    from fedpeft.common.training.learner import Learner

    cfg = load_config(run / "config.toml")
    initial = Learner(cfg, cfg.data.labels).get_state()  # what the ServerApp starts from
    reported = {c["name"]: c["train"]["loss"] for c in round_one["clients"]}
    updates = {}
    weights: dict[str, int] = {}
    for name in INSTITUTIONS:
        context = Context(run_id=0, node_id=0, node_config={"data-path": str(data / f"{name}.csv"),
                                                            "name": name},
                          state=RecordDict(), run_config={})
        learner = learner_for(cfg, None, RANKS.get(name))
        learner.set_state(initial)
        result = learner.train(local_data(cfg, context).train, server_round=1,
                               num_rounds=cfg.federation.num_rounds)
        assert result.loss == pytest.approx(reported[name], rel=1e-6), name
        updates[name] = learner.get_state()
        weights[name] = result.num_examples  # travels masked, so rebuilt here too

    total = sum(weights.values())
    mean = {key: sum(updates[n][key].astype(np.float64) * weights[n] for n in INSTITUTIONS) / total
            for key in initial}  # the round-1 global, sent in the clear (signed) in round 2
    needles = []
    for name, update in updates.items():
        for key, tensor in update.items():
            flat = tensor.ravel()
            differs = (flat != initial[key].ravel()) & ~np.isclose(flat, mean[key].ravel(),
                                                                   rtol=1e-5, atol=1e-9)
            runs = np.convolve(differs.astype(int), np.ones(NEEDLE, dtype=int), mode="valid")
            for start in np.flatnonzero(runs == NEEDLE)[:1]:
                needles.append((name, key, flat[start:start + NEEDLE].tobytes()))
    per_institution = {name: sum(n == name for n, _, _ in needles) for name in INSTITUTIONS}
    assert min(per_institution.values()) >= 2, \
        f"too few distinctive update slices: {per_institution}"
    files = [p for place in places for p in place.rglob("*") if p.is_file()]
    assert any(p.name.startswith("state.db") for p in files)
    for path in files:
        content = path.read_bytes()
        for name, key, needle in needles:
            assert needle not in content, f"{name}'s update of {key} in the clear in {path}"

"""The coordinator of a real deployment killed with SIGKILL, twice, and resumed (issue #11).

One federation on loopback as in `test_deployment_faults.py` (SuperLink with TLS and node
authentication, three institutions joined with `fedpeft client join`, secure aggregation on,
sealed and signed updates, four rounds, short deadlines). The institutions are never touched:
the faults are all on the coordinator's side, where the run's state lives.

(a) When round 2's line appears in the coordinator's `metrics.jsonl`, the ServerApp process
    (`flwr-serverapp`, started by the SuperLink's SuperExec in a session of its own, found
    among the SuperLink's descendants) and the `fedpeft run --stream` following it are killed
    with SIGKILL, at once, as an OOM kill or a crashed Python would end them; the SuperLink
    lives on. The operator then runs `fedpeft run --resume RUN.partial`.
(b) When the resumed run has completed round 3, the whole coordinator host goes: the
    SuperLink's process group and every process below it (SuperExec, ServerApp) and the
    resumed `fedpeft run`, all with SIGKILL, as in a power cut. The SuperLink is started
    again on the same ports with the same state database (its nodes and runs), the
    institutions' SuperNodes reconnect by themselves (nobody restarts them), and the run is
    resumed once more.

The trigger fires as soon as the round's line is written, before the checkpoint of that round
may be (it is written after the line and the ledger record): the resumed run may redo that
round, which the test accepts, reading where each resumption went on from the checkpoint.

It then asserts what an auditor of the crash would ask: the run completed; `metrics.jsonl`
holds rounds 0..4 exactly once; the coordinator's ledger verifies and records both
resumptions (`run-resumed`, each after the checkpoint's round, each a new Flower run);
the resumed runs' rounds include all three institutions; every institution's own ledger
verifies, charges (`privacy-charge`) and sends (`update-sent`) no round of any run twice, and
quotes, under the resumed run's id, the sealed bytes the coordinator recorded for it. It prints
the time lost per crash: from the kill to the resumed run's first completed round.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedpeft.common.runs.checkpoint import read_checkpoint

from .harness import (
    Loopback,
    Processes,
    cli,
    descendants,
    kill_pids,
    processes,
    read_jsonl,
    tail,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

INSTITUTIONS = ("bank-a", "bank-b", "bank-c")
ROUNDS = 4
ROUND_DEADLINE_S = 45.0
"""federation.round_timeout, as in test_deployment_faults.py (three ClientApps importing torch
side by side on two cores)."""
HANG_GUARD_S = 600.0
"""How long any one step may take before the test fails instead of hanging (not a speed check)."""
SERVERAPP = "flwr-serverapp"
"""The ServerApp process's executable, in its command line."""
NAME = "crash"


def _completed(folder: Path, number: int) -> bool:
    """Whether `folder`'s metrics.jsonl has round `number`'s line (the trigger)."""
    return any(r["round"] == number for r in read_jsonl(folder / "metrics.jsonl"))


def _kinds(folder: Path) -> list[str]:
    """The kinds of the coordinator ledger's records, in order."""
    return [r["kind"] for r in read_jsonl(folder / "ledger.jsonl")]


def _nodes_alive(procs: Processes, nodes: dict[str, subprocess.Popen[bytes]],
                 condition: Callable[[], bool]) -> Callable[[], bool]:
    """`condition`, failing at once if an institution's `client join` has ended: the faults
    are the coordinator's, so an institution that goes down with it is a finding (and the run
    would otherwise wait for it until the hang guard)."""
    def check() -> bool:
        for name, node in nodes.items():
            if node.poll() is not None:
                raise AssertionError(f"{name}'s client join ended ({node.returncode}) while the "
                                     f"coordinator was down\n{tail(procs.log_path(name), 60)}")
        return condition()
    return check


def _resume_and_time(procs: Processes, fed: Loopback, partial: Path, name: str,
                     nodes: dict[str, subprocess.Popen[bytes]], killed_at: float,
                     resumptions: int) -> tuple[subprocess.Popen[bytes], int, float]:
    """`fedpeft run --resume` of `partial` (log NAME); returns the process, the checkpoint's
    round it went on after, and the seconds from `killed_at` to its first completed round."""
    after = read_checkpoint(partial).round
    resumed = procs.start(name, fed.resume_argv(partial))
    logs = (procs.log_path(name), partial / "run.log", procs.log_path("superlink"),
            *(procs.log_path(n) for n in INSTITUTIONS))
    # The resumed ServerApp cuts metrics.jsonl back to the checkpoint before it appends its
    # `run-resumed` record: only then is a line of round after + 1 its own.
    wait_for(_nodes_alive(procs, nodes,
                          lambda: _kinds(partial).count("run-resumed") >= resumptions),
             HANG_GUARD_S, f"{name}: the run-resumed record", logs, alive=resumed)
    wait_for(_nodes_alive(procs, nodes, lambda: _completed(partial, after + 1)), HANG_GUARD_S,
             f"{name}: round {after + 1} to complete", logs, alive=resumed)
    return resumed, after, time.monotonic() - killed_at


def _serverapps(superlink: subprocess.Popen[bytes]) -> dict[int, str]:
    """The ServerApp processes below the SuperLink (one per run under way)."""
    return {pid: line for pid, line in descendants(superlink).items() if SERVERAPP in line}


def test_coordinator_killed_and_resumed(tmp_path: Path, tiny_bert_dir: str) -> None:
    fed, csv, test_csv, config = Loopback.for_faults(
        tmp_path, tiny_bert_dir, INSTITUTIONS, rounds=ROUNDS, round_timeout=ROUND_DEADLINE_S)
    partial = tmp_path / "runs" / f"{NAME}.partial"
    lost: dict[str, float] = {}

    with processes(tmp_path / "logs", fed.env) as procs:
        superlink = fed.start_superlink(procs)
        fed.register(INSTITUTIONS)
        nodes = {name: procs.start(name, fed.join_argv(name, csv[name]))
                 for name in INSTITUTIONS}
        run = procs.start("run", fed.run_argv(config, test_csv, NAME))
        logs = (procs.log_path("run"), partial / "run.log", procs.log_path("superlink"),
                *(procs.log_path(name) for name in INSTITUTIONS))

        # (a) round 2's line: kill -9 the ServerApp and `fedpeft run`; the SuperLink stays.
        wait_for(lambda: _completed(partial, 2), HANG_GUARD_S, "round 2 to complete", logs,
                 alive=run)
        apps = _serverapps(superlink)
        assert len(apps) == 1, apps
        killed_at = time.monotonic()
        kill_pids(apps)
        procs.kill(run)
        assert not (tmp_path / "runs" / NAME).exists(), "the run must not have completed"
        first, after_a, lost["serverapp"] = _resume_and_time(
            procs, fed, partial, "resume-1", nodes, killed_at, resumptions=1)

        # (b) the resumed run's round 3: kill -9 the whole coordinator host, SuperLink too.
        wait_for(_nodes_alive(procs, nodes, lambda: _completed(partial, 3)), HANG_GUARD_S,
                 "round 3 to complete", (procs.log_path("resume-1"), *logs), alive=first)
        host = descendants(superlink)  # SuperExec and ServerApp: before the group goes
        apps = {pid: line for pid, line in host.items() if SERVERAPP in line}
        assert len(apps) == 1, host
        # The ServerApp first: it would notice a dead SuperLink and fail the run cleanly
        # (folder renamed .failed), which a power cut does not allow.
        killed_at = time.monotonic()
        kill_pids(apps)
        procs.kill(superlink)
        kill_pids(host)
        procs.kill(first)
        superlink = fed.start_superlink(procs, "superlink.restarted")
        second, after_b, lost["host"] = _resume_and_time(
            procs, fed, partial, "resume-2", nodes, killed_at, resumptions=2)

        wait_for(_nodes_alive(procs, nodes, lambda: second.poll() is not None), HANG_GUARD_S,
                 "the resumed run to end", (procs.log_path("resume-2"),
                                            procs.log_path("superlink.restarted"), *logs))
        assert second.returncode == 0, tail(procs.log_path("resume-2"), 80)
        for name, node in nodes.items():
            assert node.poll() is None, tail(procs.log_path(name))

    folder = tmp_path / "runs" / NAME
    _check_coordinator(fed, folder, (after_a, after_b))
    _check_institutions(fed, folder)
    records = read_jsonl(folder / "metrics.jsonl")
    print(f"\ncoordinator crash: resumed after rounds {after_a} and {after_b}; seconds from "
          f"kill to the resumed run's first completed round: {lost}; round_s: "
          f"{ {r['round']: r.get('time', {}).get('round_s') for r in records[1:]} }")


def _check_coordinator(fed: Loopback, folder: Path, afters: tuple[int, int]) -> None:
    """Rounds 0..4 once each; a ledger that verifies and records both resumptions; all three
    institutions in every round of the resumed runs."""
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed"
    records = read_jsonl(folder / "metrics.jsonl")
    assert [r["round"] for r in records] == list(range(ROUNDS + 1)), "every round exactly once"
    participants = {r["round"]: r["participants"] for r in records[1:]}
    assert all(participants[n] == list(INSTITUTIONS) for n in participants if n > afters[0]), \
        participants

    server_key = fed.fed / "server" / "signing.pub"
    cli(fed.env, "audit", "verify", str(folder), "--key", str(server_key),
        "--expect-head", summary["ledger"]["head"])
    lines = read_jsonl(folder / "ledger.jsonl")
    assert [line["kind"] for line in lines][-1] == "run-end"
    resumed = [line["body"] for line in lines if line["kind"] == "run-resumed"]
    assert [body["resumed_after_round"] for body in resumed] == list(afters), resumed
    # No client-level DP here, so no account to charge for a round redone after a crash (with
    # it, run_checkpoint.charge_superseded counts that round's first release too).
    assert all(body["superseded_releases_charged"] == [] for body in resumed), resumed
    started = [line["body"]["run_id"] for line in lines if line["kind"] == "run-start"]
    run_ids = [*started, *(body["run_id"] for body in resumed)]
    assert len(started) == 1 and len(set(run_ids)) == 3, run_ids
    # Each round's last record is the one that counts (a record written before a crash and
    # after the checkpoint is superseded by the round redone after the resumption).
    signed = {line["body"]["round"]: line["body"]["participants"]
              for line in lines if line["kind"] == "round"}
    assert signed == participants


def _run_of_round(folder: Path) -> dict[int, int]:
    """round -> the Flower run id that completed it, from the coordinator's ledger."""
    run_of: dict[int, int] = {}
    current = 0
    for line in read_jsonl(folder / "ledger.jsonl"):
        if line["kind"] in ("run-start", "run-resumed"):
            current = int(line["body"]["run_id"])
        elif line["kind"] == "round":
            run_of[int(line["body"]["round"])] = current
    return run_of


def _check_institutions(fed: Loopback, folder: Path) -> None:
    """Each institution's ledger verifies, charges and sends each (run, round) at most once,
    and quotes the sealed bytes the coordinator recorded, under the run that recorded them."""
    records = read_jsonl(folder / "metrics.jsonl")
    run_of = _run_of_round(folder)
    for name in INSTITUTIONS:
        own = fed.state(name) / "ledger.jsonl"
        cli(fed.env, "audit", "verify", str(own), "--key", str(fed.bundle(name) / "signing.pub"))
        lines = read_jsonl(own)
        for kind in ("privacy-charge", "update-sent"):
            seen = Counter(_run_round(line["body"]) for line in lines if line["kind"] == kind)
            assert all(count == 1 for count in seen.values()), (name, kind, seen)
        sent = {_run_round(line["body"]): line["body"]["sealed_sha256"]
                for line in lines if line["kind"] == "update-sent"}
        for record in records[1:]:
            if name in record["participants"]:
                key = (run_of[record["round"]], record["round"])
                assert sent.get(key) == record["updates_sha256"][name], (name, key)


def _run_round(body: dict[str, Any]) -> tuple[int, int]:
    return int(body["run_id"]), int(body["round"])

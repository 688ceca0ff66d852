"""Time lost to a coordinator crash: kill -9 in the middle of a round, then `fedpeft resume`.

Three real `fedpeft` processes on this machine, with the packaged MiniLM on the built-in
dataset (3 institutions, 4 rounds, FedAdam, client-level DP so the accountant is restored too):

1. an uninterrupted `fedpeft simulate` (wall time T_full);
2. the same run, killed with SIGKILL (its whole process group: Ray included) half a round
   after round K's line appeared in metrics.jsonl (wall time T_killed);
3. `fedpeft resume` of the killed folder (wall time T_resume).

Time lost = T_killed + T_resume - T_full, split into the work redone (from the last checkpoint
to the kill, half a round plus that round's few milliseconds between its metrics line and its
checkpoint) and the restart (the resumed process's wall time minus the rounds it ran: process
start, Ray and its actors, model and data loading; it does not evaluate round 0 again).

    nice -n 10 .venv/bin/python bench/crash_resume.py [--rounds 4] [--kill-after 2] \
        [--simulate-args --model DIR --data TRAIN --test-data TEST ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "fedpeft.cli.main", *args],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _records(path: Path) -> list[dict]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


def _finish(process: subprocess.Popen[bytes]) -> int:
    code = process.wait()
    with contextlib.suppress(ProcessLookupError):  # anything the run left in its group
        os.killpg(process.pid, signal.SIGKILL)
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--kill-after", type=int, default=2, help="round K")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "crash_resume.json")
    parser.add_argument("--simulate-args", nargs=argparse.REMAINDER, default=[],
                        help="further `fedpeft simulate` arguments (e.g. --model DIR --data F)")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedpeft-crash-bench-"))
    common = ["simulate", "--clients", str(options.clients), "--rounds", str(options.rounds),
              "--strategy", "fedadam", "--out", str(work), "--set", "privacy.enabled=true",
              "--set", "privacy.noise_multiplier=0.8", *options.simulate_args]

    started = time.monotonic()
    full = _start([*common, "--name", "full"], work / "full.log")
    assert _finish(full) == 0, (work / "full.log").read_text()[-2000:]
    t_full = time.monotonic() - started
    full_records = _records(work / "full" / "metrics.jsonl")
    round_s = [r["time"]["round_s"] for r in full_records[1:]]

    started = time.monotonic()
    killed = _start([*common, "--name", "crash"], work / "crash.log")
    metrics = work / "crash.partial" / "metrics.jsonl"
    while not any(r["round"] == options.kill_after for r in _records(metrics)):
        assert killed.poll() is None, (work / "crash.log").read_text()[-2000:]
        time.sleep(0.05)
    checkpointed = time.monotonic()
    time.sleep(round_s[options.kill_after] / 2)  # half way through round K + 1
    os.killpg(killed.pid, signal.SIGKILL)
    _finish(killed)
    t_killed = time.monotonic() - started
    redone = time.monotonic() - checkpointed

    started = time.monotonic()
    resumed = _start(["resume", str(work / "crash.partial")], work / "resume.log")
    assert _finish(resumed) == 0, (work / "resume.log").read_text()[-2000:]
    t_resume = time.monotonic() - started
    records = _records(work / "crash" / "metrics.jsonl")
    assert [r["round"] for r in records] == list(range(options.rounds + 1))
    # The first round of any process also starts Ray's actors and loads the model in them, so
    # the restart is measured against warm rounds (the uninterrupted run's rounds 2..N).
    warm_round_s = sorted(round_s[1:])[len(round_s[1:]) // 2]
    resumed_rounds = (options.rounds - options.kill_after) * warm_round_s
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "rounds": options.rounds, "clients": options.clients,
        "kill_after_round": options.kill_after,
        "t_full_s": t_full, "t_killed_s": t_killed, "t_resume_s": t_resume,
        "lost_s": t_killed + t_resume - t_full, "redone_s": redone,
        "restart_s": t_resume - resumed_rounds, "warm_round_s": warm_round_s,
        "first_round_s": round_s[0],
        "epsilon_full": full_records[-1]["privacy"]["epsilon"],
        "epsilon_resumed": records[-1]["privacy"]["epsilon"],
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

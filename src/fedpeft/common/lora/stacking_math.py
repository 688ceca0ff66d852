"""FLoRA stacking: the arithmetic of the global update, in plain numpy.

A stacked state holds, per LoRA layer, a pair (A: R x in, B: out x R) with the LoRA scaling
already folded into B, so the layer's update is exactly B @ A whatever R is; every other key
(a classification head) is an ordinary trainable. Concatenating factors adds their products:

    [B_g, c_1 B_1, ..., c_m B_m] @ [A_g; A_1; ...; A_m] = B_g A_g + sum_i c_i B_i A_i

so with c_i = w_i / W the new global is the old one plus the example-weighted mean of the
institutions' updates, exactly, for any mix of ranks. R grows each round; once it passes
min(in, out) the pair is replaced by an exact factorisation of the same product, whose rank
can never exceed min(in, out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedpeft.common.errors import ModelError
from fedpeft.common.lora.keys import is_lora, is_lora_a, lora_a_key, lora_b_key, lora_modules

Shapes = Mapping[str, tuple[int, ...]]

RELATIVE_CUTOFF = 1e-7
"""Singular values below this fraction of the largest are rounding noise, not update."""


def dense_delta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The layer update B @ A (out x in) a stacked pair stands for, in float64."""
    return b.astype(np.float64) @ a.astype(np.float64)


def _drop_null(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Without the components that add nothing (a zero column of B or row of A); keeps one
    so the pair stays a valid rank >= 1 LoRA."""
    live = np.any(b != 0, axis=0) & np.any(a != 0, axis=1)
    if not live.any():
        return a[:1] * 0, b[:, :1] * 0
    return a[live], b[:, live]


def compact(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An exact factorisation of B @ A with the fewest components (rank <= min(in, out)).

    QR of both factors brings the product to a small R x R core whose SVD gives the
    rank-revealing form; the root of each singular value goes to either side, so neither
    factor dwarfs the other. Values below RELATIVE_CUTOFF of the largest are dropped.
    """
    q_b, r_b = np.linalg.qr(b.astype(np.float64))
    q_a, r_a = np.linalg.qr(a.astype(np.float64).T)
    u, s, vt = np.linalg.svd(r_b @ r_a.T)
    keep = max(1, int(np.count_nonzero(s > RELATIVE_CUTOFF * s[0]))) if s[0] > 0 else 1
    root = np.sqrt(s[:keep])
    new_b = (q_b @ u[:, :keep]) * root
    new_a = root[:, None] * (vt[:keep] @ q_a.T)
    return new_a.astype(a.dtype), new_b.astype(b.dtype)


def _checked_weights(weights: Sequence[float]) -> np.ndarray:
    array = np.asarray(weights, dtype=np.float64)
    if array.size == 0 or np.any(array < 0) or array.sum() <= 0:
        raise ModelError(f"stacking: weights {list(weights)} must be >= 0 with a positive sum")
    return array / array.sum()


def stack(global_state: Mapping[str, np.ndarray],
          updates: Sequence[tuple[Mapping[str, np.ndarray], float]]) -> dict[str, np.ndarray]:
    """The next global: `global_state` plus the weighted mean of the updates' LoRA products.

    Each update is (an institution's state: its own A_i and scaling-folded B_i, heads;
    its weight, the number of examples). Heads are the weighted mean of the updates' heads:
    they are trained values, not increments. Keys keep the global's order.
    """
    shares = _checked_weights([weight for _, weight in updates])
    for state, _ in updates:
        update_rank(shapes_of(global_state), shapes_of(state))
    result: dict[str, np.ndarray] = {}
    for module in lora_modules(global_state):
        a_key, b_key = lora_a_key(module), lora_b_key(module)
        a = np.concatenate([global_state[a_key]] + [state[a_key] for state, _ in updates])
        b = np.concatenate([global_state[b_key]] + [
            (share * state[b_key].astype(np.float64)).astype(global_state[b_key].dtype)
            for (state, _), share in zip(updates, shares)], axis=1)
        a, b = _drop_null(a, b)
        if a.shape[0] > min(a.shape[1], b.shape[0]):
            a, b = compact(a, b)
        result[a_key], result[b_key] = a, b
    for key, value in global_state.items():
        if not is_lora(key):
            mean = sum(share * state[key].astype(np.float64)
                       for (state, _), share in zip(updates, shares))
            result[key] = np.asarray(mean, dtype=value.dtype)
    return {key: result[key] for key in global_state}


def shapes_of(state: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def stack_ranks(reference: Shapes, shapes: Shapes) -> dict[str, int]:
    """Per LoRA layer, the rank of a stacked state whose layout matches `reference`.

    Same keys as `reference`; each pair A (R x in), B (out x R) with the reference's in and
    out and one R >= 1 for both; every other key the reference's shape. ModelError names the
    first key that does not fit.
    """
    missing = [key for key in reference if key not in shapes]
    if missing:
        raise ModelError(f"stacked state: key {missing[0]!r} is missing "
                         f"({len(missing)} missing in all)")
    unexpected = [key for key in shapes if key not in reference]
    if unexpected:
        raise ModelError(f"stacked state: unexpected key {unexpected[0]!r} "
                         f"({len(unexpected)} unexpected in all)")
    ranks: dict[str, int] = {}
    for module in lora_modules(reference):
        a_key, b_key = lora_a_key(module), lora_b_key(module)
        a, b = shapes[a_key], shapes[b_key]
        (_, in_features), (out_features, _) = reference[a_key], reference[b_key]
        if len(a) != 2 or len(b) != 2 or a[1] != in_features or b[0] != out_features \
                or a[0] != b[1] or a[0] < 1:
            raise ModelError(f"stacked state: {module!r} has A {a} and B {b}, expected "
                             f"(R, {in_features}) and ({out_features}, R) with one R >= 1")
        ranks[module] = a[0]
    for key, shape in reference.items():
        if not is_lora(key) and tuple(shapes[key]) != tuple(shape):
            raise ModelError(f"stacked state: {key!r} has shape {tuple(shapes[key])}, "
                             f"expected {tuple(shape)}")
    return ranks


def update_rank(global_shapes: Shapes, update: Shapes, max_rank: int | None = None) -> int:
    """The rank of an institution's stacking update, checked against the global's layout.

    An update is the global's keys with A (r x in) and B (out x r) for one r in
    [1, max_rank] across all layers, and every other key the global's shape; the aggregator
    can check a sealed update's manifest with this before opening it.
    """
    ranks = set(stack_ranks(global_shapes, update).values())
    if len(ranks) > 1:
        raise ModelError(f"stacking update: LoRA ranks {sorted(ranks)} differ between layers")
    rank = ranks.pop() if ranks else 0
    if max_rank is not None and rank > max_rank:
        raise ModelError(f"stacking update: rank {rank} exceeds peft.r={max_rank}")
    return rank


def update_shapes(global_shapes: Shapes, rank: int) -> dict[str, tuple[int, ...]]:
    """The shapes of a stacking update of `rank` for a global of `global_shapes`."""
    shapes: dict[str, tuple[int, ...]] = {}
    for key, shape in global_shapes.items():
        if is_lora_a(key):
            shapes[key] = (rank, shape[1])
        elif is_lora(key):
            shapes[key] = (shape[0], rank)
        else:
            shapes[key] = tuple(shape)
    return shapes

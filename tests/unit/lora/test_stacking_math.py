"""FLoRA stacking arithmetic in plain numpy: exact sums, exact compaction, update layouts."""

from __future__ import annotations

import numpy as np
import pytest

from fedpeft.common.errors import ModelError
from fedpeft.common.lora.ranks import first_columns, pad_columns
from fedpeft.common.lora.stacking_math import (
    compact,
    dense_delta,
    shapes_of,
    stack,
    update_rank,
    update_shapes,
)

A, B, HEAD = "m.q.lora_A.weight", "m.q.lora_B.weight", "m.classifier.weight"
A2, B2 = "m.v.lora_A.weight", "m.v.lora_B.weight"
IN, OUT = 6, 5


def _state(rng: np.random.Generator, rank: int, rank2: int | None = None) -> dict[str, np.ndarray]:
    rank2 = rank if rank2 is None else rank2
    return {
        A: rng.normal(size=(rank, IN)).astype(np.float32),
        B: rng.normal(size=(OUT, rank)).astype(np.float32),
        A2: rng.normal(size=(rank2, IN)).astype(np.float32),
        B2: rng.normal(size=(OUT, rank2)).astype(np.float32),
        HEAD: rng.normal(size=(2, IN)).astype(np.float32),
    }


def test_stacked_delta_is_the_global_plus_the_weighted_mean_of_products() -> None:
    rng = np.random.default_rng(0)
    global_state = _state(rng, 1)
    updates = [(_state(rng, 1), 10.0), (_state(rng, 2), 30.0)]
    new = stack(global_state, updates)
    for a, b in ((A, B), (A2, B2)):
        expected = dense_delta(global_state[a], global_state[b]) + sum(
            w / 40.0 * dense_delta(s[a], s[b]) for s, w in updates)
        np.testing.assert_allclose(dense_delta(new[a], new[b]), expected, rtol=1e-5, atol=1e-5)
        assert new[a].shape == (1 + 1 + 2, IN) and new[a].dtype == np.float32
    np.testing.assert_allclose(new[HEAD], 0.25 * updates[0][0][HEAD] + 0.75 * updates[1][0][HEAD],
                               rtol=1e-6)
    assert list(new) == list(global_state)


def test_components_that_add_nothing_are_dropped() -> None:
    rng = np.random.default_rng(1)
    global_state = _state(rng, 3)
    global_state[B][:] = 0  # the initial global of a run: B = 0
    global_state[B2][:] = 0
    new = stack(global_state, [(_state(rng, 2), 1.0)])
    assert new[A].shape == (2, IN) and new[B].shape == (OUT, 2)
    nothing = stack(global_state, [(global_state, 1.0)])  # B = 0 everywhere
    assert nothing[A].shape == (1, IN) and not nothing[B].any()  # still a valid rank-1 LoRA


def test_compaction_keeps_the_product_and_bounds_the_rank() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(9, IN)).astype(np.float32)
    b = rng.normal(size=(OUT, 9)).astype(np.float32)
    new_a, new_b = compact(a, b)
    assert new_a.shape == (OUT, IN) and new_b.shape == (OUT, OUT)  # rank <= min(in, out)
    np.testing.assert_allclose(dense_delta(new_a, new_b), dense_delta(a, b), rtol=1e-5, atol=1e-5)
    low_a = np.concatenate([a[:2], a[:2] * 3.0])  # four components spanning two directions
    low_b = rng.normal(size=(OUT, 4)).astype(np.float32)
    assert compact(low_a, low_b)[0].shape[0] == 2


def test_stacking_past_min_in_out_compacts_exactly() -> None:
    rng = np.random.default_rng(3)
    global_state = _state(rng, 4)
    updates = [(_state(rng, 3), 1.0), (_state(rng, 2), 2.0)]
    new = stack(global_state, updates)
    assert new[A].shape[0] <= min(IN, OUT)
    expected = dense_delta(global_state[A], global_state[B]) + sum(
        w / 3.0 * dense_delta(s[A], s[B]) for s, w in updates)
    np.testing.assert_allclose(dense_delta(new[A], new[B]), expected, rtol=1e-5, atol=1e-5)


def test_update_layout_is_the_globals_at_one_rank() -> None:
    rng = np.random.default_rng(4)
    global_shapes = shapes_of(_state(rng, 7, 3))  # layers of a global can differ in rank
    assert update_shapes(global_shapes, 2) == {A: (2, IN), B: (OUT, 2), A2: (2, IN),
                                               B2: (OUT, 2), HEAD: (2, IN)}
    assert update_rank(global_shapes, update_shapes(global_shapes, 2), max_rank=4) == 2
    with pytest.raises(ModelError, match="ranks \\[1, 2\\] differ"):
        update_rank(global_shapes, shapes_of(_state(rng, 1, 2)))
    with pytest.raises(ModelError, match="rank 5 exceeds peft.r=4"):
        update_rank(global_shapes, update_shapes(global_shapes, 5), max_rank=4)
    with pytest.raises(ModelError, match="'m.classifier.weight' has shape"):
        update_rank(global_shapes, {**update_shapes(global_shapes, 2), HEAD: (3, IN)})
    with pytest.raises(ModelError, match="'m.q' has A"):
        update_rank(global_shapes, {**update_shapes(global_shapes, 2), B: (OUT, 3)})
    with pytest.raises(ModelError, match="unexpected key 'x'"):
        update_rank(global_shapes, {**update_shapes(global_shapes, 2), "x": (1,)})


def test_stack_refuses_a_misshapen_update_and_zero_weights() -> None:
    rng = np.random.default_rng(5)
    global_state = _state(rng, 2)
    with pytest.raises(ModelError, match="is missing"):
        stack(global_state, [({A: global_state[A]}, 1.0)])
    with pytest.raises(ModelError, match="positive sum"):
        stack(global_state, [(global_state, 0.0)])


def test_padding_and_slicing_round_trip() -> None:
    b = np.arange(6, dtype=np.float32).reshape(3, 2)
    padded = pad_columns(b, 4)
    assert padded.shape == (3, 4) and not padded[:, 2:].any()
    np.testing.assert_array_equal(first_columns(padded, 2), b)

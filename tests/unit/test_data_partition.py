"""Splitting rows among institutions: disjoint, covering, seeded, skewed on request."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedpeft.common.data import partition_indices, partition_names
from fedpeft.common.errors import ConfigError, DataError

LABELS = ["a", "b", "c", "d", "e"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """1000 rows, labels uniform, plus a site column with three uneven sites."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "text": [f"row {i}" for i in range(1000)],
            "label": rng.choice(LABELS, size=1000),
            "site": rng.choice(["north", "south", "east"], size=1000, p=[0.5, 0.3, 0.2]),
        }
    )


def _split(
    frame: pd.DataFrame, spec: str, n: int = 5, seed: int = 1, minimum: int = 1
) -> list[np.ndarray]:
    return partition_indices(frame, spec, n, seed, "label", minimum)


def _top_label_share(frame: pd.DataFrame, partitions: list[np.ndarray]) -> float:
    """Mean share of each institution's most common label: 0.2 is balanced, 1.0 one label each."""
    return float(
        np.mean(
            [frame["label"].iloc[rows].value_counts(normalize=True).iloc[0] for rows in partitions]
        )
    )


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.5", "column:site"])
def test_disjoint_covering_and_deterministic(frame: pd.DataFrame, spec: str) -> None:
    n = 3 if spec.startswith("column") else 5
    partitions = _split(frame, spec, n)
    together = np.concatenate(partitions)
    assert len(together) == len(frame) and len(np.unique(together)) == len(frame)
    assert all(np.array_equal(rows, np.sort(rows)) for rows in partitions)
    again = _split(frame, spec, n)
    assert all(np.array_equal(a, b) for a, b in zip(partitions, again, strict=True))


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.5"])
def test_seed_changes_the_split(frame: pd.DataFrame, spec: str) -> None:
    assert not np.array_equal(_split(frame, spec, seed=1)[0], _split(frame, spec, seed=2)[0])


def test_iid_is_balanced(frame: pd.DataFrame) -> None:
    partitions = _split(frame, "iid")
    assert {len(rows) for rows in partitions} == {200}
    assert _top_label_share(frame, partitions) < 0.3


def test_small_alpha_dirichlet_is_label_skewed(frame: pd.DataFrame) -> None:
    assert _top_label_share(frame, _split(frame, "dirichlet:0.1")) > 0.6
    assert _top_label_share(frame, _split(frame, "dirichlet:1000")) < 0.3


def test_column_partition_follows_the_column(frame: pd.DataFrame) -> None:
    partitions = _split(frame, "column:site", 3)
    names = partition_names(frame, "column:site", 3)
    assert names == ["east", "north", "south"]
    for name, rows in zip(names, partitions, strict=True):
        assert set(frame["site"].iloc[rows]) == {name}
        assert len(rows) == (frame["site"] == name).sum()


def test_numeric_column_values_become_names(frame: pd.DataFrame) -> None:
    numbered = frame.assign(hospital=frame["site"].map({"north": 10, "south": 2, "east": 7}))
    names = partition_names(numbered, "column:hospital", 3)
    assert names == ["10", "2", "7"]
    rows = _split(numbered, "column:hospital", 3)[0]
    assert set(numbered["hospital"].iloc[rows]) == {10}


def test_names_for_generated_splits(frame: pd.DataFrame) -> None:
    assert partition_names(frame, "iid", 3) == ["institution-0", "institution-1", "institution-2"]


def test_column_count_must_match_institutions(frame: pd.DataFrame) -> None:
    with pytest.raises(
        DataError, match=r"column:site gives 3 institutions but simulation.num_clients=5"
    ):
        _split(frame, "column:site", 5)


def test_missing_partition_column(frame: pd.DataFrame) -> None:
    with pytest.raises(
        DataError, match=r"column 'hospital' not found \(columns: text, label, site\)"
    ):
        _split(frame, "column:hospital", 3)


def test_row_without_institution(frame: pd.DataFrame) -> None:
    gappy = frame.copy()
    gappy.loc[4, "site"] = ""
    with pytest.raises(DataError, match=r"column 'site' is empty in row 5"):
        _split(gappy, "column:site", 3)


def test_fewer_rows_than_institutions(frame: pd.DataFrame) -> None:
    with pytest.raises(
        DataError, match=r"4 training row\(s\) cannot be split among 5 institutions"
    ):
        _split(frame.head(4), "iid")


def test_institution_below_min_partition_size_is_named(frame: pd.DataFrame) -> None:
    tiny_site = frame.head(20).assign(site=["solo"] + ["big"] * 19)
    with pytest.raises(DataError, match=r"institution 'solo' gets 1 row\(s\)"):
        _split(tiny_site, "column:site", n=2, minimum=2)


def test_impossible_dirichlet_is_a_clear_error(frame: pd.DataFrame) -> None:
    # Five labels at alpha 0.01 land on about five institutions; ten cannot all get rows.
    with pytest.raises(
        DataError, match=r"dirichlet:0.01: 10 Dirichlet draws.*min_partition_size=5"
    ):
        _split(frame.head(100), "dirichlet:0.01", n=10, minimum=5)


def test_too_few_rows_for_the_minimum_size(frame: pd.DataFrame) -> None:
    with pytest.raises(
        DataError,
        match=r"12 training row\(s\) cannot give each of 5 institutions data.min_partition_size=3",
    ):
        _split(frame.head(12), "iid", n=5, minimum=3)


def test_dirichlet_needs_labels(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"dirichlet:0.5 needs class labels"):
        partition_indices(frame, "dirichlet:0.5", 5, 0, None, 1)


@pytest.mark.parametrize("spec", ["random", "dirichlet:-1", "dirichlet:x", "column:"])
def test_bad_spec(frame: pd.DataFrame, spec: str) -> None:
    with pytest.raises(ConfigError, match=r"expected iid, dirichlet:ALPHA"):
        _split(frame, spec)

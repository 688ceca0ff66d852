"""The built-in bank-support dataset has the properties the default demo relies on."""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path

import pandas as pd
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from fedpeft.common.config import BUILTIN_DATASET
from fedpeft.common.data import BUILTIN_DATASETS, generate_bank_support, load_table, write_builtin
from fedpeft.common.errors import DataError


@pytest.fixture(scope="module")
def bank() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_bank_support()


def test_deterministic_per_seed(bank: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = generate_bank_support()
    pd.testing.assert_frame_equal(train, bank[0])
    pd.testing.assert_frame_equal(test, bank[1])
    assert not generate_bank_support(seed=1)[0].equals(bank[0])


def test_shape_and_columns(bank: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = bank
    assert list(train.columns) == ["text", "label", "site"] == list(test.columns)
    assert set(train["label"]) == set(test["label"]) and train["label"].nunique() == 5
    assert train["site"].nunique() == 5
    assert train.groupby("site").size().between(120, 200).all()
    assert train["text"].str.len().min() > 20


def test_each_site_is_skewed_to_one_or_two_classes(bank: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    shares = pd.crosstab(bank[0]["site"], bank[0]["label"], normalize="index")
    ranked = pd.DataFrame(
        [sorted(row, reverse=True) for row in shares.to_numpy()], index=shares.index
    )
    assert (ranked[0] > 0.5).all()
    assert (ranked[0] + ranked[1] > 0.75).all()
    assert (ranked[4] > 0).all()  # every class still occurs at every site
    assert shares.idxmax(axis=1).nunique() == 5  # each class is some site's main business


def test_test_set_is_balanced_over_sites_and_classes(
    bank: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    counts = pd.crosstab(bank[1]["site"], bank[1]["label"])
    assert counts.shape == (5, 5)
    assert (counts.to_numpy() == 12).all()


def test_sentences_are_varied(bank: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train = bank[0]
    assert train["text"].nunique() >= 600
    without_numbers = train["text"].str.replace(r"[\d$,]+", "#", regex=True)
    assert without_numbers.nunique() >= 500


def test_sites_use_their_own_vocabulary(bank: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    words = {
        site: {word for text in rows["text"] for word in re.findall(r"[a-z]+", text.lower())}
        for site, rows in bank[0].groupby("site")
    }
    for first, second in combinations(words, 2):
        overlap = len(words[first] & words[second]) / len(words[first] | words[second])
        assert overlap < 0.5, (first, second, overlap)
    for site, vocabulary in words.items():
        others = set().union(*(words[other] for other in words if other != site))
        assert len(vocabulary - others) / len(vocabulary) > 0.25, site


def _accuracy(train: pd.DataFrame, test: pd.DataFrame) -> float:
    model = make_pipeline(CountVectorizer(), LogisticRegression(max_iter=2000))
    model.fit(train["text"], train["label"])
    return float((model.predict(test["text"]) == test["label"]).mean())


def test_one_site_alone_generalizes_much_worse_than_all_sites(
    bank: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """The demo's claim in miniature: pooling (or federating) the banks beats any single bank."""
    train, test = bank
    pooled = _accuracy(train, test)
    assert 0.8 <= pooled < 1.0  # learnable, but ambiguity and noise keep it below perfect
    for site, rows in train.groupby("site"):
        assert _accuracy(rows, test) < pooled - 0.25, site


def test_write_builtin_round_trips_through_load_table(
    tmp_path: Path, bank: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train_path, test_path = write_builtin(BUILTIN_DATASET, tmp_path / "demo")
    assert (train_path.name, test_path.name) == ("bank-support-train.csv", "bank-support-test.csv")
    pd.testing.assert_frame_equal(load_table(train_path), bank[0], check_dtype=False)
    pd.testing.assert_frame_equal(load_table(test_path), bank[1], check_dtype=False)
    assert set(BUILTIN_DATASETS) == {BUILTIN_DATASET}


def test_unknown_builtin_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'builtin:nope'.*available: builtin:bank-support"):
        write_builtin("builtin:nope", tmp_path)

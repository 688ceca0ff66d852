"""From config to training tables: column mapping, label ids, test sets, institutions, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedpeft.common.config import RunConfig, load_config
from fedpeft.common.data import (
    FederatedData,
    TaskTable,
    generate_bank_support,
    load_federated_data,
    load_institution_data,
    split_validation,
)
from fedpeft.common.errors import ConfigError, DataError


def _cfg(**overrides: Any) -> RunConfig:
    return load_config(overrides=overrides)


def _reviews(rows: int = 60) -> pd.DataFrame:
    """A user's file with its own column names: sentence / category / clinic."""
    return pd.DataFrame(
        {
            "sentence": [f"message number {i}" for i in range(rows)],
            "category": [["billing", "outage", "sales"][i % 3] for i in range(rows)],
            "clinic": [["x", "y"][i % 2] for i in range(rows)],
        }
    )


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "train.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def _file_cfg(train: str, **overrides: Any) -> RunConfig:
    return _cfg(
        **{"data.train": train, "data.text_column": "sentence", "data.label_column": "category"}
        | overrides
    )


@pytest.fixture(scope="module")
def builtin() -> FederatedData:
    return load_federated_data(_cfg(), 5)


def test_builtin_default(builtin: FederatedData) -> None:
    raw_train, raw_test = generate_bank_support()
    assert builtin.label_names == ["account", "card", "fraud", "loan", "payments"]
    assert builtin.partition_names == sorted(raw_train["site"].unique())
    assert list(builtin.train.frame.columns) == ["text", "label"]
    assert builtin.train.frame["text"].tolist() == raw_train["text"].tolist()
    ids = builtin.train.frame["label"].to_numpy()
    assert [builtin.label_names[i] for i in ids] == raw_train["label"].tolist()
    assert len(builtin.test.frame) == len(raw_test) == 300
    for name, rows in zip(builtin.partition_names, builtin.partitions, strict=True):
        assert set(raw_train["site"].iloc[rows]) == {name}
    assert len(builtin.pooled().frame) == sum(len(rows) for rows in builtin.partitions)


def test_builtin_ignores_configured_column_names() -> None:
    data = load_federated_data(_cfg(**{"data.text_column": "sentence"}), 5)
    assert list(data.train.frame.columns) == ["text", "label"]


def test_client_split_is_disjoint_deterministic_and_validates(builtin: FederatedData) -> None:
    train, validation = builtin.client_split(3, 0.1, seed=7)
    assert len(train.frame) + len(validation.frame) == len(builtin.partitions[3])
    assert len(validation.frame) == round(0.1 * len(builtin.partitions[3]))
    mine = builtin.train.frame.iloc[builtin.partitions[3]]
    together = pd.concat([train.frame, validation.frame])
    assert sorted(together["text"]) == sorted(mine["text"])
    again_train, again_validation = builtin.client_split(3, 0.1, seed=7)
    pd.testing.assert_frame_equal(again_train.frame, train.frame)
    pd.testing.assert_frame_equal(again_validation.frame, validation.frame)
    assert builtin.partition_names[3] in train.source
    with pytest.raises(DataError, match=r"institution index 5 out of range"):
        builtin.client_split(5, 0.1, seed=7)


@pytest.mark.parametrize(
    ("rows", "fraction", "expected"), [(1, 0.5, 0), (2, 0.01, 1), (10, 0.0, 0), (10, 0.99, 9)]
)
def test_split_validation_sizes(rows: int, fraction: float, expected: int) -> None:
    table = TaskTable(
        pd.DataFrame({"text": [f"t{i}" for i in range(rows)], "label": [0] * rows}), "t"
    )
    train, validation = split_validation(table, fraction, seed=0)
    assert len(validation.frame) == expected and len(train.frame) == rows - expected
    assert list(validation.frame.index) == list(range(expected))


def test_file_with_held_out_test_split(tmp_path: Path) -> None:
    data = load_federated_data(
        _file_cfg(_csv(tmp_path, _reviews()), **{"data.test_fraction": 0.25}), 3
    )
    assert data.label_names == ["billing", "outage", "sales"]
    assert len(data.test.frame) == 15 and len(data.train.frame) == 45
    assert not set(data.train.frame["text"]) & set(data.test.frame["text"])
    assert data.test.frame["label"].value_counts().tolist() == [5, 5, 5]  # stratified
    assert "held-out" in data.test.source
    assert data.partition_names == ["institution-0", "institution-1", "institution-2"]
    assert sorted(np.concatenate(data.partitions).tolist()) == list(range(45))


def test_held_out_split_keeps_every_label_in_training(tmp_path: Path) -> None:
    frame = pd.concat(
        [
            _reviews(30),
            pd.DataFrame({"sentence": ["lonely"], "category": ["rare"], "clinic": ["x"]}),
        ]
    )
    data = load_federated_data(_file_cfg(_csv(tmp_path, frame), **{"data.test_fraction": 0.5}), 2)
    assert "rare" in data.label_names
    assert data.label_names.index("rare") in set(data.train.frame["label"])


def test_column_partition_of_a_file_survives_the_hold_out(tmp_path: Path) -> None:
    frame = _reviews()
    data = load_federated_data(
        _file_cfg(_csv(tmp_path, frame), **{"data.partition": "column:clinic"}), 2
    )
    assert data.partition_names == ["x", "y"]
    clinic_of = dict(zip(frame["sentence"], frame["clinic"], strict=True))
    for name, rows in zip(data.partition_names, data.partitions, strict=True):
        assert {clinic_of[text] for text in data.train.frame["text"].iloc[rows]} == {name}


def test_separate_test_file_and_configured_label_order(tmp_path: Path) -> None:
    test = _csv(tmp_path, _reviews(9), "test.csv")
    cfg = _file_cfg(
        _csv(tmp_path, _reviews()),
        **{"data.test": test, "data.labels": ["sales", "outage", "billing", "other"]},
    )
    data = load_federated_data(cfg, 2)
    assert data.label_names == ["sales", "outage", "billing", "other"]
    assert len(data.train.frame) == 60 and len(data.test.frame) == 9
    assert data.train.frame["label"].iloc[0] == 2  # "billing"


def test_dirichlet_partition_of_a_file(tmp_path: Path) -> None:
    cfg = _file_cfg(_csv(tmp_path, _reviews(300)), **{"data.partition": "dirichlet:0.3"})
    data = load_federated_data(cfg, 3)
    assert sum(len(rows) for rows in data.partitions) == len(data.train.frame)
    assert all(len(rows) >= 2 for rows in data.partitions)


def test_missing_column_names_file_column_and_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path, _reviews().rename(columns={"category": "label2"}))
    with pytest.raises(
        DataError,
        match=r"train\.csv: column 'category' not found \(columns: sentence, label2, clinic\)",
    ):
        load_federated_data(_file_cfg(path), 2)


@pytest.mark.parametrize(("column", "value"), [("sentence", "   "), ("category", "")])
def test_empty_cell_names_file_column_and_first_row(
    tmp_path: Path, column: str, value: str
) -> None:
    frame = _reviews()
    frame.loc[[6, 9], column] = value
    with pytest.raises(
        DataError, match=rf"train\.csv: column '{column}' is empty in row 7 \(2 empty row"
    ):
        load_federated_data(_file_cfg(_csv(tmp_path, frame)), 2)


def test_missing_label_in_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"sentence": "a", "category": "x"}\n{"sentence": "b", "category": null}\n')
    with pytest.raises(DataError, match=r"train\.jsonl: column 'category' is empty in row 2"):
        load_federated_data(_file_cfg(str(path)), 1)


def test_train_label_outside_configured_labels(tmp_path: Path) -> None:
    cfg = _file_cfg(_csv(tmp_path, _reviews()), **{"data.labels": ["billing", "outage"]})
    with pytest.raises(
        DataError,
        match=r"train\.csv: label 'sales' in column 'category' \(row 3\) is not in data\.labels",
    ):
        load_federated_data(cfg, 2)


def test_repeated_configured_label(tmp_path: Path) -> None:
    cfg = _file_cfg(
        _csv(tmp_path, _reviews()), **{"data.labels": ["billing", "outage", "sales", "outage"]}
    )
    with pytest.raises(ConfigError, match=r"data\.labels lists 'outage' more than once"):
        load_federated_data(cfg, 2)


def test_test_label_never_seen_in_training(tmp_path: Path) -> None:
    test = _reviews(4)
    test.loc[2, "category"] = "refund"
    cfg = _file_cfg(_csv(tmp_path, _reviews()), **{"data.test": _csv(tmp_path, test, "test.csv")})
    with pytest.raises(
        DataError,
        match=r"test\.csv: label 'refund' in column 'category' \(row 3\) "
        r"is not a label of the training data .*train\.csv",
    ):
        load_federated_data(cfg, 2)


def test_fewer_rows_than_institutions(tmp_path: Path) -> None:
    cfg = _file_cfg(
        _csv(tmp_path, _reviews()), **{"data.test": _csv(tmp_path, _reviews(3), "test.csv")}
    )
    with pytest.raises(
        DataError, match=r"60 training row\(s\) cannot be split among 61 institutions"
    ):
        load_federated_data(cfg, 61)


def test_institution_without_enough_rows(tmp_path: Path) -> None:
    frame = _reviews(40)
    frame.loc[0, "clinic"] = "tiny"
    cfg = _file_cfg(
        _csv(tmp_path, frame),
        **{"data.partition": "column:clinic", "data.test": _csv(tmp_path, _reviews(3), "test.csv")},
    )
    with pytest.raises(
        DataError,
        match=r"institution 'tiny' gets 1 row\(s\), fewer than data\.min_partition_size=2",
    ):
        load_federated_data(cfg, 3)


def test_causal_lm_uses_prompt_and_response(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"question": [f"q{i}" for i in range(20)], "answer": [f"a{i}" for i in range(20)]}
    )
    cfg = _cfg(
        **{
            "model.task": "causal-lm",
            "data.train": _csv(tmp_path, frame),
            "data.prompt_column": "question",
            "data.response_column": "answer",
        }
    )
    data = load_federated_data(cfg, 2)
    assert data.label_names is None
    assert list(data.train.frame.columns) == ["prompt", "response"]
    assert len(data.test.frame) == 4 and len(data.train.frame) == 16
    assert load_institution_data(cfg.data.train, cfg, None).frame["response"].iloc[0] == "a0"


def test_builtin_is_classification_only() -> None:
    with pytest.raises(
        ConfigError, match=r"builtin:bank-support.*classification.*model\.task='causal-lm'"
    ):
        load_federated_data(_cfg(**{"model.task": "causal-lm"}), 5)


def test_institution_file_uses_the_federation_label_ids(tmp_path: Path) -> None:
    path = _csv(tmp_path, _reviews(6), "site.csv")
    cfg = _file_cfg(path)
    table = load_institution_data(path, cfg, ["sales", "outage", "billing"])
    assert table.frame["label"].tolist() == [2, 1, 0, 2, 1, 0]
    assert table.source == path


def test_institution_file_with_an_unknown_label(tmp_path: Path) -> None:
    path = _csv(tmp_path, _reviews(6), "site.csv")
    with pytest.raises(
        DataError,
        match=r"site\.csv: label 'sales' in column 'category' \(row 3\) "
        r"is not one of the federation's labels \(billing, outage\)",
    ):
        load_institution_data(path, _file_cfg(path), ["billing", "outage"])


def test_institution_file_needs_label_names_for_classification(tmp_path: Path) -> None:
    path = _csv(tmp_path, _reviews(6), "site.csv")
    with pytest.raises(
        ConfigError, match=r"site\.csv: classification needs the federation's label names"
    ):
        load_institution_data(path, _file_cfg(path), None)


def test_missing_partition_column_names_the_file(tmp_path: Path) -> None:
    cfg = _file_cfg(_csv(tmp_path, _reviews()), **{"data.partition": "column:hospital"})
    with pytest.raises(
        DataError, match=r"train\.csv: data\.partition=column:hospital: column 'hospital' not found"
    ):
        load_federated_data(cfg, 2)


@pytest.mark.parametrize(
    ("clients", "expected"),
    [
        (3, ["Alder Federal Bank + Dunmore Savings & Loan",
             "Brightwater Credit Union + Eastgate Commercial Bank", "Corvid"]),
        (1, [" + ".join(sorted(generate_bank_support()[0]["site"].unique()))]),
        (7, ["Alder Federal Bank (1/2)", "Alder Federal Bank (2/2)",
             "Brightwater Credit Union (1/2)", "Brightwater Credit Union (2/2)", "Corvid",
             "Dunmore Savings & Loan", "Eastgate Commercial Bank"]),
    ],
)
def test_builtin_banks_fold_into_the_requested_institutions(
    builtin: FederatedData, clients: int, expected: list[str]
) -> None:
    """`--clients N` on the built-in data gives N institutions, each made of whole banks or
    of one bank's share, so they stay as different as the banks are."""
    folded = load_federated_data(_cfg(**{"simulation.num_clients": clients}), clients)
    assert folded.partition_names == expected
    rows = np.concatenate(folded.partitions)
    assert sorted(rows) == list(range(len(builtin.train.frame)))  # disjoint and covering
    sites = generate_bank_support()[0]["site"]
    for name, part in zip(folded.partition_names, folded.partitions, strict=True):
        banks = {bank.split(" (")[0] for bank in name.split(" + ")}
        assert set(sites.iloc[part]) == banks


def test_builtin_explicit_column_partition_still_refuses_another_count() -> None:
    with pytest.raises(DataError, match=r"column:site gives 5 institutions but simulation.num_clients=3"):
        load_federated_data(_cfg(**{"data.partition": "column:site"}), 3)


def test_simulate_clients_flag_on_builtin_data(tiny_bert_dir: str) -> None:
    """What `fedpeft simulate --clients 3` prepares: three institutions, config to match."""
    from fedpeft.cli.options import build_config
    from fedpeft.simulation.preparation import prepare_run

    prepared = prepare_run(build_config(None, clients=3, model=tiny_bert_dir))
    assert prepared.cfg.simulation.num_clients == 3
    assert len(prepared.data.partitions) == 3

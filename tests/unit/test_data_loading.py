"""Reading data files: every supported format, and one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fedpeft.common.data import load_table
from fedpeft.common.errors import DataError

ROWS = pd.DataFrame(
    {"text": ["good service", "card declined", "NA"], "label": ["pos", "neg", "neg"]}
)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix in {".jsonl", ".json"}:
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("name", ["data.csv", "data.jsonl", "data.json", "data.parquet", "data.pq"])
def test_each_format_round_trips(tmp_path: Path, name: str) -> None:
    path = _write(ROWS, tmp_path / name)
    frame = load_table(path)
    assert frame["text"].tolist() == ROWS["text"].tolist()
    assert frame["label"].tolist() == ROWS["label"].tolist()
    assert list(frame.index) == [0, 1, 2]


def test_explicit_format_overrides_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "export.txt"
    ROWS.to_csv(path, index=False)
    assert len(load_table(path, "csv")) == 3


def test_csv_keeps_text_that_looks_like_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,label\nNA,1\nNone,2\n")
    frame = load_table(path)
    assert frame["text"].tolist() == ["NA", "None"]
    assert frame["label"].tolist() == ["1", "2"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        load_table(tmp_path / "nope.csv")


def test_unknown_suffix_names_it(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"data\.xlsx: unknown file type '\.xlsx'.*data\.format"):
        load_table(path)


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("bad.csv", 'text,label\n"unterminated,1\n', "csv"),
        ("bad.jsonl", '{"text": "a", "label": "x"}\n{not json\n', "jsonl"),
        ("bad.parquet", "this is not parquet at all", "parquet"),
    ],
)
def test_unparsable_file_names_file_and_reason(
    tmp_path: Path, name: str, content: str, kind: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=rf"{name}: cannot read as {kind}: \S") as info:
        load_table(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "content"), [("e.csv", ""), ("h.csv", "text,label\n"), ("e.jsonl", "")]
)
def test_file_without_rows(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=rf"{name}: file is empty \(no rows\)"):
        load_table(path)

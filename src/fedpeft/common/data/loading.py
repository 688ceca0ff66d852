"""Read one tabular data file (CSV, JSON Lines, Parquet) into a DataFrame.

Every way a file can be unusable (missing, unknown suffix, unparsable, no rows) becomes one
`DataError` line naming the file, so a user sees which of several files to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pandas as pd

from fedpeft.common.errors import DataError

TableFormat = Literal["auto", "csv", "jsonl", "parquet"]

_SUFFIX_FORMATS: dict[str, Literal["csv", "jsonl", "parquet"]] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def _read_csv(path: Path) -> pd.DataFrame:
    # Everything as text and no NA guessing: a message that reads "None" or "NA" is data, and
    # labels are compared as strings anyway. Empty cells become "" and are caught as empty.
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _read_jsonl(path: Path) -> pd.DataFrame:
    # dtype=False keeps labels like "007" as written instead of guessing numbers.
    return pd.read_json(path, lines=True, dtype=False)


_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "csv": _read_csv,
    "jsonl": _read_jsonl,
    "parquet": pd.read_parquet,
}


def detect_format(path: Path) -> Literal["csv", "jsonl", "parquet"]:
    """The format implied by the file suffix (`.json` is read as JSON Lines)."""
    try:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        known = ", ".join(_SUFFIX_FORMATS)
        raise DataError(
            f"{path}: unknown file type {path.suffix or '(no suffix)'!r} "
            f"(expected one of {known}, or set data.format)"
        ) from None


def load_table(path: str | Path, fmt: TableFormat = "auto") -> pd.DataFrame:
    """Read `path` as a DataFrame with a fresh 0..n-1 index (row numbers in messages use it)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    kind = detect_format(path) if fmt == "auto" else fmt
    try:
        frame = _READERS[kind](path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (no rows)") from None
    except (ValueError, OSError) as err:
        # pandas, pyarrow and the JSON parser all report bad content as ValueError subclasses
        # (ParserError, ArrowInvalid, UnicodeDecodeError); keep only their first line.
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: cannot read as {kind}: {reason}") from None
    if len(frame) == 0:
        raise DataError(f"{path}: file is empty (no rows)")
    return frame.reset_index(drop=True)

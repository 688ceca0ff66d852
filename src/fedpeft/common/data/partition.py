"""Split one table's rows among simulated institutions.

The split itself is Flower's (`flwr_datasets.partitioner`), so a fedpeft simulation partitions
exactly like the Flower baselines it is compared with; this module adds what those partitioners
leave to the caller: row positions instead of copied datasets, a fixed seed, and one-line
errors when a spec cannot give every institution enough rows.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from fedpeft.common.errors import ConfigError, DataError

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

_ROW = "__fedpeft_row__"
"""Column carrying each row's position through the partitioner, which returns copied rows."""


@dataclass(frozen=True)
class PartitionSpec:
    """A parsed `data.partition` value."""

    kind: Literal["iid", "dirichlet", "column"]
    alpha: float = 0.0
    column: str = ""


def parse_partition_spec(spec: str) -> PartitionSpec:
    """`iid`, `dirichlet:ALPHA` or `column:NAME`, as `DataConfig` validated it."""
    kind, _, arg = spec.strip().partition(":")
    if kind == "iid" and not arg:
        return PartitionSpec("iid")
    if kind == "column" and arg:
        return PartitionSpec("column", column=arg)
    if kind == "dirichlet":
        try:
            alpha = float(arg)
        except ValueError:
            alpha = 0.0
        if alpha > 0:
            return PartitionSpec("dirichlet", alpha=alpha)
    raise ConfigError(
        f"data.partition={spec!r}: expected iid, dirichlet:ALPHA (ALPHA > 0) or column:NAME"
    )


def _natural_ids(frame: pd.DataFrame, column: str) -> pd.Series:
    """The column as text: institution names are strings, and sorting them must match Flower's."""
    if column not in frame.columns:
        available = ", ".join(map(str, frame.columns))
        raise DataError(
            f"data.partition=column:{column}: column {column!r} not found (columns: {available})"
        )
    values = frame[column]
    missing = values.isna() | (values.astype(str).str.strip() == "")
    if missing.any():
        row = int(np.flatnonzero(missing.to_numpy())[0]) + 1
        raise DataError(
            f"data.partition=column:{column}: column {column!r} is empty in row {row}; "
            "every row needs an institution"
        )
    return values.astype(str)


def partition_names(frame: pd.DataFrame, spec: str, num_partitions: int) -> list[str]:
    """Institution names in partition order: the column's sorted values, else `institution-i`."""
    parsed = parse_partition_spec(spec)
    if parsed.kind == "column":
        return sorted(_natural_ids(frame, parsed.column).unique())
    return [f"institution-{index}" for index in range(num_partitions)]


def _partitioner(
    frame: pd.DataFrame,
    parsed: PartitionSpec,
    num_partitions: int,
    seed: int,
    label_column: str | None,
    min_partition_size: int,
) -> Partitioner:
    # Imported here: `datasets` takes seconds to import, and most callers of this package (the
    # CLI, clients reading their own file) never partition.
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, NaturalIdPartitioner

    positions = np.arange(len(frame))
    partitioner: Partitioner
    if parsed.kind == "iid":
        # IidPartitioner cuts contiguous shards; shuffling first makes them random yet seeded.
        data = {_ROW: np.random.default_rng(seed).permutation(positions)}
        partitioner = IidPartitioner(num_partitions=num_partitions)
    elif parsed.kind == "dirichlet":
        if label_column is None:
            raise DataError(f"data.partition=dirichlet:{parsed.alpha:g} needs class labels")
        data = {_ROW: positions, "label": frame[label_column].astype(str).to_numpy()}
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=parsed.alpha,
            min_partition_size=min_partition_size,
            seed=seed,
        )
    else:
        data = {_ROW: positions, "site": _natural_ids(frame, parsed.column).to_numpy()}
        partitioner = NaturalIdPartitioner(partition_by="site")
    partitioner.dataset = Dataset.from_pandas(pd.DataFrame(data), preserve_index=False)
    return partitioner


def check_sizes(partitions: list[np.ndarray], names: list[str], min_partition_size: int) -> None:
    needed = max(1, min_partition_size)
    for name, rows in zip(names, partitions, strict=True):
        if len(rows) < needed:
            raise DataError(
                f"institution {name!r} gets {len(rows)} row(s), fewer than "
                f"data.min_partition_size={needed}"
            )


def partition_indices(
    frame: pd.DataFrame,
    spec: str,
    num_partitions: int,
    seed: int,
    label_column: str | None,
    min_partition_size: int,
) -> list[np.ndarray]:
    """Sorted row positions of `frame` for each institution; disjoint, covering, seeded."""
    parsed = parse_partition_spec(spec)
    if num_partitions < 1 or len(frame) < num_partitions:
        raise DataError(
            f"{len(frame)} training row(s) cannot be split among {num_partitions} institutions"
        )
    if len(frame) < num_partitions * min_partition_size:
        raise DataError(
            f"{len(frame)} training row(s) cannot give each of {num_partitions} institutions "
            f"data.min_partition_size={min_partition_size} rows"
        )
    names = partition_names(frame, spec, num_partitions)
    if len(names) != num_partitions:
        raise DataError(
            f"data.partition={spec} gives {len(names)} institutions but "
            f"simulation.num_clients={num_partitions}"
        )
    partitioner = _partitioner(
        frame, parsed, num_partitions, seed, label_column, min_partition_size
    )
    try:
        # DirichletPartitioner warns on every failed draw (the outcome is reported below) and
        # NaturalIdPartitioner draws a progress bar for a split that takes milliseconds.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            partitions = [
                np.sort(np.asarray(partitioner.load_partition(index)[_ROW], dtype=np.int64))
                for index in range(num_partitions)
            ]
    except ValueError:
        # Only DirichletPartitioner raises here, after 10 draws that all left someone too small.
        raise DataError(
            f"data.partition={spec}: 10 Dirichlet draws all left an institution with fewer than "
            f"data.min_partition_size={min_partition_size} rows ({len(frame)} rows, "
            f"{num_partitions} institutions); raise ALPHA or lower data.min_partition_size"
        ) from None
    check_sizes(partitions, names, min_partition_size)
    return partitions

"""Turn the configured data into what training needs: normalized tables, label ids, institutions.

Server, simulation and clients all come through here, so a file is checked once, the same way,
wherever it is read: columns exist, no row is empty, every label maps to an id, every
institution gets rows. Each problem is one `DataError` naming the file, column, row or value.

Row numbers in messages count data rows from 1 (the header is not a row).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedpeft.common.config.models import RunConfig
from fedpeft.common.data.builtin import builtin_dataset
from fedpeft.common.data.loading import load_table
from fedpeft.common.data.fold import fold_sites
from fedpeft.common.data.partition import check_sizes, partition_indices, partition_names
from fedpeft.common.errors import ConfigError, DataError

_BUILTIN_COLUMNS = {"text": "text", "label": "label"}


@dataclass(frozen=True, eq=False)
class TaskTable:
    """Normalized examples for one task, with their origin so later errors can name it.

    classification: columns "text" (str) and "label" (int id into the label names);
    causal-lm: columns "prompt" and "response" (str). Index is 0..n-1.
    """

    frame: pd.DataFrame
    source: str


@dataclass(frozen=True, eq=False)
class FederatedData:
    """Everything a simulation needs: shared train/test tables and who holds which rows."""

    train: TaskTable
    test: TaskTable
    label_names: list[str] | None
    """Class names in id order; None for causal-lm."""
    partitions: list[np.ndarray]
    """Row positions into `train.frame`, one array per institution."""
    partition_names: list[str]

    def client_split(
        self, index: int, validation_fraction: float, seed: int
    ) -> tuple[TaskTable, TaskTable]:
        """Institution `index`'s rows as (local train, local validation), the same every call."""
        if not 0 <= index < len(self.partitions):
            raise DataError(
                f"institution index {index} out of range: there are {len(self.partitions)}"
            )
        rows = self.train.frame.iloc[self.partitions[index]].reset_index(drop=True)
        local = TaskTable(rows, f"{self.train.source} [{self.partition_names[index]}]")
        return split_validation(local, validation_fraction, seed)

    def pooled(self) -> TaskTable:
        """All training rows in one table: the centralized baseline federation is compared to."""
        return self.train


@dataclass(frozen=True)
class _Examples:
    """Validated rows under task column names, still with string labels and the file's index."""

    frame: pd.DataFrame
    source: str
    columns: dict[str, str]
    """Task column name -> the column it came from, for messages."""


def _preview(values: Iterable[object], limit: int = 12) -> str:
    items = [str(value) for value in values]
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... ({len(items)} in all)"


def _task_columns(cfg: RunConfig) -> dict[str, str]:
    data = cfg.data
    if cfg.model.task == "classification":
        return {"text": data.text_column, "label": data.label_column}
    return {"prompt": data.prompt_column, "response": data.response_column}


def _examples(raw: pd.DataFrame, source: str, columns: dict[str, str]) -> _Examples:
    """Pick and check the task columns; values become str (labels are compared as strings)."""
    for column in columns.values():
        if column not in raw.columns:
            raise DataError(
                f"{source}: column {column!r} not found (columns: {_preview(raw.columns)})"
            )
    picked: dict[str, pd.Series] = {}
    for name, column in columns.items():
        values = raw[column]
        empty = (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
        if empty.any():
            row = int(raw.index[np.flatnonzero(empty)[0]]) + 1
            raise DataError(
                f"{source}: column {column!r} is empty in row {row} "
                f"({int(empty.sum())} empty row(s))"
            )
        picked[name] = values.astype(str)
    return _Examples(pd.DataFrame(picked, index=raw.index), source, columns)


def _hold_out(
    examples: _Examples, fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions; per label when stratified, and never a label's last row."""
    frame = examples.frame
    groups = [np.arange(len(frame))]
    if stratify:
        labels = frame["label"].to_numpy()
        groups = [np.flatnonzero(labels == label) for label in sorted(set(labels))]
    rng = np.random.default_rng(seed)
    test_parts = []
    for positions in groups:
        shuffled = rng.permutation(positions)
        test_parts.append(shuffled[: min(len(shuffled) - 1, round(fraction * len(shuffled)))])
    test = np.sort(np.concatenate(test_parts))
    if len(test) == 0:
        raise DataError(
            f"{examples.source}: {len(frame)} row(s) are too few to hold out "
            f"data.test_fraction={fraction} as a test set; give data.test"
        )
    return np.setdiff1d(np.arange(len(frame)), test), test


def _label_names(labels: pd.Series, configured: list[str] | None) -> list[str]:
    """The configured names (checked for repeats), else the sorted training labels."""
    if configured is None:
        return sorted(labels.unique())
    duplicated = pd.Series(configured)[pd.Series(configured).duplicated()]
    if not duplicated.empty:
        raise ConfigError(f"data.labels lists {duplicated.iloc[0]!r} more than once")
    return list(configured)


def _encode(examples: _Examples, label_names: list[str], known_as: str) -> pd.DataFrame:
    """Replace string labels by ids; a label outside `label_names` is an error naming it."""
    ids = {name: index for index, name in enumerate(label_names)}
    labels = examples.frame["label"]
    unknown = (~labels.isin(ids)).to_numpy()
    if unknown.any():
        position = int(np.flatnonzero(unknown)[0])
        raise DataError(
            f"{examples.source}: label {labels.iloc[position]!r} in column "
            f"{examples.columns['label']!r} (row {int(labels.index[position]) + 1}) is not "
            f"{known_as} ({_preview(label_names)})"
        )
    return examples.frame.assign(label=labels.map(ids).astype("int64")).reset_index(drop=True)


def _table(examples: _Examples, label_names: list[str] | None, known_as: str) -> TaskTable:
    if label_names is None:
        return TaskTable(examples.frame.reset_index(drop=True), examples.source)
    return TaskTable(_encode(examples, label_names, known_as), examples.source)


def _read_train(cfg: RunConfig) -> tuple[pd.DataFrame, _Examples, pd.DataFrame | None]:
    """(raw train frame, its examples, the built-in test frame or None)."""
    data = cfg.data
    if not data.is_builtin:
        raw = load_table(data.train, data.format)
        return raw, _examples(raw, data.train, _task_columns(cfg)), None
    if cfg.model.task != "classification":
        raise ConfigError(
            f"data.train={data.train!r} is a classification dataset but model.task="
            f"{cfg.model.task!r}; give a file with {data.prompt_column!r} and "
            f"{data.response_column!r} columns"
        )
    raw, test = builtin_dataset(data.train)()
    return raw, _examples(raw, data.train, _BUILTIN_COLUMNS), test


def load_federated_data(cfg: RunConfig, num_partitions: int | None) -> FederatedData:
    """Train, test, label names and per-institution rows for a simulation of `num_partitions`.

    `None` means "as many as the data says": one per value for a `column:` partition (the
    number of sites is a fact of the data, not something a user should have to repeat).
    """
    data = cfg.data
    classification = cfg.model.task == "classification"
    train_raw, train, builtin_test = _read_train(cfg)
    if data.test is not None:
        test = _examples(load_table(data.test, data.format), data.test, _task_columns(cfg))
    elif builtin_test is not None:
        test = _examples(builtin_test, f"{data.train} (test split)", _BUILTIN_COLUMNS)
    else:
        keep, held = _hold_out(train, data.test_fraction, cfg.training.seed, classification)
        test = _Examples(
            train.frame.iloc[held], f"{data.train} (held-out test split)", train.columns
        )
        train = _Examples(train.frame.iloc[keep], train.source, train.columns)
        train_raw = train_raw.iloc[keep]
    label_names = _label_names(train.frame["label"], data.labels) if classification else None
    known_as = (
        "in data.labels"
        if data.labels is not None
        else f"a label of the training data {data.train}"
    )
    train_table = _table(train, label_names, known_as)
    test_table = _table(test, label_names, known_as)
    partitions, names = _institutions(
        train_raw.reset_index(drop=True),
        train,
        cfg,
        num_partitions,
        train.columns["label"] if classification else None,
    )
    return FederatedData(train_table, test_table, label_names, partitions, names)


def _institutions(
    raw: pd.DataFrame,
    train: _Examples,
    cfg: RunConfig,
    num_partitions: int | None,
    label_column: str | None,
) -> tuple[list[np.ndarray], list[str]]:
    """Partition the raw rows (a `column:` spec may name any column of the file)."""
    spec = cfg.data.effective_partition
    if cfg.data.partition is None and cfg.data.is_builtin and num_partitions is not None:
        # The default split of the built-in data is by bank; a user asking for another count
        # gets that many institutions made of whole or shared banks (see `fold_sites`).
        partitions, names = _institutions(raw, train, cfg, None, label_column)
        partitions, names = fold_sites(partitions, names, num_partitions, cfg.training.seed)
        try:
            check_sizes(partitions, names, cfg.data.min_partition_size)
        except DataError as err:
            raise DataError(f"{train.source}: {err}") from None
        return partitions, names
    try:
        if num_partitions is None:
            if not spec.startswith("column:"):
                raise ConfigError(f"data.partition={spec}: the number of institutions must be given")
            num_partitions = len(partition_names(raw, spec, 0))
        partitions = partition_indices(
            raw, spec, num_partitions, cfg.training.seed, label_column, cfg.data.min_partition_size
        )
    except DataError as err:
        raise DataError(f"{train.source}: {err}") from None
    return partitions, partition_names(raw, spec, num_partitions)


def load_institution_data(path: str, cfg: RunConfig, label_names: list[str] | None) -> TaskTable:
    """One institution's own file (deployment), with labels mapped by the federation's names.

    The names come from the server rather than this file, so every institution gives a class
    the same id even when its own file lacks some classes.
    """
    examples = _examples(load_table(path, cfg.data.format), path, _task_columns(cfg))
    if cfg.model.task == "classification" and label_names is None:
        raise ConfigError(
            f"{path}: classification needs the federation's label names (data.labels) to map "
            f"column {cfg.data.label_column!r} to ids"
        )
    return _table(examples, label_names, "one of the federation's labels")


def split_validation(table: TaskTable, fraction: float, seed: int) -> tuple[TaskTable, TaskTable]:
    """(train, validation) by a seeded shuffle; at least one validation row when possible.

    A validation set of zero rows would silently skip local evaluation, so any fraction > 0
    yields one row as soon as the table has two; the train side always keeps at least one.
    """
    if not 0 <= fraction < 1:
        raise ConfigError(f"validation fraction {fraction} must be at least 0 and below 1")
    size = len(table.frame)
    count = 0 if fraction == 0 or size < 2 else min(size - 1, max(1, round(fraction * size)))
    order = np.random.default_rng(seed).permutation(size)
    train_rows, validation_rows = np.sort(order[count:]), np.sort(order[:count])
    frame = table.frame
    return (
        TaskTable(frame.iloc[train_rows].reset_index(drop=True), table.source),
        TaskTable(frame.iloc[validation_rows].reset_index(drop=True), table.source),
    )

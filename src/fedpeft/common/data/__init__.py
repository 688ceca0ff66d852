"""The data layer: read files, generate the built-in dataset, split rows among institutions.

`load_federated_data` (simulation, server) and `load_institution_data` (a deployed client) are
the entry points; the other names are the pieces they are built from.
"""

from fedpeft.common.data.builtin import (
    BUILTIN_DATASETS,
    builtin_dataset,
    generate_bank_support,
    write_builtin,
)
from fedpeft.common.data.loading import TableFormat, load_table
from fedpeft.common.data.partition import partition_indices, partition_names
from fedpeft.common.data.prepare import (
    FederatedData,
    TaskTable,
    load_federated_data,
    load_institution_data,
    split_validation,
)

__all__ = [
    "BUILTIN_DATASETS",
    "FederatedData",
    "TableFormat",
    "TaskTable",
    "builtin_dataset",
    "generate_bank_support",
    "load_federated_data",
    "load_institution_data",
    "load_table",
    "partition_indices",
    "partition_names",
    "split_validation",
    "write_builtin",
]

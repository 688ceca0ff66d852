"""Which rows an institution trains and validates on.

In simulation the node config names a partition of the shared dataset (`partition-id`,
`num-partitions`); in a deployment it names the institution's own file (`data-path`). Either
way the institution ends up with a local train table and a local validation table, loaded
once per process and kept, because a Ray actor serves many rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pandas as pd
from flwr.common import Context

from fedpeft.common.config import RunConfig, from_wire, to_wire
from fedpeft.common.data import load_federated_data, load_institution_data, split_validation
from fedpeft.common.errors import ConfigError
from fedpeft.common.wire.names import DATA_PATH, NODE_NAME, NUM_PARTITIONS, PARTITION_ID


@dataclass(frozen=True)
class LocalData:
    name: str
    train: pd.DataFrame
    validation: pd.DataFrame


@lru_cache(maxsize=8)
def _simulated(config_json: str, partition: int, partitions: int) -> LocalData:
    cfg = from_wire(config_json)
    data = load_federated_data(cfg, partitions)
    train, validation = data.client_split(partition, cfg.data.validation_fraction,
                                          cfg.training.seed)
    return LocalData(data.partition_names[partition], train.frame, validation.frame)


@lru_cache(maxsize=8)
def _deployed(config_json: str, path: str, name: str) -> LocalData:
    cfg = from_wire(config_json)
    table = load_institution_data(path, cfg.data, cfg.model.task, cfg.data.labels)
    train, validation = split_validation(table, cfg.data.validation_fraction, cfg.training.seed)
    return LocalData(name, train.frame, validation.frame)


def local_data(cfg: RunConfig, context: Context) -> LocalData:
    """The institution's data for this node, from its node config."""
    node = context.node_config
    # Only the data section decides the rows; keying the cache on it keeps one copy per actor.
    key = to_wire(RunConfig(data=cfg.data, model=cfg.model, training=cfg.training))
    if DATA_PATH in node:
        return _deployed(key, str(node[DATA_PATH]),
                         str(node.get(NODE_NAME, f"node-{context.node_id}")))
    if PARTITION_ID in node and NUM_PARTITIONS in node:
        return _simulated(key, int(node[PARTITION_ID]), int(node[NUM_PARTITIONS]))
    raise ConfigError(
        f"node config has neither '{DATA_PATH}' nor '{PARTITION_ID}'/'{NUM_PARTITIONS}': "
        "start the client with --data FILE"
    )

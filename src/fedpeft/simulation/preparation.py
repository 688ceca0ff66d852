"""Everything checked and loaded before a run folder exists.

Data and model problems (missing file or column, unseen test label, empty institution, model
folder without config, unknown target module) surface here, before any folder is created or
any training starts, so a bad invocation leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedpeft.common.config import RunConfig
from fedpeft.common.data import FederatedData, load_federated_data
from fedpeft.common.training.learner import Learner


@dataclass
class PreparedRun:
    """A validated config (labels fixed), its data split, and a learner with the initial adapter."""

    cfg: RunConfig
    data: FederatedData
    learner: Learner


def prepare_run(cfg: RunConfig) -> PreparedRun:
    """Load data and model for a run over `cfg.simulation.num_clients` institutions.

    With a `column:` partition and no explicit client count, the data decides: one
    institution per distinct value.
    """
    by_column = cfg.data.effective_partition.startswith("column:")
    explicit = "num_clients" in cfg.simulation.model_fields_set
    data = load_federated_data(cfg,
                               None if by_column and not explicit else cfg.simulation.num_clients)
    num_clients = len(data.partitions)
    if num_clients != cfg.simulation.num_clients:
        simulation = cfg.simulation.model_copy(update={"num_clients": num_clients})
        cfg = cfg.model_copy(update={"simulation": simulation})
    if data.label_names is not None and cfg.data.labels is None:
        # Fix the label order in the config every institution receives.
        labelled = cfg.data.model_copy(update={"labels": data.label_names})
        cfg = cfg.model_copy(update={"data": labelled})
    cfg = cfg.fit_to_clients(num_clients)
    learner = Learner(cfg, data.label_names)
    return PreparedRun(cfg=cfg, data=data, learner=learner)


def base_summary(kind: str, prepared: PreparedRun) -> dict[str, Any]:
    """The part of `summary.json` every kind of run shares."""
    cfg, data = prepared.cfg, prepared.data
    return {
        "kind": kind,
        "task": cfg.model.task,
        "model": cfg.model.name,
        "peft_method": cfg.peft.method,
        "institutions": data.partition_names,
        "train_rows": [len(p) for p in data.partitions],
        "test_rows": len(data.test.frame),
        "labels": data.label_names,
    }

"""`best/`: the adapter of the round with the best test metric so far.

The last round is not always the best; a compliance-minded user wants the adapter that was
actually selected, and the metric and round it was selected on, kept on disk.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedpeft.common.adapter.export import save_adapter
from fedpeft.common.training.learner import Learner


@dataclass(frozen=True)
class SelectionMetric:
    """Which test metric decides the best round, and in which direction."""

    name: str
    higher_is_better: bool

    @classmethod
    def for_task(cls, task: str) -> SelectionMetric:
        return cls("macro_f1", True) if task == "classification" else cls("loss", False)

    def improves(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best


class BestAdapter:
    """Keeps `best_dir` holding the adapter of the best round offered so far."""

    def __init__(self, learner: Learner, task: str, best_dir: Path) -> None:
        self.learner = learner
        self.selection = SelectionMetric.for_task(task)
        self.best_dir = best_dir
        self.round: int | None = None
        self.value: float | None = None
        self.state: dict[str, np.ndarray] | None = None
        """The best adapter itself, kept for the run's checkpoint."""

    def offer(self, server_round: int, metrics: dict[str, float], state: dict[str, np.ndarray]) -> None:
        value = metrics[self.selection.name]
        if not self.selection.improves(value, self.value):
            return
        self.round, self.value, self.state = server_round, value, state
        self._save(state)

    def restore(self, server_round: int, value: float, state: dict[str, np.ndarray]) -> None:
        """Go back to a checkpointed best: `best/` may hold a round the resumed run redoes."""
        self.round, self.value, self.state = server_round, value, state
        self._save(state)

    def _save(self, state: dict[str, np.ndarray]) -> None:
        # Write beside, then swap: a crash mid-write never leaves a half-saved best/.
        staging = self.best_dir.with_name(self.best_dir.name + ".tmp")
        if staging.exists():
            shutil.rmtree(staging)
        save_adapter(self.learner, state, staging)
        if self.best_dir.exists():
            shutil.rmtree(self.best_dir)
        staging.rename(self.best_dir)

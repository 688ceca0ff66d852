"""`best/`: the adapter of the round with the best validation metric so far.

The last round is not always the best; a compliance-minded user wants the adapter that was
actually selected, and the metric and round it was selected on, kept on disk. It is selected
on validation rows (the institutions' own, aggregated), never on the test set: a test score of
the adapter chosen for its test score is an optimistic estimate, so the run's headline is the
final round's test metrics and `best/` only says which round validated best.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedpeft.common.adapter.export import save_adapter
from fedpeft.common.training.learner import Learner

SELECTED_ON_VALIDATION = "validation"
SELECTED_ON_LAST_ROUND = "last round (no validation rows)"


@dataclass(frozen=True)
class SelectionMetric:
    """Which validation metric decides the best round, and in which direction."""

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
    """Keeps `best_dir` holding the adapter of the best round offered so far.

    Rounds without validation metrics (no local validation rows, or none evaluated) leave the
    choice to the last such round: with nothing to select on, `best/` is the latest adapter.
    """

    def __init__(self, learner: Learner, task: str, best_dir: Path) -> None:
        self.learner = learner
        self.selection = SelectionMetric.for_task(task)
        self.best_dir = best_dir
        self.round: int | None = None
        self.value: float | None = None
        self.selected_on: str | None = None
        self.state: dict[str, np.ndarray] | None = None
        """The best adapter itself, kept for the run's checkpoint."""

    def offer(self, server_round: int, validation: dict[str, float],
              state: dict[str, np.ndarray]) -> None:
        """Consider round `server_round`, scored by its `validation` metrics (may be empty)."""
        value = validation.get(self.selection.name)
        if value is None:
            if self.selected_on == SELECTED_ON_VALIDATION:
                return  # an earlier round was validated; an unscored one cannot beat it
            self._keep(server_round, None, state, SELECTED_ON_LAST_ROUND)
            return
        if self.selected_on == SELECTED_ON_VALIDATION and not self.selection.improves(
                value, self.value):
            return
        self._keep(server_round, float(value), state, SELECTED_ON_VALIDATION)

    def restore(self, server_round: int, value: float | None, selected_on: str,
                state: dict[str, np.ndarray]) -> None:
        """Go back to a checkpointed best: `best/` may hold a round the resumed run redoes."""
        self._keep(server_round, value, state, selected_on)

    def _keep(self, server_round: int, value: float | None, state: dict[str, np.ndarray],
              selected_on: str) -> None:
        self.round, self.value, self.selected_on = server_round, value, selected_on
        self.state = state
        # Write beside, then swap: a crash mid-write never leaves a half-saved best/.
        staging = self.best_dir.with_name(self.best_dir.name + ".tmp")
        if staging.exists():
            shutil.rmtree(staging)
        save_adapter(self.learner, state, staging)
        if self.best_dir.exists():
            shutil.rmtree(self.best_dir)
        staging.rename(self.best_dir)

    def summary(self) -> dict[str, object]:
        """The `best_*` fields of summary.json."""
        return {"best_round": self.round, "best_metric": self.selection.name,
                "best_value": self.value, "best_selected_on": self.selected_on}

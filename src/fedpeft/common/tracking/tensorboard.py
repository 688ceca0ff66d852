"""TensorBoard event files in `RUN/tensorboard/`, written as each round is recorded.

`tensorboard --logdir runs/` then shows every run of a runs folder side by side, live, on the
coordinator's own machine. Each round is flushed at once: a run that dies keeps its curves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedpeft.common.config import RunConfig, to_toml
from fedpeft.common.tracking.scalars import per_institution_allowed, round_scalars

TENSORBOARD_DIR = "tensorboard"


class TensorBoardTracker:
    """One SummaryWriter per run; the round number is the TensorBoard step."""

    def __init__(self, run_dir: Path, cfg: RunConfig) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when used

        self.per_institution = per_institution_allowed(cfg)
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))
        # The config as text (the TOML of config.toml): what the curves were produced with.
        self.writer.add_text("config", "```toml\n" + to_toml(cfg) + "\n```", global_step=0)
        self.writer.flush()

    def log_round(self, record: dict[str, Any]) -> None:
        step = int(record.get("round", 0))
        for tag, value in round_scalars(record, self.per_institution).items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()

    def end(self, final_dir: Path, status: str) -> None:
        self.writer.close()

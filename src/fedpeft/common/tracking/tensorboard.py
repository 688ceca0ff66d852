"""TensorBoard event files in `RUN/tensorboard/`, written as each round is recorded.

`tensorboard --logdir runs/` then shows every run of a runs folder side by side, live, on the
coordinator's own machine. Each round is flushed at once: a run that dies keeps its curves.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fedpeft.common.config import RunConfig, load_config, to_toml
from fedpeft.common.errors import FedpeftError
from fedpeft.common.tracking.scalars import per_institution_allowed, round_scalars

TENSORBOARD_DIR = "tensorboard"

logger = logging.getLogger(__name__)


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

    def close(self) -> None:
        self.writer.close()


def open_tracker(run_dir: Path) -> TensorBoardTracker | None:
    """The tracker `RUN/config.toml` asks for (output.tensorboard), None when off or when the
    folder has no config (a metrics log outside a run folder)."""
    config_path = run_dir / "config.toml"
    if not config_path.is_file():
        return None
    try:
        cfg = load_config(config_path)
    except FedpeftError as err:
        logger.warning("no TensorBoard tracking: %s", err)
        return None
    return TensorBoardTracker(run_dir, cfg) if cfg.output.tensorboard else None

"""Experiment tracking, local-first: each round record also goes to a tracking tool.

TensorBoard event files are written into the run folder itself (nothing leaves the machine).
What a tracker receives is decided once, in `scalars.round_scalars`, including the privacy
rule: per-institution numbers only when the run has neither DP nor secure aggregation.
"""

from fedpeft.common.tracking.scalars import per_institution_allowed, round_scalars
from fedpeft.common.tracking.tensorboard import TENSORBOARD_DIR, TensorBoardTracker, open_tracker

__all__ = ["TENSORBOARD_DIR", "TensorBoardTracker", "open_tracker", "per_institution_allowed",
           "round_scalars"]

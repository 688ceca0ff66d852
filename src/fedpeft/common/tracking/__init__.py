"""Experiment tracking, local-first: each round record also goes to the tracking tools the run
asks for (`[tracking]`).

TensorBoard event files are written into the run folder itself (nothing leaves the machine);
MLflow is optional. What a tracker receives is decided once, in `scalars.round_scalars`,
including the privacy rule: per-institution numbers only when the run has neither DP nor
secure aggregation.
"""

from fedpeft.common.tracking.scalars import per_institution_allowed, round_scalars
from fedpeft.common.tracking.tensorboard import TENSORBOARD_DIR
from fedpeft.common.tracking.trackers import Tracker, check_trackers, end_trackers, open_trackers

__all__ = ["TENSORBOARD_DIR", "Tracker", "check_trackers", "end_trackers", "open_trackers",
           "per_institution_allowed", "round_scalars"]

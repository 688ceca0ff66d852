"""The base every config section derives from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """`extra="forbid"`: a misspelt key is an error, not a silently ignored default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

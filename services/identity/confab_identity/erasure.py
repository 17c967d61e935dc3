"""What erasing a user leaves of their profile: one rule for the decider and the read model.

An erased user keeps its id, workspace and external id (messages and conversations still
point at it) and loses everything that says who they were: the name becomes the one every
reader shows for an erased user (``confab.realtime.ERASED_NAME``), email, avatar and
metadata are dropped. ``domain.evolve`` blanks the decider's state and the projection
blanks the ``users`` row with the same ``erased_profile``, so the two cannot disagree on
what an erasure removes (the state's fields and the row's columns have the same names).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from confab.realtime import ERASED_NAME

__all__ = ["ERASED_NAME", "erased_profile"]


def erased_profile(at: datetime) -> dict[str, Any]:
    """The profile of a user erased at ``at``, by field (state) and column (read model)."""
    return {
        "name": ERASED_NAME,
        "email": None,
        "avatar_url": None,
        "metadata": {},
        "erased": True,
        "updated_at": at,
    }

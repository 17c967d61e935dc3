"""Opaque cursors of lists ordered by a time and an id: ``"<microseconds>:<id>"``.

Conversations are listed by last activity and users by last update, both with
the id as the tie-breaker; the cursor of a page is its last item's pair, so
the next page starts strictly after it and nothing is skipped or repeated when
items share a time. The shape is checked by ``contracts.base.TimeCursor``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from confab.errors import InvalidRequest
from confab.ids import is_valid_id


def time_cursor(at: datetime, item_id: str) -> str:
    micros = int(at.timestamp()) * 1_000_000 + at.microsecond
    return f"{micros}:{item_id}"


def parse_time_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """(time, id) of a cursor this module made; None for none; 422 for anything else."""
    if not cursor:
        return None
    micros, sep, item_id = cursor.partition(":")
    if not (sep and micros.isdigit() and is_valid_id(item_id)):
        raise InvalidRequest("The cursor is not valid.", {"cursor": "not a cursor we issued"})
    seconds, rest = divmod(int(micros), 1_000_000)
    try:
        at = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest)
    except (OverflowError, OSError, ValueError):
        raise InvalidRequest("The cursor is not valid.", {"cursor": "out of range"}) from None
    return at, item_id

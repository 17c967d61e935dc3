"""The support reports' request and reply (issue 19): per day, for a range of days.

Computed by messaging at query time from its read models (support conversations and
messages), which are projections of ``CONVERSATIONS``: a rebuild of those read models
recomputes every figure, and no figure is stored anywhere else.
"""

from __future__ import annotations

from datetime import date
from typing import ClassVar

import msgspec

from confab.contracts.base import Reply, Request
from confab.contracts.messaging import Actor

MAX_DAYS = 92


class DayFigures(msgspec.Struct, kw_only=True, frozen=True):
    day: date  # UTC
    conversations: int  # support conversations started that day
    messages: int  # messages posted that day in support conversations
    # Over the conversations started that day (null when none had one yet), in seconds.
    median_first_response_seconds: float | None = None
    median_resolution_seconds: float | None = None


class Totals(msgspec.Struct, kw_only=True, frozen=True):
    conversations: int
    messages: int
    median_first_response_seconds: float | None = None
    median_resolution_seconds: float | None = None


class SupportReport(Reply, kw_only=True, frozen=True):
    since: date
    until: date  # inclusive
    days: list[DayFigures]  # every day of the range, oldest first, zeros included
    totals: Totals


class GetSupportReport(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.q.support_report"
    reply: ClassVar[type[msgspec.Struct]] = SupportReport
    actor: Actor
    since: date
    until: date

"""Support reports (issue 19): conversations and messages per day, and the median first
response and resolution times, for a range of UTC days.

Computed per query from the read models (``support_conversations``, ``messages``),
never stored: they are projections of ``CONVERSATIONS``, so a rebuild recomputes every
figure. A conversation counts on the day it started; its first response and
resolution times are measured from then (a reopened and closed again conversation
counts its last resolution). Messages count on the day they were posted, in support
conversations of the workspace only. Three indexed GROUP BY queries, bounded by
``MAX_DAYS``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from confab.contracts.reports import (
    MAX_DAYS,
    DayFigures,
    GetSupportReport,
    SupportReport,
    Totals,
)
from confab.errors import InvalidRequest
from confab.rpc import CallContext
from confab.shell import Route
from confab_messaging.store import TABLES
from confab_messaging.support_handlers import tenant_side
from confab_messaging.support_store import SUPPORT_TABLES


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Reports:
    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime] = _utcnow) -> None:
        self.engine = engine
        self.clock = clock

    def routes(self) -> list[Route]:
        return [(GetSupportReport, self.report)]

    async def report(self, query: GetSupportReport, _ctx: CallContext) -> SupportReport:
        workspace_id = tenant_side(query.actor)
        since, until = query.since, query.until
        if until < since:
            raise InvalidRequest("The range ends before it starts.", {"until": "before since"})
        if (until - since).days + 1 > MAX_DAYS:
            raise InvalidRequest(
                f"A report covers at most {MAX_DAYS} days.",
                {"until": f"at most {MAX_DAYS} days after since"},
            )
        start = datetime.combine(since, time.min, UTC)
        end = datetime.combine(until + timedelta(days=1), time.min, UTC)
        s, m = SUPPORT_TABLES.support, TABLES.messages
        day_of = _day(s.c.created_at)
        first = sa.func.extract("epoch", s.c.first_response_at - s.c.created_at)
        resolved = sa.func.extract("epoch", s.c.resolved_at - s.c.created_at)
        in_range = sa.and_(
            s.c.workspace_id == workspace_id, s.c.created_at >= start, s.c.created_at < end
        )

        def figures(*group: Any) -> sa.Select[Any]:
            return sa.select(
                *group,
                sa.func.count().label("conversations"),
                _median(first).label("first"),
                _median(resolved).label("resolution"),
            ).where(in_range)

        per_day = figures(day_of.label("day")).group_by(day_of)
        overall = figures()
        message_day = _day(m.c.created_at)
        messages = (
            sa.select(message_day.label("day"), sa.func.count().label("messages"))
            .select_from(m.join(s, s.c.id == m.c.conversation_id))
            .where(s.c.workspace_id == workspace_id, m.c.created_at >= start, m.c.created_at < end)
            .group_by(message_day)
        )
        async with self.engine.connect() as conn:
            days = {r.day: r for r in (await conn.execute(per_day)).all()}
            total = (await conn.execute(overall)).one()
            posted = {r.day: int(r.messages) for r in (await conn.execute(messages)).all()}
        out = []
        for n in range((until - since).days + 1):
            day = since + timedelta(days=n)
            row = days.get(day)
            out.append(
                DayFigures(
                    day=day,
                    conversations=int(row.conversations) if row else 0,
                    messages=posted.get(day, 0),
                    median_first_response_seconds=_seconds(row.first) if row else None,
                    median_resolution_seconds=_seconds(row.resolution) if row else None,
                )
            )
        return SupportReport(
            since=since,
            until=until,
            days=out,
            totals=Totals(
                conversations=int(total.conversations),
                messages=sum(posted.values()),
                median_first_response_seconds=_seconds(total.first),
                median_resolution_seconds=_seconds(total.resolution),
            ),
        )


def _day(column: Any) -> Any:
    """The UTC calendar day of a timestamp column."""
    return sa.cast(sa.func.timezone("UTC", column), sa.Date)


def _median(expression: Any) -> Any:
    return sa.func.percentile_cont(0.5).within_group(expression)


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)

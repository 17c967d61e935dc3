"""The support read model: support conversations' staff fields and their internal notes.

Tables in schema ``messaging`` beside the conversations read model, written only
by ``support_projection`` (from ``CONVERSATIONS``, folded by ``confab.support``).
``support_conversations`` holds one row per support conversation (every column
a ``SupportView`` slot); ``notes`` the internal notes, which only the tenant's
side ever reads (``support_queries``). Queries filter by workspace and never
write.

The inbox views are computed at read time against ``now``, so a snooze wakes by
itself: a row ``snoozed`` until a time already past counts as open.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from confab.support import SupportView
from confab_messaging.store import SCHEMA, TABLES

Row = Any


@dataclass(frozen=True)
class SupportTables:
    support: sa.Table
    notes: sa.Table

    def all(self) -> tuple[sa.Table, ...]:
        return (self.support, self.notes)


def define_support_tables(metadata: sa.MetaData) -> SupportTables:
    ts = sa.DateTime(timezone=True)
    support = sa.Table(
        "support_conversations",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("visitor_id", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("snoozed_until", ts, nullable=True),
        sa.Column("assignee_id", sa.Text, nullable=True),
        sa.Column("tags", JSONB, nullable=False),
        sa.Column("first_response_at", ts, nullable=True),
        sa.Column("resolved_at", ts, nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("last_activity_at", ts, nullable=False),
        sa.Column("last_message_id", sa.Text, nullable=True),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("staff_seq", sa.Integer, nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),  # of the last event folded
        sa.Index("support_inbox", "workspace_id", "status", "last_activity_at", "id"),
        sa.Index("support_assignee", "workspace_id", "assignee_id", "last_activity_at"),
    )
    notes = sa.Table(
        "notes",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("conversation_id", sa.Text, nullable=False),
        sa.Column("author_id", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
        sa.Index("notes_conversation", "conversation_id", "stream_seq"),
        sa.Index("notes_author", "author_id"),
    )
    return SupportTables(support, notes)


SUPPORT_METADATA = sa.MetaData(schema=SCHEMA)
SUPPORT_TABLES = define_support_tables(SUPPORT_METADATA)


def _open_now(s: sa.Table, now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(s.c.status == "open", sa.and_(s.c.status == "snoozed", s.c.snoozed_until <= now))


def _snoozed_now(s: sa.Table, now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(s.c.status == "snoozed", s.c.snoozed_until > now)


def view_filter(
    s: sa.Table, view: str, now: datetime, assignee_id: str | None
) -> sa.ColumnElement[bool]:
    """Which rows an inbox view shows at ``now``."""
    if view == "unassigned":
        return sa.and_(_open_now(s, now), s.c.assignee_id.is_(None))
    if view == "mine":
        return sa.and_(_open_now(s, now), s.c.assignee_id == assignee_id)
    if view == "snoozed":
        return _snoozed_now(s, now)
    if view == "closed":
        return s.c.status == "closed"
    return s.c.status != "closed"  # all: open or snoozed


class SupportStore:
    def __init__(self, engine: AsyncEngine, tables: SupportTables = SUPPORT_TABLES) -> None:
        self.engine = engine
        self.t = tables

    async def page(
        self,
        workspace_id: str,
        view: str,
        now: datetime,
        *,
        assignee_id: str | None,
        tag: str | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> tuple[list[SupportView], bool]:
        s = self.t.support
        query = sa.select(s).where(
            s.c.workspace_id == workspace_id, view_filter(s, view, now, assignee_id)
        )
        if tag is not None:
            query = query.where(s.c.tags.contains([tag]))
        if before is not None:
            query = query.where(sa.tuple_(s.c.last_activity_at, s.c.id) < sa.tuple_(*before))
        query = query.order_by(s.c.last_activity_at.desc(), s.c.id.desc()).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        views = [SupportView.from_row(r._mapping) for r in rows[:limit]]
        return views, len(rows) > limit

    async def counts(
        self, workspace_id: str, now: datetime, assignee_id: str | None, tag: str | None
    ) -> dict[str, int]:
        """Every view's count, in one statement."""
        s = self.t.support
        views = ("unassigned", "mine", "all", "snoozed", "closed")
        columns = [
            sa.func.count().filter(view_filter(s, v, now, assignee_id)).label(v)
            for v in views
            if v != "mine" or assignee_id is not None
        ]
        query = sa.select(*columns).where(s.c.workspace_id == workspace_id)
        if tag is not None:
            query = query.where(s.c.tags.contains([tag]))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one()._mapping
        return {v: int(row.get(v, 0)) for v in views}

    async def one(self, workspace_id: str, conversation_id: str) -> SupportView | None:
        s = self.t.support
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(s).where(s.c.id == conversation_id, s.c.workspace_id == workspace_id)
                )
            ).first()
        return SupportView.from_row(row._mapping) if row is not None else None

    async def notes(
        self, workspace_id: str, conversation_id: str, *, after: int, limit: int
    ) -> tuple[Sequence[Row], bool]:
        n = self.t.notes
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(n)
                    .where(
                        n.c.workspace_id == workspace_id,
                        n.c.conversation_id == conversation_id,
                        n.c.stream_seq > after,
                    )
                    .order_by(n.c.stream_seq)
                    .limit(limit + 1)
                )
            ).all()
        return [r._mapping for r in rows[:limit]], len(rows) > limit

    async def note(self, note_id: str) -> Row | None:
        n = self.t.notes
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(n).where(n.c.id == note_id))).first()
        return row._mapping if row is not None else None

    async def conversation_rows(self, workspace_id: str, ids: Sequence[str]) -> dict[str, Row]:
        """The conversations read model's rows of ``ids`` (to render them)."""
        if not ids:
            return {}
        c = TABLES.conversations
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(c).where(c.c.workspace_id == workspace_id, c.c.id.in_(list(ids)))
            )
            return {r.id: r._mapping for r in rows}

    async def open_loads(self, workspace_id: str, user_ids: Sequence[str]) -> dict[str, int]:
        """How many open (or snoozed) support conversations each user is assigned."""
        if not user_ids:
            return {}
        s = self.t.support
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(s.c.assignee_id, sa.func.count())
                .where(
                    s.c.workspace_id == workspace_id,
                    s.c.assignee_id.in_(list(user_ids)),
                    s.c.status != "closed",
                )
                .group_by(s.c.assignee_id)
            )
            loads = {r[0]: int(r[1]) for r in rows}
        return {u: loads.get(u, 0) for u in user_ids}

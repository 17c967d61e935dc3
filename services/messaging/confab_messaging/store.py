"""The messaging read model: tables in schema ``messaging`` and the queries on them.

Written only by the projections (``projections``): ``users`` from ``IDENTITY``,
everything else from ``CONVERSATIONS``. Every row keeps the sequence of the
event that last wrote it, so a replay into empty tables gives the same rows.
Queries always filter by workspace (or by a conversation already checked to be
in it) and never write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from confab.conversation import ConversationView

SCHEMA = "messaging"

# Blanking an erased user's messages holds this transaction lock exclusively and a
# batch of conversation events (or of the search index) shares it, so neither writes
# back rows the other read before it committed.
ERASURE_LOCK = 0x636F6E6661625F65  # "confab_e"


@dataclass(frozen=True)
class UserTables:
    users: sa.Table


@dataclass(frozen=True)
class ConversationTables:
    conversations: sa.Table
    participants: sa.Table
    messages: sa.Table
    reactions: sa.Table
    reports: sa.Table
    events: sa.Table
    thread_reads: sa.Table
    shadowed: sa.Table

    def all(self) -> tuple[sa.Table, ...]:
        return (
            self.conversations,
            self.participants,
            self.messages,
            self.reactions,
            self.reports,
            self.events,
            self.thread_reads,
            self.shadowed,
        )


def define_user_tables(metadata: sa.MetaData) -> UserTables:
    users = sa.Table(
        "users",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("avatar_url", sa.Text, nullable=True),
        sa.Column("banned", sa.Boolean, nullable=False),
        sa.Column("erased", sa.Boolean, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),  # IDENTITY stream sequence
    )
    return UserTables(users)


def define_conversation_tables(metadata: sa.MetaData) -> ConversationTables:
    ts = sa.DateTime(timezone=True)
    conversations = sa.Table(
        "conversations",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=True),
        # JSON, not JSONB: keeps the tenant's key order as given.
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("created_by", sa.Text, nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),  # conversation seq of the last event
        sa.Column("last_message_id", sa.Text, nullable=True),
        sa.Column("last_activity_at", ts, nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),  # of the last event
        sa.Column("pin_policy", sa.Text, nullable=True),  # null: participants (older rows)
        sa.Column("frozen", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Index("conversations_activity", "workspace_id", "last_activity_at", "id"),
        # The tenant's metadata filter (metadata.<key>=<value>): containment on any key.
        sa.Index(
            "conversations_metadata",
            sa.text("(metadata::jsonb) jsonb_path_ops"),
            postgresql_using="gin",
        ),
    )
    participants = sa.Table(
        "participants",
        metadata,
        sa.Column("conversation_id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("last_read_seq", sa.Integer, nullable=False),
        sa.Column("unread_count", sa.Integer, nullable=False),
        sa.Column("joined_seq", sa.Integer, nullable=False),  # orders the participant list
        sa.Column("seq", sa.Integer, nullable=False),  # conversation seq of the last change
        sa.Index("participants_user", "user_id", "conversation_id"),
    )
    messages = sa.Table(
        "messages",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("conversation_id", sa.Text, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("sender_id", sa.Text, nullable=True),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("attachment_ids", sa.JSON, nullable=False),
        sa.Column("reply_to", sa.Text, nullable=True),
        sa.Column("client_msg_id", sa.Text, nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("edited_at", ts, nullable=True),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("hidden", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),  # conversation seq of the last change
        sa.Column("stream_seq", sa.BigInteger, nullable=False),  # where it was posted
        sa.Column("message_type", sa.Text, nullable=True),  # text, image, file, system
        # [{user_id, start, end}]; JSONB: the mentions filter asks containment of a user id.
        sa.Column("mentions", JSONB, nullable=True),
        sa.Column("parent_id", sa.Text, nullable=True),  # a thread reply's top-level message
        sa.Column("reply_count", sa.Integer, nullable=True),  # a parent's thread summary
        sa.Column("last_reply_id", sa.Text, nullable=True),
        sa.Column("last_reply_at", ts, nullable=True),
        sa.Column("thread_participants", sa.JSON, nullable=True),
        sa.Column("pinned_at", ts, nullable=True),
        sa.Column("pinned_by", sa.Text, nullable=True),
        sa.Column("link_preview", sa.JSON, nullable=True),
        sa.UniqueConstraint("conversation_id", "seq", name="messages_conversation_seq"),
        sa.Index("messages_sender", "sender_id", "stream_seq"),  # a user's data export
        # A thread's replies by seq.
        sa.Index(
            "messages_thread",
            "parent_id",
            "seq",
            postgresql_where=sa.text("parent_id IS NOT NULL"),
        ),
        # A conversation's pins.
        sa.Index(
            "messages_pinned",
            "conversation_id",
            "pinned_at",
            postgresql_where=sa.text("pinned_at IS NOT NULL"),
        ),
        # "Messages mentioning me": containment of {"user_id": …} in mentions.
        sa.Index("messages_mentions", "mentions", postgresql_using="gin"),
        # Unread counts: the visible top-level messages after a read mark, with their
        # sender (thread replies count in their thread). Replaces "messages_visible" of
        # older builds, which a database made by one keeps (unused).
        sa.Index(
            "messages_visible_top",
            "conversation_id",
            "seq",
            postgresql_include=["sender_id"],
            postgresql_where=sa.text("NOT deleted AND NOT hidden AND parent_id IS NULL"),
        ),
    )
    reactions = sa.Table(
        "reactions",
        metadata,
        sa.Column("message_id", sa.Text, primary_key=True),
        sa.Column("emoji", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),  # conversation seq when added
        sa.Index("reactions_user", "user_id"),  # a user's data export
    )
    reports = sa.Table(
        "reports",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("conversation_id", sa.Text, nullable=False),
        sa.Column("message_id", sa.Text, nullable=False, index=True),
        sa.Column("reporter_id", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
        sa.Column("status_seq", sa.BigInteger, nullable=False),  # stream seq of the status
        sa.Index("reports_queue", "workspace_id", "stream_seq"),
    )
    events = sa.Table(
        "events",
        metadata,
        sa.Column("conversation_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("at", ts, nullable=False),
    )
    thread_reads = sa.Table(
        "thread_reads",
        metadata,
        sa.Column("parent_id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("conversation_id", sa.Text, nullable=False),
        sa.Column("last_read_seq", sa.Integer, nullable=False),  # the last reply read
    )
    # Shadowed posts (``message.shadowed``): only their senders see them, in their history
    # after the message ``seq`` (not a seq of their own); the columns of ``messages``.
    shadowed = sa.Table(
        "shadowed_messages",
        metadata,
        *[c._copy() for c in messages.columns],
        sa.Index("shadowed_messages_sender", "conversation_id", "sender_id", "seq"),
    )
    return ConversationTables(
        conversations, participants, messages, reactions, reports, events, thread_reads, shadowed
    )


USER_METADATA = sa.MetaData(schema=SCHEMA)
USER_TABLES = define_user_tables(USER_METADATA)
CONVERSATION_METADATA = sa.MetaData(schema=SCHEMA)
TABLES = define_conversation_tables(CONVERSATION_METADATA)


# -- rows the queries return ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    name: str
    avatar_url: str | None
    banned: bool
    erased: bool


@dataclass(frozen=True, slots=True)
class ParticipantRow:
    conversation_id: str
    user_id: str
    last_read_seq: int
    unread_count: int


Row = Mapping[str, Any]  # a row of ``messages`` / ``conversations`` as a mapping


def _metadata_has(column: sa.ColumnElement[Any], key: str, value: str) -> sa.ColumnElement[bool]:
    """``metadata`` has ``key`` with ``value``: as a string, or as the JSON literal it spells
    ("3", "true", "null"). Containment on ``metadata::jsonb``, which the GIN index
    ``conversations_metadata`` serves."""
    wanted: list[Any] = [value]
    try:
        literal = json.loads(value)
    except ValueError:
        literal = value
    if not isinstance(literal, (str, list, dict)) and literal is not value:
        wanted.append(literal)
    as_jsonb = sa.cast(column, JSONB)
    return sa.or_(*(as_jsonb.op("@>")(sa.cast({key: w}, JSONB)) for w in wanted))


def conversation_view(row: Row) -> ConversationView:
    """A ``conversations`` row as the fold's view (no participants or messages loaded)."""
    view = ConversationView(row["id"], row["workspace_id"])
    view.kind = row["type"]
    view.title = row["title"]
    view.metadata = dict(row["metadata"] or {})
    view.created_by = row["created_by"]
    view.created_at = row["created_at"]
    view.last_seq = row["last_seq"]
    view.stream_seq = row["stream_seq"]
    view.last_message_id = row["last_message_id"]
    view.last_activity_at = row["last_activity_at"]
    view.pin_policy = row.get("pin_policy") or "participants"
    view.frozen = bool(row.get("frozen"))
    return view


@dataclass(frozen=True, slots=True)
class MessagePage:
    rows: list[Row]
    reactions: dict[str, list[tuple[str, str]]]  # message id -> [(emoji, user_id)] in order
    has_more: bool


class Store:
    """Queries of the read model (reads only: the projections write)."""

    def __init__(
        self,
        engine: AsyncEngine,
        users: UserTables = USER_TABLES,
        tables: ConversationTables = TABLES,
    ) -> None:
        self.engine = engine
        self.u = users.users
        self.t = tables

    # -- users -------------------------------------------------------------------------

    async def users(self, workspace_id: str, ids: Iterable[str]) -> dict[str, UserRow]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        u = self.u
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(u.c.id, u.c.name, u.c.avatar_url, u.c.banned, u.c.erased).where(
                    u.c.workspace_id == workspace_id, u.c.id.in_(wanted)
                )
            )
            return {r.id: UserRow(r.id, r.name, r.avatar_url, r.banned, r.erased) for r in rows}

    # -- conversations -----------------------------------------------------------------

    async def conversation(
        self, workspace_id: str, conversation_id: str, user_id: str | None
    ) -> tuple[Row, ParticipantRow | None] | None:
        """The conversation if the viewer may see it (the tenant: any of its workspace)."""
        c, p = self.t.conversations, self.t.participants
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(c).where(c.c.id == conversation_id, c.c.workspace_id == workspace_id)
                )
            ).first()
            if row is None:
                return None
            if user_id is None:
                return row._mapping, None
            me = (
                await conn.execute(
                    sa.select(p.c.last_read_seq, p.c.unread_count).where(
                        p.c.conversation_id == conversation_id,
                        p.c.user_id == user_id,
                        p.c.active.is_(True),
                    )
                )
            ).first()
        if me is None:
            return None
        return row._mapping, ParticipantRow(
            conversation_id, user_id, me.last_read_seq, me.unread_count
        )

    async def conversations(
        self,
        workspace_id: str,
        user_id: str | None,
        *,
        before: tuple[datetime, str] | None,
        limit: int,
        kind: str | None = None,
        metadata: Mapping[str, str] | None = None,
        updated_since: datetime | None = None,
    ) -> tuple[list[Row], dict[str, ParticipantRow], bool]:
        """A page, newest activity first: rows, the user's participation in each, more?"""
        c, p = self.t.conversations, self.t.participants
        query = sa.select(c).where(c.c.workspace_id == workspace_id)
        if user_id is not None:
            query = query.join(
                p,
                sa.and_(
                    p.c.conversation_id == c.c.id, p.c.user_id == user_id, p.c.active.is_(True)
                ),
            ).add_columns(
                p.c.last_read_seq.label("my_read_seq"), p.c.unread_count.label("my_unread")
            )
        if kind is not None:
            query = query.where(c.c.type == kind)
        for key, value in (metadata or {}).items():
            query = query.where(_metadata_has(c.c.metadata, key, value))
        if updated_since is not None:
            query = query.where(c.c.last_activity_at >= updated_since)
        if before is not None:
            query = query.where(sa.tuple_(c.c.last_activity_at, c.c.id) < sa.tuple_(*before))
        query = query.order_by(c.c.last_activity_at.desc(), c.c.id.desc()).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        page = rows[:limit]
        mine: dict[str, ParticipantRow] = {}
        if user_id is not None:
            mine = {r.id: ParticipantRow(r.id, user_id, r.my_read_seq, r.my_unread) for r in page}
        return [r._mapping for r in page], mine, len(rows) > limit

    async def participants(
        self, conversation_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, int]]]:
        """Active participants per conversation, in joining order: [(user_id, last_read_seq)]."""
        if not conversation_ids:
            return {}
        p = self.t.participants
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(p.c.conversation_id, p.c.user_id, p.c.last_read_seq)
                .where(p.c.conversation_id.in_(list(conversation_ids)), p.c.active.is_(True))
                .order_by(p.c.conversation_id, p.c.joined_seq, p.c.user_id)
            )
            out: dict[str, list[tuple[str, int]]] = {cid: [] for cid in conversation_ids}
            for r in rows:
                out[r.conversation_id].append((r.user_id, r.last_read_seq))
        return out

    # -- messages ----------------------------------------------------------------------

    async def _reactions(
        self, conn: AsyncConnection, message_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, str]]]:
        if not message_ids:
            return {}
        r = self.t.reactions
        rows = await conn.execute(
            sa.select(r.c.message_id, r.c.emoji, r.c.user_id)
            .where(r.c.message_id.in_(list(message_ids)))
            .order_by(r.c.message_id, r.c.seq)
        )
        out: dict[str, list[tuple[str, str]]] = {}
        for row in rows:
            out.setdefault(row.message_id, []).append((row.emoji, row.user_id))
        return out

    async def message(
        self, message_id: str, *, conversation_id: str | None = None
    ) -> tuple[Row, list[tuple[str, str]]] | None:
        """One message and its reactions."""
        m = self.t.messages
        query = sa.select(m).where(m.c.id == message_id)
        if conversation_id is not None:
            query = query.where(m.c.conversation_id == conversation_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            reactions = await self._reactions(conn, [message_id])
        return row._mapping, reactions.get(message_id, [])

    async def message_location(self, workspace_id: str, message_id: str) -> str | None:
        """The conversation of a workspace's message (for commands that name only the message)."""
        m, c = self.t.messages, self.t.conversations
        async with self.engine.connect() as conn:
            return (
                await conn.execute(
                    sa.select(m.c.conversation_id)
                    .join(c, c.c.id == m.c.conversation_id)
                    .where(m.c.id == message_id, c.c.workspace_id == workspace_id)
                )
            ).scalar_one_or_none()

    async def messages_by_id(self, message_ids: Sequence[str]) -> MessagePage:
        if not message_ids:
            return MessagePage([], {}, False)
        m = self.t.messages
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(m).where(m.c.id.in_(list(message_ids))))).all()
            reactions = await self._reactions(conn, [r.id for r in rows])
        return MessagePage([r._mapping for r in rows], reactions, False)

    async def messages(
        self,
        conversation_id: str,
        *,
        before: int | None,
        after: int | None,
        limit: int,
        parent_id: str | None = None,
    ) -> MessagePage:
        """Messages by seq, ascending. With ``after``: the first ``limit`` after it;
        otherwise the last ``limit`` before ``before`` (or the latest). The main timeline
        (``parent_id`` None) or one thread's replies."""
        m = self.t.messages
        query = sa.select(m).where(m.c.conversation_id == conversation_id)
        if parent_id is None:
            query = query.where(m.c.parent_id.is_(None))
        else:
            query = query.where(m.c.parent_id == parent_id)
        if before is not None:
            query = query.where(m.c.seq < before)
        if after is not None:
            query = query.where(m.c.seq > after).order_by(m.c.seq.asc())
        else:
            query = query.order_by(m.c.seq.desc())
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit + 1))).all()
            has_more = len(rows) > limit
            rows = rows[:limit]
            if after is None:
                rows.reverse()
            reactions = await self._reactions(conn, [r.id for r in rows])
        return MessagePage([r._mapping for r in rows], reactions, has_more)

    async def shadowed(
        self, conversation_id: str, sender_id: str, lo: int, hi: int | None
    ) -> list[Row]:
        """``sender_id``'s shadowed posts here placed after a message seq in [lo, hi)."""
        s = self.t.shadowed
        query = sa.select(s).where(
            s.c.conversation_id == conversation_id, s.c.sender_id == sender_id, s.c.seq >= lo
        )
        if hi is not None:
            query = query.where(s.c.seq < hi)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(s.c.seq, s.c.stream_seq).limit(500))).all()
        return [r._mapping for r in rows]

    # -- one user's data (their export) --------------------------------------------------

    async def memberships(self, workspace_id: str, user_id: str) -> list[Row]:
        """Every conversation the user takes or took part in, with their read mark."""
        c, p = self.t.conversations, self.t.participants
        query = (
            sa.select(
                c.c.id,
                c.c.type,
                c.c.title,
                c.c.metadata,
                c.c.created_at,
                p.c.active,
                p.c.last_read_seq,
            )
            .join(p, p.c.conversation_id == c.c.id)
            .where(c.c.workspace_id == workspace_id, p.c.user_id == user_id)
            .order_by(c.c.created_at, c.c.id)
        )
        async with self.engine.connect() as conn:
            return [r._mapping for r in (await conn.execute(query)).all()]

    async def user_reactions(self, workspace_id: str, user_id: str) -> list[Row]:
        r, m, c = self.t.reactions, self.t.messages, self.t.conversations
        query = (
            sa.select(r.c.message_id, m.c.conversation_id, r.c.emoji)
            .join(m, m.c.id == r.c.message_id)
            .join(c, c.c.id == m.c.conversation_id)
            .where(r.c.user_id == user_id, c.c.workspace_id == workspace_id)
            .order_by(m.c.conversation_id, r.c.seq)
        )
        async with self.engine.connect() as conn:
            return [x._mapping for x in (await conn.execute(query)).all()]

    async def sent_by(
        self, workspace_id: str, user_id: str, *, after: int, limit: int
    ) -> MessagePage:
        """The user's messages in the workspace, in the order they were stored."""
        m, c = self.t.messages, self.t.conversations
        query = (
            sa.select(m)
            .join(c, c.c.id == m.c.conversation_id)
            .where(m.c.sender_id == user_id, c.c.workspace_id == workspace_id)
            .where(m.c.stream_seq > after)
            .order_by(m.c.stream_seq)
            .limit(limit + 1)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            page = rows[:limit]
            reactions = await self._reactions(conn, [x.id for x in page])
        return MessagePage([x._mapping for x in page], reactions, len(rows) > limit)

    # -- events and reports ------------------------------------------------------------

    async def events(
        self, conversation_id: str, *, after: int, limit: int
    ) -> tuple[list[Row], bool]:
        e = self.t.events
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(e.c.seq, e.c.stream_seq, e.c.name, e.c.data, e.c.at)
                    .where(e.c.conversation_id == conversation_id, e.c.seq > after)
                    .order_by(e.c.seq)
                    .limit(limit + 1)
                )
            ).all()
        return [r._mapping for r in rows[:limit]], len(rows) > limit

    async def reports(
        self, workspace_id: str, *, open_only: bool, before: int | None, limit: int
    ) -> tuple[list[Row], bool]:
        """Newest first, paged by stream sequence."""
        r = self.t.reports
        query = sa.select(r).where(r.c.workspace_id == workspace_id)
        if open_only:
            query = query.where(r.c.status == "open")
        if before is not None:
            query = query.where(r.c.stream_seq < before)
        query = query.order_by(r.c.stream_seq.desc()).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [row._mapping for row in rows[:limit]], len(rows) > limit

    # -- threads, pins, mentions ---------------------------------------------------------

    async def thread_read(self, parent_id: str, user_id: str) -> tuple[int, int]:
        """The user's read mark in a thread, and the visible replies by others after it."""
        r, m = self.t.thread_reads, self.t.messages
        async with self.engine.connect() as conn:
            mark = (
                await conn.execute(
                    sa.select(r.c.last_read_seq).where(
                        r.c.parent_id == parent_id, r.c.user_id == user_id
                    )
                )
            ).scalar_one_or_none() or 0
            unread = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(m)
                    .where(
                        m.c.parent_id == parent_id,
                        m.c.seq > mark,
                        sa.not_(m.c.deleted),
                        sa.not_(m.c.hidden),
                        m.c.sender_id.is_distinct_from(user_id),
                    )
                )
            ).scalar_one()
        return mark, unread

    async def pins(self, conversation_id: str, limit: int) -> MessagePage:
        """The conversation's pinned messages that are not hidden, most recently pinned
        first."""
        m = self.t.messages
        query = (
            sa.select(m)
            .where(
                m.c.conversation_id == conversation_id,
                m.c.pinned_at.is_not(None),
                sa.not_(m.c.hidden),
            )
            .order_by(m.c.pinned_at.desc(), m.c.seq.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            reactions = await self._reactions(conn, [r.id for r in rows])
        return MessagePage([r._mapping for r in rows], reactions, False)

    async def mentioning(
        self,
        workspace_id: str,
        user_id: str,
        *,
        conversation_id: str | None,
        before: int | None,
        limit: int,
    ) -> MessagePage:
        """Visible messages mentioning ``user_id`` in conversations they take part in now,
        newest first (by stream sequence)."""
        m, c, p = self.t.messages, self.t.conversations, self.t.participants
        query = (
            sa.select(m)
            .join(c, c.c.id == m.c.conversation_id)
            .join(
                p,
                sa.and_(
                    p.c.conversation_id == m.c.conversation_id,
                    p.c.user_id == user_id,
                    p.c.active.is_(True),
                ),
            )
            .where(
                c.c.workspace_id == workspace_id,
                m.c.mentions.op("@>")(sa.cast([{"user_id": user_id}], JSONB)),
                sa.not_(m.c.deleted),
                sa.not_(m.c.hidden),
            )
        )
        if conversation_id is not None:
            query = query.where(m.c.conversation_id == conversation_id)
        if before is not None:
            query = query.where(m.c.stream_seq < before)
        query = query.order_by(m.c.stream_seq.desc()).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            page = rows[:limit]
            reactions = await self._reactions(conn, [r.id for r in page])
        return MessagePage([r._mapping for r in page], reactions, len(rows) > limit)

"""The messaging read models, projected in batches.

``UsersProjection`` keeps the profiles and flags messaging needs from
``IDENTITY`` (``identity.evt.*.user.*``). ``ConversationsProjection`` keeps
conversations, participants (with exact unread counts), messages, reactions,
reports and the timeline of every participant-visible event (the ``events``
table, for recovery) from ``CONVERSATIONS``.

A batch is applied in memory first: the rows it touches are loaded with one
query per table into partial ``ConversationView``s, every event is folded into
them in stream order by ``confab.conversation.evolve`` (the fold every reader
shares), and the results are written back with one statement per table, each
column bound as one array (``confab.db.BulkInsert``). Unread counts are then
brought up to date: where the batch only added messages, each count goes up by
the batch's posts that count for it (a statement over the posts, never over the
history); where it deleted, hid, restored or merged, the conversation is
recounted, and a participant who joined, left or read is recounted.

The ``events`` table holds timeline entries by reference (``Entry.data``: which
message, never its content), so ``/events`` renders each against the message
as it is now and a replay shows what history shows.

Personal fields arrive sealed (``confab.personal``) and are revealed with the
owner's key; once a user is erased their key is gone, so a replay shows their
messages blank, and the live rows are blanked the same way when the erasure
is projected.

Every value comes from the events (times from their ``at``), never from the
database clock, and every row carries the sequence of the event that last
wrote it (upserts only move forward), so a replay into empty tables gives the
same rows however the stream is cut into batches.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, Insert, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from confab import conversation, realtime
from confab.bus import CONVERSATIONS, IDENTITY
from confab.contracts.events.identity import UserBanned, UserErased, UserUnbanned, UserUpserted
from confab.contracts.events.messaging import (
    ConversationCreated,
    ConversationEvent,
    MessageDeleted,
    MessageEdited,
    MessageModerated,
    MessagePinned,
    MessagePosted,
    MessagePreviewed,
    MessageReported,
    MessageUnpinned,
    ParticipantAdded,
    ParticipantMerged,
    ParticipantRemoved,
    ReactionAdded,
    ReactionRemoved,
    ReadMarked,
)
from confab.contracts.events.moderation import (
    MessageShadowDeleted,
    MessageShadowed,
    MessageShadowEdited,
)
from confab.conversation import ConversationView, MessageView, ParticipantView
from confab.db import BulkInsert, unique
from confab.events import Envelope
from confab.personal import KeyRing
from confab.projection import Projection
from confab_messaging import render
from confab_messaging.search import SearchProjection, remove_erased
from confab_messaging.store import (
    ERASURE_LOCK,
    SCHEMA,
    ConversationTables,
    UserTables,
    conversation_view,
    define_conversation_tables,
    define_user_tables,
)
from confab_messaging.support_projection import SupportProjection, blank_notes

USER_SUBJECTS = ("identity.evt.*.user.*",)
USER_EVENTS = (UserUpserted, UserErased, UserBanned, UserUnbanned)

REPORT_STATUS = {"hide": "hidden", "restore": "restored", "delete": "deleted"}


async def _upsert(
    conn: AsyncConnection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    *,
    keys: Sequence[str],
    update: Sequence[str],
    guard: str,
) -> None:
    """Insert ``rows``, or update ``update`` where the stored ``guard`` column is older.

    One statement for the whole list (``BulkInsert``); rows that repeat a key, or do
    not all have the same columns, go one by one as they come."""
    if not rows:
        return
    columns = tuple(rows[0])
    if unique(rows, keys) and all(r.keys() == rows[0].keys() for r in rows):
        bulk, stmt = _bulk_upsert(table, columns, tuple(keys), tuple(update), guard)
        await conn.execute(stmt, bulk.params(conn.dialect, rows))
        return
    await conn.execute(_upsert_statement(insert(table), table, keys, update, guard), rows)


def _upsert_statement(
    stmt: Insert, table: sa.Table, keys: Sequence[str], update: Sequence[str], guard: str
) -> Insert:
    return stmt.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={c: stmt.excluded[c] for c in update},
        where=table.c[guard] < stmt.excluded[guard],
    )


@functools.lru_cache(maxsize=256)
def _bulk_upsert(
    table: sa.Table,
    columns: tuple[str, ...],
    keys: tuple[str, ...],
    update: tuple[str, ...],
    guard: str,
) -> tuple[BulkInsert, Insert]:
    bulk = BulkInsert(table, columns)
    return bulk, _upsert_statement(bulk.statement, table, keys, update, guard)


async def _insert_new(conn: AsyncConnection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` where their key is not there yet (one statement, ``BulkInsert``)."""
    if not rows:
        return
    if all(r.keys() == rows[0].keys() for r in rows):
        bulk, stmt = _bulk_insert_new(table, tuple(rows[0]))
        await conn.execute(stmt, bulk.params(conn.dialect, rows))
        return
    await conn.execute(insert(table).on_conflict_do_nothing(), rows)


@functools.lru_cache(maxsize=256)
def _bulk_insert_new(table: sa.Table, columns: tuple[str, ...]) -> tuple[BulkInsert, Insert]:
    bulk = BulkInsert(table, columns)
    return bulk, bulk.statement.on_conflict_do_nothing()


def read_model(schema: str = SCHEMA, keys: KeyRing | None = None) -> list[Projection]:
    """The projections of schema ``messaging`` (entry point ``confab.projections``), built
    on ``schema``: the CLI rebuilds and verifies them in a scratch schema."""
    return [
        UsersProjection(schema=schema, keys=keys),
        ConversationsProjection(schema=schema, keys=keys),
        SupportProjection(schema=schema, keys=keys),
        SearchProjection(schema=schema, keys=keys),
    ]


# -- users -----------------------------------------------------------------------------------


class UsersProjection(Projection):
    """Who may take part and how they are shown: name, avatar, banned, erased."""

    stream = IDENTITY.name
    subjects = USER_SUBJECTS

    def __init__(
        self, name: str = "messaging.users", schema: str = SCHEMA, keys: KeyRing | None = None
    ) -> None:
        self.name = name
        self.metadata = sa.MetaData(schema=schema)  # another schema for a rebuild
        self.tables: UserTables = define_user_tables(self.metadata)
        self.keys = keys  # reveals sealed profiles; without it they read as erased
        # The conversation tables this projection blanks on an erasure (not its own).
        self.schema = schema
        self.shadowed = sa.table(
            "shadowed_messages",
            sa.column("sender_id", sa.Text),
            sa.column("content", sa.Text),
            sa.column("metadata", sa.JSON),
            sa.column("mentions", JSONB),
            sa.column("link_preview", sa.JSON),
            schema=schema,
        )
        self.messages = sa.table(
            "messages",
            sa.column("sender_id", sa.Text),
            sa.column("content", sa.Text),
            sa.column("metadata", sa.JSON),
            sa.column("mentions", JSONB),
            sa.column("link_preview", sa.JSON),
            schema=schema,
        )
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        users = self.tables.users
        ids = {e.event.user_id for e in events if isinstance(e.event, USER_EVENTS)}
        if not ids:
            return
        if self.keys is not None:
            events = await self.keys.reveal_all(events)
        erased = sorted({e.event.user_id for e in events if isinstance(e.event, UserErased)})
        if erased:
            if self.keys is not None:
                for e in events:
                    if isinstance(e.event, UserErased):
                        self.keys.forget(e.event.workspace_id, e.event.user_id)
            await self._blank_messages(conn, erased)
            await blank_notes(conn, erased, self.messages.schema or SCHEMA)
        loaded = await conn.execute(sa.select(users).where(users.c.id.in_(sorted(ids))))
        rows: dict[str, dict[str, Any]] = {r.id: dict(r._mapping) for r in loaded}
        changed: set[str] = set()
        for envelope in events:
            event = envelope.event
            if not isinstance(event, USER_EVENTS):
                continue
            row = rows.get(event.user_id)
            if row is not None and row["seq"] >= envelope.seq:
                continue
            if isinstance(event, UserUpserted):
                if row is None:
                    row = rows[event.user_id] = {
                        "id": event.user_id,
                        "workspace_id": event.workspace_id,
                        "banned": False,
                        "erased": False,
                    }
                if not row["erased"]:
                    row["name"] = event.name
                    row["avatar_url"] = event.avatar_url
            elif row is None:
                continue  # a flag for a user never upserted: nothing to show
            elif isinstance(event, UserErased):
                row.update(name=realtime.ERASED_NAME, avatar_url=None, erased=True)
            else:
                row["banned"] = isinstance(event, UserBanned)
            row["seq"] = envelope.seq
            changed.add(event.user_id)
        await _upsert(
            conn,
            users,
            [rows[i] for i in sorted(changed)],
            keys=["id"],
            update=["name", "avatar_url", "banned", "erased", "seq"],
            guard="seq",
        )

    async def _blank_messages(self, conn: AsyncConnection, user_ids: list[str]) -> None:
        """What a replay shows for erased users' messages (``conversation.ERASED_MESSAGE``).

        Timeline entries hold no content (``/events`` renders these rows), so the
        messages are all there is to blank."""
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ERASURE_LOCK)))
        for m in (self.messages, self.shadowed):
            await conn.execute(
                m.update().where(m.c.sender_id.in_(user_ids)).values(**conversation.ERASED_MESSAGE)
            )
        await remove_erased(conn, self.schema, user_ids)  # and from the search index


# -- conversations ---------------------------------------------------------------------------


class ConversationsProjection(Projection):
    stream = CONVERSATIONS.name
    subjects = CONVERSATIONS.subjects
    # Copies of messaging share the conversations (a subject is one conversation, the
    # default partition key); 16 leaves room for more copies than a deployment runs.
    # Every row carries the seq that last wrote it, so events applied again (after a
    # change of this number) change nothing.
    partitions = 16

    def __init__(
        self,
        name: str = "messaging.conversations",
        schema: str = SCHEMA,
        keys: KeyRing | None = None,
    ) -> None:
        self.name = name
        self.metadata = sa.MetaData(schema=schema)  # another schema for a rebuild
        self.tables: ConversationTables = define_conversation_tables(self.metadata)
        self.keys = keys  # reveals sealed messages; without it they read as erased
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        if self.keys is not None:
            events = await self.keys.reveal_all(events)
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(ERASURE_LOCK)))
        batch = _Batch(self.tables)
        await batch.load(conn, events)
        for envelope in events:
            batch.fold(envelope)
        await batch.write(conn)


def _workspace_of(subject: str) -> str:
    # conv.evt.<workspace>.<conversation>
    parts = subject.split(".")
    return parts[2] if len(parts) == 4 else ""


def _conversation_row(view: ConversationView) -> dict[str, Any]:
    return {
        "id": view.id,
        "workspace_id": view.workspace_id,
        "type": view.kind,
        "title": view.title,
        "metadata": view.metadata,
        "created_by": view.created_by,
        "created_at": view.created_at,
        "last_seq": view.last_seq,
        "last_message_id": view.last_message_id,
        "last_activity_at": view.last_activity_at,
        "stream_seq": view.stream_seq,
        "pin_policy": view.pin_policy,
        "frozen": view.frozen,
    }


def _participant_row(cid: str, part: ParticipantView) -> dict[str, Any]:
    return {
        "conversation_id": cid,
        "user_id": part.user_id,
        "active": part.active,
        "last_read_seq": part.last_read_seq,
        "unread_count": 0,  # a new row's; recounted below, never written over
        "joined_seq": part.joined_seq,
        "seq": part.seq,
    }


class _Batch:
    """The views one batch touches, loaded once, folded in memory, written once.

    The fold is ``confab.conversation.evolve``, the one every reader uses; the
    views here hold only the rows the batch's events touch.
    """

    def __init__(self, tables: ConversationTables) -> None:
        self.t = tables
        self.views: dict[str, ConversationView] = {}
        # Final state per (message, emoji, user): the seq it was added at, or None if removed;
        # and those removed at some point of the batch (their stored row goes first).
        self.reaction_ops: dict[tuple[str, str, str], int | None] = {}
        self.reactions_removed: set[tuple[str, str, str]] = set()
        self.reports: list[dict[str, Any]] = []
        self.shadowed: list[dict[str, Any]] = []
        # Their senders' edits and deletions of shadowed posts, in order (after the posts).
        self.shadow_edits: list[dict[str, Any]] = []
        self.shadow_deletions: list[dict[str, Any]] = []
        self.report_status: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.dirty_conversations: set[str] = set()
        self.dirty_participants: set[tuple[str, str]] = set()
        self.dirty_messages: set[tuple[str, str]] = set()  # (conversation, message)
        self.thread_reads: dict[tuple[str, str], dict[str, Any]] = {}  # (parent, user) -> row
        # Unread counts: conversations recounted whole (a message deleted, hidden or
        # merged), participants recounted one by one (joined, left, read), and the
        # posts of the batch by conversation, added to everyone else's count.
        self.unread_conversations: set[str] = set()
        self.unread_pairs: set[tuple[str, str]] = set()
        self.posts: dict[str, list[str]] = {}
        # Visitors merged into known users: their messages change authors (by statement,
        # since a batch loads only the messages its events name).
        self.merges: list[dict[str, str]] = []

    # -- load --------------------------------------------------------------------------

    async def load(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        t = self.t
        conversation_ids: set[str] = set()
        message_ids: set[str] = set()
        pairs: set[tuple[str, str]] = set()
        for envelope in events:
            event = envelope.event
            if not isinstance(event, ConversationEvent):
                continue
            conversation_ids.add(event.conversation_id)
            match event:
                case (
                    MessageEdited()
                    | MessageModerated()
                    | MessageDeleted()
                    | MessagePinned()
                    | MessageUnpinned()
                    | MessagePreviewed()
                ):
                    message_ids.add(event.message_id)
                case MessagePosted() if event.parent_id is not None:
                    message_ids.add(event.parent_id)  # its thread summary changes
                case ReadMarked() if event.parent_id is not None:
                    pass  # a thread's read mark: its own table, guarded by the mark
                case ParticipantAdded() | ParticipantRemoved() | ReadMarked():
                    pairs.add((event.conversation_id, event.user_id))
                case ParticipantMerged():
                    pairs.add((event.conversation_id, event.user_id))
                    pairs.add((event.conversation_id, event.into_id))
        c, p, m = t.conversations, t.participants, t.messages
        if conversation_ids:
            rows = await conn.execute(sa.select(c).where(c.c.id.in_(sorted(conversation_ids))))
            self.views = {row.id: conversation_view(row._mapping) for row in rows}
        if message_ids:
            rows = await conn.execute(sa.select(m).where(m.c.id.in_(sorted(message_ids))))
            for row in rows:
                view = self.views.get(row.conversation_id)
                if view is not None:
                    view.messages[row.id] = MessageView.from_row(row._mapping)
        if pairs:
            rows = await conn.execute(
                sa.select(p).where(sa.tuple_(p.c.conversation_id, p.c.user_id).in_(sorted(pairs)))
            )
            for row in rows:
                view = self.views.get(row.conversation_id)
                if view is not None:
                    view.participants[row.user_id] = ParticipantView(
                        row.user_id,
                        active=row.active,
                        last_read_seq=row.last_read_seq,
                        joined_seq=row.joined_seq,
                        seq=row.seq,
                    )

    # -- fold --------------------------------------------------------------------------

    def fold(self, envelope: Envelope) -> None:
        event = envelope.event
        if not isinstance(event, ConversationEvent):
            return
        cid = event.conversation_id
        view = self.views.get(cid)
        if view is None:
            workspace = _workspace_of(envelope.subject) or envelope.workspace
            view = self.views[cid] = ConversationView(cid, workspace)
        if isinstance(event, MessageReported):
            if view.exists:
                self._reported(envelope, event, view)
            return
        if isinstance(event, MessageShadowed):
            if view.exists:
                self.shadowed.append(render.shadowed_view(event, envelope.seq).row())
            return
        if isinstance(event, MessageShadowEdited):
            change = {"b_id": event.message_id, "b_content": event.content, "b_at": event.at}
            self.shadow_edits.append(change)
            return
        if isinstance(event, MessageShadowDeleted):
            self.shadow_deletions.append({"b_id": event.message_id})
            return
        if isinstance(event, MessageModerated) and view.exists and event.seq > view.last_seq:
            self.report_status.append(
                {
                    "b_message_id": event.message_id,
                    "b_status": REPORT_STATUS[event.action],
                    "b_seq": envelope.seq,
                }
            )
        entry = conversation.evolve(view, event, envelope.seq)
        if entry is None:
            return
        self.events.append(
            {
                "conversation_id": cid,
                "seq": entry.seq,
                "stream_seq": entry.stream_seq,
                "name": entry.name,
                "data": entry.data,
                "at": entry.at,
            }
        )
        self.dirty_conversations.add(cid)
        match event:
            case ConversationCreated():
                for user_id in event.participant_ids:
                    self._participant_changed(cid, user_id)
            case MessagePosted():
                self.dirty_messages.add((cid, event.message_id))
                if event.parent_id is not None:
                    self.dirty_messages.add((cid, event.parent_id))
                self.posts.setdefault(cid, []).append(event.message_id)
            case MessageEdited() | MessagePinned() | MessageUnpinned() | MessagePreviewed():
                self.dirty_messages.add((cid, event.message_id))
            case MessageDeleted() | MessageModerated():
                self.dirty_messages.add((cid, event.message_id))
                self.unread_conversations.add(cid)
            case ReactionAdded() | ReactionRemoved():
                key = (event.message_id, event.emoji, event.user_id)
                if isinstance(event, ReactionRemoved):
                    self.reaction_ops[key] = None
                    self.reactions_removed.add(key)
                elif self.reaction_ops.get(key) is None:
                    # As the fold: an added reaction keeps the seq it was first added at.
                    self.reaction_ops[key] = event.seq
            case ReadMarked() if event.parent_id is not None:
                key = (event.parent_id, event.user_id)
                self.thread_reads[key] = {
                    "parent_id": event.parent_id,
                    "user_id": event.user_id,
                    "conversation_id": cid,
                    "last_read_seq": view.thread_reads[key],
                }
            case ParticipantAdded() | ParticipantRemoved() | ReadMarked():
                self._participant_changed(cid, event.user_id)
            case ParticipantMerged():
                self._participant_changed(cid, event.user_id)
                self._participant_changed(cid, event.into_id)
                self.unread_conversations.add(cid)  # the messages changed authors
                self.merges.append({"b_cid": cid, "b_from": event.user_id, "b_into": event.into_id})

    def _participant_changed(self, cid: str, user_id: str) -> None:
        self.dirty_participants.add((cid, user_id))
        self.unread_pairs.add((cid, user_id))

    def _reported(self, envelope: Envelope, event: MessageReported, view: ConversationView) -> None:
        self.reports.append(
            {
                "id": event.report_id,
                "workspace_id": view.workspace_id,
                "conversation_id": event.conversation_id,
                "message_id": event.message_id,
                "reporter_id": event.reporter_id,
                "reason": event.reason,
                "created_at": event.at,
                "status": "open",
                "stream_seq": envelope.seq,
                "status_seq": envelope.seq,
            }
        )

    # -- write -------------------------------------------------------------------------

    async def write(self, conn: AsyncConnection) -> None:
        t = self.t
        views = self.views
        await _upsert(
            conn,
            t.conversations,
            [_conversation_row(views[i]) for i in sorted(self.dirty_conversations)],
            keys=["id"],
            update=[
                "title",
                "metadata",
                "last_seq",
                "last_message_id",
                "last_activity_at",
                "stream_seq",
                "pin_policy",
                "frozen",
            ],
            guard="last_seq",
        )
        await _upsert(
            conn,
            t.participants,
            [
                _participant_row(cid, views[cid].participants[uid])
                for cid, uid in sorted(self.dirty_participants)
            ],
            keys=["conversation_id", "user_id"],
            update=["active", "last_read_seq", "joined_seq", "seq"],
            guard="seq",
        )
        messages = [
            found.row()
            for cid, mid in sorted(self.dirty_messages)
            if (found := views[cid].messages.get(mid)) is not None
        ]
        await _upsert(
            conn,
            t.messages,
            messages,
            keys=["id"],
            update=list(conversation.MESSAGE_CHANGES),
            guard="version",
        )
        if self.merges:
            m = t.messages
            await conn.execute(
                m.update()
                .where(
                    m.c.conversation_id == sa.bindparam("b_cid"),
                    m.c.sender_id == sa.bindparam("b_from"),
                )
                .values(sender_id=sa.bindparam("b_into")),
                self.merges,
            )
        await _upsert(
            conn,
            t.thread_reads,
            [self.thread_reads[k] for k in sorted(self.thread_reads)],
            keys=["parent_id", "user_id"],
            update=["last_read_seq"],
            guard="last_read_seq",
        )
        await self._write_reactions(conn)
        await _insert_new(conn, t.reports, self.reports)
        await _insert_new(conn, t.shadowed, self.shadowed)
        s = t.shadowed
        if self.shadow_edits:
            await conn.execute(
                s.update()
                .where(s.c.id == sa.bindparam("b_id"), sa.not_(s.c.deleted))
                .values(content=sa.bindparam("b_content"), edited_at=sa.bindparam("b_at")),
                self.shadow_edits,
            )
        if self.shadow_deletions:
            await conn.execute(
                s.update()
                .where(s.c.id == sa.bindparam("b_id"))
                .values(deleted=True, content="", metadata={}),
                self.shadow_deletions,
            )
        if self.report_status:
            reports = t.reports
            await conn.execute(
                reports.update()
                .where(
                    reports.c.message_id == sa.bindparam("b_message_id"),
                    reports.c.status_seq < sa.bindparam("b_seq"),
                )
                .values(status=sa.bindparam("b_status"), status_seq=sa.bindparam("b_seq")),
                self.report_status,
            )
        await _insert_new(conn, t.events, self.events)
        await self._recount_unread(conn)

    async def _write_reactions(self, conn: AsyncConnection) -> None:
        r = self.t.reactions
        added = [
            {"message_id": m, "emoji": e, "user_id": u, "seq": seq}
            for (m, e, u), seq in sorted(self.reaction_ops.items())
            if seq is not None
        ]
        removed = [
            {"b_message_id": m, "b_emoji": e, "b_user_id": u}
            for m, e, u in sorted(self.reactions_removed)
        ]
        if removed:
            await conn.execute(
                r.delete().where(
                    r.c.message_id == sa.bindparam("b_message_id"),
                    r.c.emoji == sa.bindparam("b_emoji"),
                    r.c.user_id == sa.bindparam("b_user_id"),
                ),
                removed,
            )
        await _insert_new(conn, r, added)

    async def _recount_unread(self, conn: AsyncConnection) -> None:
        """Unread = visible messages by others after the participant's read mark, exactly.

        Where a batch only added messages to a conversation, each count goes up by the
        batch's posts that count for that participant: a statement over the batch's
        posts, not over the conversation's history (a member who never reads a busy
        conversation would make every batch cost in proportion to it). What else
        changes counts (a deletion, a hidden or restored message, a merge) recounts the
        whole conversation; a join, a leave or a read recounts that participant after
        the increment, so that count is exact either way.
        """
        await self._add_posts(conn)
        conversations = sorted(self.unread_conversations)
        pairs = sorted(k for k in self.unread_pairs if k[0] not in self.unread_conversations)
        if not conversations and not pairs:
            return
        p, m = self.t.participants, self.t.messages
        unread = (
            sa.select(sa.func.count())
            .select_from(m)
            .where(
                m.c.conversation_id == p.c.conversation_id,
                m.c.seq > p.c.last_read_seq,
                sa.not_(m.c.deleted),
                sa.not_(m.c.hidden),
                m.c.parent_id.is_(None),  # thread replies count in their thread
                m.c.sender_id.is_distinct_from(p.c.user_id),
            )
            .scalar_subquery()
        )
        where: list[Any] = []
        if conversations:
            where.append(p.c.conversation_id.in_(conversations))
        if pairs:
            where.append(sa.tuple_(p.c.conversation_id, p.c.user_id).in_(pairs))
        await conn.execute(p.update().where(sa.or_(*where)).values(unread_count=unread))

    async def _add_posts(self, conn: AsyncConnection) -> None:
        """The increment: the batch's counted posts (as they are after the batch) of the
        conversations not recounted whole."""
        cids: list[str] = []
        seqs: list[int] = []
        senders: list[str | None] = []
        for cid, message_ids in self.posts.items():
            if cid in self.unread_conversations:
                continue
            messages = self.views[cid].messages
            for message_id in message_ids:
                message = messages.get(message_id)
                if message is None or message.deleted or message.hidden or message.parent_id:
                    continue
                cids.append(cid)
                seqs.append(message.seq)
                senders.append(message.sender_id)
        if cids:
            statement = _add_posts_statement(self.t.participants)
            await conn.execute(statement, {"cids": cids, "seqs": seqs, "senders": senders})


@functools.lru_cache(maxsize=64)
def _add_posts_statement(participants: sa.Table) -> sa.Update:
    """``unread_count += n`` for every participant with posts by others after their read
    mark among those bound (``cids``, ``seqs``, ``senders``: one entry per post)."""
    p, q = participants, participants.alias("q")
    posts = (
        sa.func.unnest(
            sa.cast(sa.bindparam("cids"), ARRAY(sa.Text)),
            sa.cast(sa.bindparam("seqs"), ARRAY(sa.Integer)),
            sa.cast(sa.bindparam("senders"), ARRAY(sa.Text)),
        )
        .table_valued("cid", "seq", "sender")
        .render_derived()
    )
    counts = (
        sa.select(q.c.conversation_id, q.c.user_id, sa.func.count().label("n"))
        .select_from(
            q.join(
                posts,
                sa.and_(
                    q.c.conversation_id == posts.c.cid,
                    posts.c.seq > q.c.last_read_seq,
                    posts.c.sender.is_distinct_from(q.c.user_id),
                ),
            )
        )
        .group_by(q.c.conversation_id, q.c.user_id)
        .subquery("counts")
    )
    return (
        p.update()
        .where(p.c.conversation_id == counts.c.conversation_id, p.c.user_id == counts.c.user_id)
        .values(unread_count=p.c.unread_count + counts.c.n)
    )

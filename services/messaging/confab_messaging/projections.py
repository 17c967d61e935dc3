"""The messaging read models, projected in batches.

``UsersProjection`` keeps the profiles and flags messaging needs from
``IDENTITY`` (``identity.evt.*.user.*``). ``ConversationsProjection`` keeps
conversations, participants (with exact unread counts), messages, reactions,
reports and the real-time payload of every participant-visible event (the
``events`` table, for recovery) from ``CONVERSATIONS``.

A batch is applied in memory first: the rows it touches are loaded with one
query per table, every event is folded into them in stream order (rendering
the payloads as it goes), and the results are written back with one
multi-row statement per table. Unread counts are then recomputed, with one
statement, for the conversations and participants the batch touched.

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

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from confab import realtime
from confab.bus import CONVERSATIONS, IDENTITY
from confab.contracts.identity import UserBanned, UserErased, UserUnbanned, UserUpserted
from confab.contracts.messaging import (
    ConversationCreated,
    ConversationEvent,
    MessageDeleted,
    MessageEdited,
    MessageModerated,
    MessagePosted,
    MessageReported,
    ParticipantAdded,
    ParticipantRemoved,
    ReactionAdded,
    ReactionRemoved,
    ReadMarked,
)
from confab.events import Envelope
from confab.personal import KeyRing
from confab.projection import Projection
from confab_messaging import render
from confab_messaging.store import (
    SCHEMA,
    ConversationTables,
    UserTables,
    define_conversation_tables,
    define_user_tables,
)

USER_SUBJECTS = ("identity.evt.*.user.*",)
USER_EVENTS = (UserUpserted, UserErased, UserBanned, UserUnbanned)

REPORT_STATUS = {"hide": "hidden", "restore": "restored", "delete": "deleted"}

# Blanking an erased user's messages holds this transaction lock exclusively and a
# batch of conversation events shares it, so neither writes back rows the other
# read before it committed.
ERASURE_LOCK = 0x636F6E6661625F65  # "confab_e"


async def _upsert(
    conn: AsyncConnection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    *,
    keys: Sequence[str],
    update: Sequence[str],
    guard: str,
) -> None:
    """Insert ``rows``, or update ``update`` where the stored ``guard`` column is older."""
    if not rows:
        return
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={c: stmt.excluded[c] for c in update},
        where=table.c[guard] < stmt.excluded[guard],
    )
    await conn.execute(stmt, rows)


def read_model(schema: str = SCHEMA, keys: KeyRing | None = None) -> list[Projection]:
    """The projections of schema ``messaging`` (entry point ``confab.projections``), built
    on ``schema``: the CLI rebuilds and verifies them in a scratch schema."""
    return [
        UsersProjection(schema=schema, keys=keys),
        ConversationsProjection(schema=schema, keys=keys),
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
        self.messages = sa.table(
            "messages",
            sa.column("sender_id", sa.Text),
            sa.column("content", sa.Text),
            sa.column("metadata", sa.JSON),
            schema=schema,
        )
        self.events = sa.table(
            "events", sa.column("name", sa.Text), sa.column("data", JSONB), schema=schema
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
        """What a replay shows for erased users' messages: no content, no metadata."""
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ERASURE_LOCK)))
        m, e = self.messages, self.events
        await conn.execute(
            m.update().where(m.c.sender_id.in_(user_ids)).values(content="", metadata={})
        )
        blank = sa.cast(sa.literal('{"content": "", "metadata": {}}'), JSONB)
        await conn.execute(
            e.update()
            .where(
                e.c.name.in_([realtime.MESSAGE_CREATED, realtime.MESSAGE_UPDATED]),
                e.c.data["sender"]["id"].astext.in_(user_ids),
            )
            .values(data=e.c.data.op("||")(blank))
        )


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


class _Batch:
    """The rows one batch touches, loaded once, changed in memory, written once."""

    def __init__(self, tables: ConversationTables) -> None:
        self.t = tables
        self.conversations: dict[str, dict[str, Any]] = {}
        self.participants: dict[tuple[str, str], dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        # Complete reaction sets of the messages whose object this batch renders.
        self.full_reactions: dict[str, dict[tuple[str, str], int]] = {}
        # Final state per (message, emoji, user): the seq it was added at, or None if removed.
        self.reaction_ops: dict[tuple[str, str, str], int | None] = {}
        self.reports: list[dict[str, Any]] = []
        self.report_status: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.dirty_conversations: set[str] = set()
        self.dirty_participants: set[tuple[str, str]] = set()
        self.dirty_messages: set[str] = set()
        self.unread_conversations: set[str] = set()
        self.unread_pairs: set[tuple[str, str]] = set()

    # -- load --------------------------------------------------------------------------

    async def load(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        t = self.t
        conversation_ids: set[str] = set()
        message_ids: set[str] = set()
        rendered: set[str] = set()  # messages whose object is rendered (edit, hide, restore)
        pairs: set[tuple[str, str]] = set()
        for envelope in events:
            event = envelope.event
            if not isinstance(event, ConversationEvent):
                continue
            conversation_ids.add(event.conversation_id)
            match event:
                case MessageEdited() | MessageModerated():
                    message_ids.add(event.message_id)
                    if not isinstance(event, MessageModerated) or event.action != "delete":
                        rendered.add(event.message_id)
                case MessageDeleted() | ReactionAdded() | ReactionRemoved():
                    message_ids.add(event.message_id)
                case ParticipantAdded() | ParticipantRemoved() | ReadMarked():
                    pairs.add((event.conversation_id, event.user_id))
        c, p, m, r = t.conversations, t.participants, t.messages, t.reactions
        if conversation_ids:
            rows = await conn.execute(sa.select(c).where(c.c.id.in_(sorted(conversation_ids))))
            self.conversations = {row.id: dict(row._mapping) for row in rows}
        if message_ids:
            rows = await conn.execute(sa.select(m).where(m.c.id.in_(sorted(message_ids))))
            self.messages = {row.id: dict(row._mapping) for row in rows}
        wanted = sorted(i for i in rendered if i in self.messages)
        if wanted:
            self.full_reactions = {i: {} for i in wanted}
            rows = await conn.execute(
                sa.select(r.c.message_id, r.c.emoji, r.c.user_id, r.c.seq).where(
                    r.c.message_id.in_(wanted)
                )
            )
            for row in rows:
                self.full_reactions[row.message_id][(row.emoji, row.user_id)] = row.seq
        if pairs:
            rows = await conn.execute(
                sa.select(p).where(sa.tuple_(p.c.conversation_id, p.c.user_id).in_(sorted(pairs)))
            )
            self.participants = {
                (row.conversation_id, row.user_id): dict(row._mapping) for row in rows
            }

    # -- fold --------------------------------------------------------------------------

    def _event(
        self, cid: str, seq: int, stream_seq: int, name: str, data: dict[str, Any], at: Any
    ) -> None:
        self.events.append(
            {
                "conversation_id": cid,
                "seq": seq,
                "stream_seq": stream_seq,
                "name": name,
                "data": data,
                "at": at,
            }
        )

    def _message_payload(self, row: dict[str, Any], event_seq: int) -> dict[str, Any]:
        reactions = self.full_reactions.get(row["id"], {})
        pairs = [pair for pair, _ in sorted(reactions.items(), key=lambda item: item[1])]
        return render.message_payload(row, pairs, event_seq)

    def _participant(self, cid: str, user_id: str, seq: int) -> dict[str, Any]:
        key = (cid, user_id)
        row = self.participants.get(key)
        if row is None:
            row = self.participants[key] = {
                "conversation_id": cid,
                "user_id": user_id,
                "active": True,
                "last_read_seq": 0,
                "unread_count": 0,
                "joined_seq": seq,
                "seq": seq,
            }
        self.dirty_participants.add(key)
        self.unread_pairs.add(key)
        return row

    def fold(self, envelope: Envelope) -> None:
        event = envelope.event
        if not isinstance(event, ConversationEvent):
            return
        cid = event.conversation_id
        conv = self.conversations.get(cid)
        if isinstance(event, ConversationCreated):
            if conv is None:
                self._created(envelope, event)
            return
        if conv is None:
            return  # an event of a conversation never created: nothing to attach it to
        if isinstance(event, MessageReported):
            self._reported(envelope, event, conv)
            return
        if event.seq <= conv["last_seq"]:
            return  # already applied
        seq = event.seq
        emit = self._event
        match event:
            case MessagePosted():
                row = realtime.posted_row(event, envelope.seq)
                self.messages[event.message_id] = row
                self.dirty_messages.add(event.message_id)
                self.full_reactions[event.message_id] = {}
                conv["last_message_id"] = event.message_id
                conv["last_activity_at"] = event.at
                self.unread_conversations.add(cid)
                emit(
                    cid,
                    seq,
                    envelope.seq,
                    realtime.MESSAGE_CREATED,
                    self._message_payload(row, seq),
                    event.at,
                )
            case MessageEdited():
                row = self.messages.get(event.message_id)
                if row is not None:
                    row.update(content=event.content, edited_at=event.at, version=seq)
                    self.dirty_messages.add(event.message_id)
                    emit(
                        cid,
                        seq,
                        envelope.seq,
                        realtime.MESSAGE_UPDATED,
                        self._message_payload(row, seq),
                        event.at,
                    )
            case MessageDeleted():
                row = self.messages.get(event.message_id)
                if row is not None:
                    row.update(deleted=True, version=seq)
                    self.dirty_messages.add(event.message_id)
                    self.unread_conversations.add(cid)
                    emit(
                        cid,
                        seq,
                        envelope.seq,
                        realtime.MESSAGE_DELETED,
                        realtime.deleted_payload(row["id"], row["seq"], seq),
                        event.at,
                    )
            case ReactionAdded() | ReactionRemoved():
                added = isinstance(event, ReactionAdded)
                key = (event.message_id, event.emoji, event.user_id)
                self.reaction_ops[key] = seq if added else None
                reactions = self.full_reactions.get(event.message_id)
                if reactions is not None:
                    if added:
                        reactions[(event.emoji, event.user_id)] = seq
                    else:
                        reactions.pop((event.emoji, event.user_id), None)
                name = realtime.REACTION_ADDED if added else realtime.REACTION_REMOVED
                emit(
                    cid,
                    seq,
                    envelope.seq,
                    name,
                    realtime.reaction_payload(event.message_id, event.emoji, event.user_id, seq),
                    event.at,
                )
            case ReadMarked():
                part = self._participant(cid, event.user_id, seq)
                part["last_read_seq"] = max(part["last_read_seq"], event.up_to)
                part["seq"] = seq
                emit(
                    cid,
                    seq,
                    envelope.seq,
                    realtime.MESSAGE_READ,
                    realtime.read_payload(event.user_id, event.up_to, event.at, seq),
                    event.at,
                )
            case ParticipantAdded():
                part = self._participant(cid, event.user_id, seq)
                if not part["active"]:
                    part["joined_seq"] = seq  # a returning participant is listed last
                part.update(active=True, seq=seq)
                emit(
                    cid,
                    seq,
                    envelope.seq,
                    realtime.PARTICIPANT_ADDED,
                    realtime.participant_payload(event.user_id, seq),
                    event.at,
                )
            case ParticipantRemoved():
                part = self._participant(cid, event.user_id, seq)
                part.update(active=False, seq=seq)
                emit(
                    cid,
                    seq,
                    envelope.seq,
                    realtime.PARTICIPANT_REMOVED,
                    realtime.participant_payload(event.user_id, seq),
                    event.at,
                )
            case MessageModerated():
                self._moderated(envelope, event)
        conv["last_seq"] = seq
        conv["stream_seq"] = envelope.seq
        self.dirty_conversations.add(cid)

    def _created(self, envelope: Envelope, event: ConversationCreated) -> None:
        cid = event.conversation_id
        self.conversations[cid] = {
            "id": cid,
            "workspace_id": _workspace_of(envelope.subject) or envelope.workspace,
            "type": event.kind,
            "title": event.title,
            "metadata": dict(event.metadata),
            "created_by": event.created_by,
            "created_at": event.at,
            "last_seq": event.seq,
            "last_message_id": None,
            "last_activity_at": event.at,
            "stream_seq": envelope.seq,
        }
        self.dirty_conversations.add(cid)
        for user_id in event.participant_ids:
            self._participant(cid, user_id, event.seq)
        self._event(
            cid,
            event.seq,
            envelope.seq,
            realtime.CONVERSATION_CREATED,
            render.conversation_payload(event),
            event.at,
        )

    def _reported(self, envelope: Envelope, event: MessageReported, conv: dict[str, Any]) -> None:
        self.reports.append(
            {
                "id": event.report_id,
                "workspace_id": conv["workspace_id"],
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

    def _moderated(self, envelope: Envelope, event: MessageModerated) -> None:
        cid, seq = event.conversation_id, event.seq
        self.report_status.append(
            {
                "b_message_id": event.message_id,
                "b_status": REPORT_STATUS[event.action],
                "b_seq": envelope.seq,
            }
        )
        row = self.messages.get(event.message_id)
        if row is None:
            return
        if event.action == "delete":
            row.update(deleted=True, version=seq)
        else:
            row.update(hidden=event.action == "hide", version=seq)
        self.dirty_messages.add(event.message_id)
        self.unread_conversations.add(cid)
        if event.action == "delete":
            name, data = (
                realtime.MESSAGE_DELETED,
                realtime.deleted_payload(row["id"], row["seq"], seq),
            )
        else:
            name, data = realtime.MESSAGE_UPDATED, self._message_payload(row, seq)
        self._event(cid, seq, envelope.seq, name, data, event.at)

    # -- write -------------------------------------------------------------------------

    async def write(self, conn: AsyncConnection) -> None:
        t = self.t
        await _upsert(
            conn,
            t.conversations,
            [self.conversations[i] for i in sorted(self.dirty_conversations)],
            keys=["id"],
            update=["last_seq", "last_message_id", "last_activity_at", "stream_seq"],
            guard="last_seq",
        )
        await _upsert(
            conn,
            t.participants,
            [self.participants[k] for k in sorted(self.dirty_participants)],
            keys=["conversation_id", "user_id"],
            update=["active", "last_read_seq", "joined_seq", "seq"],
            guard="seq",
        )
        await _upsert(
            conn,
            t.messages,
            [self.messages[i] for i in sorted(self.dirty_messages)],
            keys=["id"],
            update=["content", "edited_at", "deleted", "hidden", "version"],
            guard="version",
        )
        await self._write_reactions(conn)
        if self.reports:
            await conn.execute(insert(t.reports).on_conflict_do_nothing(), self.reports)
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
        if self.events:
            await conn.execute(insert(t.events).on_conflict_do_nothing(), self.events)
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
            for (m, e, u), seq in sorted(self.reaction_ops.items())
            if seq is None
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
        if added:
            await conn.execute(insert(r).on_conflict_do_nothing(), added)

    async def _recount_unread(self, conn: AsyncConnection) -> None:
        """Unread = visible messages by others after the participant's read mark, exactly."""
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

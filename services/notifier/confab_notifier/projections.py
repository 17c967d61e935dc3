"""What the notifier follows, each into its tables in the transaction that moves its
checkpoint (``confab.projection``): a crash anywhere applies each event once.

- ``ConversationsProjection`` (``CONVERSATIONS``, partitioned by conversation, so copies
  share the work and each conversation's events are applied in order): members and
  their read positions, messages (sender, mentions, gone or not, the last stored form),
  and the pending notifications: a message makes one pending row per other member (or
  extends theirs), a read cancels what it covers, leaving the conversation cancels it.
  A pending row is due the workspace's delay after the first unread message, by the
  log's clock (the event's ``at``), so a replay computes the same rows; a message that
  mentions the member brings it forward to ``mention_delay`` after that message when
  that is sooner (a mention is worth telling sooner).
  Only participant-visible events are folded: any other kind of conversation event
  (internal notes, for one) is not a message here, so it is never in a notification.
- ``IdentityProjection`` (``IDENTITY``): profiles as stored (sealed), erased, banned.
  An erasure drops the user's pending notifications and profile.
- ``NotifierProjection`` (``NOTIFIER``): preferences, refusals, push targets, workspace
  settings and push credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from confab.bus import CONVERSATIONS, IDENTITY, NOTIFIER
from confab.contracts.events.identity import UserBanned, UserErased, UserUnbanned, UserUpserted
from confab.contracts.events.messaging import (
    ConversationCreated,
    ConversationUpdated,
    MessageDeleted,
    MessageEdited,
    MessageModerated,
    MessagePosted,
    ParticipantAdded,
    ParticipantRemoved,
    ReadMarked,
)
from confab.contracts.events.notifier import (
    EmailRefused,
    PreferencesSet,
    PushCredentialsSet,
    PushTargetAdded,
    PushTargetRemoved,
    SettingsSet,
)
from confab.db import BulkInsert
from confab.events import Envelope, encode
from confab.projection import Projection
from confab_notifier.store import SCHEMA, define_tables

DEFAULT_DELAY = 60.0
DEFAULT_MENTION_DELAY = 10.0


def mentions_of(event: MessagePosted | MessageEdited) -> list[str]:
    """The user ids ``mentions`` names (issue 23's field, when the event has it)."""
    out: list[str] = []
    for item in getattr(event, "mentions", None) or ():
        uid = item.get("user_id") if isinstance(item, dict) else getattr(item, "user_id", None)
        if isinstance(uid, str):
            out.append(uid)
    return out


def is_staff_only(event: Any) -> bool:
    """A message only staff see (an internal note, in whatever form it comes)."""
    return bool(
        getattr(event, "internal", False)
        or getattr(event, "note", False)
        or getattr(event, "visibility", "") in ("staff", "internal")
    )


class ConversationsProjection(Projection):
    stream = CONVERSATIONS.name
    subjects = CONVERSATIONS.subjects

    def __init__(
        self,
        partitions: int,
        default_delay: float = DEFAULT_DELAY,
        mention_delay: float = DEFAULT_MENTION_DELAY,
    ) -> None:
        self.name = "notifier.conversations"
        self.partitions = partitions
        self.default_delay = default_delay
        self.mention_delay = mention_delay
        self.metadata = sa.MetaData(schema=SCHEMA)
        self.t = define_tables(self.metadata)
        self._statements()
        super().__init__()

    def partition_key(self, subject: str) -> str:
        return subject.rsplit(".", 1)[-1]  # conv.evt.<ws>.<conversation>

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        # Posts between other events are applied together, one statement per table for
        # the run (``_posted``): the same rows as one by one, since a sender's read
        # position and the others' pending rows never read each other.
        run: list[tuple[Envelope, MessagePosted]] = []
        for envelope in events:
            event = envelope.event
            if isinstance(event, MessagePosted):
                if not is_staff_only(event):
                    run.append((envelope, event))
                continue
            if run:
                await self._posted(conn, run)
                run = []
            await self._one(conn, envelope)
        if run:
            await self._posted(conn, run)

    async def _one(self, conn: AsyncConnection, envelope: Envelope) -> None:
        t, event = self.t, envelope.event
        match event:
            case ConversationCreated():
                await conn.execute(
                    insert(t.conversations)
                    .values(
                        conversation_id=event.conversation_id,
                        workspace_id=envelope.workspace,
                        title=event.title,
                    )
                    .on_conflict_do_nothing()
                )
                if event.participant_ids:
                    await conn.execute(
                        insert(t.members).on_conflict_do_nothing(),
                        [
                            {
                                "conversation_id": event.conversation_id,
                                "user_id": uid,
                                "workspace_id": envelope.workspace,
                            }
                            for uid in dict.fromkeys(event.participant_ids)
                        ],
                    )
            case ConversationUpdated():
                c = t.conversations
                await conn.execute(
                    c.update()
                    .where(c.c.conversation_id == event.conversation_id)
                    .values(title=event.title)
                )
            case ParticipantAdded():
                # Messages before joining are not "unread" for notifications.
                await conn.execute(
                    insert(t.members)
                    .values(
                        conversation_id=event.conversation_id,
                        user_id=event.user_id,
                        workspace_id=envelope.workspace,
                        read_up_to=event.seq,
                    )
                    .on_conflict_do_nothing()
                )
            case ParticipantRemoved():
                m, p = t.members, t.pending
                await conn.execute(
                    m.delete().where(
                        m.c.conversation_id == event.conversation_id, m.c.user_id == event.user_id
                    )
                )
                await conn.execute(
                    p.delete().where(
                        p.c.conversation_id == event.conversation_id, p.c.user_id == event.user_id
                    )
                )
            case MessageEdited():
                m = t.messages
                await conn.execute(
                    m.update()
                    .where(m.c.conversation_id == event.conversation_id)
                    .where(m.c.message_id == event.message_id)
                    .values(body=encode(event), kind=event.type, mentions=mentions_of(event))
                )
            case MessageDeleted():
                await self._gone(conn, event.conversation_id, event.message_id, True)
            case MessageModerated():
                await self._gone(
                    conn, event.conversation_id, event.message_id, event.action != "restore"
                )
            case ReadMarked():
                await self._read(conn, event)

    async def _posted(
        self, conn: AsyncConnection, run: Sequence[tuple[Envelope, MessagePosted]]
    ) -> None:
        """A run of posts in three statements, whatever its length: the messages, the
        senders' read marks (each sender's highest post per conversation), and the
        pending rows of everyone else, folded per (member, conversation) in the
        statement, as applying the posts one by one would leave them."""
        messages: list[dict[str, Any]] = []
        read_marks: dict[tuple[str, str], int] = {}
        pend: dict[str, list[Any]] = {
            "ws": [], "cid": [], "sender": [], "part": [], "seq": [], "at": [], "mentioned": []
        }  # fmt: skip
        for envelope, event in run:
            names = mentions_of(event)
            cid, sender = event.conversation_id, event.sender_id
            messages.append(
                {
                    "conversation_id": cid,
                    "seq": event.seq,
                    "message_id": event.message_id,
                    "sender_id": sender,
                    "mentions": names,
                    "body": encode(event),
                    "kind": event.type,
                    "at": event.at,
                }
            )
            if sender is not None:  # the sender has read what they sent
                key = (cid, sender)
                read_marks[key] = max(read_marks.get(key, 0), event.seq)
            pend["ws"].append(envelope.workspace)
            pend["cid"].append(cid)
            pend["sender"].append(sender)
            pend["part"].append(self.partition_of(envelope.subject))
            pend["seq"].append(event.seq)
            pend["at"].append(event.at)
            pend["mentioned"].append(msgspec.json.encode(names).decode())
        dialect = conn.dialect
        await conn.execute(self._insert_messages, self._messages.params(dialect, messages))
        if read_marks:
            cids, uids = zip(*read_marks, strict=True)
            await conn.execute(
                self._sender_read,
                {"cids": list(cids), "uids": list(uids), "seqs": list(read_marks.values())},
            )
        await conn.execute(self._pend, pend)

    def _statements(self) -> None:
        """The three statements of a run of posts, built once (bound per run)."""
        t = self.t
        self._messages = BulkInsert(
            t.messages,
            ["conversation_id", "seq", "message_id", "sender_id", "mentions", "body", "kind", "at"],
        )
        self._insert_messages = self._messages.statement.on_conflict_do_nothing()
        text_array = postgresql.ARRAY(sa.Text)
        self._sender_read = sa.text(
            f"""
            UPDATE {SCHEMA}.members AS m SET read_up_to = greatest(m.read_up_to, v.seq)
            FROM unnest(:cids, :uids, :seqs) AS v(cid, uid, seq)
            WHERE m.conversation_id = v.cid AND m.user_id = v.uid
            """
        ).bindparams(
            sa.bindparam("cids", type_=text_array),
            sa.bindparam("uids", type_=text_array),
            sa.bindparam("seqs", type_=postgresql.ARRAY(sa.Integer)),
        )
        # Each post makes a row for every member but its sender, due the workspace's
        # delay after it (sooner for a member it mentions); a member's rows of the run
        # fold into one (the first seq, the last, the soonest due), which an existing
        # row then extends. Mentions travel as one JSON array per post.
        self._pend = sa.text(
            f"""
            INSERT INTO {SCHEMA}.pending AS p
                (user_id, conversation_id, workspace_id, part, first_seq, last_seq, due_at)
            SELECT m.user_id, m.conversation_id, m.workspace_id, min(v.part),
                   min(v.seq), max(v.seq),
                   min(v.at + CASE WHEN v.mentioned @> jsonb_build_array(m.user_id)
                                   THEN least(d.delay, :mention_delay)
                                   ELSE d.delay END * interval '1 second')
            FROM unnest(:ws, :cid, :sender, :part, :seq, :at, CAST(:mentioned AS jsonb[]))
                 AS v(ws, cid, sender, part, seq, at, mentioned)
            CROSS JOIN LATERAL (
                SELECT coalesce(
                    (SELECT s.delay_seconds FROM {SCHEMA}.settings AS s
                     WHERE s.workspace_id = v.ws),
                    :default_delay) AS delay
            ) AS d
            JOIN {SCHEMA}.members AS m
              ON m.conversation_id = v.cid AND (v.sender IS NULL OR m.user_id <> v.sender)
            GROUP BY m.user_id, m.conversation_id, m.workspace_id
            ON CONFLICT (user_id, conversation_id) DO UPDATE
            SET last_seq = excluded.last_seq, due_at = least(p.due_at, excluded.due_at)
            """
        ).bindparams(
            sa.bindparam("ws", type_=text_array),
            sa.bindparam("cid", type_=text_array),
            sa.bindparam("sender", type_=text_array),
            sa.bindparam("part", type_=postgresql.ARRAY(sa.Integer)),
            sa.bindparam("seq", type_=postgresql.ARRAY(sa.Integer)),
            sa.bindparam("at", type_=postgresql.ARRAY(sa.DateTime(timezone=True))),
            sa.bindparam("mentioned", type_=text_array),  # JSON arrays, as text
            sa.bindparam("mention_delay", value=self.mention_delay, type_=sa.Float),
            sa.bindparam("default_delay", value=self.default_delay, type_=sa.Float),
        )

    async def _gone(self, conn: AsyncConnection, cid: str, message_id: str, gone: bool) -> None:
        m = self.t.messages
        await conn.execute(
            m.update()
            .where(m.c.conversation_id == cid, m.c.message_id == message_id)
            .values(gone=gone)
        )

    async def _read(self, conn: AsyncConnection, event: ReadMarked) -> None:
        m, p = self.t.members, self.t.pending
        cid, uid, up_to = event.conversation_id, event.user_id, event.up_to
        await conn.execute(
            m.update()
            .where(m.c.conversation_id == cid, m.c.user_id == uid)
            .values(read_up_to=sa.func.greatest(m.c.read_up_to, up_to))
        )
        mine = (p.c.user_id == uid) & (p.c.conversation_id == cid)
        await conn.execute(p.delete().where(mine, p.c.last_seq <= up_to))
        await conn.execute(
            p.update().where(mine, p.c.first_seq <= up_to).values(first_seq=up_to + 1)
        )


class IdentityProjection(Projection):
    stream = IDENTITY.name
    subjects = ("identity.evt.*.user.*",)

    def __init__(self) -> None:
        self.name = "notifier.identity"
        self.metadata = sa.MetaData(schema=SCHEMA)
        self.t = define_tables(self.metadata)
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        u = self.t.users
        for envelope in events:
            event = envelope.event
            if isinstance(event, UserUpserted):
                row = {"workspace_id": event.workspace_id, "profile": encode(event)}
                await conn.execute(
                    insert(u)
                    .values(user_id=event.user_id, **row)
                    .on_conflict_do_update(
                        index_elements=[u.c.user_id], set_=row, where=~u.c.erased
                    )
                )
            elif isinstance(event, UserErased):
                row = {"workspace_id": event.workspace_id, "profile": None, "erased": True}
                await conn.execute(
                    insert(u)
                    .values(user_id=event.user_id, **row)
                    .on_conflict_do_update(index_elements=[u.c.user_id], set_=row)
                )
                p = self.t.pending
                await conn.execute(p.delete().where(p.c.user_id == event.user_id))
            elif isinstance(event, UserBanned | UserUnbanned):
                banned = isinstance(event, UserBanned)
                await conn.execute(
                    u.update().where(u.c.user_id == event.user_id).values(banned=banned)
                )


class NotifierProjection(Projection):
    stream = NOTIFIER.name
    subjects = ("notify.evt.*.prefs.*", "notify.evt.*.settings.*")

    def __init__(self) -> None:
        self.name = "notifier.settings"
        self.metadata = sa.MetaData(schema=SCHEMA)
        self.t = define_tables(self.metadata)
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        t = self.t
        for envelope in events:
            event = envelope.event
            if isinstance(event, PreferencesSet):
                row = {"workspace_id": event.workspace_id, "data": encode(event)}
                await conn.execute(
                    insert(t.prefs)
                    .values(user_id=event.user_id, **row)
                    .on_conflict_do_update(index_elements=[t.prefs.c.user_id], set_=row)
                )
            elif isinstance(event, EmailRefused):
                refused = {
                    "address": event.address_hash,
                    "code": event.code,
                    "reason": event.reason,
                    "at": event.at.isoformat(),
                    "notification_id": event.notification_id,
                }
                await conn.execute(
                    insert(t.prefs)
                    .values(user_id=event.user_id, workspace_id=event.workspace_id,
                            email_refused=refused)
                    .on_conflict_do_update(
                        index_elements=[t.prefs.c.user_id], set_={"email_refused": refused}
                    )
                )  # fmt: skip
            elif isinstance(event, PushTargetAdded):
                row = {
                    "workspace_id": event.workspace_id,
                    "user_id": event.user_id,
                    "kind": event.kind,
                    "address": event.address,
                    "p256dh": event.p256dh,
                    "auth": event.auth,
                    "created_at": event.at,
                }
                await conn.execute(
                    insert(t.push)
                    .values(id=event.target_id, **row)
                    .on_conflict_do_update(index_elements=[t.push.c.id], set_=row)
                )
            elif isinstance(event, PushTargetRemoved):
                await conn.execute(t.push.delete().where(t.push.c.id == event.target_id))
            elif isinstance(event, PushCredentialsSet):
                row = {"sealed": event.sealed, "platforms": event.platforms}
                c = t.credentials
                await conn.execute(
                    insert(c)
                    .values(workspace_id=event.workspace_id, **row)
                    .on_conflict_do_update(index_elements=[c.c.workspace_id], set_=row)
                )
            elif isinstance(event, SettingsSet):
                row = {"data": encode(event), "delay_seconds": event.delay_seconds}
                await conn.execute(
                    insert(t.settings)
                    .values(workspace_id=event.workspace_id, **row)
                    .on_conflict_do_update(index_elements=[t.settings.c.workspace_id], set_=row)
                )

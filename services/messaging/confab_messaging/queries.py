"""The read side of messaging: one handler per query of ``contracts.messaging``.

Queries read only the read models (``store``), rendered by the one fold's
renderers (``render``, ``confab.conversation``), after waiting (bounded) for
the ``min_seq`` they were given, so a client reads its own writes. People are
shown by their current profile, attachments with fresh URLs from media
(``handlers.Lookups``). Nothing here appends to the log.
"""

from __future__ import annotations

from collections.abc import Sequence

from confab import realtime
from confab.contracts.base import Ok
from confab.contracts.messaging import (
    MAX_PINS,
    Actor,
    CheckParticipant,
    Conversation,
    ConversationList,
    ConversationWithMessages,
    EventList,
    GetConversation,
    HistoryEvent,
    ListConversations,
    ListEvents,
    ListMentions,
    ListMessages,
    ListModeratedMessages,
    ListPins,
    ListReports,
    ListThread,
    Message,
    MessageList,
    ModeratedMessage,
    ModeratedMessageList,
    Report,
    ReportList,
    ThreadPage,
)
from confab.conversation import Entry, MessageView, created_payload, payload
from confab.cursors import parse_time_cursor, time_cursor
from confab.errors import Forbidden, InvalidRequest, NotFound, Unavailable
from confab.eventlog import EventLog
from confab.rpc import CallContext
from confab.shell import Route
from confab_messaging import domain, render
from confab_messaging.handlers import Lookups, conversation_subject, valid
from confab_messaging.store import MessagePage, Row, Store, conversation_view

LIMIT_MAX = 100


def _limit(value: int) -> int:
    if not 1 <= value <= LIMIT_MAX:
        raise InvalidRequest(
            "The limit is out of range.", {"limit": f"must be between 1 and {LIMIT_MAX}"}
        )
    return value


def _conversation_cursor(row: Row) -> str:
    return time_cursor(row["last_activity_at"], row["id"])


def _seq_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    if not cursor.isdigit():
        raise InvalidRequest("The cursor is not valid.", {"cursor": "not a cursor we issued"})
    return int(cursor)


class Queries:
    def __init__(self, store: Store, lookups: Lookups, log: EventLog) -> None:
        self.store = store
        self.lookups = lookups
        self.log = log  # CONVERSATIONS: how far a conversation's history goes

    def routes(self) -> list[Route]:
        return [
            (ListConversations, self.list_conversations),
            (GetConversation, self.get_conversation),
            (ListMessages, self.list_messages),
            (ListModeratedMessages, self.list_moderated_messages),
            (ListEvents, self.list_events),
            (ListReports, self.list_reports),
            (CheckParticipant, self.check_participant),
            (ListThread, self.list_thread),
            (ListPins, self.list_pins),
            (ListMentions, self.list_mentions),
        ]

    # -- rendering -------------------------------------------------------------------------

    async def render_messages(
        self, workspace_id: str, page: MessagePage, viewer: str | None, moderator: bool = False
    ) -> list[Message]:
        """A page of messages as ``viewer`` (or, ``moderator``, the workspace's moderators)
        sees them."""
        users = await self.lookups.users(
            workspace_id, {r["sender_id"] for r in page.rows if r["sender_id"] is not None}
        )
        attachments = await self.lookups.row_attachments(workspace_id, page.rows, moderator)
        return [
            render.message_for(
                row,
                page.reactions.get(row["id"], []),
                viewer,
                users,
                attachments,
                moderator=moderator,
            )
            for row in page.rows
        ]

    async def _conversations(
        self,
        workspace_id: str,
        rows: Sequence[Row],
        unread: dict[str, int],
        viewer: str | None,
    ) -> list[Conversation]:
        ids = [r["id"] for r in rows]
        members = await self.store.participants(ids)
        last_ids = [r["last_message_id"] for r in rows if r["last_message_id"]]
        page = await self.store.messages_by_id(last_ids)
        user_ids = {uid for m in members.values() for uid, _ in m}
        user_ids |= {r["sender_id"] for r in page.rows if r["sender_id"] is not None}
        users = await self.lookups.users(workspace_id, user_ids)
        attachments = await self.lookups.row_attachments(workspace_id, page.rows)
        last = {
            r["id"]: render.message_for(
                r, page.reactions.get(r["id"], []), viewer, users, attachments
            )
            for r in page.rows
        }
        return [
            render.conversation(
                row,
                members.get(row["id"], []),
                users,
                last_message=last.get(row["last_message_id"] or ""),
                unread_count=unread.get(row["id"], 0),
            )
            for row in rows
        ]

    async def _visible(self, actor: Actor, conversation_id: str) -> tuple[Row, int]:
        """The conversation row if the actor may see it, and the viewer's unread count."""
        workspace_id = valid(actor.workspace_id, "Conversation")
        conversation_id = valid(conversation_id, "Conversation")
        found = await self.store.conversation(workspace_id, conversation_id, actor.user_id)
        if found is None:
            raise NotFound(domain.CONVERSATION_NOT_FOUND)
        row, me = found
        return row, me.unread_count if me is not None else 0

    async def existing(self, actor: Actor, conversation_id: str, seq: int) -> Conversation:
        """A conversation as ``actor`` sees it once the read model has applied ``seq`` (the
        write side's answer to creating a direct conversation that exists)."""
        await self.lookups.settle(seq)
        found = await self.store.conversation(actor.workspace_id, conversation_id, actor.user_id)
        if found is None:
            raise Unavailable("The read model is catching up; try again shortly.")
        row, me = found
        unread = me.unread_count if me is not None else 0
        (view,) = await self._conversations(
            actor.workspace_id, [row], {conversation_id: unread}, actor.user_id
        )
        return view

    # -- conversations ---------------------------------------------------------------------

    async def list_conversations(
        self, query: ListConversations, _ctx: CallContext
    ) -> ConversationList:
        limit = _limit(query.limit)
        actor = query.actor
        workspace_id = valid(actor.workspace_id, "Workspace")
        if actor.user_id is not None:
            if query.user_id not in (None, actor.user_id):
                raise Forbidden("You can only list your own conversations.")
            viewer: str | None = actor.user_id
        else:
            viewer = valid(query.user_id, "User") if query.user_id is not None else None
        before = parse_time_cursor(query.cursor)
        await self.lookups.min_seq(query.min_seq)
        if actor.user_id is not None and (query.kind or query.metadata or query.updated_since):
            raise Forbidden("Only the workspace's backend can filter conversations.")
        rows, mine, has_more = await self.store.conversations(
            workspace_id,
            viewer,
            before=before,
            limit=limit,
            kind=query.kind,
            metadata=query.metadata,
            updated_since=query.updated_since,
        )
        unread = {cid: p.unread_count for cid, p in mine.items()}
        data = await self._conversations(workspace_id, rows, unread, viewer)
        return ConversationList(
            data=data,
            has_more=has_more,
            next_cursor=_conversation_cursor(rows[-1]) if has_more and rows else None,
        )

    async def get_conversation(
        self, query: GetConversation, _ctx: CallContext
    ) -> ConversationWithMessages:
        limit = _limit(query.limit)
        await self.lookups.min_seq(query.min_seq)
        row, unread = await self._visible(query.actor, query.conversation_id)
        (conversation_,) = await self._conversations(
            query.actor.workspace_id, [row], {row["id"]: unread}, query.actor.user_id
        )
        page = await self.store.messages(row["id"], before=None, after=None, limit=limit)
        page = await self.with_shadowed(row["id"], query.actor.user_id, page, None, None)
        messages = await self.render_messages(query.actor.workspace_id, page, query.actor.user_id)
        return ConversationWithMessages(
            conversation=conversation_, messages=messages, has_more=page.has_more
        )

    async def check_participant(self, query: CheckParticipant, _ctx: CallContext) -> Ok:
        """For the gateway's own endpoints (uploads, channel authorization): may this actor
        see the conversation, and (``act``) act in it?"""
        await self.lookups.min_seq(query.min_seq)
        await self._visible(query.actor, query.conversation_id)
        if query.act:
            await self.lookups.may_act(query.actor)
        return Ok()

    # -- messages and history --------------------------------------------------------------

    async def list_messages(self, query: ListMessages, _ctx: CallContext) -> MessageList:
        data, has_more, cursor = await self._history(query)
        return MessageList(data=data, has_more=has_more, next_cursor=cursor)

    async def list_moderated_messages(
        self, query: ListModeratedMessages, _ctx: CallContext
    ) -> ModeratedMessageList:
        if query.actor.user_id is not None:
            raise Forbidden("Only the workspace's backend sees hidden messages.")
        data, has_more, cursor = await self._history(query, moderator=True)
        moderated = [m for m in data if isinstance(m, ModeratedMessage)]
        return ModeratedMessageList(data=moderated, has_more=has_more, next_cursor=cursor)

    async def _history(
        self, query: ListMessages | ListModeratedMessages, moderator: bool = False
    ) -> tuple[list[Message], bool, str | None]:
        """A page of history by seq, and the cursor of the next."""
        limit = _limit(query.limit)
        await self.lookups.min_seq(query.min_seq)
        row, _ = await self._visible(query.actor, query.conversation_id)
        page = await self.store.messages(
            row["id"], before=query.before, after=query.after, limit=limit
        )
        if not moderator:
            page = await self.with_shadowed(
                row["id"], query.actor.user_id, page, query.before, query.after
            )
        data = await self.render_messages(
            query.actor.workspace_id, page, query.actor.user_id, moderator
        )
        cursor = None
        if page.has_more and data:
            cursor = str(data[-1].seq if query.after is not None else data[0].seq)
        return data, page.has_more, cursor

    async def with_shadowed(
        self,
        conversation_id: str,
        viewer: str | None,
        page: MessagePage,
        before: int | None,
        after: int | None,
    ) -> MessagePage:
        """``page`` with ``viewer``'s own shadowed posts of the seqs it covers (a shadowed
        post sits after the message whose seq it has); nobody else's, ever."""
        if viewer is None:
            return page
        rows = page.rows
        if after is not None:
            lo, hi = after, (rows[-1]["seq"] if page.has_more and rows else None)
        else:
            lo, hi = (rows[0]["seq"] if page.has_more and rows else 0), before
        mine = await self.store.shadowed(conversation_id, viewer, lo, hi)
        if not mine:
            return page
        merged = sorted(
            [*((r, 0) for r in rows), *((r, 1) for r in mine)],
            key=lambda pair: (pair[0]["seq"], pair[1], pair[0]["stream_seq"]),
        )
        return MessagePage([r for r, _ in merged], page.reactions, page.has_more)

    async def list_events(self, query: ListEvents, _ctx: CallContext) -> EventList:
        limit = _limit(query.limit)
        if query.after < 0:
            raise InvalidRequest("The cursor is not valid.", {"after": "must be 0 or more"})
        subject_ = conversation_subject(query.actor, query.conversation_id)
        # Recovery must not miss what is stored but not projected yet: catch up with the
        # conversation's last event first.
        last = await self.log.last_version(subject_)
        if not last:
            raise NotFound(domain.CONVERSATION_NOT_FOUND)
        if not await self.lookups.settle(last):
            # A partial backlog would leave a gap in the client's recovery.
            raise Unavailable("The read model is catching up; try again shortly.")
        row, _ = await self._visible(query.actor, query.conversation_id)
        rows, has_more = await self.store.events(row["id"], after=query.after, limit=limit)
        entries = [Entry(r["seq"], r["stream_seq"], r["name"], r["at"], r["data"]) for r in rows]
        data = await self._render_entries(query.actor.workspace_id, row, entries)
        return EventList(
            data=data, has_more=has_more, next_cursor=str(data[-1].seq) if has_more else None
        )

    async def _render_entries(
        self, workspace_id: str, row: Row, entries: list[Entry]
    ) -> list[HistoryEvent]:
        """Timeline entries rendered against the messages as they are now (the one fold's
        ``payload``): what history shows, never what was sent before a change."""
        page = await self.store.messages_by_id(
            sorted({i for e in entries if (i := e.message_id) is not None})
        )
        messages = {
            r["id"]: MessageView.from_row(r, page.reactions.get(r["id"], [])) for r in page.rows
        }
        created = [e for e in entries if e.name == realtime.CONVERSATION_CREATED]
        user_ids = {m.sender_id for m in messages.values() if m.sender_id is not None}
        user_ids |= {p["id"] for e in created for p in e.data.get("participants", ())}
        users = await self.lookups.users(workspace_id, user_ids)
        attachments = await self.lookups.shown_attachments(workspace_id, messages.values())
        out = []
        for entry in entries:
            if entry.name == realtime.CONVERSATION_CREATED:
                data = created_payload(conversation_view(row), entry, users)
            else:
                message = messages.get(entry.message_id or "")
                author = render.sender(message.sender_id, users) if message else None
                found = payload(
                    entry, message, author, attachments, conversation=conversation_view(row)
                )
                if found is None:
                    continue  # a message entry whose message is gone from the read model
                data = found
            out.append(HistoryEvent(seq=entry.seq, event=entry.name, data=data, at=entry.at))
        return out

    # -- threads, pins, mentions ---------------------------------------------------------

    async def list_thread(self, query: ListThread, _ctx: CallContext) -> ThreadPage:
        """A page of a thread's replies by seq, with the parent as it is now."""
        limit = _limit(query.limit)
        await self.lookups.min_seq(query.min_seq)
        row, _ = await self._visible(query.actor, query.conversation_id)
        parent_id = valid(query.parent_id, "Thread")
        found = await self.store.message(parent_id, conversation_id=row["id"])
        if found is None or found[0]["parent_id"] is not None:
            raise NotFound("Thread not found.")
        workspace_id, viewer = query.actor.workspace_id, query.actor.user_id
        parent_page = MessagePage([found[0]], {parent_id: found[1]}, False)
        (parent,) = await self.render_messages(workspace_id, parent_page, viewer)
        page = await self.store.messages(
            row["id"], before=query.before, after=query.after, limit=limit, parent_id=parent_id
        )
        data = await self.render_messages(workspace_id, page, viewer)
        cursor = None
        if page.has_more and data:
            cursor = str(data[-1].seq if query.after is not None else data[0].seq)
        mark, unread = (0, 0)
        if viewer is not None:
            mark, unread = await self.store.thread_read(parent_id, viewer)
        return ThreadPage(
            parent=parent,
            data=data,
            has_more=page.has_more,
            next_cursor=cursor,
            last_read_seq=mark,
            unread_count=unread,
        )

    async def list_pins(self, query: ListPins, _ctx: CallContext) -> MessageList:
        await self.lookups.min_seq(query.min_seq)
        row, _ = await self._visible(query.actor, query.conversation_id)
        page = await self.store.pins(row["id"], MAX_PINS)
        data = await self.render_messages(query.actor.workspace_id, page, query.actor.user_id)
        return MessageList(data=data, has_more=False, next_cursor=None)

    async def list_mentions(self, query: ListMentions, _ctx: CallContext) -> MessageList:
        """Messages mentioning the widget's user where they take part now."""
        limit = _limit(query.limit)
        actor = query.actor
        workspace_id = valid(actor.workspace_id, "Workspace")
        if actor.user_id is None:
            raise Forbidden("Mentions are listed for a widget's user.")
        await self.lookups.min_seq(query.min_seq)
        conversation_id = None
        if query.conversation_id is not None:
            row, _ = await self._visible(actor, query.conversation_id)
            conversation_id = row["id"]
        page = await self.store.mentioning(
            workspace_id,
            actor.user_id,
            conversation_id=conversation_id,
            before=_seq_cursor(query.cursor),
            limit=limit,
        )
        data = await self.render_messages(workspace_id, page, actor.user_id)
        cursor = str(page.rows[-1]["stream_seq"]) if page.has_more and page.rows else None
        return MessageList(data=data, has_more=page.has_more, next_cursor=cursor)

    # -- reports ---------------------------------------------------------------------------

    async def list_reports(self, query: ListReports, _ctx: CallContext) -> ReportList:
        limit = _limit(query.limit)
        actor = query.actor
        workspace_id = valid(actor.workspace_id, "Workspace")
        if actor.user_id is not None:
            raise Forbidden("Only the workspace's backend can read reports.")
        # No min_seq here: a moderation queue shows everything stored when it is asked.
        await self.lookups.catch_up()
        rows, has_more = await self.store.reports(
            workspace_id,
            open_only=query.status == "open",
            before=_seq_cursor(query.cursor),
            limit=limit,
        )
        page = await self.store.messages_by_id(sorted({r["message_id"] for r in rows}))
        messages = {m.id: m for m in await self.render_messages(workspace_id, page, None)}
        data = [
            Report(
                id=r["id"],
                conversation_id=r["conversation_id"],
                message=messages[r["message_id"]],
                reporter_id=r["reporter_id"],
                reason=r["reason"],
                created_at=r["created_at"],
                status=r["status"],
            )
            for r in rows
            if r["message_id"] in messages
        ]
        return ReportList(
            data=data,
            has_more=has_more,
            next_cursor=str(rows[-1]["stream_seq"]) if has_more and rows else None,
        )

"""The messaging service's RPC handlers: one method per request of ``contracts.messaging``.

Commands load the conversation (``Aggregates``' cache, caught up from its
subject), decide (``domain``) with what the handler looked up in the read
models passed in, append with optimistic concurrency, and reply once the
append is acknowledged, with its stream sequence. Queries read only the read
models, after waiting (bounded) for the ``min_seq`` they were given.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from confab import realtime
from confab.aggregate import Aggregates, Decision
from confab.bus import CONVERSATIONS, IDENTITY
from confab.contracts import identity
from confab.contracts.base import Event, Ok, Request
from confab.contracts.media import AttachmentList, GetAttachments
from confab.contracts.messaging import (
    Actor,
    AddParticipant,
    Attachment,
    CheckParticipant,
    Conversation,
    ConversationCreated,
    ConversationList,
    ConversationSaved,
    ConversationWithMessages,
    CreateConversation,
    DeleteMessage,
    EditMessage,
    EventList,
    GetConversation,
    HistoryEvent,
    ListConversations,
    ListEvents,
    ListMessages,
    ListModeratedMessages,
    ListReports,
    MarkRead,
    Message,
    MessageEdited,
    MessageList,
    MessagePosted,
    MessageSaved,
    ModeratedMessage,
    ModeratedMessageList,
    ModerateMessage,
    PostMessage,
    React,
    RemoveParticipant,
    Report,
    ReportList,
    ReportMessage,
    SetTyping,
    subject,
)
from confab.conversation import Entry, MessageView, created_payload, payload, shown_attachment_ids
from confab.cursors import parse_time_cursor, time_cursor
from confab.errors import (
    ConfabError,
    Forbidden,
    InternalError,
    InvalidRequest,
    NotFound,
    Unavailable,
)
from confab.ids import is_valid_id, new_id
from confab.logging import get_logger
from confab.projection import ProjectionRunner
from confab.rpc import CallContext, RpcClient
from confab_messaging import domain, render
from confab_messaging.domain import ConversationState
from confab_messaging.standing import Standing
from confab_messaging.store import MessagePage, Row, Store, UserRow, conversation_view

log = get_logger("confab_messaging")

LIMIT_MAX = 100
USER_CACHE_MAX = 100_000

Handler = Callable[[Any, CallContext], Awaitable[Any]]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _valid(value: str | None, what: str) -> str:
    """An id from a request, checked before it goes into a subject; NotFound if malformed."""
    if value is None or not is_valid_id(value):
        raise NotFound(f"{what} not found.")
    return value


def _limit(value: int) -> int:
    if not 1 <= value <= LIMIT_MAX:
        raise InvalidRequest(
            "The limit is out of range.", {"limit": f"must be between 1 and {LIMIT_MAX}"}
        )
    return value


def _actor_name(actor: Actor) -> str:
    return actor.user_id or actor.key_id or ""


def _conversation_cursor(row: Row) -> str:
    return time_cursor(row["last_activity_at"], row["id"])


def _seq_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    if not cursor.isdigit():
        raise InvalidRequest("The cursor is not valid.", {"cursor": "not a cursor we issued"})
    return int(cursor)


class Handlers:
    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        aggregates: Aggregates[ConversationState],
        store: Store,
        conversations: ProjectionRunner,
        users: ProjectionRunner,
        *,
        read_wait: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
        rpc: RpcClient | None = None,
        standing: Standing | None = None,
    ) -> None:
        self.nc = nc
        self.rpc = rpc or RpcClient(nc)  # asks media about attachments
        self.js = js
        self.aggregates = aggregates
        self.store = store
        self.conversations = conversations
        self.users = users
        self.read_wait = read_wait
        self.clock = clock
        self._user_cache: dict[tuple[str, str], UserRow] = {}
        self._users_at = -1
        # Bans and erasures as the log says now (an IDENTITY follower feeds it).
        self.standing = standing or Standing(self._users_settled)

    async def _users_settled(self, seq: int) -> None:
        if not await self.users.wait_for(seq, self.read_wait):
            log.warning("users_read_model_behind", seq=seq, checkpoint=self.users.checkpoint)

    def routes(self) -> list[tuple[type[Request], Handler]]:
        return [(request_type, handler) for request_type, handler in self._routes()]

    def _routes(self) -> list[tuple[type[Request], Handler]]:
        return [
            (CreateConversation, self.create_conversation),
            (AddParticipant, self.add_participant),
            (RemoveParticipant, self.remove_participant),
            (PostMessage, self.post_message),
            (EditMessage, self.edit_message),
            (DeleteMessage, self.delete_message),
            (React, self.react),
            (MarkRead, self.mark_read),
            (SetTyping, self.set_typing),
            (ReportMessage, self.report_message),
            (ModerateMessage, self.moderate_message),
            (ListConversations, self.list_conversations),
            (GetConversation, self.get_conversation),
            (ListMessages, self.list_messages),
            (ListModeratedMessages, self.list_moderated_messages),
            (ListEvents, self.list_events),
            (ListReports, self.list_reports),
            (CheckParticipant, self.check_participant),
        ]

    # -- plumbing --------------------------------------------------------------------------

    def _subject(self, actor: Actor, conversation_id: str) -> str:
        workspace_id = _valid(actor.workspace_id, "Conversation")
        return subject(workspace_id, _valid(conversation_id, "Conversation"))

    async def _execute(
        self,
        subject_: str,
        decide: Callable[[ConversationState], Event | None],
        *,
        actor: Actor,
        ctx: CallContext,
        msg_id: str | None = None,
    ) -> Decision[ConversationState]:
        """Decide and append under optimistic concurrency (``Aggregates`` retries conflicts)."""
        return await self.aggregates.execute(
            subject_,
            decide,
            msg_id=msg_id or new_id("evt"),
            workspace=actor.workspace_id,
            actor=_actor_name(actor),
            correlation=ctx.correlation,
        )

    async def _state(self, subject_: str, check: Callable[[ConversationState], Any]) -> Any:
        """``check`` on the cached state; a rejection is checked once more against the log."""
        async with self.aggregates.turn(subject_):
            state, _ = await self.aggregates.load(subject_)
            try:
                return check(state)
            except ConfabError:
                state, _ = await self.aggregates.load(subject_, fresh=True)
                return check(state)

    async def _min_seq(self, min_seq: int) -> None:
        if min_seq > 0 and not await self.conversations.wait_for(min_seq, self.read_wait):
            raise Unavailable("The read model is catching up; try again shortly.")

    async def _settle(self, seq: int) -> bool:
        """Wait (bounded) until the read model shows ``seq``, for a reply rendered from it.

        A write's reply never fails for a slow read model: what it reads is at
        worst a little stale (and the write itself is durable either way).
        """
        if await self.conversations.wait_for(seq, self.read_wait):
            return True
        log.warning("read_model_behind", seq=seq, checkpoint=self.conversations.checkpoint)
        return False

    async def _users(self, workspace_id: str, ids: Iterable[str]) -> dict[str, UserRow]:
        """Users as the read model has them, through an in-process cache that is dropped
        whenever the users projection applies anything (it only sees user events), so
        it is never staler than the table and spares a query per post."""
        checkpoint = self.users.checkpoint
        if checkpoint != self._users_at or len(self._user_cache) > USER_CACHE_MAX:
            self._user_cache.clear()
            self._users_at = checkpoint
        wanted = set(ids)
        found = {
            i: row for i in wanted if (row := self._user_cache.get((workspace_id, i))) is not None
        }
        missing = wanted - found.keys()
        if missing:
            loaded = await self.store.users(workspace_id, missing)
            if self.users.checkpoint == checkpoint:
                self._user_cache.update(((workspace_id, i), row) for i, row in loaded.items())
            found.update(loaded)
        return found

    async def _profiles(self, workspace_id: str, ids: Iterable[str]) -> dict[str, UserRow]:
        """Users as the read model knows them, for display (no waiting)."""
        return await self._users(workspace_id, ids)

    async def _known_users(self, workspace_id: str, ids: Sequence[str]) -> dict[str, UserRow]:
        """Users for a decision: one the read model does not know yet (it was created a
        moment ago) is waited for, up to the last event on its IDENTITY subject."""
        found = await self._users(workspace_id, ids)
        missing = [i for i in ids if i not in found]
        if not missing:
            return found
        found.update(await self._caught_up_users(workspace_id, missing))
        return found

    async def _caught_up_users(self, workspace_id: str, ids: Sequence[str]) -> dict[str, UserRow]:
        """Users as the read model has them once it applied their last IDENTITY events."""

        async def last(user_id: str) -> int:
            try:
                msg = await self.js.get_last_msg(
                    IDENTITY.name, identity.subject(workspace_id, "user", user_id), direct=False
                )
            except NotFoundError:
                return 0
            return msg.seq or 0

        target = 0
        for start in range(0, len(ids), 64):
            chunk = ids[start : start + 64]
            target = max([target, *await asyncio.gather(*(last(i) for i in chunk))])
        if not target:
            return {}
        await self.users.wait_for(target, self.read_wait)
        return await self._users(workspace_id, ids)

    async def _may_act(self, actor: Actor, user_id: str | None = None) -> None:
        """Refuse a banned user (403 ``banned``): ``user_id``, or the widget's own user."""
        user_id = user_id or actor.user_id
        if user_id is None:
            return  # the tenant's backend, acting as itself
        workspace_id = _valid(actor.workspace_id, "User")
        found = (await self._users(workspace_id, [user_id])).get(user_id)
        self.standing.check(workspace_id, user_id, found is not None and found.banned)

    async def _locate(self, actor: Actor, message_id: str) -> str:
        """The conversation of a message named without one (reports, moderation)."""
        workspace_id = _valid(actor.workspace_id, "Message")
        message_id = _valid(message_id, "Message")
        seen = self.conversations.checkpoint
        found = await self.store.message_location(workspace_id, message_id)
        # Asked again only if the read model moved since the first answer: it may have
        # caught up on its own while the first query ran.
        if found is None and await self._catch_up(since=seen):
            found = await self.store.message_location(workspace_id, message_id)
        if found is None:
            raise NotFound(domain.MESSAGE_NOT_FOUND)
        return found

    async def _catch_up(self, since: int = 0) -> bool:
        """Wait (bounded) until the conversations read model has all the stream held when
        asked; True if its checkpoint is now past ``since``."""
        last = (await self.js.stream_info(CONVERSATIONS.name)).state.last_seq
        if last > self.conversations.checkpoint:
            await self.conversations.wait_for(last, self.read_wait)
        return self.conversations.checkpoint > since

    async def _attachments(
        self,
        workspace_id: str,
        ids: Iterable[str],
        *,
        conversation_id: str | None = None,
        uploader_id: str | None = None,
    ) -> dict[str, Attachment]:
        """Attachment objects with fresh URLs, from media (the only one that can sign them).

        Asked only when there are attachments to show; media being down is a 503.
        """
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        found: AttachmentList = await self.rpc.call(
            GetAttachments(
                workspace_id=workspace_id,
                attachment_ids=wanted,
                conversation_id=conversation_id,
                uploader_id=uploader_id,
            )
        )
        return {a.attachment.id: a.attachment for a in found.data}

    async def _row_attachments(
        self, workspace_id: str, rows: Iterable[Row], moderator: bool = False
    ) -> dict[str, Attachment]:
        views = [MessageView.from_row(row) for row in rows]
        shown = [i for v in views for i in shown_attachment_ids(v, moderator)]
        return await self._attachments(workspace_id, shown)

    async def render_messages(
        self, workspace_id: str, page: MessagePage, viewer: str | None, moderator: bool = False
    ) -> list[Message]:
        users = await self._profiles(
            workspace_id, {r["sender_id"] for r in page.rows if r["sender_id"] is not None}
        )
        attachments = await self._row_attachments(workspace_id, page.rows, moderator)
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
        users = await self._profiles(workspace_id, user_ids)
        attachments = await self._row_attachments(workspace_id, page.rows)
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
        workspace_id = _valid(actor.workspace_id, "Conversation")
        conversation_id = _valid(conversation_id, "Conversation")
        found = await self.store.conversation(workspace_id, conversation_id, actor.user_id)
        if found is None:
            raise NotFound(domain.CONVERSATION_NOT_FOUND)
        row, me = found
        return row, me.unread_count if me is not None else 0

    # -- conversations and participants ----------------------------------------------------

    async def create_conversation(self, cmd: CreateConversation, ctx: CallContext) -> Conversation:
        now = self.clock()
        actor, data = cmd.actor, cmd.input
        workspace_id = _valid(actor.workspace_id, "Workspace")
        members = domain.members_for(actor, data.participant_ids)
        for user_id in members:
            _valid(user_id, "User")
        users = await self._known_users(workspace_id, members)
        unknown = [u for u in members if u not in users or users[u].erased]

        def decide(state: ConversationState) -> ConversationCreated | None:
            return domain.decide_create_conversation(
                state,
                actor=actor,
                conversation_id=conversation_id,
                kind=data.type,
                participant_ids=members,
                unknown=unknown,
                title=data.title,
                metadata=data.metadata,
                now=now,
            )

        if data.type == "direct" and len(members) == 2:
            conversation_id = domain.direct_conversation_id(workspace_id, *members)
        elif data.type == "direct":
            conversation_id = ""
            decide(domain.initial())  # raises: a direct conversation needs two people
            raise InternalError()
        else:
            conversation_id = new_id("conv")
        decision = await self._execute(
            subject(workspace_id, conversation_id), decide, actor=actor, ctx=ctx
        )
        event, appended = decision.event, decision.appended
        if isinstance(event, ConversationCreated) and appended is not None:
            log.info("conversation_created", conversation_id=conversation_id, kind=data.type)
            view = render.created_conversation(event, users)
            return ConversationSaved(conversation=view, created=True, stream_seq=appended.seq)
        # The direct conversation of this pair existed: answer it as it is.
        await self._settle(decision.version)
        found = await self.store.conversation(workspace_id, conversation_id, actor.user_id)
        if found is None:
            raise Unavailable("The read model is catching up; try again shortly.")
        row, me = found
        unread = me.unread_count if me is not None else 0
        (view,) = await self._conversations(
            workspace_id, [row], {conversation_id: unread}, actor.user_id
        )
        return ConversationSaved(conversation=view, created=False, stream_seq=decision.version)

    async def add_participant(self, cmd: AddParticipant, ctx: CallContext) -> Ok:
        now = self.clock()
        subject_ = self._subject(cmd.actor, cmd.conversation_id)
        user_id = _valid(cmd.user_id, "User")
        users = await self._known_users(cmd.actor.workspace_id, [user_id])
        exists = user_id in users and not users[user_id].erased
        decision = await self._execute(
            subject_,
            lambda state: domain.decide_add_participant(
                state, actor=cmd.actor, user_id=user_id, user_exists=exists, now=now
            ),
            actor=cmd.actor,
            ctx=ctx,
        )
        return Ok(seq=decision.version)

    async def remove_participant(self, cmd: RemoveParticipant, ctx: CallContext) -> Ok:
        now = self.clock()
        subject_ = self._subject(cmd.actor, cmd.conversation_id)
        user_id = _valid(cmd.user_id, "User")
        decision = await self._execute(
            subject_,
            lambda state: domain.decide_remove_participant(
                state, actor=cmd.actor, user_id=user_id, now=now
            ),
            actor=cmd.actor,
            ctx=ctx,
        )
        await self._settle(decision.version)  # they see nothing more when this returns
        return Ok(seq=decision.version)

    # -- messages --------------------------------------------------------------------------

    async def post_message(self, cmd: PostMessage, ctx: CallContext) -> MessageSaved:
        now = self.clock()
        actor, data = cmd.actor, cmd.input
        subject_ = self._subject(actor, cmd.conversation_id)
        conversation_id = cmd.conversation_id
        if actor.user_id is not None:
            if cmd.sender_id not in (None, actor.user_id):
                raise Forbidden("You can only post as yourself.")
            sender_id: str | None = actor.user_id
        else:
            sender_id = cmd.sender_id
        users: dict[str, UserRow] = {}
        if sender_id is not None:
            _valid(sender_id, "User")
            users = await self._known_users(actor.workspace_id, [sender_id])
            erased = sender_id in users and users[sender_id].erased
            if self.standing.erased(actor.workspace_id, sender_id, erased):
                raise NotFound("User not found.", {"sender_id": "this user was erased"})
        banned = sender_id is not None and self.standing.banned(
            actor.workspace_id, sender_id, sender_id in users and users[sender_id].banned
        )
        attachments: dict[str, Attachment] = {}
        if data.attachment_ids and sender_id is not None:
            # Media knows which exist here and who uploaded them; the decider knows
            # (from the log) which are attached already.
            attachments = await self._attachments(
                actor.workspace_id,
                data.attachment_ids,
                conversation_id=conversation_id,
                uploader_id=sender_id,
            )
        message_id = new_id("msg")
        client_msg_id = data.client_msg_id
        msg_id = (
            domain.client_msg_key(conversation_id, sender_id, client_msg_id)
            if client_msg_id is not None
            else new_id("evt")
        )
        decision = await self._execute(
            subject_,
            lambda state: domain.decide_post_message(
                state,
                actor=actor,
                sender_id=sender_id,
                content=data.content,
                metadata=data.metadata,
                attachment_ids=data.attachment_ids,
                reply_to=data.reply_to,
                client_msg_id=client_msg_id,
                message_id=message_id,
                banned=banned,
                now=now,
                attachments=list(attachments.values()),
            ),
            actor=actor,
            ctx=ctx,
            msg_id=msg_id,
        )
        event, appended = decision.event, decision.appended
        original = decision.state.message_for(sender_id, client_msg_id) if client_msg_id else None
        if (
            isinstance(event, MessagePosted)
            and appended is not None
            and (not appended.duplicate or original in (None, event.message_id))
        ):
            return MessageSaved(
                message=render.posted_message(event, render.sender(sender_id, users), attachments),
                created=True,
                stream_seq=appended.seq,
            )
        if original is None:  # the decider returns None only for a known client_msg_id
            raise InternalError()
        # A resend: answer the original, as the read model has it.
        await self._settle(decision.version)
        found = await self.store.message(original, conversation_id=conversation_id)
        if found is None:
            raise Unavailable("The read model is catching up; try again shortly.")
        row, pairs = found
        attachments = await self._row_attachments(actor.workspace_id, [row])
        return MessageSaved(
            message=render.message_for(row, pairs, actor.user_id, users, attachments),
            created=False,
            stream_seq=row["stream_seq"],
        )

    async def edit_message(self, cmd: EditMessage, ctx: CallContext) -> MessageSaved:
        now = self.clock()
        await self._may_act(cmd.actor)
        subject_ = self._subject(cmd.actor, cmd.conversation_id)
        message_id = _valid(cmd.message_id, "Message")
        decision = await self._execute(
            subject_,
            lambda state: domain.decide_edit_message(
                state, actor=cmd.actor, message_id=message_id, content=cmd.content, now=now
            ),
            actor=cmd.actor,
            ctx=ctx,
        )
        event, appended = decision.event, decision.appended
        if not isinstance(event, MessageEdited) or appended is None:
            raise InternalError()  # the decider returns an edit or raises
        await self._settle(appended.seq)
        found = await self.store.message(message_id, conversation_id=cmd.conversation_id)
        if found is None:
            raise Unavailable("The read model is catching up; try again shortly.")
        row, pairs = found
        users = await self._profiles(cmd.actor.workspace_id, [cmd.actor.user_id or ""])
        row = {**row, "content": event.content, "edited_at": event.at}
        attachments = await self._row_attachments(cmd.actor.workspace_id, [row])
        return MessageSaved(
            message=render.message_for(row, pairs, cmd.actor.user_id, users, attachments),
            created=False,
            stream_seq=appended.seq,
        )

    async def delete_message(self, cmd: DeleteMessage, ctx: CallContext) -> Ok:
        now = self.clock()
        subject_ = self._subject(cmd.actor, cmd.conversation_id)
        message_id = _valid(cmd.message_id, "Message")
        decision = await self._execute(
            subject_,
            lambda state: domain.decide_delete_message(
                state, actor=cmd.actor, message_id=message_id, now=now
            ),
            actor=cmd.actor,
            ctx=ctx,
        )
        await self._settle(decision.version)  # history shows the tombstone when this returns
        return Ok(seq=decision.version)

    async def react(self, cmd: React, ctx: CallContext) -> Ok:
        now = self.clock()
        await self._may_act(cmd.actor)
        subject_ = self._subject(cmd.actor, cmd.conversation_id)
        message_id = _valid(cmd.message_id, "Message")
        decision = await self._execute(
            subject_,
            lambda state: domain.decide_react(
                state,
                actor=cmd.actor,
                message_id=message_id,
                emoji=cmd.emoji,
                add=cmd.add,
                now=now,
            ),
            actor=cmd.actor,
            ctx=ctx,
        )
        return Ok(seq=decision.version)

    async def mark_read(self, cmd: MarkRead, ctx: CallContext) -> Ok:
        now = self.clock()
        await self._may_act(cmd.actor)
        subject_ = self._subject(cmd.actor, cmd.conversation_id)
        decision = await self._execute(
            subject_,
            lambda state: domain.decide_mark_read(state, actor=cmd.actor, seq=cmd.seq, now=now),
            actor=cmd.actor,
            ctx=ctx,
        )
        return Ok(seq=decision.version)

    async def set_typing(self, cmd: SetTyping, _ctx: CallContext) -> Ok:
        """Not stored: a small JSON on core NATS for the fanout."""
        await self._may_act(cmd.actor)
        subject_ = self._subject(cmd.actor, cmd.conversation_id)
        user_id: str = await self._state(
            subject_, lambda state: domain.check_typing(state, cmd.actor)
        )
        users = await self._profiles(cmd.actor.workspace_id, [user_id])
        name, _ = render.profile(user_id, users)
        body = {
            "user_id": user_id,
            "name": name,
            "is_typing": cmd.is_typing,
            "at": self.clock().isoformat().replace("+00:00", "Z"),
        }
        await self.nc.publish(
            f"ephemeral.{cmd.actor.workspace_id}.{cmd.conversation_id}.typing",
            json.dumps(body).encode(),
        )
        return Ok(seq=0)

    # -- reports and moderation ------------------------------------------------------------

    async def report_message(self, cmd: ReportMessage, ctx: CallContext) -> Ok:
        now = self.clock()
        conversation_id = await self._locate(cmd.actor, cmd.message_id)
        report_id = new_id("rep")
        decision = await self._execute(
            subject(cmd.actor.workspace_id, conversation_id),
            lambda state: domain.decide_report_message(
                state,
                actor=cmd.actor,
                message_id=cmd.message_id,
                reason=cmd.reason,
                report_id=report_id,
                now=now,
            ),
            actor=cmd.actor,
            ctx=ctx,
        )
        log.info("message_reported", conversation_id=conversation_id, report_id=report_id)
        return Ok(seq=decision.version)

    async def moderate_message(self, cmd: ModerateMessage, ctx: CallContext) -> Ok:
        now = self.clock()
        conversation_id = await self._locate(cmd.actor, cmd.message_id)
        decision = await self._execute(
            subject(cmd.actor.workspace_id, conversation_id),
            lambda state: domain.decide_moderate_message(
                state, actor=cmd.actor, message_id=cmd.message_id, action=cmd.action, now=now
            ),
            actor=cmd.actor,
            ctx=ctx,
        )
        await self._settle(decision.version)  # every reader shows it when this returns
        if decision.event is not None:
            log.info(
                "message_moderated",
                conversation_id=conversation_id,
                message_id=cmd.message_id,
                action=cmd.action,
            )
        return Ok(seq=decision.version)

    # -- queries ---------------------------------------------------------------------------

    async def list_conversations(
        self, query: ListConversations, _ctx: CallContext
    ) -> ConversationList:
        limit = _limit(query.limit)
        actor = query.actor
        workspace_id = _valid(actor.workspace_id, "Workspace")
        if actor.user_id is not None:
            if query.user_id not in (None, actor.user_id):
                raise Forbidden("You can only list your own conversations.")
            viewer: str | None = actor.user_id
        else:
            viewer = _valid(query.user_id, "User") if query.user_id is not None else None
        before = parse_time_cursor(query.cursor)
        await self._min_seq(query.min_seq)
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
        await self._min_seq(query.min_seq)
        row, unread = await self._visible(query.actor, query.conversation_id)
        (conversation,) = await self._conversations(
            query.actor.workspace_id, [row], {row["id"]: unread}, query.actor.user_id
        )
        page = await self.store.messages(row["id"], before=None, after=None, limit=limit)
        messages = await self.render_messages(query.actor.workspace_id, page, query.actor.user_id)
        return ConversationWithMessages(
            conversation=conversation, messages=messages, has_more=page.has_more
        )

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
        await self._min_seq(query.min_seq)
        row, _ = await self._visible(query.actor, query.conversation_id)
        page = await self.store.messages(
            row["id"], before=query.before, after=query.after, limit=limit
        )
        data = await self.render_messages(
            query.actor.workspace_id, page, query.actor.user_id, moderator
        )
        cursor = None
        if page.has_more and data:
            cursor = str(data[-1].seq if query.after is not None else data[0].seq)
        return data, page.has_more, cursor

    async def list_events(self, query: ListEvents, _ctx: CallContext) -> EventList:
        limit = _limit(query.limit)
        if query.after < 0:
            raise InvalidRequest("The cursor is not valid.", {"after": "must be 0 or more"})
        subject_ = self._subject(query.actor, query.conversation_id)
        # Recovery must not miss what is stored but not projected yet: catch up with the
        # conversation's last event first.
        try:
            last = await self.js.get_last_msg(CONVERSATIONS.name, subject_, direct=False)
        except NotFoundError:
            raise NotFound(domain.CONVERSATION_NOT_FOUND) from None
        if not await self._settle(last.seq or 0):
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
        users = await self._profiles(workspace_id, user_ids)
        attachments = await self._attachments(
            workspace_id, [i for m in messages.values() for i in shown_attachment_ids(m)]
        )
        out = []
        for entry in entries:
            if entry.name == realtime.CONVERSATION_CREATED:
                data = created_payload(conversation_view(row), entry, users)
            else:
                message = messages.get(entry.message_id or "")
                author = render.sender(message.sender_id, users) if message else None
                found = payload(entry, message, author, attachments)
                if found is None:
                    continue  # a message entry whose message is gone from the read model
                data = found
            out.append(HistoryEvent(seq=entry.seq, event=entry.name, data=data, at=entry.at))
        return out

    async def check_participant(self, query: CheckParticipant, _ctx: CallContext) -> Ok:
        """For the gateway's own endpoints (uploads, channel authorization): may this actor
        see the conversation, and (``act``) act in it?"""
        await self._min_seq(query.min_seq)
        await self._visible(query.actor, query.conversation_id)
        if query.act:
            await self._may_act(query.actor)
        return Ok()

    async def list_reports(self, query: ListReports, _ctx: CallContext) -> ReportList:
        limit = _limit(query.limit)
        actor = query.actor
        workspace_id = _valid(actor.workspace_id, "Workspace")
        if actor.user_id is not None:
            raise Forbidden("Only the workspace's backend can read reports.")
        # No min_seq here: a moderation queue shows everything stored when it is asked.
        await self._catch_up()
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

"""Support conversations' commands and queries (``confab.contracts.support``).

Commands run ``support_domain``'s decider through the same shell as every
conversation command, then wait (bounded) until the support read model shows
the change, and answer the support conversation as it is now. A reply joins
the agent to the conversation (``JoinAsAgent``) and posts as them through the
ordinary post (``Commands.post_message``): idempotency, attachments and the
reply's rendering are the post's.

Queries read the support read model (``support_store``) and render the
conversation itself as the tenant sees it (``Queries``). Only the tenant's side
(``Actor.user_id`` None: an API key, or a staff member's dashboard session)
may call any of them: a widget session gets 404 for a conversation that is not
its own and 403 for its own, and never a note.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from confab.contracts.base import Ok
from confab.contracts.messaging import (
    Actor,
    MarkRead,
    MessageInput,
    MessageSaved,
    PostMessage,
    SetTyping,
)
from confab.contracts.support import (
    AddNote,
    AgentRead,
    AgentTyping,
    AssignSupport,
    AutoAssign,
    GetSupport,
    InboxCounts,
    ListNotes,
    ListSupport,
    MergeParticipant,
    Note,
    NoteList,
    ReplySupport,
    SetSupportStatus,
    StaffRequest,
    SupportConversation,
    SupportConversationList,
    TagSupport,
)
from confab.cursors import parse_time_cursor, time_cursor
from confab.errors import Forbidden, InvalidRequest, NotFound, Unavailable
from confab.ids import new_id
from confab.logging import get_logger
from confab.projection import ProjectionRunner
from confab.rpc import CallContext
from confab.shell import Route
from confab.support import SupportView, status_now
from confab_messaging import support_domain
from confab_messaging.commands import Commands, intent
from confab_messaging.domain import CONVERSATION_NOT_FOUND
from confab_messaging.handlers import conversation_subject, valid
from confab_messaging.queries import Queries
from confab_messaging.support_store import SupportStore

log = get_logger("confab_messaging")


def utcnow() -> datetime:
    return datetime.now(UTC)


def tenant_side(actor: Actor) -> str:
    """The workspace of an actor on the tenant's side; a widget session is refused."""
    if actor.user_id is not None:
        raise Forbidden("Only the workspace's staff can do this.")
    return valid(actor.workspace_id, "Workspace")


class Support:
    def __init__(
        self,
        commands: Commands,
        queries: Queries,
        store: SupportStore,
        runner: ProjectionRunner,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.commands = commands
        self.queries = queries
        self.lookups = commands.lookups
        self.store = store
        self.runner = runner
        self.clock = clock

    def routes(self) -> list[Route]:
        return [
            (AssignSupport, self.assign),
            (AutoAssign, self.auto_assign),
            (SetSupportStatus, self.set_status),
            (TagSupport, self.tag),
            (AddNote, self.add_note),
            (ReplySupport, self.reply),
            (AgentRead, self.read),
            (AgentTyping, self.typing),
            (MergeParticipant, self.merge),
            (ListSupport, self.list),
            (GetSupport, self.get),
            (ListNotes, self.list_notes),
        ]

    # -- waiting for the read models --------------------------------------------------------

    async def settle(self, seq: int) -> None:
        """Wait (bounded) until both read models show ``seq``."""
        await self.lookups.settle(seq)
        if not await self.runner.wait_for(seq, self.lookups.read_wait):
            log.warning("support_read_model_behind", seq=seq, checkpoint=self.runner.checkpoint)

    async def min_seq(self, seq: int) -> None:
        """Unavailable unless both read models have applied ``seq`` (waiting, bounded)."""
        await self.lookups.min_seq(seq)
        if seq > 0 and not await self.runner.wait_for(seq, self.lookups.read_wait):
            raise Unavailable("The read model is catching up; try again shortly.")

    # -- commands ------------------------------------------------------------------------

    async def _run(self, request: StaffRequest, command: support_domain.StaffCommand) -> int:
        tenant_side(request.actor)
        subject_ = conversation_subject(request.actor, request.conversation_id)
        executed = await self.commands.shell.run(intent(request.actor, subject_, command))
        await self.settle(executed.version)
        return executed.version

    @staticmethod
    def _by(by: str | None) -> str | None:
        return valid(by, "User") if by is not None else None

    async def assign(self, cmd: AssignSupport, _ctx: CallContext) -> SupportConversation:
        workspace_id = tenant_side(cmd.actor)
        assignee = cmd.input.assignee_id
        exists = True
        if assignee is not None:
            users = await self.lookups.known_users(workspace_id, [valid(assignee, "User")])
            exists = assignee in users and not users[assignee].erased
        command = support_domain.Assign(
            actor=cmd.actor,
            now=self.clock(),
            by=self._by(cmd.by),
            assignee_id=assignee,
            assignee_exists=exists,
        )
        await self._run(cmd, command)
        return await self._one(workspace_id, cmd.conversation_id)

    async def auto_assign(self, cmd: AutoAssign, _ctx: CallContext) -> SupportConversation:
        """Round-robin by load: the live candidate with the fewest open conversations."""
        workspace_id = tenant_side(cmd.actor)
        candidates = [valid(c, "User") for c in dict.fromkeys(cmd.candidates)]
        users = await self.lookups.users(workspace_id, candidates)
        live = [c for c in candidates if c in users and not users[c].erased]
        current = await self.store.one(workspace_id, valid(cmd.conversation_id, "Conversation"))
        if live and (current is None or current.assignee_id is None):
            loads = await self.store.open_loads(workspace_id, live)
            chosen = min(live, key=lambda c: loads[c])
            command = support_domain.Assign(
                actor=cmd.actor, now=self.clock(), assignee_id=chosen, automatic=True
            )
            await self._run(cmd, command)
        return await self._one(workspace_id, cmd.conversation_id)

    async def set_status(self, cmd: SetSupportStatus, _ctx: CallContext) -> SupportConversation:
        data = cmd.input
        return await self._change(
            cmd, support_domain.SetStatus, status=data.status, snoozed_until=data.snoozed_until
        )

    async def tag(self, cmd: TagSupport, _ctx: CallContext) -> SupportConversation:
        return await self._change(cmd, support_domain.SetTags, tags=list(cmd.input.tags))

    async def _change(
        self, cmd: StaffRequest, command: type[support_domain.StaffCommand], **fields: Any
    ) -> SupportConversation:
        """Run a staff change; answer the support conversation as it is now."""
        workspace_id = tenant_side(cmd.actor)
        made = command(actor=cmd.actor, now=self.clock(), by=self._by(cmd.by), **fields)
        await self._run(cmd, made)
        return await self._one(workspace_id, cmd.conversation_id)

    async def add_note(self, cmd: AddNote, _ctx: CallContext) -> Note:
        workspace_id = tenant_side(cmd.actor)
        author = valid(cmd.author_id, "User")
        users = await self.lookups.known_users(workspace_id, [author])
        note_id = new_id("note")
        command = support_domain.AddNote(
            actor=cmd.actor,
            now=self.clock(),
            by=author,
            note_id=note_id,
            author_id=author,
            author_exists=author in users and not users[author].erased,
            content=cmd.content,
        )
        await self._run(cmd, command)
        row = await self.store.note(note_id)
        if row is None:
            raise Unavailable("The read model is catching up; try again shortly.")
        return _note(row)

    async def join(self, cmd: StaffRequest, author_id: str) -> Actor:
        """The agent joins the support conversation if not a participant yet; the actor
        they then act as (messaging's own, after checking the tenant's side)."""
        workspace_id = tenant_side(cmd.actor)
        author = valid(author_id, "User")
        users = await self.lookups.known_users(workspace_id, [author])
        found = users.get(author)
        command = support_domain.JoinAsAgent(
            actor=cmd.actor,
            now=self.clock(),
            by=cmd.by or author,
            user_id=author,
            user_exists=found is not None and not found.erased,
            banned=self.lookups.standing.banned(
                workspace_id, author, found is not None and found.banned
            ),
        )
        await self._run(cmd, command)
        return Actor(workspace_id=workspace_id, user_id=author)

    async def read(self, cmd: AgentRead, ctx: CallContext) -> Ok:
        agent = await self.join(cmd, cmd.author_id)
        request = MarkRead(actor=agent, conversation_id=cmd.conversation_id, seq=cmd.seq)
        executed = await self.commands.shell.run(await self.commands.mark_read(request, ctx), ctx)
        return Ok(seq=executed.version)

    async def typing(self, cmd: AgentTyping, ctx: CallContext) -> Ok:
        agent = await self.join(cmd, cmd.author_id)
        request = SetTyping(
            actor=agent, conversation_id=cmd.conversation_id, is_typing=cmd.is_typing
        )
        return await self.commands.set_typing(request, ctx)

    async def reply(self, cmd: ReplySupport, ctx: CallContext) -> MessageSaved:
        """The agent joins (if not a participant yet), then posts as themselves."""
        await self.join(cmd, cmd.author_id)
        data = cmd.input
        return await self.commands.post_message(
            PostMessage(
                actor=cmd.actor,
                conversation_id=cmd.conversation_id,
                sender_id=cmd.author_id,
                input=MessageInput(
                    content=data.content,
                    attachment_ids=data.attachment_ids,
                    client_msg_id=data.client_msg_id,
                    reply_to=data.reply_to,
                    mentions=data.mentions,
                    parent_id=data.parent_id,
                    metadata=data.metadata,
                ),
            ),
            ctx,
        )

    async def merge(self, cmd: MergeParticipant, _ctx: CallContext) -> Ok:
        """A visitor's part in one conversation goes to a known user (``merge``)."""
        workspace_id = tenant_side(cmd.actor)
        user_id = valid(cmd.user_id, "User")
        users = await self.lookups.known_users(workspace_id, [user_id])
        command = support_domain.MergeVisitor(
            actor=cmd.actor,
            now=self.clock(),
            visitor_id=valid(cmd.visitor_id, "User"),
            user_id=user_id,
            user_exists=user_id in users and not users[user_id].erased,
        )
        subject_ = conversation_subject(cmd.actor, cmd.conversation_id)
        executed = await self.commands.shell.run(intent(cmd.actor, subject_, command))
        await self.settle(executed.version)
        return Ok(seq=executed.version)

    # -- queries -------------------------------------------------------------------------

    async def _render(
        self, workspace_id: str, views: list[SupportView]
    ) -> list[SupportConversation]:
        now = self.clock()
        rows = await self.store.conversation_rows(workspace_id, [v.id for v in views])
        shown = [rows[v.id] for v in views if v.id in rows]
        conversations = await self.queries._conversations(workspace_id, shown, {}, None)
        by_id = {c.id: c for c in conversations}
        out = []
        for v in views:
            conversation = by_id.get(v.id)
            if conversation is None or v.created_at is None or v.last_activity_at is None:
                continue  # the conversations read model has not caught up with it yet
            status = status_now(v, now)
            out.append(
                SupportConversation(
                    id=v.id,
                    status=status,  # type: ignore[arg-type]
                    snoozed_until=v.snoozed_until if status == "snoozed" else None,
                    assignee_id=v.assignee_id,
                    tags=list(v.tags),
                    visitor_id=v.visitor_id,
                    first_response_at=v.first_response_at,
                    resolved_at=v.resolved_at,
                    created_at=v.created_at,
                    last_activity_at=v.last_activity_at,
                    conversation=conversation,
                )
            )
        return out

    async def _one(self, workspace_id: str, conversation_id: str) -> SupportConversation:
        view = await self.store.one(workspace_id, valid(conversation_id, "Conversation"))
        if view is None:
            raise NotFound(CONVERSATION_NOT_FOUND)
        found = await self._render(workspace_id, [view])
        if not found:
            raise Unavailable("The read model is catching up; try again shortly.")
        return found[0]

    async def list(self, query: ListSupport, _ctx: CallContext) -> SupportConversationList:
        workspace_id = tenant_side(query.actor)
        if query.view == "mine" and query.assignee_id is None:
            raise InvalidRequest(
                "The view mine needs an assignee.", {"assignee_id": "required with view=mine"}
            )
        assignee = valid(query.assignee_id, "User") if query.assignee_id is not None else None
        if query.min_seq > self.runner.checkpoint:  # it may be a client's (a frame's seq)
            await self.lookups.not_past_the_end(query.min_seq)
        await self.min_seq(query.min_seq)
        await self.lookups.users_min_seq(query.users_min_seq)
        now = self.clock()
        views, has_more = await self.store.page(
            workspace_id,
            query.view,
            now,
            assignee_id=assignee,
            tag=query.tag,
            before=parse_time_cursor(query.cursor),
            limit=query.limit,
        )
        counts = await self.store.counts(workspace_id, now, assignee, query.tag)
        data = await self._render(workspace_id, views)
        last = views[-1] if views else None
        return SupportConversationList(
            data=data,
            counts=InboxCounts(**counts),
            has_more=has_more,
            next_cursor=(
                time_cursor(last.last_activity_at, last.id)
                if has_more and last is not None and last.last_activity_at is not None
                else None
            ),
        )

    async def get(self, query: GetSupport, _ctx: CallContext) -> SupportConversation:
        workspace_id = tenant_side(query.actor)
        await self.min_seq(query.min_seq)
        return await self._one(workspace_id, query.conversation_id)

    async def list_notes(self, query: ListNotes, _ctx: CallContext) -> NoteList:
        workspace_id = tenant_side(query.actor)
        conversation_id = valid(query.conversation_id, "Conversation")
        await self.min_seq(query.min_seq)
        if await self.store.one(workspace_id, conversation_id) is None:
            raise NotFound(CONVERSATION_NOT_FOUND)
        rows, has_more = await self.store.notes(
            workspace_id, conversation_id, after=query.after, limit=query.limit
        )
        return NoteList(
            data=[_note(r) for r in rows],
            has_more=has_more,
            next_cursor=str(rows[-1]["stream_seq"]) if has_more and rows else None,
        )


def _note(row: Mapping[str, Any]) -> Note:
    """A ``notes`` row as the staff's note object."""
    return Note(
        id=row["id"],
        conversation_id=row["conversation_id"],
        author_id=row["author_id"],
        content=row["content"],
        created_at=row["created_at"],
    )

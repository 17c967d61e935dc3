"""The write side of messaging: one handler per command of ``contracts.messaging``.

Each handler is the shell's three steps (``confab.shell``): *prepare* checks
the ids that go into the conversation's subject, looks up what the decision
needs (``handlers.Lookups``: users, bans, attachments, where a message is)
and makes the decider's command (``domain``); the shell runs it against the
conversation's log with optimistic concurrency; the reply is made from what
was stored. Most replies are ``Ok`` with the stream sequence; removals and
deletions first wait (bounded) until the read model shows them, so nobody
sees what is gone once the call returns.

The write side never reads a read model to answer. A post answers from its
event; a resent post and an edit answer with the message as it is now, read
from the conversation's log where the state says its post (and last edit)
are, and folded by the one fold (``confab.conversation``) with the state's
flags and reactions; an existing direct conversation is shown by the read
side (``Queries.existing``) once it has applied what the log had.

An edit that leaves its mentions out carries the old ones over (``mentions.carried``):
the handler reads the message's text as it is now from the log first.

Link previews: after a post or an edit whose text has a link (``confab.links``), the
handler hands the URL to media (``FetchPreview``, in the background: the reply never
waits for it, and a preview that cannot be made is simply absent). Media fetches it and
answers with ``AttachPreview``, appended only if the text is still the one it was made
for. The URL leaves messaging only in that request: the log keeps the text sealed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

from nats.aio.client import Client as NATS

from confab.aggregate import Aggregates, Executed
from confab.contracts.base import Ok
from confab.contracts.events import Event
from confab.contracts.events.messaging import (
    Attachment,
    ConversationCreated,
    Mention,
    MessageEdited,
    MessagePosted,
    MessageReported,
    subject,
)
from confab.contracts.events.moderation import MessageShadowed, MessageShadowEdited
from confab.contracts.media import FetchPreview
from confab.contracts.messaging import (
    Actor,
    AddParticipant,
    AttachPreview,
    Conversation,
    ConversationSaved,
    CreateConversation,
    DeleteMessage,
    EditMessage,
    MarkRead,
    Message,
    MessageSaved,
    ModerateMessage,
    PinMessage,
    PostMessage,
    React,
    RemoveParticipant,
    ReportMessage,
    Sender,
    SetTyping,
    UpdateConversation,
)
from confab.conversation import ConversationView, MessageView, message_object
from confab.conversation import evolve as fold
from confab.errors import Forbidden, InternalError, MessageBlocked, NotFound, Unavailable
from confab.ids import new_id
from confab.links import first_link
from confab.logging import get_logger
from confab.rpc import CallContext
from confab.shell import CommandShell, Intent, Route
from confab_messaging import domain, render
from confab_messaging import mentions as mention_rules
from confab_messaging.automod import MASK, NO_RULES, Compiled, Verdict
from confab_messaging.domain import ConversationState, MessageState, Resent
from confab_messaging.handlers import Lookups, conversation_subject, valid
from confab_messaging.store import UserRow

log = get_logger("confab_messaging")

E = TypeVar("E", bound=Event)

# Link previews asked of media and not answered yet, at most (media down: a few seconds'
# worth of posts with links, then none until it answers again).
PREVIEWS_IN_FLIGHT = 1000

Shell = CommandShell[domain.Command, ConversationState]
# The read side's view of an existing conversation, once it has applied a stream sequence.
Existing = Callable[[Actor, str, int], Awaitable[Conversation]]
# A workspace's automatic-moderation rules as the log has them now, compiled.
# A workspace's automatic-moderation rules as the log has them now, compiled, and the
# users whose posts are shadowed.
Policy = Callable[[str], Awaitable[tuple[Compiled, frozenset[str]]]]


async def no_rules(_workspace_id: str) -> tuple[Compiled, frozenset[str]]:
    return NO_RULES, frozenset()


def utcnow() -> datetime:
    return datetime.now(UTC)


def intent(actor: Actor, subject_: str, command: domain.Command, msg_id: str = "") -> Intent:
    """``command`` by ``actor`` on the conversation at ``subject_``."""
    return Intent(
        subject_, command, actor.workspace_id, actor.user_id or actor.key_id or "", msg_id
    )


async def message_as_now(
    aggregates: Aggregates[domain.Command, ConversationState],
    subject_: str,
    state: ConversationState,
    message_id: str,
    *,
    edit: tuple[int, MessageEdited] | None = None,
) -> MessageView:
    """A message of the conversation at ``subject_`` as it is now, from the log.

    Its post (and last edit, unless ``edit`` gives it with where it was stored)
    are read where ``state`` says they are, folded by the one fold, and given
    the flags and reactions the state has: two reads at most, however long the
    conversation. Its ``stream_seq`` is where the post is.
    """
    found = state.messages.get(message_id)
    if found is None or not found.post_position or state.created_at is None:
        raise InternalError()  # every message the state holds was folded with its position
    view = ConversationView(state.id)
    view.created_at = state.created_at
    posted = await _stored(aggregates, subject_, found.post_position, MessagePosted)
    fold(view, posted, found.post_position)
    if edit is None and found.edit_position:
        edited = await _stored(aggregates, subject_, found.edit_position, MessageEdited)
        edit = (found.edit_position, edited)
    if edit is not None:
        fold(view, edit[1], edit[0])
    message = view.messages[message_id]
    message.deleted, message.hidden = found.deleted, found.hidden
    message.reactions = {pair: n for n, pair in enumerate(found.reactions or ())}
    return message


async def _stored(
    aggregates: Aggregates[domain.Command, ConversationState],
    subject_: str,
    position: int,
    kind: type[E],
) -> E:
    """The event stored at ``position`` on ``subject_`` (revealed), which must be a ``kind``."""
    async for envelope in aggregates.read(subject_, after=position - 1, limit=1):
        if envelope.seq == position and isinstance(envelope.event, kind):
            return envelope.event
    raise Unavailable("The event log did not return a stored message; try again.")


class Commands:
    def __init__(
        self,
        nc: NATS,
        shell: Shell,
        lookups: Lookups,
        existing: Existing,
        *,
        clock: Callable[[], datetime] = utcnow,
        policy: Policy = no_rules,
        previews_on: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.policy = policy
        self.previews_on = previews_on  # the workspace's link-preview switch (None: on)
        self.nc = nc
        self.shell = shell
        self.lookups = lookups
        self.existing = existing
        self.clock = clock
        self._previews: set[asyncio.Task[None]] = set()  # asked of media, not awaited

    def routes(self) -> list[Route]:
        handler = self.shell.handler
        return [
            (CreateConversation, self.create_conversation),
            (UpdateConversation, handler(self.update_conversation, self.settled)),
            (AddParticipant, handler(self.add_participant)),
            (RemoveParticipant, handler(self.remove_participant, self.settled)),
            (PostMessage, self.post_message),
            (EditMessage, self.edit_message),
            (DeleteMessage, handler(self.delete_message, self.settled)),
            (React, handler(self.react)),
            (MarkRead, handler(self.mark_read)),
            (SetTyping, self.set_typing),
            (ReportMessage, handler(self.report_message, self.reported)),
            (ModerateMessage, handler(self.moderate_message, self.moderated)),
            (PinMessage, handler(self.pin_message, self.settled)),
            (AttachPreview, handler(self.attach_preview)),
        ]

    async def settled(self, _request: Any, executed: Executed[ConversationState]) -> Ok:
        """``Ok`` once the read model shows the change (bounded): whoever was removed, or
        whatever was deleted, is gone from every read when this returns."""
        await self.lookups.settle(executed.version)
        return Ok(seq=executed.version)

    # -- conversations and participants ----------------------------------------------------

    async def create_conversation(
        self, cmd: CreateConversation, ctx: CallContext
    ) -> ConversationSaved:
        actor, data = cmd.actor, cmd.input
        workspace_id = valid(actor.workspace_id, "Workspace")
        if cmd.users_min_seq:
            await self.lookups.users_settled(cmd.users_min_seq)
        members = domain.members_for(actor, data.participant_ids)
        for user_id in members:
            valid(user_id, "User")
        users = await self.lookups.known_users(workspace_id, members)
        if data.type == "direct" and len(members) == 2:
            conversation_id = domain.direct_conversation_id(workspace_id, *members)
        elif data.type == "direct":
            conversation_id = ""
        else:
            conversation_id = new_id("conv")
        command = domain.CreateConversation(
            actor=actor,
            now=self.clock(),
            conversation_id=conversation_id,
            kind=data.type,
            participant_ids=members,
            unknown=[u for u in members if u not in users or users[u].erased],
            title=data.title,
            metadata=data.metadata,
            pin_policy=data.pin_policy,
        )
        if not conversation_id:
            domain.decide(command, domain.initial())  # raises: a direct one needs two people
            raise InternalError()
        executed = await self.shell.run(
            intent(actor, subject(workspace_id, conversation_id), command), ctx
        )
        event = executed.event
        if isinstance(event, ConversationCreated):
            log.info("conversation_created", conversation_id=conversation_id, kind=data.type)
            view = render.created_conversation(event, users)
            return ConversationSaved(
                conversation=view, created=True, stream_seq=executed.positions[0]
            )
        # The direct conversation of this pair existed: answer it as the read side shows it.
        view = await self.existing(actor, conversation_id, executed.version)
        return ConversationSaved(conversation=view, created=False, stream_seq=executed.version)

    async def update_conversation(self, cmd: UpdateConversation, _ctx: CallContext) -> Intent:
        subject_ = conversation_subject(cmd.actor, cmd.conversation_id)
        command = domain.UpdateConversation(
            actor=cmd.actor,
            now=self.clock(),
            title=cmd.patch.title,
            metadata=cmd.patch.metadata,
            pin_policy=cmd.patch.pin_policy,
        )
        return intent(cmd.actor, subject_, command)

    async def add_participant(self, cmd: AddParticipant, _ctx: CallContext) -> Intent:
        now = self.clock()
        subject_ = conversation_subject(cmd.actor, cmd.conversation_id)
        user_id = valid(cmd.user_id, "User")
        users = await self.lookups.known_users(cmd.actor.workspace_id, [user_id])
        command = domain.AddParticipant(
            actor=cmd.actor,
            now=now,
            user_id=user_id,
            user_exists=user_id in users and not users[user_id].erased,
        )
        return intent(cmd.actor, subject_, command)

    async def remove_participant(self, cmd: RemoveParticipant, _ctx: CallContext) -> Intent:
        now = self.clock()
        subject_ = conversation_subject(cmd.actor, cmd.conversation_id)
        command = domain.RemoveParticipant(
            actor=cmd.actor, now=now, user_id=valid(cmd.user_id, "User")
        )
        return intent(cmd.actor, subject_, command)

    # -- messages --------------------------------------------------------------------------

    async def post_message(self, cmd: PostMessage, ctx: CallContext) -> MessageSaved:
        now = self.clock()
        actor, data = cmd.actor, cmd.input
        subject_ = conversation_subject(actor, cmd.conversation_id)
        conversation_id = cmd.conversation_id
        if actor.user_id is not None:
            if cmd.sender_id not in (None, actor.user_id):
                raise Forbidden("You can only post as yourself.")
            sender_id: str | None = actor.user_id
        else:
            sender_id = cmd.sender_id
        users: dict[str, UserRow] = {}
        if sender_id is not None:
            valid(sender_id, "User")
            users = await self.lookups.known_users(actor.workspace_id, [sender_id])
            erased = sender_id in users and users[sender_id].erased
            if self.lookups.standing.erased(actor.workspace_id, sender_id, erased):
                raise NotFound("User not found.", {"sender_id": "this user was erased"})
        banned = sender_id is not None and self.lookups.standing.banned(
            actor.workspace_id, sender_id, sender_id in users and users[sender_id].banned
        )
        attachments: dict[str, Attachment] = {}
        if data.attachment_ids and sender_id is not None:
            # Media knows which exist here and who uploaded them; the decider knows
            # (from the log) which are attached already.
            attachments = await self.lookups.attachments(
                actor.workspace_id,
                data.attachment_ids,
                conversation_id=conversation_id,
                uploader_id=sender_id,
            )
        client_msg_id = data.client_msg_id
        content, hits, report_id, shadow = data.content, [], None, False
        mentions = mention_rules.from_input(data.mentions)
        if sender_id is not None and not banned:
            rules, shadowed = await self.policy(actor.workspace_id)
            verdict = rules.apply(data.content)
            if verdict.blocked:
                await self.blocked(actor, subject_, sender_id, data.content, verdict, ctx)
            content, hits = verdict.content, verdict.hits
            mentions = mention_rules.after_masking(mentions, verdict.masked, len(MASK))
            # A shadowed message is its sender's alone: nobody reports it, nothing links it.
            shadow = verdict.shadow or sender_id in shadowed
            report_id = new_id("rep") if verdict.flagged and not shadow else None
        command = domain.PostMessage(
            actor=actor,
            now=now,
            sender_id=sender_id,
            content=content,
            message_id=new_id("msg"),
            metadata=data.metadata,
            attachment_ids=data.attachment_ids,
            attachments=list(attachments.values()),
            reply_to=data.reply_to,
            client_msg_id=client_msg_id,
            message_type=data.type,
            banned=banned,
            mentions=mentions,
            parent_id=data.parent_id,
            automod=hits,
            report_id=report_id,
            shadow=shadow,
        )
        msg_id = (
            domain.client_msg_key(conversation_id, sender_id, client_msg_id)
            if client_msg_id is not None
            else ""
        )
        executed = await self.shell.run(intent(actor, subject_, command, msg_id), ctx)
        event = executed.event
        original = executed.state.message_for(sender_id, client_msg_id) if client_msg_id else None
        if isinstance(event, MessagePosted) and (
            not executed.duplicate or original in (None, event.message_id)
        ):
            if not executed.duplicate:
                self.ask_preview(actor.workspace_id, event, event.content, event.seq)
            return MessageSaved(
                message=render.posted_message(event, render.sender(sender_id, users), attachments),
                created=True,
                stream_seq=executed.positions[0],
            )
        if isinstance(event, MessageShadowed) and (
            not executed.duplicate or original in (None, event.message_id)
        ):
            return MessageSaved(
                message=render.shadowed_message(event, render.sender(sender_id, users)),
                created=True,
                stream_seq=executed.positions[0],
            )
        if isinstance(executed.result, Resent):
            original = executed.result.message_id
        if original is None:  # the decider appends nothing only for a known client_msg_id
            raise InternalError()
        shadow = executed.state.shadowed.get(original)
        if shadow is not None:
            author = render.sender(sender_id, users)
            return MessageSaved(
                message=await self.shadowed_now(subject_, shadow, author),
                created=False,
                stream_seq=shadow.position,
            )
        # A resend: answer the original, as the conversation's log has it now.
        message = await self.message_now(
            actor.workspace_id, subject_, executed.state, original, actor.user_id, users
        )
        position = executed.state.messages[original].post_position
        return MessageSaved(message=message, created=False, stream_seq=position)

    async def blocked(
        self,
        actor: Actor,
        subject_: str,
        sender_id: str,
        content: str,
        verdict: Verdict,
        ctx: CallContext,
    ) -> NoReturn:
        """Record a post automatic moderation refused (``message.blocked``), then refuse it."""
        command = domain.RecordBlocked(
            actor=actor, now=self.clock(), sender_id=sender_id, content=content, hits=verdict.hits
        )
        await self.shell.run(intent(actor, subject_, command), ctx)
        rules = [h.rule_id for h in verdict.hits if h.action in ("block", "shadow")]
        log.info("message_blocked", rules=rules)
        raise MessageBlocked(
            "This message was not sent: it breaks the workspace's rules.",
            {"content": "matches a blocked pattern", "rules": rules},
        )

    async def edit_message(self, cmd: EditMessage, ctx: CallContext) -> MessageSaved:
        now = self.clock()
        await self.lookups.may_act(cmd.actor)
        subject_ = conversation_subject(cmd.actor, cmd.conversation_id)
        message_id = valid(cmd.message_id, "Message")
        content, hits, masked = cmd.content, [], ()
        if cmd.actor.user_id is not None:
            # An edit passes the same rules as a post: masked where they mask, refused
            # where they block, or would shadow a message others see already (a shadowed
            # one's edit is shadowed too: only its sender sees it).
            shadowed = await self.shell.aggregates.query(
                subject_, lambda state: message_id in state.shadowed
            )
            verdict = (await self.policy(cmd.actor.workspace_id))[0].apply(content)
            if verdict.blocked or (verdict.shadow and not shadowed):
                await self.blocked(cmd.actor, subject_, cmd.actor.user_id, content, verdict, ctx)
            content, hits, masked = verdict.content, verdict.hits, verdict.masked
        if cmd.mentions is not None:
            given = mention_rules.from_input(cmd.mentions)
            mentions, carried = mention_rules.after_masking(given, masked, len(MASK)), False
        else:
            mentions, carried = await self.carried_mentions(subject_, message_id, content), True
        command = domain.EditMessage(
            actor=cmd.actor,
            now=now,
            message_id=message_id,
            content=content,
            mentions=mentions,
            carried=carried,
            automod=hits,
        )
        executed = await self.shell.run(intent(cmd.actor, subject_, command), ctx)
        event = executed.event
        if isinstance(event, MessageShadowEdited):
            # Its sender's alone: no preview is fetched (nobody else may see the link go out).
            await self.lookups.settle(executed.version)  # their history shows it
            users = await self.lookups.users(cmd.actor.workspace_id, [event.sender_id])
            author = render.sender(event.sender_id, users)
            shadow = executed.state.shadowed[message_id]
            message = await self.shadowed_now(subject_, shadow, author, edit=event)
            return MessageSaved(message=message, created=False, stream_seq=executed.positions[0])
        if not isinstance(event, MessageEdited):
            raise InternalError()  # the decider decides an edit or raises
        self.ask_preview(cmd.actor.workspace_id, event, event.content, event.seq)
        await self.lookups.settle(executed.version)  # history shows it when this returns
        users = await self.lookups.users(cmd.actor.workspace_id, [cmd.actor.user_id or ""])
        message = await self.message_now(
            cmd.actor.workspace_id,
            subject_,
            executed.state,
            message_id,
            cmd.actor.user_id,
            users,
            edit=(executed.positions[0], event),
        )
        return MessageSaved(message=message, created=False, stream_seq=executed.positions[0])

    async def shadowed_now(
        self,
        subject_: str,
        shadow: domain.ShadowState,
        author: Sender | None,
        *,
        edit: MessageShadowEdited | None = None,
    ) -> Message:
        """A shadowed post as its sender sees it now: its post and last edit, read from
        the log where the state says they are (or ``edit``, just stored)."""
        aggregates = self.shell.aggregates
        posted = await _stored(aggregates, subject_, shadow.position, MessageShadowed)
        last = edit
        if last is None and shadow.edit_position:
            last = await _stored(aggregates, subject_, shadow.edit_position, MessageShadowEdited)
        return render.shadowed_message(posted, author, edit=last, deleted=shadow.deleted)

    async def carried_mentions(self, subject_: str, message_id: str, content: str) -> list[Mention]:
        """The mentions of the message's text now that an edit to ``content`` leaves where
        they were (none if it has none; the decider checks the rest)."""

        def ask(state: ConversationState) -> ConversationState | None:
            found = state.messages.get(message_id)
            if found is None or not found.mentioned or not found.post_position:
                return None
            one = ConversationState(id=state.id, created_at=state.created_at)
            one.messages[message_id] = MessageState(
                sender_id=found.sender_id,
                post_position=found.post_position,
                edit_position=found.edit_position,
            )
            return one

        state = await self.shell.aggregates.query(subject_, ask)
        if state is None:
            return []
        old = await message_as_now(self.shell.aggregates, subject_, state, message_id)
        return mention_rules.carried(old.content, content, old.mentions)

    def ask_preview(
        self, workspace_id: str, event: MessagePosted | MessageEdited, content: str, version: int
    ) -> None:
        """Hand the text's first link to media for a preview, without waiting for it."""
        url = first_link(content)
        if url is None:
            return
        if len(self._previews) >= PREVIEWS_IN_FLIGHT:
            log.warning("link_preview_not_asked", message_id=event.message_id, error="busy")
            return
        sender = event.sender_id if isinstance(event, MessagePosted) else event.by
        request = FetchPreview(
            workspace_id=workspace_id,
            conversation_id=event.conversation_id,
            message_id=event.message_id,
            sender_id=sender,
            version=version,
            url=url,
        )

        async def ask() -> None:
            try:
                if self.previews_on is not None and not await self.previews_on(workspace_id):
                    return
                await self.lookups.rpc.call(request, timeout=5.0)
            except Exception as exc:  # a preview is optional: never fail the post for it
                log.info("link_preview_not_asked", message_id=event.message_id, error=str(exc))

        task = asyncio.create_task(ask())
        self._previews.add(task)
        task.add_done_callback(self._previews.discard)

    async def attach_preview(self, cmd: AttachPreview, _ctx: CallContext) -> Intent:
        subject_ = conversation_subject(cmd.actor, cmd.conversation_id)
        command = domain.AttachPreview(
            actor=cmd.actor,
            now=self.clock(),
            message_id=valid(cmd.message_id, "Message"),
            version=cmd.version,
            preview=cmd.preview,
        )
        return intent(cmd.actor, subject_, command)

    async def message_now(
        self,
        workspace_id: str,
        subject_: str,
        state: ConversationState,
        message_id: str,
        viewer: str | None,
        users: Mapping[str, UserRow],
        *,
        edit: tuple[int, MessageEdited] | None = None,
    ) -> Message:
        """The message as it is now (``message_as_now``), for ``viewer``."""
        found = await message_as_now(self.shell.aggregates, subject_, state, message_id, edit=edit)
        attachments = await self.lookups.shown_attachments(workspace_id, [found])
        return message_object(found, viewer, render.sender(found.sender_id, users), attachments)

    async def delete_message(self, cmd: DeleteMessage, _ctx: CallContext) -> Intent:
        now = self.clock()
        subject_ = conversation_subject(cmd.actor, cmd.conversation_id)
        command = domain.DeleteMessage(
            actor=cmd.actor, now=now, message_id=valid(cmd.message_id, "Message")
        )
        return intent(cmd.actor, subject_, command)

    async def react(self, cmd: React, _ctx: CallContext) -> Intent:
        now = self.clock()
        await self.lookups.may_act(cmd.actor)
        subject_ = conversation_subject(cmd.actor, cmd.conversation_id)
        command = domain.React(
            actor=cmd.actor,
            now=now,
            message_id=valid(cmd.message_id, "Message"),
            emoji=cmd.emoji,
            add=cmd.add,
        )
        return intent(cmd.actor, subject_, command)

    async def mark_read(self, cmd: MarkRead, _ctx: CallContext) -> Intent:
        now = self.clock()
        await self.lookups.may_act(cmd.actor)
        subject_ = conversation_subject(cmd.actor, cmd.conversation_id)
        parent_id = valid(cmd.parent_id, "Thread") if cmd.parent_id is not None else None
        command = domain.MarkRead(actor=cmd.actor, now=now, seq=cmd.seq, parent_id=parent_id)
        return intent(cmd.actor, subject_, command)

    async def set_typing(self, cmd: SetTyping, _ctx: CallContext) -> Ok:
        """Not stored: a small JSON on core NATS for the fanout."""
        await self.lookups.may_act(cmd.actor)
        subject_ = conversation_subject(cmd.actor, cmd.conversation_id)
        user_id: str = await self.shell.aggregates.query(
            subject_, lambda state: domain.check_typing(state, cmd.actor, self.clock())
        )
        users = await self.lookups.users(cmd.actor.workspace_id, [user_id])
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

    async def report_message(self, cmd: ReportMessage, _ctx: CallContext) -> Intent:
        now = self.clock()
        conversation_id = await self.lookups.locate(cmd.actor, cmd.message_id)
        command = domain.ReportMessage(
            actor=cmd.actor,
            now=now,
            message_id=cmd.message_id,
            reason=cmd.reason,
            report_id=new_id("rep"),
        )
        return intent(cmd.actor, subject(cmd.actor.workspace_id, conversation_id), command)

    async def reported(self, _cmd: ReportMessage, executed: Executed[ConversationState]) -> Ok:
        event = executed.event
        if isinstance(event, MessageReported):
            log.info(
                "message_reported", conversation_id=event.conversation_id, report_id=event.report_id
            )
        return Ok(seq=executed.version)

    async def moderate_message(self, cmd: ModerateMessage, _ctx: CallContext) -> Intent:
        now = self.clock()
        conversation_id = await self.lookups.locate(cmd.actor, cmd.message_id)
        command = domain.ModerateMessage(
            actor=cmd.actor, now=now, message_id=cmd.message_id, action=cmd.action
        )
        return intent(cmd.actor, subject(cmd.actor.workspace_id, conversation_id), command)

    async def pin_message(self, cmd: PinMessage, _ctx: CallContext) -> Intent:
        now = self.clock()
        await self.lookups.may_act(cmd.actor)
        subject_ = conversation_subject(cmd.actor, cmd.conversation_id)
        command = domain.PinMessage(
            actor=cmd.actor, now=now, message_id=valid(cmd.message_id, "Message"), pin=cmd.pin
        )
        return intent(cmd.actor, subject_, command)

    async def moderated(self, cmd: ModerateMessage, executed: Executed[ConversationState]) -> Ok:
        await self.lookups.settle(executed.version)  # every reader shows it when this returns
        if executed.event is not None:
            log.info(
                "message_moderated",
                conversation_id=executed.state.id,
                message_id=cmd.message_id,
                action=cmd.action,
            )
        return Ok(seq=executed.version)

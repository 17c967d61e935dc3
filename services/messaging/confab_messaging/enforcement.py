"""Enforcement in a conversation: freezing it, muting and banning users there.

Each is an event on the conversation's subject, decided by the conversation
decider (``domain.Freeze``, ``domain.Restrict``) against the log's state, so the
next command on the conversation, on any messaging copy, is decided with it:
a post, edit, reaction or typing signal is refused as soon as the call returns.
Timed mutes and bans lift themselves: the decider compares their end with the
time of each command, so nothing has to happen when the time passes.

A ban also removes the user (``participant.removed``), which the fanout acts on
(their sockets are let go of the conversation's channels); these calls, like a
removal, wait until the read model shows the change before replying. A freeze
reaches clients as ``conversation.updated`` with ``frozen: true``, and every
fanout node refuses client events on the conversation's channels while it holds
(``confab_fanout.authority.Gatekeeper.may_send``). The mutes and bans in force are
listed from the same state, caught up with the log when asked.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from confab.aggregate import Executed
from confab.contracts.base import Ok
from confab.contracts.moderation import (
    FreezeConversation,
    ListRestrictions,
    Restriction,
    RestrictionList,
    RestrictParticipant,
)
from confab.errors import NotFound
from confab.logging import get_logger
from confab.rpc import CallContext
from confab.shell import CommandShell, Intent, Route
from confab_messaging import domain
from confab_messaging.domain import CONVERSATION_NOT_FOUND, ConversationState
from confab_messaging.handlers import Lookups, conversation_subject, valid

log = get_logger("confab_messaging")


class Enforcement:
    def __init__(
        self,
        shell: CommandShell[domain.Command, ConversationState],
        lookups: Lookups,
        clock: Callable[[], datetime],
    ) -> None:
        self.shell = shell
        self.lookups = lookups
        self.clock = clock

    def routes(self) -> list[Route]:
        handler = self.shell.handler
        return [
            (FreezeConversation, handler(self.freeze, self.settled)),
            (RestrictParticipant, handler(self.restrict, self.settled)),
            (ListRestrictions, self.restrictions),
        ]

    async def restrictions(self, query: ListRestrictions, _ctx: CallContext) -> RestrictionList:
        """The mutes or bans in force now: read from the log (``fresh``), not from a
        cached state another copy may have moved past."""
        subject_ = conversation_subject(query.actor, query.conversation_id)
        async with self.shell.aggregates.turn(subject_):
            state, _ = await self.shell.aggregates.load(subject_, fresh=True)
        if not state.exists:
            raise NotFound(CONVERSATION_NOT_FOUND)
        now = self.clock()
        kind = state.muted if query.kind == "mute" else state.banned
        return RestrictionList(
            data=[
                Restriction(user_id=user_id, until=until)
                for user_id, until in sorted(kind.items())
                if state.restricted(kind, user_id, now)
            ]
        )

    async def settled(self, request: object, executed: Executed[ConversationState]) -> Ok:
        await self.lookups.settle(executed.version)
        if executed.events:
            log.info(
                "conversation_enforced",
                conversation_id=executed.state.id,
                events=[e.type for e in executed.events],
            )
        return Ok(seq=executed.version)

    async def freeze(self, cmd: FreezeConversation, _ctx: CallContext) -> Intent:
        subject_ = conversation_subject(cmd.actor, cmd.conversation_id)
        command = domain.Freeze(actor=cmd.actor, now=self.clock(), frozen=cmd.frozen)
        return Intent(subject_, command, cmd.actor.workspace_id, cmd.actor.key_id or "")

    async def restrict(self, cmd: RestrictParticipant, _ctx: CallContext) -> Intent:
        subject_ = conversation_subject(cmd.actor, cmd.conversation_id)
        now = self.clock()
        until = now + timedelta(seconds=cmd.duration_seconds) if cmd.duration_seconds else None
        command = domain.Restrict(
            actor=cmd.actor,
            now=now,
            kind=cmd.kind,
            user_id=valid(cmd.user_id, "User"),
            until=until,
            lift=cmd.lift,
        )
        return Intent(subject_, command, cmd.actor.workspace_id, cmd.actor.key_id or "")

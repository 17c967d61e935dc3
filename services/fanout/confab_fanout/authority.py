"""Who may hold a socket, a conversation channel and a resume on this node: live facts.

A channel signature says who the app authorized, and when: not whether that
still holds. Every subscription to a conversation channel and every
``confab:resume`` is checked here against the conversation as the log has it
now (``Feed.fresh``: membership), and against what ``IDENTITY`` says of the
user and the session (bans, erasures, revocations, followed by
``confab.authority.Follower``). A valid old signature is not enough.

Every socket is tied to the principals its authorizations named: the user (and
session) in a conversation channel's ``channel_data``, in a presence member,
or in ``pusher:signin``'s ``user_data``. When ``IDENTITY`` says the session was
revoked, or the user erased or banned, every socket tied to them is closed
(``pusher:error`` then close, 4009) before the follower acknowledges the event
— so before the call that made the change returns — and nothing more is
written to it. Removal from a conversation is a conversation event: the feed
unsubscribes the user's sockets (``subscription_error`` 403) as it applies it,
so they get nothing stored after it.

A staff member of the workspace (Confab's dashboard) may join any conversation
channel of that workspace while the role their authorization names grants
``conversations.read`` (``confab.staff``); the conversation must exist in the
app's own workspace (``Feed.fresh`` is per app), so another workspace's ids lead
nowhere. When their role changes or they leave the team, their sockets close
(4009) like a revoked session's, and the dashboard signs in again with what they
may do now.

Bans, erasures and revoked sessions are remembered from this node's start. That
is all it needs: a signature names a ``socket_id``, sockets are younger than
the node they are on, and the gateway signs nothing for a user already banned
or erased, or a session already revoked, when asked.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol

from confab import realtime, support
from confab.authority import (
    SESSION_REVOKED,
    STAFF_REMOVED,
    STAFF_ROLE_CHANGED,
    USER_BANNED,
    USER_ERASED,
    USER_UNBANNED,
    Change,
)
from confab.conversation import in_force
from confab.logging import get_logger
from confab.staff import CONVERSATIONS_READ, grants
from confab_fanout import inbox, protocol
from confab_fanout.feed import Feed

log = get_logger("confab.fanout.authority")

Principal = tuple[str, str]  # (app id, user or session id)

BANNED = "This user is banned from the workspace."
ERASED = "This user was erased."
REVOKED = "The session that authorized this connection was revoked."
RESTAFFED = "Your role on the team changed; sign in again."
NOT_A_PARTICIPANT = "Only the conversation's participants may join it."
FROZEN = "Client event rejected: the conversation is frozen"
MUTED = "Client event rejected: you are muted in this conversation"
NO_USER = "A conversation channel's authorization must name the user (channel_data user_id)."


class Sockets(Protocol):
    """What closing needs of the node (``Fanout`` is one)."""

    def sockets_of(self, app_id: str, user_id: str | None, session_id: str | None) -> set: ...

    def revoke(self, conns: Iterable, code: int, message: str) -> None: ...


class Gatekeeper:
    def __init__(self, sockets: Sockets, feed: Feed) -> None:
        self.sockets = sockets
        self.feed = feed
        self.banned: set[Principal] = set()
        self.erased: set[Principal] = set()
        self.revoked: set[Principal] = set()  # sessions

    # -- IDENTITY, as the follower applies it -----------------------------------------------

    def handle(self, change: Change) -> None:
        ws, entity = change.workspace_id, change.entity_id
        if change.type == USER_UNBANNED:
            self.banned.discard((ws, entity))
            return
        if change.type == USER_BANNED:
            self.banned.add((ws, entity))
            targets, message = self.sockets.sockets_of(ws, entity, None), BANNED
        elif change.type == USER_ERASED:
            self.erased.add((ws, entity))
            self.feed.erase(ws, entity)
            targets, message = self.sockets.sockets_of(ws, entity, None), ERASED
        elif change.type == SESSION_REVOKED:
            self.revoked.add((ws, entity))
            targets, message = self.sockets.sockets_of(ws, None, entity), REVOKED
        elif change.type in (STAFF_ROLE_CHANGED, STAFF_REMOVED):
            targets, message = self.sockets.sockets_of(ws, entity, None), RESTAFFED
        else:
            return
        if targets:
            log.info("sockets_revoked", reason=change.type, count=len(targets))
            self.sockets.revoke(targets, protocol.UNAUTHORIZED, message)

    # -- checks --------------------------------------------------------------------------------

    def refusal(self, app_id: str, user_id: str | None, session_id: str | None) -> str | None:
        """Why a socket acting for ``user_id`` (and ``session_id``) may not, if it may not."""
        if user_id is not None:
            if (app_id, user_id) in self.erased:
                return ERASED
            if (app_id, user_id) in self.banned:
                return BANNED
        if session_id is not None and (app_id, session_id) in self.revoked:
            return REVOKED
        return None

    async def may_join(
        self,
        app_id: str,
        channel: str,
        user_id: str | None,
        session_id: str | None,
        role: str | None = None,
    ) -> str | None:
        """Why the socket may not join ``channel``, or None. Conversation channels are for
        the conversation's current participants, checked against the log now, and for the
        workspace's staff whose signed ``role`` grants ``conversations.read``; a
        workspace's inbox channel for its staff (a signed staff ``role``: ``inbox``)."""
        refused = self.refusal(app_id, user_id, session_id)
        if refused is not None:
            return refused
        if channel.startswith(support.INBOX_CHANNEL_PREFIX):
            return inbox.may_join(app_id, channel, user_id, role)
        conversation_id = realtime.conversation_of(channel) or _presence_of(channel)
        if conversation_id is None:
            return None
        if user_id is None:
            return NO_USER
        tracked = await self.feed.fresh(app_id, conversation_id)
        staff = grants(role, CONVERSATIONS_READ)
        if tracked is None or not (staff or tracked.view.is_member(user_id)):
            return NOT_A_PARTICIPANT
        # The wait for the log may have let a revocation in.
        return self.refusal(app_id, user_id, session_id)

    async def may_send(self, app_id: str, channel: str, user_id: str | None) -> str | None:
        """Why a client event of ``user_id`` may not go to ``channel`` now, or None: a
        conversation's channels take none while it is frozen, nor any from a user muted
        in it, checked against the log now (``Feed.fresh`` asks the stream's leader), so
        a freeze or mute holds on every node once its call has returned (it returns once
        the event is stored), and its lifting likewise."""
        conversation_id = realtime.conversation_of(channel) or _presence_of(channel)
        if conversation_id is None:
            return None
        tracked = await self.feed.fresh(app_id, conversation_id)
        if tracked is None:
            return None
        if tracked.view.frozen:
            return FROZEN
        if user_id is not None and in_force(tracked.muted, user_id, datetime.now(UTC)):
            return MUTED
        return None


def _presence_of(channel: str) -> str | None:
    if channel.startswith(realtime.PRESENCE_PREFIX):
        return channel[len(realtime.PRESENCE_PREFIX) :] or None
    return None

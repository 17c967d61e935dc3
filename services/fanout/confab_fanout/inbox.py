"""The live inbox: a workspace's support conversations as its staff see them change.

``private-inbox-{workspace}`` (``confab.support.inbox_channel``) is for the
workspace's staff only: the ``Gatekeeper`` lets a socket in only with a
``channel_data`` signed with the app secret that names a ``user_id`` and a staff
``role`` (``owner``, ``admin``, ``agent``, ``moderator``), for the channel's own
workspace, on a session not revoked. The gateway signs it for dashboard
sessions; a widget session is never signed one.

Each node follows the stored events as ``CONVERSATIONS`` re-publishes them
(``live.conv.evt.<ws>.<conv>``), and only for workspaces with an inbox
subscriber here (the rest are not even decoded). It sends

- ``inbox.conversation`` ``{conversation_id, change, at, …}`` when a support
  conversation is created (``visitor_id``), changes status (``status``,
  ``snoozed_until``), assignee (``assignee_id``, ``automatic``) or tags
  (``tags``), or gets a message (``message_id``, ``sender_id``, ``preview``: the
  first 140 characters of its text as posted);
- ``inbox.note`` (``confab.support.note_payload``) for an internal note: the only
  socket path a note takes;
- ``inbox.profile`` ``{user_id, change, seq}`` when one of the workspace's users is
  stored changed (``updated``) or erased (``erased``), from identity's re-publish
  (``live.identity.evt.<ws>.user.<id>``): no name or other content, only that the
  names shown may have changed. ``seq`` is the event's in ``IDENTITY``: the
  dashboard re-reads the list with it as ``users_min_seq``.

Frames carry the change, not the counts: a dashboard re-reads the counts of
``GET /api/v1/support/conversations`` when a frame arrives (one small query).
``inbox.conversation`` carries the event's ``seq`` in ``CONVERSATIONS``: the
frame can arrive before the support read model has applied the event, so the
dashboard passes the highest ``seq`` it has seen as that read's ``min_seq``
and the answer includes the change. There is no inbox timeline to resume:
after a reconnect a dashboard re-reads the inbox, which is current.
Whether a conversation is a support conversation is learnt from its creation
(or, for one this node has not seen created, from the first event on its
subject), and remembered in a bounded map.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Any, Protocol

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from confab import support
from confab.contracts.events.identity import UserErased, UserUpserted
from confab.contracts.events.messaging import (
    ConversationCreated,
    ConversationEvent,
    MessagePosted,
    NoteAdded,
    StaffEvent,
    SupportAssigned,
    SupportStatusChanged,
    SupportTagged,
)
from confab.errors import ConfabError
from confab.events import H_EVENT, H_SCHEMA, UnknownEvent, decode_event
from confab.logging import get_logger
from confab.personal import KeyRing
from confab_fanout.feed import (
    H_SEQUENCE,
    LIVE_CONVERSATIONS,
    ConversationLog,
    Hub,
    json_text,
)
from confab_fanout.profiles import LIVE_USERS

log = get_logger("confab.fanout.inbox")

PREVIEW_MAX = 140
# The user events that can change a name the inbox shows, as the frame says it.
PROFILE_CHANGES = {UserUpserted.type: "updated", UserErased.type: "erased"}
KINDS_MAX = 100_000  # conversations whose kind (support or not) a node remembers

NOT_STAFF = "Only the workspace's staff may join its inbox."


def may_join(app_id: str, channel: str, user_id: str | None, role: str | None) -> str | None:
    """Why a socket may not join the inbox ``channel`` of ``app_id``, or None."""
    if channel != support.inbox_channel(app_id):
        return NOT_STAFF  # another workspace's inbox, or a malformed one
    if user_id is None or role not in support.STAFF_ROLES:
        return NOT_STAFF
    return None


def _time(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at is not None else None


def change_payload(event: ConversationEvent, seq: int = 0) -> tuple[str, dict[str, Any]] | None:
    """The inbox frame (event name, data) of a support conversation's stored event,
    stored at ``seq`` in ``CONVERSATIONS``."""
    base: dict[str, Any] = {
        "conversation_id": event.conversation_id,
        "at": _time(event.at),
        "seq": seq,
    }
    match event:
        case ConversationCreated():
            return support.INBOX_CONVERSATION, {
                **base,
                "change": "created",
                "visitor_id": event.created_by,
            }
        case SupportStatusChanged():
            return support.INBOX_CONVERSATION, {
                **base,
                "change": "status",
                "status": event.status,
                "snoozed_until": _time(event.snoozed_until),
                "by": event.by,
            }
        case SupportAssigned():
            return support.INBOX_CONVERSATION, {
                **base,
                "change": "assigned",
                "assignee_id": event.assignee_id,
                "automatic": event.automatic,
                "by": event.by,
            }
        case SupportTagged():
            return support.INBOX_CONVERSATION, {
                **base,
                "change": "tagged",
                "tags": list(event.tags),
                "by": event.by,
            }
        case NoteAdded():
            return support.INBOX_NOTE, support.note_payload(event)
        case MessagePosted():
            return support.INBOX_CONVERSATION, {
                **base,
                "change": "message",
                "message_id": event.message_id,
                "sender_id": event.sender_id,
                "preview": event.content[:PREVIEW_MAX],
            }
    return None


class Channels(Protocol):
    def get(self, app_id: str, name: str) -> Any: ...


class Inbox:
    def __init__(self, nc: NATS, hub: Hub, log_: ConversationLog, keys: KeyRing | None) -> None:
        self.nc = nc
        self.hub = hub
        self.channels: Channels = hub.channels
        self.log = log_
        self.keys = keys
        self.kinds: OrderedDict[tuple[str, str], bool] = OrderedDict()  # is it support?
        self._sub: Subscription | None = None
        self._users: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(LIVE_CONVERSATIONS, cb=self._on_event)
        self._users = await self.nc.subscribe(LIVE_USERS, cb=self._on_user)

    async def stop(self) -> None:
        for sub in (self._sub, self._users):
            if sub is not None:
                await sub.unsubscribe()
        self._sub = self._users = None

    async def _on_user(self, msg: Msg) -> None:
        headers = msg.headers
        parts = msg.subject.split(".")
        if not headers or len(parts) != 6:  # live.identity.evt.<workspace>.user.<id>
            return
        ws, user_id = parts[3], parts[5]
        change = PROFILE_CHANGES.get(headers.get(H_EVENT, ""))
        channel = support.inbox_channel(ws)
        if change is None or self.channels.get(ws, channel) is None:
            return
        data = {"user_id": user_id, "change": change, "seq": int(headers.get(H_SEQUENCE) or 0)}
        self.hub.deliver_local(ws, (channel,), support.INBOX_PROFILE, json_text(data))

    def _remember(self, key: tuple[str, str], is_support: bool) -> None:
        self.kinds[key] = is_support
        self.kinds.move_to_end(key)
        while len(self.kinds) > KINDS_MAX:
            self.kinds.popitem(last=False)

    async def _is_support(self, ws: str, conv: str) -> bool:
        key = (ws, conv)
        found = self.kinds.get(key)
        if found is None:
            found = False
            try:
                async for _, first in self.log.read(ws, conv, 0):
                    found = isinstance(first, ConversationCreated) and first.kind == support.SUPPORT
                    break
            except ConfabError as exc:
                log.warning("inbox_kind_unreadable", conversation_id=conv, error=str(exc))
                return False  # not remembered: asked again with its next event
            self._remember(key, found)
        return found

    async def _on_event(self, msg: Msg) -> None:
        headers = msg.headers
        parts = msg.subject.split(".")
        if not headers or len(parts) != 5:  # live.conv.evt.<workspace>.<conversation>
            return
        ws, conv = parts[3], parts[4]
        channel = support.inbox_channel(ws)
        if self.channels.get(ws, channel) is None:
            return  # no inbox open here for this workspace: not even decoded
        event_type = headers.get(H_EVENT, "")
        try:
            event = decode_event(event_type, int(headers.get(H_SCHEMA) or 1), msg.data)
        except (UnknownEvent, msgspec.DecodeError, ValueError) as exc:
            log.warning("inbox_event_unreadable", subject=msg.subject, error=str(exc))
            return
        if not isinstance(event, ConversationEvent):
            return
        if isinstance(event, ConversationCreated):
            self._remember((ws, conv), event.kind == support.SUPPORT)
        if not isinstance(event, ConversationCreated | StaffEvent | MessagePosted):
            return
        if not await self._is_support(ws, conv):
            return
        if self.keys is not None and getattr(event, "sealed", None):
            event = await self.keys.reveal(ws, event)
        found = change_payload(event, int(headers.get(H_SEQUENCE) or 0))
        if found is not None:
            name, data = found
            self.hub.deliver_local(ws, (channel,), name, json_text(data))

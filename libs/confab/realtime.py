"""Real-time channels, event names, people and small payloads; Pusher signatures. Pure.

What every service agrees on about the real-time path (``api.md``, "Real-time
events"): the channel of each kind of event, its name, how a person is shown
(by their current profile; an erased user is "Deleted user", one nobody knows
"Unknown user"), and the payloads of the small events. Messages and the
timeline are folded and rendered by ``confab.conversation``.

Every conversation event's data carries ``event_seq``, the conversation's
gap-free counter, so a client can notice a gap and ask for what it missed.
``user.typing`` is not stored and has none.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any, Protocol

import msgspec

from confab.contracts.messaging import (
    Participant,
    Sender,
)

ERASED_NAME = "Deleted user"
UNKNOWN_NAME = "Unknown user"

# -- channels ------------------------------------------------------------------------------

CONVERSATION_PREFIX = "private-conversation."
PRESENCE_PREFIX = "presence-conversation."
USER_PREFIX = "private-user."


def conversation_channel(conversation_id: str) -> str:
    """Where a conversation's events go: participants only."""
    return CONVERSATION_PREFIX + conversation_id


def presence_channel(conversation_id: str) -> str:
    """Who of the participants is online (standard Pusher presence)."""
    return PRESENCE_PREFIX + conversation_id


def user_channel(user_id: str) -> str:
    """One user's own events (``conversation.created``): that user only."""
    return USER_PREFIX + user_id


def conversation_of(channel: str) -> str | None:
    """The conversation id of a ``private-conversation.{id}`` channel, else None."""
    if channel.startswith(CONVERSATION_PREFIX):
        return channel[len(CONVERSATION_PREFIX) :] or None
    return None


# -- event names (api.md, "Real-time events") ---------------------------------------------------

MESSAGE_CREATED = "message.created"
MESSAGE_UPDATED = "message.updated"
MESSAGE_DELETED = "message.deleted"
REACTION_ADDED = "reaction.added"
REACTION_REMOVED = "reaction.removed"
MESSAGE_READ = "message.read"
PARTICIPANT_ADDED = "participant.added"
PARTICIPANT_REMOVED = "participant.removed"
CONVERSATION_CREATED = "conversation.created"
CONVERSATION_UPDATED = "conversation.updated"
USER_TYPING = "user.typing"


# -- people --------------------------------------------------------------------------------


class ProfileLike(Protocol):
    """What rendering needs of a user: messaging's user rows and ``Profile`` both fit."""

    @property
    def name(self) -> str: ...
    @property
    def avatar_url(self) -> str | None: ...
    @property
    def erased(self) -> bool: ...


class Profile(msgspec.Struct, frozen=True):
    name: str
    avatar_url: str | None = None
    erased: bool = False


ERASED = Profile(ERASED_NAME, None, True)


def shown(profile: ProfileLike | None) -> tuple[str, str | None]:
    """(name, avatar_url) as others see the user."""
    if profile is None:
        return UNKNOWN_NAME, None
    if profile.erased:
        return ERASED_NAME, None
    return profile.name, profile.avatar_url


def sender(sender_id: str | None, profile: ProfileLike | None) -> Sender | None:
    if sender_id is None:
        return None  # a system message
    name, avatar = shown(profile)
    return Sender(id=sender_id, name=name, avatar_url=avatar)


def participant(user_id: str, last_read_seq: int, profile: ProfileLike | None) -> Participant:
    name, avatar = shown(profile)
    return Participant(id=user_id, name=name, avatar_url=avatar, last_read_seq=last_read_seq)


# -- payloads (JSON-ready: times as RFC 3339 strings) ----------------------------------------


def plain(value: Any) -> Any:
    return msgspec.to_builtins(value)


def deleted_payload(message_id: str, seq: int, event_seq: int) -> dict[str, Any]:
    """``message.deleted``: the message's id and its own ``seq``."""
    return {"id": message_id, "seq": seq, "event_seq": event_seq}


def reaction_payload(message_id: str, emoji: str, user_id: str, event_seq: int) -> dict[str, Any]:
    return {"message_id": message_id, "emoji": emoji, "user_id": user_id, "event_seq": event_seq}


def read_payload(user_id: str, seq: int, at: datetime, event_seq: int) -> dict[str, Any]:
    """``message.read``: everything up to ``seq`` is read by ``user_id``."""
    return {"user_id": user_id, "seq": seq, "read_at": plain(at), "event_seq": event_seq}


def participant_payload(user_id: str, event_seq: int) -> dict[str, Any]:
    return {"user_id": user_id, "event_seq": event_seq}


def typing_payload(user_id: str, name: str, is_typing: bool) -> dict[str, Any]:
    """``user.typing``: not stored, so no ``event_seq``."""
    return {"user_id": user_id, "name": name, "is_typing": is_typing}


# -- Pusher authorization signatures (the gateway signs, the fanout checks) -----------------


def sign(secret: str, message: str | bytes) -> str:
    """``hex(HMAC-SHA256(secret, message))``."""
    data = message.encode() if isinstance(message, str) else message
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def channel_string(socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """``socket_id:channel``; with channel_data (presence) ``socket_id:channel:channel_data``."""
    if channel_data is None:
        return f"{socket_id}:{channel}"
    return f"{socket_id}:{channel}:{channel_data}"


def channel_auth(
    key: str, secret: str, socket_id: str, channel: str, channel_data: str | None = None
) -> str:
    """The ``auth`` of a channel authorization: ``key:hex``."""
    return f"{key}:{sign(secret, channel_string(socket_id, channel, channel_data))}"


def user_string(socket_id: str, user_data: str) -> str:
    return f"{socket_id}::user::{user_data}"


def user_auth(key: str, secret: str, socket_id: str, user_data: str) -> str:
    """The ``auth`` of a user authentication (``pusher:signin``): ``key:hex``."""
    return f"{key}:{sign(secret, user_string(socket_id, user_data))}"

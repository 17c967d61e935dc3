"""Conversations' stored events: one subject per conversation, an append-only log.

One subject per conversation in ``CONVERSATIONS``: ``conv.evt.<workspace>.<conversation>``.
Every stored conversation event carries ``seq``, a per-conversation, gap-free
counter (1, 2, 3, … over all its events) assigned by the write side under
optimistic concurrency; ``message.reported``, a tenant-side record, takes
none (``seq`` 0). A message's ``seq`` is the ``seq`` of its
``message.posted`` event, so one number orders messages, pages history, marks
reads and resumes a client after a dropped connection.

A direct conversation's id is derived from its two participants, so creating
it twice, even concurrently, meets on one subject and yields one conversation.

``Attachment`` is stored inside ``message.posted`` (what media stored for the
message, without URLs: those expire), so it is part of this contract; the
public message object shows it as it is, with fresh URLs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from confab.contracts.events.base import Event


def subject(workspace_id: str, conversation_id: str) -> str:
    return f"conv.evt.{workspace_id}.{conversation_id}"


ConversationType = Literal["direct", "group"]
MessageType = Literal["text", "image", "file", "system"]


Metadata = dict[str, Any]


ModerationAction = Literal["hide", "restore", "delete"]
AutomodAction = Literal["block", "mask", "flag", "shadow"]


class AutomodHit(msgspec.Struct, kw_only=True, frozen=True):
    """An automatic-moderation rule that matched a message, and what it did (``flag`` in
    a dry run); ``confab.contracts.events.moderation``."""

    rule_id: str
    action: AutomodAction


class Attachment(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    filename: str
    content_type: str
    size: int
    width: int | None = None
    height: int | None = None
    url: str | None = None
    thumbnail_url: str | None = None


class ConversationEvent(Event, kw_only=True, frozen=True):
    conversation_id: str
    seq: int
    at: datetime


class ConversationCreated(ConversationEvent, kw_only=True, frozen=True):
    type = "conversation.created"
    kind: ConversationType
    title: str | None = None
    metadata: Metadata = {}
    participant_ids: list[str]
    created_by: str | None = None  # a user id, or None when the tenant's backend created it


class ConversationUpdated(ConversationEvent, kw_only=True, frozen=True):
    """The tenant changed the title or the metadata: both as they are after the change
    (the metadata already merged), so a reader needs no earlier event to know them."""

    type = "conversation.updated"
    title: str | None = None
    metadata: Metadata = {}
    by: str | None = None  # the API key id of the tenant's backend


class ParticipantAdded(ConversationEvent, kw_only=True, frozen=True):
    type = "participant.added"
    user_id: str
    by: str | None = None


class ParticipantRemoved(ConversationEvent, kw_only=True, frozen=True):
    type = "participant.removed"
    user_id: str
    by: str | None = None


class MessagePosted(ConversationEvent, kw_only=True, frozen=True):
    type = "message.posted"
    personal = ("content", "metadata")
    owner = "sender_id"
    message_id: str
    sender_id: str | None = None  # None: a system message from the tenant's backend
    content: str
    metadata: Metadata = {}
    attachment_ids: list[str] = []
    # What media stored for each of attachment_ids, in order (no URLs: those expire).
    attachments: list[Attachment] = []
    reply_to: str | None = None
    client_msg_id: str | None = None
    # text, image, file or system, as decided at the post (absent in older events: read
    # as derived from the sender and the attachments, ``confab.conversation``).
    message_type: MessageType | None = None
    # Automatic moderation: the rules that matched (the content is already masked where
    # one masked).
    automod: list[AutomodHit] = []
    sealed: str | None = None


class MessageEdited(ConversationEvent, kw_only=True, frozen=True):
    type = "message.edited"
    personal = ("content",)
    owner = "by"
    message_id: str
    content: str
    by: str
    sealed: str | None = None


class MessageDeleted(ConversationEvent, kw_only=True, frozen=True):
    type = "message.deleted"
    message_id: str
    by: str | None = None
    attachment_ids: list[str] = []  # the message's attachments: media deletes their objects


class ReactionAdded(ConversationEvent, kw_only=True, frozen=True):
    type = "reaction.added"
    message_id: str
    emoji: str
    user_id: str


class ReactionRemoved(ConversationEvent, kw_only=True, frozen=True):
    type = "reaction.removed"
    message_id: str
    emoji: str
    user_id: str


class ReadMarked(ConversationEvent, kw_only=True, frozen=True):
    type = "read.marked"
    user_id: str
    up_to: int  # the seq of the last message read


class MessageReported(ConversationEvent, kw_only=True, frozen=True):
    type = "message.reported"
    report_id: str
    message_id: str
    reporter_id: str
    reason: str


class MessageModerated(ConversationEvent, kw_only=True, frozen=True):
    type = "message.moderated"
    message_id: str
    action: ModerationAction
    by: str  # the API key id of the tenant's moderator
    attachment_ids: list[str] = []  # on "delete": the message's attachments, for media

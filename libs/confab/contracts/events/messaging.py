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


ConversationType = Literal["direct", "group", "support"]
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


class Mention(msgspec.Struct, kw_only=True, frozen=True):
    """A user mentioned in a message's text: ``content[start:end]`` (offsets in Unicode code
    points) names them, starting with ``@``. Given by the client, checked by the write side
    against the text and the conversation's participants (``confab_messaging.mentions``)."""

    user_id: str
    start: int
    end: int


class LinkPreview(msgspec.Struct, kw_only=True, frozen=True):
    """What a message's first link shows (Open Graph / oEmbed, fetched by media). The image
    is stored by media like an attachment (``image``, without URLs: those expire)."""

    url: str  # the link as it appears in the text
    final_url: str | None = None  # where it led, after redirects
    title: str | None = None
    description: str | None = None
    site_name: str | None = None
    image: Attachment | None = None


PinPolicy = Literal["participants", "moderators"]


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
    # Who may pin messages: every participant, or only the workspace's moderators.
    pin_policy: PinPolicy = "participants"


class ConversationUpdated(ConversationEvent, kw_only=True, frozen=True):
    """The tenant changed the title or the metadata: both as they are after the change
    (the metadata already merged), so a reader needs no earlier event to know them."""

    type = "conversation.updated"
    title: str | None = None
    metadata: Metadata = {}
    by: str | None = None  # the API key id of the tenant's backend
    pin_policy: PinPolicy = "participants"


class ParticipantAdded(ConversationEvent, kw_only=True, frozen=True):
    type = "participant.added"
    user_id: str
    by: str | None = None


class ParticipantRemoved(ConversationEvent, kw_only=True, frozen=True):
    type = "participant.removed"
    user_id: str
    by: str | None = None


class ParticipantMerged(ConversationEvent, kw_only=True, frozen=True):
    """The tenant merged ``user_id`` (an anonymous visitor) into ``into_id`` (a user it
    knows): ``into_id`` takes over their part here (membership, read mark, authorship of
    their messages); ``user_id`` is no longer a participant."""

    type = "participant.merged"
    user_id: str
    into_id: str
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
    mentions: list[Mention] = []
    # A reply in the thread of this top-level message (threads are one level deep).
    parent_id: str | None = None
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
    mentions: list[Mention] = []  # the mentions of the new text (re-checked)
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
    parent_id: str | None = None  # a thread's read mark: up_to is the last reply read


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


# -- support conversations (issue 19): what only the workspace's staff see --------------------

SupportStatus = Literal["open", "snoozed", "closed"]


class StaffEvent(ConversationEvent, kw_only=True, frozen=True):
    """A fact of a ``support`` conversation that only the workspace's staff may see.

    It takes no conversation ``seq`` (always 0, like ``message.reported``), so the one
    fold (``confab.conversation.evolve``) makes no timeline entry of it: it never
    reaches a participant's history, ``/events``, ``confab:resume``, a conversation
    channel or a webhook. Staff events are numbered by ``staff_seq`` instead (1, 2, 3, …
    over a conversation's staff events), which orders and de-duplicates their fold
    (``confab.support``). ``by`` is the staff user who acted, or None for the tenant's
    backend (``key_id``).
    """

    staff_seq: int
    by: str | None = None
    key_id: str | None = None


class SupportStatusChanged(StaffEvent, kw_only=True, frozen=True):
    type = "support.status_changed"
    status: SupportStatus
    snoozed_until: datetime | None = None  # with "snoozed": when it wakes by itself


class SupportAssigned(StaffEvent, kw_only=True, frozen=True):
    type = "support.assigned"
    assignee_id: str | None = None  # None: unassigned
    automatic: bool = False  # by round-robin


class SupportTagged(StaffEvent, kw_only=True, frozen=True):
    type = "support.tagged"
    tags: list[str] = []  # the conversation's tags after the change


class NoteAdded(StaffEvent, kw_only=True, frozen=True):
    """An internal note: never shown to the visitor (docs/authority.md, "Internal notes")."""

    type = "note.added"
    personal = ("content",)
    owner = "author_id"
    note_id: str
    author_id: str
    content: str
    sealed: str | None = None


class MessagePinned(ConversationEvent, kw_only=True, frozen=True):
    type = "message.pinned"
    message_id: str
    by: str | None = None  # the user who pinned it; None: the workspace's backend


class MessageUnpinned(ConversationEvent, kw_only=True, frozen=True):
    type = "message.unpinned"
    message_id: str
    by: str | None = None


class MessagePreviewed(ConversationEvent, kw_only=True, frozen=True):
    """Media fetched the preview of the message's first link, for the text of ``version``
    (the seq of the post or of the edit it was fetched for; the write side refuses a
    preview of an older text). Not sealed: it is what a public URL shows; a message whose
    author was erased shows none (``confab.conversation``)."""

    type = "message.previewed"
    message_id: str
    version: int
    preview: LinkPreview

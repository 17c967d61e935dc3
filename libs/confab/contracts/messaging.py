"""Messaging's requests and replies: what widgets and tenants send and read.

What a conversation stores (its subject in ``CONVERSATIONS``, its events and
their ``seq``) is in ``confab.contracts.events.messaging``; what is here may
change with the API. A message's ``seq`` is the ``seq`` of its
``message.posted`` event, so one number orders messages, pages history, marks
reads and resumes a client after a dropped connection.

Queries take ``min_seq``, a *stream* sequence: the handler waits (bounded)
until the read model has applied it, so a client reads its own writes. Write
replies carry the stream sequence they were stored at (``Ok.seq``,
``MessageSaved.stream_seq``, ``ConversationSaved.stream_seq``).

A direct conversation's id is derived from its two participants, so creating
it twice, even concurrently, meets on one subject and yields one conversation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from confab.contracts.base import (
    Ok,
    PageLimit,
    Reply,
    Request,
    Seq,
    StreamSeq,
    TimeCursor,
)
from confab.contracts.events.messaging import (
    Attachment,
    ConversationType,
    LinkPreview,
    Mention,
    MessageType,
    Metadata,
    ModerationAction,
    PinPolicy,
)

Content = Annotated[str, msgspec.Meta(min_length=1, max_length=10_000)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Emoji = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Limit = PageLimit
# next_cursor of conversation lists (by last activity), and of the report queue: a
# stream sequence.
ConversationCursor = TimeCursor
SeqCursor = Annotated[str, msgspec.Meta(max_length=18, pattern=r"^[0-9]{1,18}$")]

METADATA_MAX_BYTES = 8 * 1024
MAX_ATTACHMENTS = 10
MAX_PARTICIPANTS = 1000
MAX_MENTIONS = 50
MAX_PINS = 25  # pinned messages per conversation
Offset = Annotated[int, msgspec.Meta(ge=0, le=10_000)]


class MentionInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A mention as a client gives it: ``content[start:end]`` (code points) is the
    ``@name`` that names ``user_id``, a participant."""

    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    start: Offset
    end: Offset


Mentions = Annotated[list[MentionInput], msgspec.Meta(max_length=MAX_MENTIONS)]


# -- public objects ---------------------------------------------------------------------------


class Sender(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    name: str
    avatar_url: str | None = None


class ReactionSummary(msgspec.Struct, kw_only=True, frozen=True):
    count: int
    me: bool = False


class ThreadSummary(msgspec.Struct, kw_only=True, frozen=True):
    """A top-level message's thread: replies posted (tombstones count), the last one, and
    who took part (the parent's author first, then repliers in the order they joined)."""

    reply_count: int
    last_reply_id: str | None = None
    last_reply_at: datetime | None = None
    participants: list[str] = []


class Message(Reply, kw_only=True, frozen=True):
    id: str
    conversation_id: str
    seq: int
    sender: Sender | None  # None for a system message
    content: str
    attachments: list[Attachment] = []
    reply_to: str | None = None
    metadata: Metadata = {}
    reactions: dict[str, ReactionSummary] = {}
    created_at: datetime
    edited_at: datetime | None = None
    deleted: bool = False
    client_msg_id: str | None = None
    type: MessageType = "text"
    mentions: list[Mention] = []
    parent_id: str | None = None  # a reply in this top-level message's thread
    thread: ThreadSummary | None = None  # a top-level message with replies
    pinned_at: datetime | None = None
    pinned_by: str | None = None  # the user who pinned it; null: the workspace's backend
    link_preview: LinkPreview | None = None


class Participant(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    name: str
    avatar_url: str | None = None
    last_read_seq: int = 0


class Conversation(Reply, kw_only=True, frozen=True):
    id: str
    type: ConversationType
    title: str | None = None
    metadata: Metadata = {}
    participants: list[Participant]
    last_message: Message | None = None
    unread_count: int = 0
    last_seq: int = 0
    created_at: datetime
    last_activity_at: datetime
    frozen: bool = False  # read-only for its users: posts, edits, reactions, typing refused


class ConversationSaved(Reply, kw_only=True, frozen=True):
    conversation: Conversation
    created: bool  # False when the direct conversation of this pair existed already
    stream_seq: int


class ConversationWithMessages(Reply, kw_only=True, frozen=True):
    conversation: Conversation
    messages: list[Message]
    has_more: bool


class ConversationList(Reply, kw_only=True, frozen=True):
    data: list[Conversation]
    has_more: bool
    next_cursor: str | None = None


class MessageList(Reply, kw_only=True, frozen=True):
    data: list[Message]
    has_more: bool
    next_cursor: str | None = None


class ModeratedMessage(Message, kw_only=True, frozen=True):
    """A message as the workspace's moderators see it: one a moderator hid keeps its
    content and attachments, flagged ``hidden`` (``deleted`` stays for deletions)."""

    hidden: bool = False


class ModeratedMessageList(Reply, kw_only=True, frozen=True):
    data: list[ModeratedMessage]
    has_more: bool
    next_cursor: str | None = None


class HistoryEvent(msgspec.Struct, kw_only=True, frozen=True):
    """One thing that happened, as the real-time channel would have said it."""

    seq: int
    event: str  # the real-time event name: message.created, reaction.added, …
    data: dict[str, Any]
    at: datetime


class EventList(Reply, kw_only=True, frozen=True):
    data: list[HistoryEvent]
    has_more: bool
    next_cursor: str | None = None


class MessageSaved(Reply, kw_only=True, frozen=True):
    message: Message
    created: bool  # False when a resend with the same client_msg_id returned the original
    stream_seq: int  # where it was stored; queries given it as min_seq read it back


class Report(Reply, kw_only=True, frozen=True):
    id: str
    conversation_id: str
    message: Message
    reporter_id: str
    reason: str
    created_at: datetime
    status: Literal["open", "hidden", "restored", "deleted"] = "open"


class ReportList(Reply, kw_only=True, frozen=True):
    data: list[Report]
    has_more: bool
    next_cursor: str | None = None


# -- request bodies of the public API ---------------------------------------------------------


class Body(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    pass


class ConversationInput(Body, kw_only=True, frozen=True):
    participant_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_PARTICIPANTS)]
    type: ConversationType
    title: Title | None = None
    metadata: Metadata | None = None
    pin_policy: PinPolicy = "participants"  # who may pin: participants, or moderators only


class ConversationPatch(Body, kw_only=True, frozen=True):
    """What the tenant changes: fields left out stay. ``title: null`` clears the title.
    ``metadata`` is merged into the conversation's, key by key at the top level (a key
    set to ``null`` is removed; a nested object replaces the old value whole); ``metadata:
    null`` clears it all."""

    title: Title | msgspec.UnsetType | None = msgspec.UNSET
    metadata: Metadata | msgspec.UnsetType | None = msgspec.UNSET
    pin_policy: PinPolicy | msgspec.UnsetType = msgspec.UNSET


class ParticipantInput(Body, kw_only=True, frozen=True):
    user_id: Id


class TenantMessageInput(Body, kw_only=True, frozen=True):
    """Posted by the tenant's backend: as a user, or as a system message without sender_id."""

    sender_id: Id | None = None
    content: Content
    metadata: Metadata | None = None
    type: MessageType | None = None  # "system" (the default without sender_id) or "text"
    mentions: Mentions = []
    parent_id: Id | None = None  # a reply in the thread of this top-level message


class MessageInput(Body, kw_only=True, frozen=True):
    """Sent by a widget as its session's user."""

    content: Content
    attachment_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_ATTACHMENTS)] = []
    client_msg_id: ClientMsgId | None = None
    reply_to: Id | None = None
    metadata: Metadata | None = None
    # text, image (every attachment an image) or file (some attachment); left out: derived
    # from the attachments.
    type: MessageType | None = None
    mentions: Mentions = []
    parent_id: Id | None = None  # a reply in the thread of this top-level message


class EditInput(Body, kw_only=True, frozen=True):
    """The new text. ``mentions``: those of the new text; left out, the message's mentions
    are carried over to where their text still is (and dropped where it is gone)."""

    content: Content
    mentions: Mentions | None = None


class ReactionInput(Body, kw_only=True, frozen=True):
    emoji: Emoji


class ReadInput(Body, kw_only=True, frozen=True):
    seq: Seq | None = None
    # A thread's read mark: seq is a reply of this top-level message's thread.
    parent_id: Id | None = None


class TypingInput(Body, kw_only=True, frozen=True):
    is_typing: bool


class ReportInput(Body, kw_only=True, frozen=True):
    reason: Reason


class ModerationInput(Body, kw_only=True, frozen=True):
    action: ModerationAction


# -- commands and queries -----------------------------------------------------------------------


class Actor(msgspec.Struct, kw_only=True, frozen=True):
    """Who acts: a widget user (``user_id``) or the tenant's backend (``key_id``)."""

    workspace_id: str
    user_id: str | None = None
    key_id: str | None = None


class CreateConversation(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.create_conversation"
    reply: ClassVar[type[msgspec.Struct]] = ConversationSaved
    actor: Actor
    input: ConversationInput
    # The IDENTITY sequence of a profile change the caller made just before (a visitor's
    # name from the pre-chat form): the conversation is created once messaging's users
    # read model has it, so no reader of the new conversation shows the old profile.
    users_min_seq: int = 0


class UpdateConversation(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.update_conversation"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    conversation_id: str
    patch: ConversationPatch


class AddParticipant(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.add_participant"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    conversation_id: str
    user_id: str


class RemoveParticipant(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.remove_participant"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    conversation_id: str
    user_id: str


class PostMessage(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.post_message"
    reply: ClassVar[type[msgspec.Struct]] = MessageSaved
    actor: Actor
    conversation_id: str
    sender_id: str | None  # the widget's user, a user named by the tenant, or None (system)
    input: MessageInput


class EditMessage(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.edit_message"
    reply: ClassVar[type[msgspec.Struct]] = MessageSaved
    actor: Actor
    conversation_id: str
    message_id: str
    content: str
    mentions: list[MentionInput] | None = None


class DeleteMessage(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.delete_message"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    conversation_id: str
    message_id: str


class React(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.react"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    conversation_id: str
    message_id: str
    emoji: str
    add: bool


class MarkRead(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.mark_read"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    conversation_id: str
    seq: Seq | None = None
    parent_id: str | None = None


class SetTyping(Request, kw_only=True, frozen=True):
    """Not stored: published on ``ephemeral.<workspace>.<conversation>.typing`` for the fanout."""

    subject: ClassVar[str] = "messaging.cmd.set_typing"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    conversation_id: str
    is_typing: bool


class ReportMessage(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.report_message"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    message_id: str
    reason: str


class ModerateMessage(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.moderate_message"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    message_id: str
    action: ModerationAction


MetadataKey = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
MetadataValue = Annotated[str, msgspec.Meta(max_length=500)]
METADATA_FILTERS_MAX = 10


class ListConversations(Request, kw_only=True, frozen=True):
    """Newest activity first. The tenant may filter: a participant, a type, metadata
    (``{key: value}``: the conversation's metadata has each key with that value, as a
    string or the JSON number, boolean or null it spells), activity since a time."""

    subject: ClassVar[str] = "messaging.q.list_conversations"
    reply: ClassVar[type[msgspec.Struct]] = ConversationList
    actor: Actor
    user_id: str | None = None  # the tenant may list any user's; a widget only its own
    kind: ConversationType | None = None
    metadata: Annotated[
        dict[MetadataKey, MetadataValue], msgspec.Meta(max_length=METADATA_FILTERS_MAX)
    ] = {}
    updated_since: datetime | None = None
    cursor: ConversationCursor | None = None
    limit: Limit = 50
    min_seq: StreamSeq = 0


class GetConversation(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.q.get_conversation"
    reply: ClassVar[type[msgspec.Struct]] = ConversationWithMessages
    actor: Actor
    conversation_id: str
    limit: Limit = 50
    min_seq: StreamSeq = 0


class CheckParticipant(Request, kw_only=True, frozen=True):
    """``Ok`` if the actor may see the conversation (a widget user: is a participant); else 404.

    ``act``: the user is about to act in it (upload, subscribe to its channels):
    a banned user is refused (403 ``banned``)."""

    subject: ClassVar[str] = "messaging.q.check_participant"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    conversation_id: str
    min_seq: StreamSeq = 0
    act: bool = False


class ListMessages(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.q.list_messages"
    reply: ClassVar[type[msgspec.Struct]] = MessageList
    actor: Actor
    conversation_id: str
    before: Seq | None = None
    after: Seq | None = None
    limit: Limit = 50
    min_seq: StreamSeq = 0


class ListModeratedMessages(Request, kw_only=True, frozen=True):
    """``ListMessages`` as the tenant's backend sees history: hidden messages flagged."""

    subject: ClassVar[str] = "messaging.q.list_moderated_messages"
    reply: ClassVar[type[msgspec.Struct]] = ModeratedMessageList
    actor: Actor
    conversation_id: str
    before: Seq | None = None
    after: Seq | None = None
    limit: Limit = 50
    min_seq: StreamSeq = 0


class Membership(msgspec.Struct, kw_only=True, frozen=True):
    conversation_id: str
    type: ConversationType
    title: str | None = None
    metadata: Metadata = {}
    created_at: datetime
    active: bool  # False: they were removed (or left)
    last_read_seq: int


class UserReaction(msgspec.Struct, kw_only=True, frozen=True):
    conversation_id: str
    message_id: str
    emoji: str


class UserActivity(Reply, kw_only=True, frozen=True):
    memberships: list[Membership]
    reactions: list[UserReaction]


class UserExport(msgspec.Struct, kw_only=True, frozen=True):
    """What ``GET /api/v1/users/{id}/export`` streams (for the API's description: the
    profile is identity's ``User``, the messages are streamed page by page)."""

    user: dict[str, Any]
    exported_at: datetime
    conversations: list[Membership]
    reactions: list[UserReaction]
    messages: list[Message]


class GetUserActivity(Request, kw_only=True, frozen=True):
    """One user's part in the workspace's conversations, for their data export (tenant)."""

    subject: ClassVar[str] = "messaging.q.get_user_activity"
    reply: ClassVar[type[msgspec.Struct]] = UserActivity
    actor: Actor
    user_id: str


class ListUserMessages(Request, kw_only=True, frozen=True):
    """The messages a user sent, in the order they were stored (``next_cursor``: a stream
    sequence), as history shows them, for their data export (tenant)."""

    subject: ClassVar[str] = "messaging.q.list_user_messages"
    reply: ClassVar[type[msgspec.Struct]] = MessageList
    actor: Actor
    user_id: str
    cursor: SeqCursor | None = None
    limit: Limit = 100


class ListEvents(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.q.list_events"
    reply: ClassVar[type[msgspec.Struct]] = EventList
    actor: Actor
    conversation_id: str
    after: Seq = 0
    limit: Limit = 100


class ListReports(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.q.list_reports"
    reply: ClassVar[type[msgspec.Struct]] = ReportList
    actor: Actor
    status: Literal["open", "all"] = "open"
    cursor: SeqCursor | None = None
    limit: Limit = 50


# -- threads, pins, mentions ----------------------------------------------------------------------


class ThreadPage(Reply, kw_only=True, frozen=True):
    """A page of a thread's replies (oldest first), with its parent as it is now and the
    viewer's read mark and unread count in the thread."""

    parent: Message
    data: list[Message]
    has_more: bool
    next_cursor: str | None = None
    last_read_seq: int = 0
    unread_count: int = 0


class ListThread(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.q.list_thread"
    reply: ClassVar[type[msgspec.Struct]] = ThreadPage
    actor: Actor
    conversation_id: str
    parent_id: str
    before: Seq | None = None
    after: Seq | None = None
    limit: Limit = 50
    min_seq: StreamSeq = 0


class PinMessage(Request, kw_only=True, frozen=True):
    """Pin (``pin``) or unpin a message: participants, if the conversation's ``pin_policy``
    lets them; the workspace's backend always."""

    subject: ClassVar[str] = "messaging.cmd.pin_message"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    conversation_id: str
    message_id: str
    pin: bool


class ListPins(Request, kw_only=True, frozen=True):
    """The conversation's pinned messages, most recently pinned first (at most ``MAX_PINS``)."""

    subject: ClassVar[str] = "messaging.q.list_pins"
    reply: ClassVar[type[msgspec.Struct]] = MessageList
    actor: Actor
    conversation_id: str
    min_seq: StreamSeq = 0


class ListMentions(Request, kw_only=True, frozen=True):
    """Messages mentioning the widget's user, newest first, in the conversations they take
    part in now (``next_cursor``: a stream sequence)."""

    subject: ClassVar[str] = "messaging.q.list_mentions"
    reply: ClassVar[type[msgspec.Struct]] = MessageList
    actor: Actor
    conversation_id: str | None = None
    cursor: SeqCursor | None = None
    limit: Limit = 50
    min_seq: StreamSeq = 0


class AttachPreview(Request, kw_only=True, frozen=True):
    """Media's link preview for a message (``FetchPreview``): appended as
    ``message.previewed`` if the message's text is still that of ``version``."""

    subject: ClassVar[str] = "messaging.cmd.attach_preview"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    conversation_id: str
    message_id: str
    version: int
    preview: LinkPreview

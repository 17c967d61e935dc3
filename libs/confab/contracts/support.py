"""Support conversations' requests and replies (issue 19): the inbox API.

A support conversation is a conversation of type ``support`` (its participants'
side is ``confab.contracts.messaging``); what is here is the staff side:
status, assignee, tags, internal notes, response times, the inbox views and
their counts, and the agent's reply. Every command is the tenant's (an API key,
or a staff member's dashboard session): ``by`` names the staff member acting,
None for the backend itself. Notes are staff-only by construction: nothing a
widget session can call returns them (``docs/authority.md``, "Internal notes").
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from confab.contracts.base import Ok, PageLimit, Reply, Request, Seq, StreamSeq, TimeCursor
from confab.contracts.events.identity import (
    AgentStatus,
    PrechatField,
    ReplyTime,
    SupportSettings,
)
from confab.contracts.events.messaging import SupportStatus
from confab.contracts.messaging import (
    MAX_ATTACHMENTS,
    Actor,
    Body,
    ClientMsgId,
    Content,
    Conversation,
    Id,
    Mentions,
    MessageSaved,
    Metadata,
)

NoteContent = Annotated[str, msgspec.Meta(min_length=1, max_length=10_000)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
InboxView = Literal["unassigned", "mine", "all", "snoozed", "closed"]


# -- public objects ---------------------------------------------------------------------------


class SupportConversation(Reply, kw_only=True, frozen=True):
    """A support conversation as staff see it: the conversation and its staff fields."""

    id: str
    status: SupportStatus
    snoozed_until: datetime | None = None
    assignee_id: str | None = None
    tags: list[str] = []
    visitor_id: str | None = None
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    created_at: datetime
    last_activity_at: datetime
    conversation: Conversation


class InboxCounts(msgspec.Struct, kw_only=True, frozen=True):
    unassigned: int
    mine: int  # 0 without assignee_id
    all: int  # open or snoozed
    snoozed: int
    closed: int


class SupportConversationList(Reply, kw_only=True, frozen=True):
    data: list[SupportConversation]
    counts: InboxCounts
    has_more: bool
    next_cursor: str | None = None


class Note(Reply, kw_only=True, frozen=True):
    id: str
    conversation_id: str
    author_id: str
    content: str
    created_at: datetime


class NoteList(Reply, kw_only=True, frozen=True):
    data: list[Note]
    has_more: bool
    next_cursor: str | None = None


# -- request bodies -----------------------------------------------------------------------------


class AssignInput(Body, kw_only=True, frozen=True):
    assignee_id: Id | None  # null: unassign


class StatusInput(Body, kw_only=True, frozen=True):
    status: SupportStatus
    snoozed_until: datetime | None = None  # required with "snoozed"


class TagsInput(Body, kw_only=True, frozen=True):
    tags: Annotated[list[Tag], msgspec.Meta(max_length=20)]


class NoteInput(Body, kw_only=True, frozen=True):
    content: NoteContent
    # The staff member writing it; required with an API key (a dashboard session is its
    # own author).
    author_id: Id | None = None


class ReplyInput(Body, kw_only=True, frozen=True):
    """An agent's reply, posted as the agent (who joins the conversation if needed)."""

    content: Content
    author_id: Id | None = None  # required with an API key, as for notes
    attachment_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_ATTACHMENTS)] = []
    client_msg_id: ClientMsgId | None = None
    # As in any message (``MessageInput``): a quoted message, the people named in the
    # text, a thread to answer in, the tenant's own metadata.
    reply_to: Id | None = None
    mentions: Mentions = []
    parent_id: Id | None = None
    metadata: Metadata | None = None


# -- commands and queries -----------------------------------------------------------------------


class StaffRequest(Request, kw_only=True, frozen=True):
    actor: Actor
    conversation_id: str
    by: str | None = None  # the staff member acting (None: the backend)


class AssignSupport(StaffRequest, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.support_assign"
    reply: ClassVar[type[msgspec.Struct]] = SupportConversation
    input: AssignInput


class SetSupportStatus(StaffRequest, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.support_status"
    reply: ClassVar[type[msgspec.Struct]] = SupportConversation
    input: StatusInput


class TagSupport(StaffRequest, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.support_tags"
    reply: ClassVar[type[msgspec.Struct]] = SupportConversation
    input: TagsInput


class AddNote(StaffRequest, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.support_note"
    reply: ClassVar[type[msgspec.Struct]] = Note
    author_id: str
    content: str


class ReplySupport(StaffRequest, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.cmd.support_reply"
    reply: ClassVar[type[msgspec.Struct]] = MessageSaved
    author_id: str
    input: ReplyInput


class ListSupport(Request, kw_only=True, frozen=True):
    """An inbox view, newest activity first, with every view's count."""

    subject: ClassVar[str] = "messaging.q.support_list"
    reply: ClassVar[type[msgspec.Struct]] = SupportConversationList
    actor: Actor
    view: InboxView = "all"
    assignee_id: str | None = None  # "mine": whose
    tag: Tag | None = None
    cursor: TimeCursor | None = None
    limit: PageLimit = 50
    min_seq: StreamSeq = 0
    # IDENTITY's seq of a profile change the list must show (an ``inbox.profile`` frame's).
    users_min_seq: StreamSeq = 0


class GetSupport(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "messaging.q.support_get"
    reply: ClassVar[type[msgspec.Struct]] = SupportConversation
    actor: Actor
    conversation_id: str
    min_seq: StreamSeq = 0


class ListNotes(Request, kw_only=True, frozen=True):
    """A conversation's internal notes, oldest first (``next_cursor``: a stream sequence)."""

    subject: ClassVar[str] = "messaging.q.support_notes"
    reply: ClassVar[type[msgspec.Struct]] = NoteList
    actor: Actor
    conversation_id: str
    after: StreamSeq = 0
    limit: PageLimit = 50
    min_seq: StreamSeq = 0


# -- support settings and agents' availability (identity) ----------------------------------------


class AvailabilityInput(Body, kw_only=True, frozen=True):
    status: AgentStatus


class Agent(msgspec.Struct, kw_only=True, frozen=True):
    user_id: str
    status: AgentStatus
    at: datetime


class SupportSetup(Reply, kw_only=True, frozen=True):
    """A workspace's support settings and its agents' availability (the tenant's view)."""

    workspace_id: str
    settings: SupportSettings
    agents: list[Agent] = []


class PublicSupport(Reply, kw_only=True, frozen=True):
    """What the widget shows before the first message (no origins, no assignment rules).
    ``team_online``: some agent is online now, so "typically replies in ``reply_time``"."""

    enabled: bool
    greeting: str
    team_name: str
    team_avatars: list[str]
    reply_time: ReplyTime
    team_online: bool
    prechat_name: PrechatField
    prechat_email: PrechatField
    allow_anonymous: bool


class ConfigureSupport(Request, kw_only=True, frozen=True):
    """The whole settings, replacing what was there."""

    subject: ClassVar[str] = "identity.cmd.configure_support"
    reply: ClassVar[type[msgspec.Struct]] = SupportSetup
    workspace_id: str
    settings: SupportSettings
    by: str = ""


class SetAvailability(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "identity.cmd.set_availability"
    reply: ClassVar[type[msgspec.Struct]] = SupportSetup
    workspace_id: str
    user_id: str
    status: AgentStatus


class GetSupportSetup(Request, kw_only=True, frozen=True):
    """By workspace id (the tenant), or by the public app key (the widget): one of them."""

    subject: ClassVar[str] = "identity.q.support_setup"
    reply: ClassVar[type[msgspec.Struct]] = SupportSetup
    workspace_id: str | None = None
    app_key: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class AutoAssign(StaffRequest, kw_only=True, frozen=True):
    """Round-robin: assign an unassigned support conversation to the candidate (agents
    online) with the fewest open conversations, ties in the order given."""

    subject: ClassVar[str] = "messaging.cmd.support_auto_assign"
    reply: ClassVar[type[msgspec.Struct]] = SupportConversation
    candidates: Annotated[list[Id], msgspec.Meta(max_length=1000)]


class MergeInput(Body, kw_only=True, frozen=True):
    visitor_id: Id  # the visitor (a user of the workspace) merged into the path's user


class Merged(Reply, kw_only=True, frozen=True):
    user_id: str
    visitor_id: str
    conversations: int  # how many conversations the user took over


class MergeParticipant(Request, kw_only=True, frozen=True):
    """In one conversation: ``visitor_id``'s part goes to ``user_id`` (the tenant only)."""

    subject: ClassVar[str] = "messaging.cmd.merge_participant"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    actor: Actor
    conversation_id: str
    visitor_id: str
    user_id: str


class AgentReadInput(Body, kw_only=True, frozen=True):
    author_id: Id | None = None  # the agent; required with an API key
    seq: Seq | None = None  # default: the latest message


class AgentTypingInput(Body, kw_only=True, frozen=True):
    author_id: Id | None = None
    is_typing: bool


class AgentRead(StaffRequest, kw_only=True, frozen=True):
    """The agent's read receipt ("Seen by" for the visitor); the agent joins first."""

    subject: ClassVar[str] = "messaging.cmd.support_read"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    author_id: str
    seq: Seq | None = None


class AgentTyping(StaffRequest, kw_only=True, frozen=True):
    """The agent is typing (not stored); the agent joins first."""

    subject: ClassVar[str] = "messaging.cmd.support_typing"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    author_id: str
    is_typing: bool

"""A support conversation as the workspace's staff see it: the one staff fold.

A ``support`` conversation is an ordinary conversation (the participants' view,
history, ``/events`` and conversation channels all come from
``confab.conversation``'s fold) plus what only staff see: its status, assignee,
tags, internal notes and response times. Those are ``StaffEvent``s
(``confab.contracts.events.messaging``), which take no conversation ``seq``, so
the participants' fold makes nothing of them; this module folds them, with the
participant-visible events that move the staff view (the first response, the
last activity), into a ``SupportView``. Every reader of the staff view uses it:
messaging's support read model (the inbox API) and each fanout node (the live
inbox channel).

- ``evolve(view, event, stream_seq)`` folds one stored event in place and
  returns the ``Change`` it makes to the inbox, or None. Pure: no I/O, no clock.
  Staff events at or below ``view.staff_seq`` and participant events at or below
  ``view.last_seq`` are skipped, so a redelivery changes nothing.
- ``status_now(view, now)`` is the status a reader shows: a snooze whose time
  has come reads as ``open`` (snoozes wake by themselves, without an event).
- ``first_response_at``: when someone other than the visitor first posted;
  ``resolved_at``: when it was last closed (cleared by a reopen).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from confab.contracts.events.messaging import (
    ConversationCreated,
    ConversationEvent,
    MessagePosted,
    NoteAdded,
    ParticipantMerged,
    StaffEvent,
    SupportAssigned,
    SupportStatusChanged,
    SupportTagged,
)

SUPPORT = "support"

# The inbox channel of a workspace: staff only (the fanout's Gatekeeper checks the role).
INBOX_CHANNEL_PREFIX = "private-inbox-"
STAFF_ROLES = frozenset({"owner", "admin", "agent", "moderator"})

# Inbox events (Pusher event names on the inbox channel).
INBOX_CONVERSATION = "inbox.conversation"  # created, status, assignee, tags, activity
INBOX_NOTE = "inbox.note"  # an internal note (its content: staff only)
INBOX_PROFILE = "inbox.profile"  # a user's profile changed (or was erased): names, no content

VIEWS = ("unassigned", "mine", "all", "snoozed", "closed")


def inbox_channel(workspace_id: str) -> str:
    return f"{INBOX_CHANNEL_PREFIX}{workspace_id}"


class SupportView:
    """One support conversation as staff see it."""

    __slots__ = (
        "assignee_id",
        "created_at",
        "first_response_at",
        "id",
        "last_activity_at",
        "last_message_id",
        "last_seq",
        "resolved_at",
        "snoozed_until",
        "staff_seq",
        "status",
        "stream_seq",
        "tags",
        "visitor_id",
        "workspace_id",
    )

    def __init__(self, id: str, workspace_id: str = "") -> None:
        self.id = id
        self.workspace_id = workspace_id
        self.visitor_id: str | None = None
        self.status = "open"
        self.snoozed_until: datetime | None = None
        self.assignee_id: str | None = None
        self.tags: list[str] = []
        self.first_response_at: datetime | None = None
        self.resolved_at: datetime | None = None
        self.created_at: datetime | None = None
        self.last_activity_at: datetime | None = None
        self.last_message_id: str | None = None
        self.last_seq = 0  # the conversation seq of the last participant event folded
        self.staff_seq = 0  # the staff_seq of the last staff event folded
        self.stream_seq = 0

    @property
    def exists(self) -> bool:
        return self.created_at is not None

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SupportView.__slots__}

    @classmethod
    def from_row(cls, row: Any) -> SupportView:
        view = cls(row["id"], row["workspace_id"])
        for name in SupportView.__slots__:
            setattr(view, name, row[name])
        view.tags = list(view.tags or ())
        return view


class Change(NamedTuple):
    """What one event changed in the inbox: ``kind`` is ``created``, ``status``,
    ``assigned``, ``tagged``, ``message`` or ``note``; ``note`` holds the note event."""

    kind: str
    at: datetime
    note: NoteAdded | None = None
    message_id: str | None = None


def status_now(view: SupportView, now: datetime) -> str:
    """The status as shown at ``now``: a snooze past its time is open again."""
    if view.status == "snoozed" and view.snoozed_until is not None and view.snoozed_until <= now:
        return "open"
    return view.status


def evolve(view: SupportView, event: ConversationEvent, stream_seq: int) -> Change | None:
    """Fold one stored event of a conversation into its staff view; the change, if any."""
    if isinstance(event, ConversationCreated):
        if view.exists or event.kind != SUPPORT:
            return None
        view.visitor_id = event.created_by or (
            event.participant_ids[0] if event.participant_ids else None
        )
        view.created_at = view.last_activity_at = event.at
        view.last_seq = event.seq
        view.stream_seq = stream_seq
        return Change("created", event.at)
    if not view.exists:
        return None  # not a support conversation (or its creation is not folded here)
    if isinstance(event, StaffEvent):
        if event.staff_seq <= view.staff_seq:
            return None
        view.staff_seq = event.staff_seq
        view.stream_seq = stream_seq
        return _staff(view, event)
    if not event.seq or event.seq <= view.last_seq:
        return None
    view.last_seq = event.seq
    view.stream_seq = stream_seq
    if isinstance(event, MessagePosted):
        view.last_activity_at = event.at
        view.last_message_id = event.message_id
        if (
            view.first_response_at is None
            and event.sender_id is not None
            and event.sender_id != view.visitor_id
        ):
            view.first_response_at = event.at
        return Change("message", event.at, message_id=event.message_id)
    if isinstance(event, ParticipantMerged) and view.visitor_id == event.user_id:
        view.visitor_id = event.into_id
        return Change("visitor", event.at)
    return None


def _staff(view: SupportView, event: StaffEvent) -> Change | None:
    match event:
        case SupportStatusChanged():
            if event.status == "closed" and view.status != "closed":
                view.resolved_at = event.at
            elif event.status != "closed":
                view.resolved_at = None
            view.status = event.status
            view.snoozed_until = event.snoozed_until if event.status == "snoozed" else None
            return Change("status", event.at)
        case SupportAssigned():
            view.assignee_id = event.assignee_id
            return Change("assigned", event.at)
        case SupportTagged():
            view.tags = list(event.tags)
            return Change("tagged", event.at)
        case NoteAdded():
            return Change("note", event.at, note=event)
    return None


def summary(view: SupportView, now: datetime) -> dict[str, Any]:
    """The staff fields of a support conversation, as the API and the inbox show them."""
    return {
        "id": view.id,
        "status": status_now(view, now),
        "snoozed_until": _time(view.snoozed_until) if status_now(view, now) == "snoozed" else None,
        "assignee_id": view.assignee_id,
        "tags": list(view.tags),
        "visitor_id": view.visitor_id,
        "first_response_at": _time(view.first_response_at),
        "resolved_at": _time(view.resolved_at),
        "created_at": _time(view.created_at),
        "last_activity_at": _time(view.last_activity_at),
    }


def note_payload(note: NoteAdded) -> dict[str, Any]:
    """An internal note as staff see it (content revealed by the reader)."""
    return {
        "id": note.note_id,
        "conversation_id": note.conversation_id,
        "author_id": note.author_id,
        "content": note.content,
        "created_at": _time(note.at),
    }


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None

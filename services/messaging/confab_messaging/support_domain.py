"""The support decider: what the workspace's staff do to a ``support`` conversation.

The same aggregate as ``domain`` (one conversation, one subject): its state
carries the staff view (``ConversationState.support``, folded by
``confab.support``), and ``decide`` here handles the staff commands and hands
every other command to ``domain.decide``, so ``DECIDER`` is messaging's decider.

Staff commands come from the tenant's side only (an API key, or a staff
member's dashboard session: ``Actor.user_id`` is None for both; the staff
member who acts is named in ``by``): a widget user may never assign, change a
status, tag or write a note. Their events are ``StaffEvent``s: conversation
``seq`` 0 (invisible to participants), numbered by ``staff_seq``. A change that
changes nothing appends nothing.

Replying joins the agent first: ``JoinAsAgent`` makes a live user of the
workspace a participant of a support conversation (so they can post, mark
read, type and subscribe like any participant); the reply itself is an
ordinary ``domain.PostMessage`` as that user.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from confab.contracts.events.messaging import (
    NoteAdded,
    ParticipantAdded,
    ParticipantMerged,
    SupportAssigned,
    SupportStatus,
    SupportStatusChanged,
    SupportTagged,
)
from confab.contracts.messaging import Actor
from confab.decider import NOTHING, Decider, Decision, emit
from confab.errors import Banned, Forbidden, InvalidRequest, NotFound
from confab.support import SupportView, status_now
from confab_messaging import domain
from confab_messaging.domain import BANNED, CONVERSATION_NOT_FOUND, ConversationState

NOTE_MAX = 10_000
TAG_MAX = 50
TAGS_MAX = 20
# How far ahead a snooze may reach.
SNOOZE_MAX_DAYS = 366


class StaffCommand(domain.Command, kw_only=True, frozen=True):
    """``by``: the staff member acting (a user of the workspace), or None for the backend."""

    by: str | None = None


class SetStatus(StaffCommand, kw_only=True, frozen=True):
    status: SupportStatus
    snoozed_until: datetime | None = None


class Assign(StaffCommand, kw_only=True, frozen=True):
    assignee_id: str | None
    assignee_exists: bool = True  # a live user of the workspace (looked up by the handler)
    automatic: bool = False


class SetTags(StaffCommand, kw_only=True, frozen=True):
    tags: list[str]


class AddNote(StaffCommand, kw_only=True, frozen=True):
    note_id: str
    author_id: str
    author_exists: bool  # a live user of the workspace (looked up by the handler)
    content: str


class MergeVisitor(StaffCommand, kw_only=True, frozen=True):
    """``visitor_id``'s part in the conversation goes to ``user_id`` (``user_exists``: a
    live user of the workspace, looked up by the handler)."""

    visitor_id: str
    user_id: str
    user_exists: bool


class JoinAsAgent(StaffCommand, kw_only=True, frozen=True):
    user_id: str
    user_exists: bool
    banned: bool = False


def support_state(state: ConversationState, actor: Actor) -> SupportView:
    """The staff view of a support conversation the tenant's side may act on; else 404/403."""
    if not state.exists or state.support is None:
        raise NotFound(CONVERSATION_NOT_FOUND)
    if actor.user_id is not None:
        # A widget user: they see their own conversation, but never act as staff.
        if actor.user_id not in state.members:
            raise NotFound(CONVERSATION_NOT_FOUND)
        raise Forbidden("Only the workspace's staff can do this.")
    return state.support


def decide(command: domain.Command, state: ConversationState) -> Decision[Any]:
    match command:
        case SetStatus():
            return _status(command, state)
        case Assign():
            return _assign(command, state)
        case SetTags():
            return _tags(command, state)
        case AddNote():
            return _note(command, state)
        case JoinAsAgent():
            return _join(command, state)
        case MergeVisitor():
            return _merge(command, state)
    return domain.decide(command, state)


DECIDER: Decider[domain.Command, ConversationState] = Decider(
    initial=domain.initial, evolve=domain.evolve, decide=decide, stored=domain.stored
)


def _staff_fields(command: StaffCommand, state: ConversationState, view: SupportView) -> Any:
    return {
        "conversation_id": state.id,
        "seq": 0,
        "at": command.now,
        "staff_seq": view.staff_seq + 1,
        "by": command.by,
        "key_id": command.actor.key_id,
    }


def _status(command: SetStatus, state: ConversationState) -> Decision[None]:
    view = support_state(state, command.actor)
    until = command.snoozed_until
    if command.status == "snoozed":
        if until is None or until <= command.now:
            raise InvalidRequest(
                "A snooze needs a time in the future.",
                {"snoozed_until": "required with status snoozed, and later than now"},
            )
        if (until - command.now).days > SNOOZE_MAX_DAYS:
            raise InvalidRequest(
                "The snooze is too long.",
                {"snoozed_until": f"at most {SNOOZE_MAX_DAYS} days ahead"},
            )
    elif until is not None:
        raise InvalidRequest(
            "Only a snooze has a time.", {"snoozed_until": "only with status snoozed"}
        )
    current = status_now(view, command.now)  # a snooze past its time woke by itself
    if command.status == current and (current != "snoozed" or until == view.snoozed_until):
        return NOTHING
    return emit(
        SupportStatusChanged(
            **_staff_fields(command, state, view), status=command.status, snoozed_until=until
        )
    )


def _assign(command: Assign, state: ConversationState) -> Decision[None]:
    view = support_state(state, command.actor)
    if command.assignee_id is not None and not command.assignee_exists:
        raise NotFound("User not found.", {"assignee_id": "not a user of this workspace"})
    if command.assignee_id == view.assignee_id:
        return NOTHING
    return emit(
        SupportAssigned(
            **_staff_fields(command, state, view),
            assignee_id=command.assignee_id,
            automatic=command.automatic,
        )
    )


def normal_tags(tags: list[str]) -> list[str]:
    """Tags trimmed, lower-cased and de-duplicated in order; InvalidRequest if unfit."""
    out: dict[str, None] = {}
    for tag in tags:
        clean = " ".join(tag.split()).lower()
        if not 1 <= len(clean) <= TAG_MAX:
            raise InvalidRequest(
                "A tag is empty or too long.", {"tags": f"each tag 1 to {TAG_MAX} characters"}
            )
        out[clean] = None
    if len(out) > TAGS_MAX:
        raise InvalidRequest("Too many tags.", {"tags": f"at most {TAGS_MAX} tags"})
    return list(out)


def _tags(command: SetTags, state: ConversationState) -> Decision[None]:
    view = support_state(state, command.actor)
    tags = normal_tags(command.tags)
    if tags == view.tags:
        return NOTHING
    return emit(SupportTagged(**_staff_fields(command, state, view), tags=tags))


def _note(command: AddNote, state: ConversationState) -> Decision[None]:
    view = support_state(state, command.actor)
    if not command.author_exists:
        raise NotFound("User not found.", {"author_id": "not a user of this workspace"})
    if not 1 <= len(command.content) <= NOTE_MAX:
        raise InvalidRequest(
            "The note is empty or too long.", {"content": f"must be 1 to {NOTE_MAX} characters"}
        )
    return emit(
        NoteAdded(
            **_staff_fields(command, state, view),
            note_id=command.note_id,
            author_id=command.author_id,
            content=command.content,
        )
    )


def _join(command: JoinAsAgent, state: ConversationState) -> Decision[None]:
    support_state(state, command.actor)
    if not command.user_exists:
        raise NotFound("User not found.", {"author_id": "not a user of this workspace"})
    if command.banned:
        raise Banned(BANNED)
    if command.user_id in state.members:
        return NOTHING
    return emit(
        ParticipantAdded(
            conversation_id=state.id,
            seq=state.next_seq,
            at=command.now,
            user_id=command.user_id,
            by=command.by,
        )
    )


def _merge(command: MergeVisitor, state: ConversationState) -> Decision[None]:
    """Any conversation (not only support ones) the visitor is in; nothing if they are not."""
    if not state.exists:
        raise NotFound(CONVERSATION_NOT_FOUND)
    if command.actor.user_id is not None:
        raise Forbidden("Only the workspace's backend can merge users.")
    if command.visitor_id == command.user_id:
        raise InvalidRequest("A user cannot be merged into itself.", {"visitor_id": "another user"})
    if not command.user_exists:
        raise NotFound("User not found.")
    if command.visitor_id not in state.members:
        return NOTHING
    if state.kind == "direct" and command.user_id in state.members:
        raise InvalidRequest(
            "Both users are in a direct conversation.",
            {"visitor_id": "a direct conversation cannot have one person twice"},
        )
    return emit(
        ParticipantMerged(
            conversation_id=state.id,
            seq=state.next_seq,
            at=command.now,
            user_id=command.visitor_id,
            into_id=command.user_id,
            by=command.actor.key_id,
        )
    )

"""The messaging decider: a conversation's commands, its state and its fold.

A decider as in ``confab.decider``: ``decide(command, state) -> Decision``,
``evolve(state, event) -> state``, ``initial()``; pure (no I/O, no clock, no
randomness). Each conversation (one subject of ``CONVERSATIONS``) is one
aggregate. A command is one of the typed values below and carries everything
the decision needs: who acts, ``now``, ids made up front, and what the handler
looked up before deciding (``CreateConversation.unknown``,
``AddParticipant.user_exists``, ``PostMessage.banned`` and ``.attachments``).

A decision holds the one event to append, none when the command changes
nothing (adding a reaction twice), or it raises a typed ``ConfabError``. A
resent ``client_msg_id`` appends nothing and its result names the original
message (``Resent``).

Every participant-visible event takes the next ``seq`` of its conversation
(``state.last_seq + 1``); the shell appends it with the conversation's version
as the expected one, so two writers can never use the same number.
``message.reported`` is a tenant-side record and takes none (``seq`` 0).

The state is kept compact, because ``Aggregates`` caches it for every busy
conversation: per message only its sender, its deleted/hidden flags, its
reactions (in the order added) and where its post and its last edit are in the
log (``stored``, told by the shell), so the write side can answer a resend or
an edit with the message as it is now, read from the log; content lives in
the log and the read model. ``evolve`` updates the state in place (copying a
long conversation's dicts per event would cost more than the event) and skips
events it has already folded (``seq <= last_seq``), so folding the same event
twice, which a concurrent catch-up can do, changes nothing.

Threads, pins, mentions and link previews (issue 23): a reply names a top-level,
visible ``parent_id`` of the same conversation (threads are one level deep); a
thread's read mark is a ``read.marked`` with ``parent_id``. Pins are limited to
``MAX_PINS`` per conversation; participants may pin when the conversation's
``pin_policy`` is ``participants``, the workspace's backend always. Mentions are
checked by ``mentions.checked``. A link preview is applied only to the text it was
fetched for (``MessageState.text_seq``); its image counts among the message's
attachments, so the message's deletion names it (media removes it).

Shadowed posts (``message.shadowed``, ``seq`` 0) live outside the timeline: the state
keeps them apart (``ShadowState``, folded by ``stored`` where the shell says they are),
and their sender edits and deletes them as ``message.shadow_edited`` /
``message.shadow_deleted``, also ``seq`` 0, so no other reader ever sees either; to
anyone else they do not exist (404).
"""

from __future__ import annotations

import base64
import hashlib
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from confab.contracts.events import Event
from confab.contracts.events.messaging import (
    Attachment,
    AutomodHit,
    ConversationCreated,
    ConversationEvent,
    ConversationType,
    ConversationUpdated,
    LinkPreview,
    Mention,
    MessageDeleted,
    MessageEdited,
    MessageModerated,
    MessagePinned,
    MessagePosted,
    MessagePreviewed,
    MessageReported,
    MessageType,
    MessageUnpinned,
    ModerationAction,
    ParticipantAdded,
    ParticipantMerged,
    ParticipantRemoved,
    PinPolicy,
    ReactionAdded,
    ReactionRemoved,
    ReadMarked,
)
from confab.contracts.events.moderation import (
    ConversationFrozen,
    ConversationUnfrozen,
    MessageBlocked,
    MessageShadowDeleted,
    MessageShadowed,
    MessageShadowEdited,
    ParticipantBanned,
    ParticipantMuted,
    ParticipantUnbanned,
    ParticipantUnmuted,
)
from confab.contracts.messaging import (
    MAX_ATTACHMENTS,
    MAX_PARTICIPANTS,
    MAX_PINS,
    METADATA_MAX_BYTES,
    Actor,
)
from confab.conversation import derived_type, in_force
from confab.decider import NOTHING, Decider, Decision, emit
from confab.errors import Banned, Conflict, Forbidden, Frozen, InvalidRequest, Muted, NotFound
from confab.support import SUPPORT, SupportView
from confab.support import evolve as support_fold
from confab_messaging import mentions as mention_rules

CONTENT_MAX = 10_000
REASON_MAX = 1_000
EMOJI_MAX = 32

CONVERSATION_NOT_FOUND = "Conversation not found."
MESSAGE_NOT_FOUND = "Message not found."
BANNED = "You are banned from this workspace."
AUTOMOD_REPORTER = "automod"  # the reporter of automatic moderation's flags


# -- commands --------------------------------------------------------------------------------


class Command(msgspec.Struct, kw_only=True, frozen=True):
    """What every command of a conversation carries: who acts, and when."""

    actor: Actor
    now: datetime


class CreateConversation(Command, kw_only=True, frozen=True):
    """``participant_ids`` come from ``members_for``; ``unknown`` lists those that are not
    live users of the workspace (looked up by the handler)."""

    conversation_id: str
    kind: ConversationType
    participant_ids: list[str]
    unknown: list[str] = []
    title: str | None = None
    metadata: dict[str, Any] | None = None
    pin_policy: PinPolicy = "participants"


class UpdateConversation(Command, kw_only=True, frozen=True):
    """The tenant's change of title or metadata (``ConversationPatch``'s rules)."""

    title: str | msgspec.UnsetType | None = msgspec.UNSET
    metadata: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
    pin_policy: PinPolicy | msgspec.UnsetType = msgspec.UNSET


class AddParticipant(Command, kw_only=True, frozen=True):
    user_id: str
    user_exists: bool  # a live user of the workspace (looked up by the handler)


class RemoveParticipant(Command, kw_only=True, frozen=True):
    user_id: str


class PostMessage(Command, kw_only=True, frozen=True):
    """A message from ``sender_id`` (None: a system message from the tenant's backend).

    ``attachments`` are those of ``attachment_ids`` that media has stored for
    this conversation, uploaded by the sender (looked up by the handler); any
    other id is unknown. ``banned``: the sender may not act now (the handler's
    look-up of the ban)."""

    sender_id: str | None
    content: str
    message_id: str
    metadata: dict[str, Any] | None = None
    attachment_ids: list[str] = []
    attachments: list[Attachment] = []
    reply_to: str | None = None
    client_msg_id: str | None = None
    message_type: MessageType | None = None  # None: derived from sender and attachments
    banned: bool = False
    mentions: list[Mention] = []
    parent_id: str | None = None
    # Automatic moderation's verdict (``automod``), found by the handler: the content is
    # masked already; ``report_id`` set: it flags the message (a system report).
    automod: list[AutomodHit] = []
    report_id: str | None = None
    shadow: bool = False  # only the sender sees it (``message.shadowed``)


class RecordBlocked(Command, kw_only=True, frozen=True):
    """A post automatic moderation refused, recorded for the tenant (``message.blocked``)."""

    sender_id: str
    content: str
    hits: list[AutomodHit]


class EditMessage(Command, kw_only=True, frozen=True):
    """``mentions``: those the client gave for the new text (``carried`` False: checked,
    refused if they do not fit), or those carried over from the old text by the handler
    (``carried`` True: kept only for users still taking part)."""

    message_id: str
    content: str
    mentions: list[Mention] = []
    carried: bool = False
    automod: list[AutomodHit] = []  # what automatic moderation did to ``content``


class DeleteMessage(Command, kw_only=True, frozen=True):
    message_id: str


class React(Command, kw_only=True, frozen=True):
    message_id: str
    emoji: str
    add: bool


class MarkRead(Command, kw_only=True, frozen=True):
    seq: int | None = None  # None: up to the latest message (of the thread, with parent_id)
    parent_id: str | None = None  # a thread's read mark


class PinMessage(Command, kw_only=True, frozen=True):
    message_id: str
    pin: bool


class AttachPreview(Command, kw_only=True, frozen=True):
    """Media's preview of the first link of the message's text as of ``version``."""

    message_id: str
    version: int
    preview: LinkPreview


class ReportMessage(Command, kw_only=True, frozen=True):
    message_id: str
    reason: str
    report_id: str


class ModerateMessage(Command, kw_only=True, frozen=True):
    message_id: str
    action: ModerationAction


class Freeze(Command, kw_only=True, frozen=True):
    """The tenant freezes (``frozen``) or thaws a conversation."""

    frozen: bool


class Restrict(Command, kw_only=True, frozen=True):
    """The tenant mutes (``kind`` "mute") or bans ("ban") a user here, until ``until``
    (None: until lifted), or lifts it (``lift``)."""

    kind: str  # "mute" or "ban"
    user_id: str
    until: datetime | None = None
    lift: bool = False


class Resent(msgspec.Struct, frozen=True):
    """The result of a post whose ``client_msg_id`` this sender used here before."""

    message_id: str  # the original message


# -- state ---------------------------------------------------------------------------------


@dataclass(slots=True)
class MessageState:
    sender_id: str | None
    deleted: bool = False
    hidden: bool = False  # by a moderator; restorable
    reactions: dict[tuple[str, str], None] | None = None  # (emoji, user_id) in order added
    # Attachment ids (those posted, then link previews' images); None without any.
    attachments: tuple[str, ...] | None = None
    post_position: int = 0  # the stream sequence of its message.posted (0: not told)
    edit_position: int = 0  # the stream sequence of its last message.edited (0: none)
    parent_id: str | None = None  # a thread reply's parent
    last_reply_seq: int = 0  # a parent's: the seq of its thread's last reply
    text_seq: int = 0  # the seq of the post or edit its text is from
    mentioned: bool = False  # its text has mentions (an edit without them carries them)

    @property
    def visible(self) -> bool:
        return not (self.deleted or self.hidden)

    def has_reaction(self, emoji: str, user_id: str) -> bool:
        return self.reactions is not None and (emoji, user_id) in self.reactions


@dataclass(slots=True)
class ShadowState:
    """A shadowed post (``message.shadowed``, ``seq`` 0): its sender, and where its post
    and last edit are in the log (told by the shell, as these events take no seq)."""

    sender_id: str
    position: int
    edit_position: int = 0
    deleted: bool = False


@dataclass(slots=True)
class ConversationState:
    id: str = ""
    kind: str = ""
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    created_by: str | None = None
    members: dict[str, None] = field(default_factory=dict)  # active participants, in order
    reads: dict[str, int] = field(default_factory=dict)  # user id -> last read message seq
    last_seq: int = 0
    last_message_seq: int = 0
    messages: dict[str, MessageState] = field(default_factory=dict)
    client_keys: dict[tuple[str, str], str] = field(default_factory=dict)  # -> message id
    attached: dict[str, str] = field(default_factory=dict)  # attachment id -> message id
    # A support conversation's staff view (status, assignee, tags): ``confab.support``.
    support: SupportView | None = None
    pins: dict[str, None] = field(default_factory=dict)  # pinned message ids, in order
    pin_policy: str = "participants"
    thread_reads: dict[tuple[str, str], int] = field(default_factory=dict)  # (parent, user)
    frozen: bool = False
    # Mutes and bans in this conversation: user id -> until (None: until lifted), as of
    # the stream sequence ``restricted_at`` (their events take no seq).
    muted: dict[str, datetime | None] = field(default_factory=dict)
    banned: dict[str, datetime | None] = field(default_factory=dict)
    restricted_at: int = 0
    shadowed: dict[str, ShadowState] = field(default_factory=dict)  # by message id

    @property
    def exists(self) -> bool:
        return self.last_seq > 0

    @property
    def next_seq(self) -> int:
        return self.last_seq + 1

    def restricted(self, kind: dict[str, datetime | None], user_id: str, now: datetime) -> bool:
        """Whether ``user_id`` is in ``kind`` (muted or banned) at ``now``: a timed one
        lifts itself when its time passes."""
        return in_force(kind, user_id, now)

    def message_for(self, sender_id: str | None, client_msg_id: str) -> str | None:
        """The id of the message ``sender_id`` already posted with ``client_msg_id``, if any."""
        return self.client_keys.get((sender_id or "", client_msg_id))


def initial() -> ConversationState:
    return ConversationState()


def evolve(state: ConversationState, event: Event) -> ConversationState:
    """Fold ``event`` into ``state`` in place and return it; a folded event is skipped."""
    if isinstance(event, ConversationEvent) and (
        state.support is not None
        or (isinstance(event, ConversationCreated) and event.kind == SUPPORT)
    ):
        if state.support is None:
            state.support = SupportView(event.conversation_id)
        support_fold(state.support, event, 0)  # staff events: seq 0, ordered by staff_seq
    if not isinstance(event, ConversationEvent) or event.seq <= state.last_seq:
        return state  # message.reported (seq 0) changes nothing the decider needs
    match event:
        case ConversationCreated():
            state.id = event.conversation_id
            state.kind = event.kind
            state.title = event.title
            state.metadata = dict(event.metadata)
            state.created_at = event.at
            state.created_by = event.created_by
            state.members = dict.fromkeys(event.participant_ids)
            state.pin_policy = event.pin_policy
        case ConversationUpdated():
            state.title = event.title
            state.metadata = dict(event.metadata)
            state.pin_policy = event.pin_policy
        case ParticipantAdded():
            state.members[event.user_id] = None
        case ParticipantRemoved():
            state.members.pop(event.user_id, None)
        case ParticipantMerged():
            state.members.pop(event.user_id, None)
            state.members[event.into_id] = None
            gone = state.reads.pop(event.user_id, 0)
            state.reads[event.into_id] = max(state.reads.get(event.into_id, 0), gone)
            for message in state.messages.values():
                if message.sender_id == event.user_id:
                    message.sender_id = event.into_id
        case ConversationFrozen() | ConversationUnfrozen():
            state.frozen = isinstance(event, ConversationFrozen)
        case MessagePosted():
            sender = sys.intern(event.sender_id) if event.sender_id is not None else None
            state.messages[event.message_id] = MessageState(
                sender_id=sender,
                attachments=tuple(event.attachment_ids) or None,
                parent_id=event.parent_id,
                text_seq=event.seq,
                mentioned=bool(event.mentions),
            )
            for attachment_id in event.attachment_ids:
                state.attached[attachment_id] = event.message_id
            state.last_message_seq = event.seq
            if event.parent_id is not None:
                parent = state.messages.get(event.parent_id)
                if parent is not None:
                    parent.last_reply_seq = event.seq
            if event.client_msg_id is not None:
                state.client_keys[(event.sender_id or "", event.client_msg_id)] = event.message_id
        case MessageEdited():
            found = state.messages.get(event.message_id)
            if found is not None:
                found.text_seq = event.seq
                found.mentioned = bool(event.mentions)
        case MessageDeleted():
            found = state.messages.get(event.message_id)
            if found is not None:
                found.deleted = True
            state.pins.pop(event.message_id, None)
        case MessagePinned():
            state.pins[event.message_id] = None
        case MessageUnpinned():
            state.pins.pop(event.message_id, None)
        case ReactionAdded():
            found = state.messages.get(event.message_id)
            if found is not None:
                if found.reactions is None:
                    found.reactions = {}
                found.reactions[(event.emoji, event.user_id)] = None
        case ReactionRemoved():
            found = state.messages.get(event.message_id)
            if found is not None and found.reactions is not None:
                found.reactions.pop((event.emoji, event.user_id), None)
                if not found.reactions:
                    found.reactions = None
        case ReadMarked() if event.parent_id is not None:
            key = (event.parent_id, event.user_id)
            state.thread_reads[key] = max(state.thread_reads.get(key, 0), event.up_to)
        case ReadMarked():
            state.reads[event.user_id] = max(state.reads.get(event.user_id, 0), event.up_to)
        case MessageModerated():
            found = state.messages.get(event.message_id)
            if found is not None:
                if event.action == "hide":
                    found.hidden = True
                elif event.action == "restore":
                    found.hidden = False
                else:
                    found.deleted = True
                    state.pins.pop(event.message_id, None)
        case MessagePreviewed() if event.preview.image is not None:
            # Its image is stored by media as an attachment of the message: it goes with
            # the message (named in its deletion), even when an edit replaced the preview.
            found = state.messages.get(event.message_id)
            image_id = event.preview.image.id
            if found is not None and image_id not in state.attached:
                found.attachments = (*(found.attachments or ()), image_id)
                state.attached[image_id] = event.message_id
    state.last_seq = event.seq
    return state


RESTRICTIONS = (ParticipantMuted, ParticipantUnmuted, ParticipantBanned, ParticipantUnbanned)


def stored(state: ConversationState, event: Event, seq: int) -> None:
    """Note where a message's post and its last edit are in the log (``seq``), and fold
    mutes and bans (``seq`` 0 events: ordered here by their stream sequence)."""
    if isinstance(event, MessageShadowed):
        state.shadowed[event.message_id] = ShadowState(event.sender_id, seq)
        if event.client_msg_id is not None:
            state.client_keys[(event.sender_id, event.client_msg_id)] = event.message_id
        return
    if isinstance(event, MessageShadowEdited | MessageShadowDeleted):
        shadow = state.shadowed.get(event.message_id)
        if shadow is not None:
            if isinstance(event, MessageShadowDeleted):
                shadow.deleted = True
            else:
                shadow.edit_position = max(shadow.edit_position, seq)
        return
    if isinstance(event, RESTRICTIONS):
        if seq > state.restricted_at:
            state.restricted_at = seq
            kind = (
                state.muted
                if isinstance(event, ParticipantMuted | ParticipantUnmuted)
                else state.banned
            )
            if isinstance(event, ParticipantMuted | ParticipantBanned):
                kind[event.user_id] = event.until
            else:
                kind.pop(event.user_id, None)
        return
    if isinstance(event, MessagePosted | MessageEdited):
        found = state.messages.get(event.message_id)
        if found is not None:
            if isinstance(event, MessagePosted):
                found.post_position = seq
            else:
                found.edit_position = max(found.edit_position, seq)


def decide(command: Command, state: ConversationState) -> Decision[Any]:
    """What ``command`` does to the conversation in ``state``."""
    match command:
        case PostMessage():
            return _post(command, state)
        case RecordBlocked():
            return _blocked(command, state)
        case Freeze():
            return _freeze(command, state)
        case Restrict():
            return _restrict(command, state)
        case React():
            return _react(command, state)
        case MarkRead():
            return _mark_read(command, state)
        case EditMessage():
            return _edit(command, state)
        case DeleteMessage():
            return _delete(command, state)
        case CreateConversation():
            return _create(command, state)
        case UpdateConversation():
            return _update(command, state)
        case AddParticipant():
            return _add(command, state)
        case RemoveParticipant():
            return _remove(command, state)
        case ReportMessage():
            return _report(command, state)
        case ModerateMessage():
            return _moderate(command, state)
        case PinMessage():
            return _pin(command, state)
        case AttachPreview():
            return _preview(command, state)
    raise TypeError(f"not a conversation command: {type(command).__name__}")


DECIDER: Decider[Command, ConversationState] = Decider(
    initial=initial, evolve=evolve, decide=decide, stored=stored
)


# -- helpers -------------------------------------------------------------------------------


def direct_conversation_id(workspace_id: str, user_a: str, user_b: str) -> str:
    """The id of the direct conversation of two users: the same for every writer."""
    first, second = sorted((user_a, user_b))
    digest = hashlib.sha256(f"{workspace_id}\0{first}\0{second}".encode()).digest()
    return "dm_" + base64.b32encode(digest).decode("ascii")[:26].lower()


def members_for(actor: Actor, participant_ids: Iterable[str]) -> list[str]:
    """The participants of a new conversation: distinct, in order, with the acting user first."""
    ordered: dict[str, None] = {}
    if actor.user_id is not None:
        ordered[actor.user_id] = None
    for user_id in participant_ids:
        ordered[user_id] = None
    return list(ordered)


def client_msg_key(conversation_id: str, sender_id: str | None, client_msg_id: str) -> str:
    """The ``Nats-Msg-Id`` of a post with a ``client_msg_id``: resends are deduplicated.

    Hashed, so whatever the client sent is a safe header value of bounded length.
    """
    digest = hashlib.sha256(
        f"{conversation_id}\0{sender_id or ''}\0{client_msg_id}".encode()
    ).hexdigest()
    return f"cm:{conversation_id}:{sender_id or 'system'}:{digest[:32]}"


def check_metadata(metadata: dict[str, Any] | None) -> None:
    if metadata is not None and len(msgspec.json.encode(metadata)) > METADATA_MAX_BYTES:
        raise InvalidRequest(
            "The metadata is too large.",
            {"metadata": f"must be at most {METADATA_MAX_BYTES} bytes as JSON"},
        )


def check_content(content: str) -> None:
    if not 1 <= len(content) <= CONTENT_MAX:
        raise InvalidRequest(
            "The content is empty or too long.",
            {"content": f"must be 1 to {CONTENT_MAX} characters"},
        )


def _visible(state: ConversationState, actor: Actor) -> None:
    """NotFound unless the conversation exists and the actor may see it.

    The tenant (an actor without a user) sees every conversation of its
    workspace; the subject already carries the workspace, so another
    workspace's conversation does not exist here.
    """
    if not state.exists or (actor.user_id is not None and actor.user_id not in state.members):
        raise NotFound(CONVERSATION_NOT_FOUND)


def _message(state: ConversationState, message_id: str, *, visible: bool) -> MessageState:
    found = state.messages.get(message_id)
    if found is None or (visible and not found.visible):
        raise NotFound(MESSAGE_NOT_FOUND)
    return found


def _participant(actor: Actor, what: str) -> str:
    """The acting user; the tenant's backend is not a participant."""
    if actor.user_id is None:
        raise Forbidden(f"Only a participant can {what}.")
    return actor.user_id


def check_typing(state: ConversationState, actor: Actor, now: datetime | None = None) -> str:
    """The participant who may signal typing here (nothing is stored)."""
    _visible(state, actor)
    user_id = _participant(actor, "type")
    if now is not None:
        may_speak(state, actor, user_id, now)
    return user_id


def may_speak(state: ConversationState, actor: Actor, user_id: str | None, now: datetime) -> None:
    """Refuse a user's post, edit, reaction or typing in a frozen conversation (403
    ``frozen``; the tenant's backend may still post), or a muted user's (403 ``muted``)."""
    if user_id is None:
        return
    if state.frozen and actor.user_id is not None:
        raise Frozen()
    if state.restricted(state.muted, user_id, now):
        raise Muted()


# -- enforcement -----------------------------------------------------------------------------


def _freeze(command: Freeze, state: ConversationState) -> Decision[None]:
    _visible(state, command.actor)
    if command.actor.user_id is not None:
        raise Forbidden("Only the workspace's backend can freeze a conversation.")
    if state.frozen == command.frozen:
        return NOTHING
    cls = ConversationFrozen if command.frozen else ConversationUnfrozen
    return emit(
        cls(conversation_id=state.id, seq=state.next_seq, at=command.now, by=command.actor.key_id)
    )


def _restrict(command: Restrict, state: ConversationState) -> Decision[None]:
    """Mute or ban a user here, or lift it; a ban also removes them if they take part."""
    actor, user_id, now = command.actor, command.user_id, command.now
    _visible(state, actor)
    if actor.user_id is not None:
        raise Forbidden("Only the workspace's backend can mute or ban.")
    if command.until is not None and command.until <= now:
        raise InvalidRequest("The end is in the past.", {"duration_seconds": "must be positive"})
    by = actor.key_id
    common = {"conversation_id": state.id, "seq": 0, "at": now, "user_id": user_id, "by": by}
    mute = command.kind == "mute"
    kind = state.muted if mute else state.banned
    if command.lift:
        if user_id not in kind:
            return NOTHING
        return emit((ParticipantUnmuted if mute else ParticipantUnbanned)(**common))
    if mute:
        if user_id not in state.members:
            raise NotFound("User not found.", {"user_id": "not a participant of this conversation"})
        return emit(ParticipantMuted(**common, until=command.until))
    if state.kind == "direct":
        raise InvalidRequest(
            "Nobody can be banned from a direct conversation; ban them from the workspace.",
            {"user_id": "a direct conversation has exactly 2 participants"},
        )
    events: list[Event] = [ParticipantBanned(**common, until=command.until)]
    if user_id in state.members:
        events.append(
            ParticipantRemoved(
                conversation_id=state.id, seq=state.next_seq, at=now, user_id=user_id, by=by
            )
        )
    return emit(*events)


# -- conversations and participants --------------------------------------------------------


def merged_metadata(current: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    """``patch`` merged into ``current`` at the top level: a key set to None is removed;
    None as a whole clears everything."""
    if patch is None:
        return {}
    merged = {**current, **patch}
    return {k: v for k, v in merged.items() if v is not None}


def _update(command: UpdateConversation, state: ConversationState) -> Decision[None]:
    """A new title or metadata; nothing when neither changes."""
    _visible(state, command.actor)
    if command.actor.user_id is not None:
        raise Forbidden("Only the workspace's backend can change a conversation.")
    title = state.title if command.title is msgspec.UNSET else command.title
    metadata = (
        state.metadata
        if command.metadata is msgspec.UNSET
        else merged_metadata(state.metadata, command.metadata)
    )
    check_metadata(metadata)
    policy = state.pin_policy if command.pin_policy is msgspec.UNSET else command.pin_policy
    if title == state.title and metadata == state.metadata and policy == state.pin_policy:
        return NOTHING
    return emit(
        ConversationUpdated(
            conversation_id=state.id,
            seq=state.next_seq,
            at=command.now,
            title=title,
            metadata=metadata,
            by=command.actor.key_id,
            pin_policy=policy,  # type: ignore[arg-type]
        )
    )


def _create(command: CreateConversation, state: ConversationState) -> Decision[None]:
    """A new conversation; nothing when the direct conversation of this pair exists already."""
    actor, participant_ids, kind = command.actor, command.participant_ids, command.kind
    check_metadata(command.metadata)
    if command.unknown:
        raise NotFound(
            "User not found.",
            {"participant_ids": "unknown user: " + ", ".join(command.unknown)},
        )
    if actor.user_id is not None and actor.user_id not in participant_ids:
        raise InvalidRequest(
            "You must be a participant.", {"participant_ids": "must include the acting user"}
        )
    if kind == "direct" and len(participant_ids) != 2:
        raise InvalidRequest(
            "A direct conversation has exactly two participants.",
            {"participant_ids": "a direct conversation needs exactly 2 distinct users"},
        )
    if not 1 <= len(participant_ids) <= MAX_PARTICIPANTS:
        raise InvalidRequest(
            "Too many or too few participants.",
            {"participant_ids": f"must name 1 to {MAX_PARTICIPANTS} distinct users"},
        )
    if state.exists:
        if kind == "direct" and state.kind == "direct":
            return NOTHING
        raise Conflict("A conversation with this id exists already.")
    return emit(
        ConversationCreated(
            conversation_id=command.conversation_id,
            seq=1,
            at=command.now,
            kind=kind,
            title=command.title,
            metadata=dict(command.metadata or {}),
            participant_ids=list(participant_ids),
            created_by=actor.user_id,
            pin_policy=command.pin_policy,
        )
    )


def _add(command: AddParticipant, state: ConversationState) -> Decision[None]:
    """The tenant adds a live user of the workspace to a group conversation."""
    actor, user_id = command.actor, command.user_id
    _visible(state, actor)
    if actor.user_id is not None:
        raise Forbidden("Only the workspace's backend can add participants.")
    if state.kind == "direct":
        raise InvalidRequest(
            "The participants of a direct conversation cannot change.",
            {"user_id": "a direct conversation has exactly 2 participants"},
        )
    if not command.user_exists:
        raise NotFound("User not found.", {"user_id": f"unknown user: {user_id}"})
    if user_id in state.members:
        return NOTHING
    if state.restricted(state.banned, user_id, command.now):
        raise Forbidden("This user is banned from this conversation.", {"user_id": "banned here"})
    if len(state.members) >= MAX_PARTICIPANTS:
        raise InvalidRequest(
            "The conversation is full.",
            {"user_id": f"a conversation has at most {MAX_PARTICIPANTS} participants"},
        )
    return emit(
        ParticipantAdded(
            conversation_id=state.id,
            seq=state.next_seq,
            at=command.now,
            user_id=user_id,
            by=actor.user_id,
        )
    )


def _remove(command: RemoveParticipant, state: ConversationState) -> Decision[None]:
    """The tenant removes anyone from a group conversation; a participant may leave it."""
    actor, user_id = command.actor, command.user_id
    _visible(state, actor)
    if actor.user_id is not None and actor.user_id != user_id:
        raise Forbidden("Only the workspace's backend can remove other participants.")
    if state.kind == "direct":
        raise InvalidRequest(
            "The participants of a direct conversation cannot change.",
            {"user_id": "a direct conversation has exactly 2 participants"},
        )
    if user_id not in state.members:
        return NOTHING
    return emit(
        ParticipantRemoved(
            conversation_id=state.id,
            seq=state.next_seq,
            at=command.now,
            user_id=user_id,
            by=actor.user_id,
        )
    )


# -- messages ------------------------------------------------------------------------------


def _post(command: PostMessage, state: ConversationState) -> Decision[Resent | None]:
    """A message; a resent ``client_msg_id`` of this sender here names the original instead.

    An attachment belongs to one message: one attached already (the
    conversation's log knows) is refused.
    """
    actor, sender_id, client_msg_id = command.actor, command.sender_id, command.client_msg_id
    _visible(state, actor)
    if actor.user_id is not None and sender_id != actor.user_id:
        raise Forbidden("You can only post as yourself.")
    if sender_id is not None and sender_id not in state.members:
        raise InvalidRequest(
            "The sender is not a participant.",
            {"sender_id": "must be a participant of the conversation"},
        )
    if client_msg_id is not None:
        original = state.message_for(sender_id, client_msg_id)
        if original is not None:
            return Decision(Resent(original))
    if command.banned:
        raise Banned(BANNED)
    may_speak(state, actor, sender_id, command.now)
    check_content(command.content)
    check_metadata(command.metadata)
    attachment_ids = command.attachment_ids
    if attachment_ids:
        if len(attachment_ids) > MAX_ATTACHMENTS:
            raise InvalidRequest(
                "Too many attachments.",
                {"attachment_ids": f"at most {MAX_ATTACHMENTS} attachments per message"},
            )
        check_attachments(state, attachment_ids, command.attachments)
    if command.reply_to is not None and command.reply_to not in state.messages:
        raise InvalidRequest(
            "The message replied to does not exist.",
            {"reply_to": "must be a message of this conversation"},
        )
    if command.parent_id is not None:
        _thread_parent(state, command.parent_id)
    mentions = mention_rules.checked(command.content, command.mentions, state.members)
    message_type = _message_type(command)
    if command.shadow and sender_id is not None:
        posted: Event = MessageShadowed(
            conversation_id=state.id,
            seq=0,
            at=command.now,
            message_id=command.message_id,
            sender_id=sender_id,
            content=command.content,
            metadata=dict(command.metadata or {}),
            reply_to=command.reply_to,
            client_msg_id=client_msg_id,
            after_seq=state.last_seq,
            automod=list(command.automod),
        )
    else:
        posted = MessagePosted(
            conversation_id=state.id,
            seq=state.next_seq,
            at=command.now,
            message_id=command.message_id,
            sender_id=sender_id,
            content=command.content,
            metadata=dict(command.metadata or {}),
            attachment_ids=list(attachment_ids),
            attachments=[
                msgspec.structs.replace(a, url=None, thumbnail_url=None)
                for a in _in_order(attachment_ids, command.attachments)
            ],
            reply_to=command.reply_to,
            client_msg_id=client_msg_id,
            message_type=message_type,  # type: ignore[arg-type]
            mentions=mentions,
            parent_id=command.parent_id,
            automod=list(command.automod),
        )
    if command.report_id is None:
        return emit(posted)
    flagged = MessageReported(
        conversation_id=state.id,
        seq=0,
        at=command.now,
        report_id=command.report_id,
        message_id=command.message_id,
        reporter_id=AUTOMOD_REPORTER,
        reason="automod: " + ", ".join(h.rule_id for h in command.automod),
    )
    return emit(posted, flagged)


def _blocked(command: RecordBlocked, state: ConversationState) -> Decision[None]:
    """A refused post, for the tenant's record: only a participant's, like a post."""
    _visible(state, command.actor)
    if command.sender_id not in state.members:
        raise NotFound(CONVERSATION_NOT_FOUND)
    return emit(
        MessageBlocked(
            conversation_id=state.id,
            seq=0,
            at=command.now,
            sender_id=command.sender_id,
            content=command.content,
            hits=list(command.hits),
        )
    )


def _thread_parent(state: ConversationState, parent_id: str) -> MessageState:
    """The parent a reply names: a visible top-level message of this conversation."""
    found = state.messages.get(parent_id)
    if found is None or not found.visible:
        raise InvalidRequest(
            "The thread's message does not exist.",
            {"parent_id": "must be a visible message of this conversation"},
        )
    if found.parent_id is not None:
        raise InvalidRequest(
            "Threads are one level deep: reply in the thread of its top-level message.",
            {"parent_id": "must be a top-level message, not a reply"},
        )
    return found


def _message_type(command: PostMessage) -> str:
    """The type the post says, if it fits what it carries; else derived from it."""
    sender_id, wanted = command.sender_id, command.message_type
    derived = derived_type(sender_id, command.attachment_ids, command.attachments)
    if wanted is None or wanted == derived:
        return derived
    if (wanted == "system") != (sender_id is None):
        raise InvalidRequest(
            "Only a message without sender_id is a system message.",
            {"type": "system for the workspace's own messages (no sender_id), never else"},
        )
    if wanted == "image":
        raise InvalidRequest(
            "An image message needs attachments that are all images.",
            {"type": "image needs every attachment to be an image"},
        )
    if wanted == "file" and not command.attachment_ids:
        raise InvalidRequest(
            "A file message needs an attachment.", {"type": "file needs attachment_ids"}
        )
    return wanted


def check_attachments(
    state: ConversationState, attachment_ids: Sequence[str], attachments: Sequence[Attachment]
) -> None:
    if len(set(attachment_ids)) != len(attachment_ids):
        raise InvalidRequest(
            "An attachment is named twice.", {"attachment_ids": "each attachment at most once"}
        )
    known = {a.id for a in attachments}
    unknown = [i for i in attachment_ids if i not in known]
    if unknown:
        raise InvalidRequest(
            "Unknown attachment.", {"attachment_ids": "unknown attachment: " + ", ".join(unknown)}
        )
    taken = [i for i in attachment_ids if i in state.attached]
    if taken:
        raise InvalidRequest(
            "An attachment belongs to another message already.",
            {"attachment_ids": "already attached to another message: " + ", ".join(taken)},
        )


def _in_order(ids: Sequence[str], attachments: Sequence[Attachment]) -> list[Attachment]:
    by_id = {a.id: a for a in attachments}
    return [by_id[i] for i in ids]


def _edit(command: EditMessage, state: ConversationState) -> Decision[None]:
    actor = command.actor
    _visible(state, actor)
    if command.message_id in state.shadowed:
        return _edit_shadowed(command, state, state.shadowed[command.message_id])
    found = _message(state, command.message_id, visible=True)
    if actor.user_id is None or found.sender_id != actor.user_id:
        raise Forbidden("You can only edit your own messages.")
    may_speak(state, actor, actor.user_id, command.now)
    check_content(command.content)
    given = command.mentions
    if command.carried:
        given = [m for m in given if m.user_id in state.members]
    mentions = mention_rules.checked(command.content, given, state.members)
    return emit(
        MessageEdited(
            conversation_id=state.id,
            seq=state.next_seq,
            at=command.now,
            message_id=command.message_id,
            content=command.content,
            by=actor.user_id,
            mentions=mentions,
        )
    )


def _edit_shadowed(
    command: EditMessage, state: ConversationState, shadow: ShadowState
) -> Decision[None]:
    """Its sender edits a shadowed post like any message; the edit is shadowed too (``seq``
    0: no other reader ever sees it). A shadowed post has no mentions: nobody is told."""
    actor = command.actor
    if actor.user_id is None:
        raise Forbidden("You can only edit your own messages.")
    if shadow.deleted or shadow.sender_id != actor.user_id:
        raise NotFound(MESSAGE_NOT_FOUND)  # other users never learn that it exists
    may_speak(state, actor, actor.user_id, command.now)
    check_content(command.content)
    return emit(
        MessageShadowEdited(
            conversation_id=state.id,
            seq=0,
            at=command.now,
            message_id=command.message_id,
            sender_id=shadow.sender_id,
            content=command.content,
            automod=list(command.automod),
        )
    )


def _delete(command: DeleteMessage, state: ConversationState) -> Decision[None]:
    """A tombstone. The author deletes their own; the tenant's backend any; twice is a no-op."""
    actor = command.actor
    _visible(state, actor)
    shadow = state.shadowed.get(command.message_id)
    if shadow is not None:
        if actor.user_id is not None and shadow.sender_id != actor.user_id:
            raise NotFound(MESSAGE_NOT_FOUND)  # others never learn that it exists
        if shadow.deleted:
            return NOTHING
        return emit(
            MessageShadowDeleted(
                conversation_id=state.id,
                seq=0,
                at=command.now,
                message_id=command.message_id,
                sender_id=shadow.sender_id,
                by=actor.user_id,
            )
        )
    found = _message(state, command.message_id, visible=False)
    if actor.user_id is not None and found.sender_id != actor.user_id:
        raise Forbidden("You can only delete your own messages.")
    if found.deleted:
        return NOTHING
    return emit(
        MessageDeleted(
            conversation_id=state.id,
            seq=state.next_seq,
            at=command.now,
            message_id=command.message_id,
            by=actor.user_id,
            attachment_ids=list(found.attachments or ()),
        )
    )


def _react(command: React, state: ConversationState) -> Decision[None]:
    """One reaction per user and emoji: adding it twice or removing an absent one is a no-op."""
    _visible(state, command.actor)
    user_id = _participant(command.actor, "react")
    if state.frozen:
        raise Frozen()
    emoji = command.emoji
    if not 1 <= len(emoji) <= EMOJI_MAX:
        raise InvalidRequest(
            "The emoji is not valid.", {"emoji": f"must be 1 to {EMOJI_MAX} characters"}
        )
    found = _message(state, command.message_id, visible=True)
    if found.has_reaction(emoji, user_id) == command.add:
        return NOTHING
    cls = ReactionAdded if command.add else ReactionRemoved
    return emit(
        cls(
            conversation_id=state.id,
            seq=state.next_seq,
            at=command.now,
            message_id=command.message_id,
            emoji=emoji,
            user_id=user_id,
        )
    )


def _mark_read(command: MarkRead, state: ConversationState) -> Decision[None]:
    """Everything up to ``seq`` (default: the latest message) is read; never moves backwards."""
    _visible(state, command.actor)
    user_id = _participant(command.actor, "mark a conversation read")
    seq, parent_id = command.seq, command.parent_id
    if seq is not None and seq < 0:
        raise InvalidRequest("The seq is not valid.", {"seq": "must be 0 or more"})
    if parent_id is not None:
        found = state.messages.get(parent_id)
        if found is None or found.parent_id is not None:
            raise NotFound("Thread not found.", {"parent_id": "not a top-level message here"})
        last, read = found.last_reply_seq, state.thread_reads.get((parent_id, user_id), 0)
    else:
        last, read = state.last_message_seq, state.reads.get(user_id, 0)
    up_to = last if seq is None else min(seq, last)
    if up_to <= read:
        return NOTHING
    return emit(
        ReadMarked(
            conversation_id=state.id,
            seq=state.next_seq,
            at=command.now,
            user_id=user_id,
            up_to=up_to,
            parent_id=parent_id,
        )
    )


# -- reports and moderation ----------------------------------------------------------------


def _report(command: ReportMessage, state: ConversationState) -> Decision[None]:
    """A participant flags a message for the tenant's moderators (takes no conversation seq)."""
    _visible(state, command.actor)
    reporter = _participant(command.actor, "report a message")
    _message(state, command.message_id, visible=True)
    if not 1 <= len(command.reason) <= REASON_MAX:
        raise InvalidRequest(
            "The reason is empty or too long.", {"reason": f"must be 1 to {REASON_MAX} characters"}
        )
    return emit(
        MessageReported(
            conversation_id=state.id,
            seq=0,
            at=command.now,
            report_id=command.report_id,
            message_id=command.message_id,
            reporter_id=reporter,
            reason=command.reason,
        )
    )


def _moderate(command: ModerateMessage, state: ConversationState) -> Decision[None]:
    """The tenant hides, restores or deletes a message; what is already so is a no-op."""
    actor, action = command.actor, command.action
    _visible(state, actor)
    if actor.user_id is not None:
        raise Forbidden("Only the workspace's backend can moderate messages.")
    found = _message(state, command.message_id, visible=False)
    unchanged = (
        (action == "hide" and (found.hidden or found.deleted))
        or (action == "restore" and (not found.hidden or found.deleted))
        or (action == "delete" and found.deleted)
    )
    if unchanged:
        return NOTHING
    return emit(
        MessageModerated(
            conversation_id=state.id,
            seq=state.next_seq,
            at=command.now,
            message_id=command.message_id,
            action=action,
            by=actor.key_id or "",
            attachment_ids=list(found.attachments or ()) if action == "delete" else [],
        )
    )


# -- pins and link previews ----------------------------------------------------------------


def _pin(command: PinMessage, state: ConversationState) -> Decision[None]:
    """Pin or unpin a visible message; what is already so is a no-op. At most ``MAX_PINS``."""
    actor = command.actor
    _visible(state, actor)
    if actor.user_id is not None and state.pin_policy != "participants":
        raise Forbidden("Only the workspace's moderators can pin messages here.")
    found = _message(state, command.message_id, visible=command.pin)
    if found.deleted:
        raise NotFound(MESSAGE_NOT_FOUND)
    pinned = command.message_id in state.pins
    if pinned == command.pin:
        return NOTHING
    if command.pin and len(state.pins) >= MAX_PINS:
        raise Conflict(
            f"A conversation has at most {MAX_PINS} pinned messages: unpin one first.",
            {"message_id": f"at most {MAX_PINS} pins per conversation"},
        )
    cls = MessagePinned if command.pin else MessageUnpinned
    return emit(
        cls(
            conversation_id=state.id,
            seq=state.next_seq,
            at=command.now,
            message_id=command.message_id,
            by=actor.user_id,
        )
    )


def _preview(command: AttachPreview, state: ConversationState) -> Decision[None]:
    """Media's link preview, for the message's current text only (a preview of a text an
    edit replaced, or of a message deleted or hidden since, is dropped)."""
    _visible(state, command.actor)
    if command.actor.user_id is not None:
        raise Forbidden("Only the platform attaches link previews.")
    found = state.messages.get(command.message_id)
    if found is None or not found.visible or found.text_seq != command.version:
        return NOTHING
    return emit(
        MessagePreviewed(
            conversation_id=state.id,
            seq=state.next_seq,
            at=command.now,
            message_id=command.message_id,
            version=command.version,
            preview=command.preview,
        )
    )

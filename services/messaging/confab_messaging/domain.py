"""The messaging decider: pure functions from a command and a conversation's state to an event.

No I/O, no clock, no randomness: the handler passes ``now``, new ids and what
it looked up in read models (does a user exist, is the sender banned) in.
Each conversation (one subject of ``CONVERSATIONS``) is one aggregate;
``evolve`` folds its events into a ``ConversationState``.

A ``decide_*`` function returns the one event to append, ``None`` when the
command changes nothing (adding a reaction twice, a resent ``client_msg_id``),
or raises a typed ``ConfabError``.

Every participant-visible event takes the next ``seq`` of its conversation
(``state.last_seq + 1``); the handler appends it with the conversation's
version as the expected one, so two writers can never use the same number.
``message.reported`` is a tenant-side record and takes none (``seq`` 0).

The state is kept compact, because ``Aggregates`` caches it for every busy
conversation: per message only its sender, its deleted/hidden flags and its
reactions; content lives in the read model. ``evolve`` updates the state in
place (copying a long conversation's dicts per event would cost more than the
event) and skips events it has already folded (``seq <= last_seq``), so folding
the same event twice, which a concurrent catch-up can do, changes nothing.
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

from confab.contracts.base import Event
from confab.contracts.messaging import (
    MAX_ATTACHMENTS,
    MAX_PARTICIPANTS,
    METADATA_MAX_BYTES,
    Actor,
    Attachment,
    ConversationCreated,
    ConversationEvent,
    ConversationType,
    MessageDeleted,
    MessageEdited,
    MessageModerated,
    MessagePosted,
    MessageReported,
    ModerationAction,
    ParticipantAdded,
    ParticipantRemoved,
    ReactionAdded,
    ReactionRemoved,
    ReadMarked,
)
from confab.errors import Banned, Conflict, Forbidden, InvalidRequest, NotFound

CONTENT_MAX = 10_000
REASON_MAX = 1_000
EMOJI_MAX = 32

CONVERSATION_NOT_FOUND = "Conversation not found."
MESSAGE_NOT_FOUND = "Message not found."
BANNED = "You are banned from this workspace."


# -- state ---------------------------------------------------------------------------------


@dataclass(slots=True)
class MessageState:
    sender_id: str | None
    deleted: bool = False
    hidden: bool = False  # by a moderator; restorable
    reactions: set[tuple[str, str]] | None = None  # (emoji, user_id); None while empty
    attachments: tuple[str, ...] | None = None  # attachment ids; None without any

    @property
    def visible(self) -> bool:
        return not (self.deleted or self.hidden)

    def has_reaction(self, emoji: str, user_id: str) -> bool:
        return self.reactions is not None and (emoji, user_id) in self.reactions


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

    @property
    def exists(self) -> bool:
        return self.last_seq > 0

    @property
    def next_seq(self) -> int:
        return self.last_seq + 1

    def message_for(self, sender_id: str | None, client_msg_id: str) -> str | None:
        """The id of the message ``sender_id`` already posted with ``client_msg_id``, if any."""
        return self.client_keys.get((sender_id or "", client_msg_id))


def initial() -> ConversationState:
    return ConversationState()


def evolve(state: ConversationState, event: Event) -> ConversationState:
    """Fold ``event`` into ``state`` in place and return it; a folded event is skipped."""
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
        case ParticipantAdded():
            state.members[event.user_id] = None
        case ParticipantRemoved():
            state.members.pop(event.user_id, None)
        case MessagePosted():
            sender = sys.intern(event.sender_id) if event.sender_id is not None else None
            state.messages[event.message_id] = MessageState(
                sender_id=sender, attachments=tuple(event.attachment_ids) or None
            )
            for attachment_id in event.attachment_ids:
                state.attached[attachment_id] = event.message_id
            state.last_message_seq = event.seq
            if event.client_msg_id is not None:
                state.client_keys[(event.sender_id or "", event.client_msg_id)] = event.message_id
        case MessageDeleted():
            found = state.messages.get(event.message_id)
            if found is not None:
                found.deleted = True
        case ReactionAdded():
            found = state.messages.get(event.message_id)
            if found is not None:
                if found.reactions is None:
                    found.reactions = set()
                found.reactions.add((event.emoji, event.user_id))
        case ReactionRemoved():
            found = state.messages.get(event.message_id)
            if found is not None and found.reactions is not None:
                found.reactions.discard((event.emoji, event.user_id))
                if not found.reactions:
                    found.reactions = None
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
        # message.edited changes nothing kept here: content lives in the read model.
    state.last_seq = event.seq
    return state


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


# -- conversations and participants --------------------------------------------------------


def decide_create_conversation(
    state: ConversationState,
    *,
    actor: Actor,
    conversation_id: str,
    kind: ConversationType,
    participant_ids: Sequence[str],
    unknown: Sequence[str],
    title: str | None,
    metadata: dict[str, Any] | None,
    now: datetime,
) -> ConversationCreated | None:
    """A new conversation; ``None`` when the direct conversation of this pair exists already.

    ``participant_ids`` come from ``members_for``; ``unknown`` lists those that
    are not live users of the workspace (looked up by the handler).
    """
    check_metadata(metadata)
    if unknown:
        raise NotFound(
            "User not found.", {"participant_ids": "unknown user: " + ", ".join(unknown)}
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
            return None
        raise Conflict("A conversation with this id exists already.")
    return ConversationCreated(
        conversation_id=conversation_id,
        seq=1,
        at=now,
        kind=kind,
        title=title,
        metadata=dict(metadata or {}),
        participant_ids=list(participant_ids),
        created_by=actor.user_id,
    )


def decide_add_participant(
    state: ConversationState,
    *,
    actor: Actor,
    user_id: str,
    user_exists: bool,
    now: datetime,
) -> ParticipantAdded | None:
    """The tenant adds a live user of the workspace to a group conversation."""
    _visible(state, actor)
    if actor.user_id is not None:
        raise Forbidden("Only the workspace's backend can add participants.")
    if state.kind == "direct":
        raise InvalidRequest(
            "The participants of a direct conversation cannot change.",
            {"user_id": "a direct conversation has exactly 2 participants"},
        )
    if not user_exists:
        raise NotFound("User not found.", {"user_id": f"unknown user: {user_id}"})
    if user_id in state.members:
        return None
    if len(state.members) >= MAX_PARTICIPANTS:
        raise InvalidRequest(
            "The conversation is full.",
            {"user_id": f"a conversation has at most {MAX_PARTICIPANTS} participants"},
        )
    return ParticipantAdded(
        conversation_id=state.id, seq=state.next_seq, at=now, user_id=user_id, by=actor.user_id
    )


def decide_remove_participant(
    state: ConversationState, *, actor: Actor, user_id: str, now: datetime
) -> ParticipantRemoved | None:
    """The tenant removes anyone from a group conversation; a participant may leave it."""
    _visible(state, actor)
    if actor.user_id is not None and actor.user_id != user_id:
        raise Forbidden("Only the workspace's backend can remove other participants.")
    if state.kind == "direct":
        raise InvalidRequest(
            "The participants of a direct conversation cannot change.",
            {"user_id": "a direct conversation has exactly 2 participants"},
        )
    if user_id not in state.members:
        return None
    return ParticipantRemoved(
        conversation_id=state.id, seq=state.next_seq, at=now, user_id=user_id, by=actor.user_id
    )


# -- messages ------------------------------------------------------------------------------


def decide_post_message(
    state: ConversationState,
    *,
    actor: Actor,
    sender_id: str | None,
    content: str,
    metadata: dict[str, Any] | None,
    attachment_ids: Sequence[str],
    reply_to: str | None,
    client_msg_id: str | None,
    message_id: str,
    banned: bool,
    now: datetime,
    attachments: Sequence[Attachment] = (),
) -> MessagePosted | None:
    """A message from ``sender_id`` (None: a system message from the tenant's backend).

    ``None`` when ``client_msg_id`` was already used by this sender here: the
    original stands (``state.message_for`` names it).

    ``attachments`` are those of ``attachment_ids`` that media has stored for
    this conversation, uploaded by the sender (looked up by the handler); any
    other id is unknown. An attachment belongs to one message: one attached
    already (the conversation's log knows) is refused.
    """
    _visible(state, actor)
    if actor.user_id is not None and sender_id != actor.user_id:
        raise Forbidden("You can only post as yourself.")
    if sender_id is not None and sender_id not in state.members:
        raise InvalidRequest(
            "The sender is not a participant.",
            {"sender_id": "must be a participant of the conversation"},
        )
    if client_msg_id is not None and state.message_for(sender_id, client_msg_id) is not None:
        return None
    if banned:
        raise Banned(BANNED)
    check_content(content)
    check_metadata(metadata)
    if attachment_ids:
        if len(attachment_ids) > MAX_ATTACHMENTS:
            raise InvalidRequest(
                "Too many attachments.",
                {"attachment_ids": f"at most {MAX_ATTACHMENTS} attachments per message"},
            )
        check_attachments(state, attachment_ids, attachments)
    if reply_to is not None and reply_to not in state.messages:
        raise InvalidRequest(
            "The message replied to does not exist.",
            {"reply_to": "must be a message of this conversation"},
        )
    return MessagePosted(
        conversation_id=state.id,
        seq=state.next_seq,
        at=now,
        message_id=message_id,
        sender_id=sender_id,
        content=content,
        metadata=dict(metadata or {}),
        attachment_ids=list(attachment_ids),
        attachments=[
            msgspec.structs.replace(a, url=None, thumbnail_url=None)
            for a in _in_order(attachment_ids, attachments)
        ],
        reply_to=reply_to,
        client_msg_id=client_msg_id,
    )


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


def decide_edit_message(
    state: ConversationState, *, actor: Actor, message_id: str, content: str, now: datetime
) -> MessageEdited:
    _visible(state, actor)
    found = _message(state, message_id, visible=True)
    if actor.user_id is None or found.sender_id != actor.user_id:
        raise Forbidden("You can only edit your own messages.")
    check_content(content)
    return MessageEdited(
        conversation_id=state.id,
        seq=state.next_seq,
        at=now,
        message_id=message_id,
        content=content,
        by=actor.user_id,
    )


def decide_delete_message(
    state: ConversationState, *, actor: Actor, message_id: str, now: datetime
) -> MessageDeleted | None:
    """A tombstone. The author deletes their own; the tenant's backend any; twice is a no-op."""
    _visible(state, actor)
    found = _message(state, message_id, visible=False)
    if actor.user_id is not None and found.sender_id != actor.user_id:
        raise Forbidden("You can only delete your own messages.")
    if found.deleted:
        return None
    return MessageDeleted(
        conversation_id=state.id,
        seq=state.next_seq,
        at=now,
        message_id=message_id,
        by=actor.user_id,
        attachment_ids=list(found.attachments or ()),
    )


def decide_react(
    state: ConversationState,
    *,
    actor: Actor,
    message_id: str,
    emoji: str,
    add: bool,
    now: datetime,
) -> ReactionAdded | ReactionRemoved | None:
    """One reaction per user and emoji: adding it twice or removing an absent one is a no-op."""
    _visible(state, actor)
    user_id = _participant(actor, "react")
    if not 1 <= len(emoji) <= EMOJI_MAX:
        raise InvalidRequest(
            "The emoji is not valid.", {"emoji": f"must be 1 to {EMOJI_MAX} characters"}
        )
    found = _message(state, message_id, visible=True)
    if found.has_reaction(emoji, user_id) == add:
        return None
    cls = ReactionAdded if add else ReactionRemoved
    return cls(
        conversation_id=state.id,
        seq=state.next_seq,
        at=now,
        message_id=message_id,
        emoji=emoji,
        user_id=user_id,
    )


def decide_mark_read(
    state: ConversationState, *, actor: Actor, seq: int | None, now: datetime
) -> ReadMarked | None:
    """Everything up to ``seq`` (default: the latest message) is read; never moves backwards."""
    _visible(state, actor)
    user_id = _participant(actor, "mark a conversation read")
    if seq is not None and seq < 0:
        raise InvalidRequest("The seq is not valid.", {"seq": "must be 0 or more"})
    up_to = state.last_message_seq if seq is None else min(seq, state.last_message_seq)
    if up_to <= state.reads.get(user_id, 0):
        return None
    return ReadMarked(
        conversation_id=state.id, seq=state.next_seq, at=now, user_id=user_id, up_to=up_to
    )


def check_typing(state: ConversationState, actor: Actor) -> str:
    """The participant who may signal typing here (nothing is stored)."""
    _visible(state, actor)
    return _participant(actor, "type")


# -- reports and moderation ----------------------------------------------------------------


def decide_report_message(
    state: ConversationState,
    *,
    actor: Actor,
    message_id: str,
    reason: str,
    report_id: str,
    now: datetime,
) -> MessageReported:
    """A participant flags a message for the tenant's moderators (takes no conversation seq)."""
    _visible(state, actor)
    reporter = _participant(actor, "report a message")
    _message(state, message_id, visible=True)
    if not 1 <= len(reason) <= REASON_MAX:
        raise InvalidRequest(
            "The reason is empty or too long.", {"reason": f"must be 1 to {REASON_MAX} characters"}
        )
    return MessageReported(
        conversation_id=state.id,
        seq=0,
        at=now,
        report_id=report_id,
        message_id=message_id,
        reporter_id=reporter,
        reason=reason,
    )


def decide_moderate_message(
    state: ConversationState,
    *,
    actor: Actor,
    message_id: str,
    action: ModerationAction,
    now: datetime,
) -> MessageModerated | None:
    """The tenant hides, restores or deletes a message; what is already so is a no-op."""
    _visible(state, actor)
    if actor.user_id is not None:
        raise Forbidden("Only the workspace's backend can moderate messages.")
    found = _message(state, message_id, visible=False)
    unchanged = (
        (action == "hide" and (found.hidden or found.deleted))
        or (action == "restore" and (not found.hidden or found.deleted))
        or (action == "delete" and found.deleted)
    )
    if unchanged:
        return None
    return MessageModerated(
        conversation_id=state.id,
        seq=state.next_seq,
        at=now,
        message_id=message_id,
        action=action,
        by=actor.key_id or "",
        attachment_ids=list(found.attachments or ()) if action == "delete" else [],
    )

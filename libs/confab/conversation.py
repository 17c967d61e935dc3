"""One conversation folded from its events: the single definition of what the log means now.

Every reader of a conversation uses this fold and these renderers, so they can
never disagree: messaging's projection (the read model behind history and
``/events``), and each fanout node (live frames and ``confab:resume``).

- ``evolve(view, event, stream_seq)`` folds one stored event into a
  ``ConversationView`` in place (folding a long conversation cannot afford a
  copy per event) and returns the ``Entry`` it adds to the conversation's
  real-time timeline, or None. It is pure: no I/O, no clock. Folding an event
  at or below ``view.last_seq`` changes nothing, so a redelivery is harmless.
  A view may be partial (messaging loads only the rows a batch touches): an
  event about a message the view does not hold still yields its entry.
- An ``Entry`` is what happened, by reference: which message, which user, which
  emoji. It never holds content. ``payload(entry, message, author)`` renders it
  against the message *as it is now*, so a replay shows exactly what history
  shows: a since-deleted or hidden message as its tombstone, an edited one with
  its current text, an erased user's message blank. The small events
  (reactions, reads, participants, deletions) carry nothing that can change and
  render the same at any time.
- ``erase(view, user_id)`` is the one place that says what erasure leaves of a
  user's messages: no content, no metadata, no mentions, no link preview.

Threads are one level deep: a reply names a top-level ``parent_id``, takes the
conversation's next ``seq`` like any message (so catch-up, ``/events``, resume and
``client_msg_id`` work for replies exactly as for the main timeline) and, folded,
updates its parent's thread summary (reply count, last reply, participants). A
thread's read mark is a ``read.marked`` with ``parent_id``; it never moves the
conversation's own mark. Pins and link previews change the message they name and
show as its ``message.updated``; an edit drops the preview of the old text (media
fetches one for the new text).

Message objects follow ``api.md`` ("Message object"); hidden or deleted
messages are tombstones: content ``""``, no attachments, ``deleted: true``.
Attachments are rendered from what media stored for the message (recorded in
``message.posted``): real-time frames carry them without URLs, which are
per-reader and short-lived (``GET /api/widget/attachments/{id}`` gives fresh
ones); REST replies pass in objects with fresh URLs from media.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from confab import realtime
from confab.contracts.events.messaging import (
    Attachment,
    ConversationCreated,
    ConversationEvent,
    ConversationUpdated,
    LinkPreview,
    Mention,
    MessageDeleted,
    MessageEdited,
    MessageModerated,
    MessagePinned,
    MessagePosted,
    MessagePreviewed,
    MessageUnpinned,
    ParticipantAdded,
    ParticipantMerged,
    ParticipantRemoved,
    ReactionAdded,
    ReactionRemoved,
    ReadMarked,
)
from confab.contracts.events.moderation import ConversationFrozen, ConversationUnfrozen
from confab.contracts.messaging import (
    Conversation,
    Message,
    ModeratedMessage,
    ReactionSummary,
    Sender,
    ThreadSummary,
)

# -- the view ------------------------------------------------------------------------------


class MessageView:
    """One message as it is now. ``reactions`` maps (emoji, user id) to the seq it was
    added at, in the order added."""

    __slots__ = (
        "attachment_ids",
        "attachments",
        "client_msg_id",
        "content",
        "conversation_id",
        "created_at",
        "deleted",
        "edited_at",
        "hidden",
        "id",
        "last_reply_at",
        "last_reply_id",
        "link_preview",
        "mentions",
        "message_type",
        "metadata",
        "parent_id",
        "pinned_at",
        "pinned_by",
        "reactions",
        "reply_count",
        "reply_to",
        "sender_id",
        "seq",
        "stream_seq",
        "thread_participants",
        "version",
    )

    def __init__(
        self,
        *,
        id: str,
        conversation_id: str,
        seq: int,
        sender_id: str | None,
        content: str,
        metadata: dict[str, Any],
        attachment_ids: list[str],
        reply_to: str | None,
        client_msg_id: str | None,
        created_at: datetime,
        edited_at: datetime | None = None,
        deleted: bool = False,
        hidden: bool = False,
        version: int = 0,
        stream_seq: int = 0,
        attachments: list[Attachment] | None = None,
        reactions: dict[tuple[str, str], int] | None = None,
        message_type: str = "text",
        mentions: list[Mention] | None = None,
        parent_id: str | None = None,
        reply_count: int = 0,
        last_reply_id: str | None = None,
        last_reply_at: datetime | None = None,
        thread_participants: list[str] | None = None,
        pinned_at: datetime | None = None,
        pinned_by: str | None = None,
        link_preview: LinkPreview | None = None,
    ) -> None:
        self.id = id
        self.conversation_id = conversation_id
        self.seq = seq
        self.sender_id = sender_id
        self.content = content
        self.metadata = metadata
        self.attachment_ids = attachment_ids
        self.reply_to = reply_to
        self.client_msg_id = client_msg_id
        self.created_at = created_at
        self.edited_at = edited_at
        self.deleted = deleted
        self.hidden = hidden
        self.version = version or seq
        self.stream_seq = stream_seq
        self.attachments = attachments or []
        self.reactions = reactions if reactions is not None else {}
        self.message_type = message_type
        self.mentions = mentions or []
        self.parent_id = parent_id
        self.reply_count = reply_count
        self.last_reply_id = last_reply_id
        self.last_reply_at = last_reply_at
        self.thread_participants = thread_participants or []
        self.pinned_at = pinned_at
        self.pinned_by = pinned_by
        self.link_preview = link_preview

    @property
    def gone(self) -> bool:
        """Deleted, or hidden by a moderator: shown as a tombstone."""
        return self.deleted or self.hidden

    @classmethod
    def posted(cls, event: MessagePosted, stream_seq: int = 0) -> MessageView:
        sender = sys.intern(event.sender_id) if event.sender_id is not None else None
        return cls(
            id=event.message_id,
            conversation_id=event.conversation_id,
            seq=event.seq,
            sender_id=sender,
            content=event.content,
            metadata=dict(event.metadata),
            attachment_ids=list(event.attachment_ids),
            reply_to=event.reply_to,
            client_msg_id=event.client_msg_id,
            created_at=event.at,
            version=event.seq,
            stream_seq=stream_seq,
            attachments=list(event.attachments),
            message_type=event.message_type
            or derived_type(event.sender_id, event.attachment_ids, event.attachments),
            mentions=list(event.mentions),
            parent_id=event.parent_id,
        )

    @classmethod
    def from_row(
        cls, row: Mapping[str, Any], reactions: Iterable[tuple[str, str]] = ()
    ) -> MessageView:
        """A ``messages`` row of messaging's read model (reactions in the order added)."""
        return cls(
            id=row["id"],
            conversation_id=row["conversation_id"],
            seq=row["seq"],
            sender_id=row["sender_id"],
            content=row["content"],
            metadata=dict(row["metadata"] or {}),
            attachment_ids=list(row["attachment_ids"] or ()),
            reply_to=row["reply_to"],
            client_msg_id=row["client_msg_id"],
            created_at=row["created_at"],
            edited_at=row["edited_at"],
            deleted=row["deleted"],
            hidden=row["hidden"],
            version=row["version"],
            stream_seq=row["stream_seq"],
            reactions={pair: n for n, pair in enumerate(reactions)},
            message_type=row.get("message_type") or "text",
            mentions=_mentions_in(row.get("mentions")),
            parent_id=row.get("parent_id"),
            reply_count=row.get("reply_count") or 0,
            last_reply_id=row.get("last_reply_id"),
            last_reply_at=row.get("last_reply_at"),
            thread_participants=list(row.get("thread_participants") or ()),
            pinned_at=row.get("pinned_at"),
            pinned_by=row.get("pinned_by"),
            link_preview=_preview_in(row.get("link_preview")),
        )

    def row(self) -> dict[str, Any]:
        """The ``messages`` row of this message."""
        out = dict(zip(MESSAGE_COLUMNS, _message_columns(self), strict=True))
        out["mentions"] = _plain(self.mentions) if self.mentions else []
        out["link_preview"] = _plain(self.link_preview) if self.link_preview else None
        return out


def _mentions_in(value: Any) -> list[Mention]:
    return msgspec.convert(value, list[Mention]) if value else []


def _preview_in(value: Any) -> LinkPreview | None:
    return msgspec.convert(value, LinkPreview) if value else None


MESSAGE_COLUMNS = (
    "id",
    "conversation_id",
    "seq",
    "sender_id",
    "content",
    "metadata",
    "attachment_ids",
    "reply_to",
    "client_msg_id",
    "created_at",
    "edited_at",
    "deleted",
    "hidden",
    "version",
    "stream_seq",
    "message_type",
    "mentions",
    "parent_id",
    "reply_count",
    "last_reply_id",
    "last_reply_at",
    "thread_participants",
    "pinned_at",
    "pinned_by",
    "link_preview",
)
_message_columns = operator.attrgetter(*MESSAGE_COLUMNS)
# What can change in a message's row after its post (the read model's upserts write these).
MESSAGE_CHANGES = (
    "content",
    "edited_at",
    "deleted",
    "hidden",
    "version",
    *(c for c in MESSAGE_COLUMNS[MESSAGE_COLUMNS.index("mentions") :] if c != "parent_id"),
)


def derived_type(
    sender_id: str | None, attachment_ids: Sequence[str], attachments: Sequence[Attachment]
) -> str:
    """A message's type when its post does not say: system without a sender, image when
    every attachment is an image, file with any, else text."""
    if sender_id is None:
        return "system"
    if attachments and all(a.content_type.startswith("image/") for a in attachments):
        return "image"
    return "file" if attachment_ids else "text"


class ParticipantView:
    """One (current or past) participant. ``joined_seq`` orders the participant list."""

    __slots__ = ("active", "joined_seq", "last_read_seq", "seq", "user_id")

    def __init__(
        self, user_id: str, *, active: bool, last_read_seq: int, joined_seq: int, seq: int
    ) -> None:
        self.user_id = user_id
        self.active = active
        self.last_read_seq = last_read_seq
        self.joined_seq = joined_seq
        self.seq = seq


class ConversationView:
    """A conversation as it is now; ``messages`` and ``participants`` may be partial."""

    __slots__ = (
        "created_at",
        "created_by",
        "frozen",
        "id",
        "kind",
        "last_activity_at",
        "last_message_id",
        "last_seq",
        "messages",
        "metadata",
        "participants",
        "pin_policy",
        "stream_seq",
        "thread_reads",
        "title",
        "workspace_id",
    )

    def __init__(self, conversation_id: str = "", workspace_id: str = "") -> None:
        self.id = conversation_id
        self.workspace_id = workspace_id
        self.kind = ""
        self.title: str | None = None
        self.metadata: dict[str, Any] = {}
        self.created_by: str | None = None
        self.created_at: datetime | None = None
        self.frozen = False  # read-only for its users (``conversation.frozen``)
        self.last_seq = 0  # the conversation's seq of its last folded event
        self.stream_seq = 0  # the stream sequence of its last folded event
        self.last_message_id: str | None = None
        self.last_activity_at: datetime | None = None
        self.participants: dict[str, ParticipantView] = {}
        self.messages: dict[str, MessageView] = {}
        self.pin_policy = "participants"
        # (parent id, user id) -> the seq of the last reply read in that thread
        self.thread_reads: dict[tuple[str, str], int] = {}

    @property
    def exists(self) -> bool:
        return self.created_at is not None

    def is_member(self, user_id: str) -> bool:
        found = self.participants.get(user_id)
        return found is not None and found.active

    def members(self) -> list[str]:
        """The active participants, in the order they (last) joined."""
        active = [p for p in self.participants.values() if p.active]
        return [p.user_id for p in sorted(active, key=lambda p: p.joined_seq)]

    def participant(self, user_id: str, seq: int) -> ParticipantView:
        """The participant ``user_id``, made (active, nothing read) if the view has none."""
        found = self.participants.get(user_id)
        if found is None:
            found = self.participants[user_id] = ParticipantView(
                user_id, active=True, last_read_seq=0, joined_seq=seq, seq=seq
            )
        return found


# -- the timeline --------------------------------------------------------------------------


class Entry(NamedTuple):
    """One numbered event of a conversation's real-time timeline, by reference.

    ``data`` is what the entry needs to render, never content: ``{"id"}`` of the
    message for ``message.created``/``message.updated``; the whole (unchanging)
    payload for the small events; the creators' ``participants`` for
    ``conversation.created``. It is also what messaging stores in its ``events``
    table, so a stored entry renders the same way.
    """

    seq: int
    stream_seq: int
    name: str
    at: datetime
    data: dict[str, Any]

    @property
    def message_id(self) -> str | None:
        """The message a ``message.created`` / ``message.updated`` entry shows."""
        if self.name in MESSAGE_OBJECT_EVENTS:
            found = self.data.get("id")
            return found if isinstance(found, str) else None
        return None


MESSAGE_OBJECT_EVENTS = frozenset({realtime.MESSAGE_CREATED, realtime.MESSAGE_UPDATED})


def _deletes(event: ConversationEvent) -> bool:
    return isinstance(event, MessageDeleted) or (
        isinstance(event, MessageModerated) and event.action == "delete"
    )


def evolve(view: ConversationView, event: ConversationEvent, stream_seq: int) -> Entry | None:
    """Fold one stored event into ``view``; the timeline entry it makes, if any.

    ``message.reported`` (``seq`` 0, the tenant's moderation record) changes no view.
    """
    if isinstance(event, ConversationCreated):
        if view.exists:
            return None
        return _created(view, event, stream_seq)
    seq = event.seq
    if not seq or seq <= view.last_seq or not view.exists:
        return None  # a report; folded already; or a conversation never created
    view.last_seq = seq
    view.stream_seq = stream_seq
    at = event.at
    match event:
        case MessagePosted():
            message = MessageView.posted(event, stream_seq)
            view.messages[message.id] = message
            if event.parent_id is None:
                view.last_message_id = message.id
            else:
                _replied(view.messages.get(event.parent_id), message, seq)
            view.last_activity_at = at
            return Entry(seq, stream_seq, realtime.MESSAGE_CREATED, at, {"id": message.id})
        case MessageEdited():
            found = view.messages.get(event.message_id)
            if found is not None:
                found.content = event.content
                found.mentions = list(event.mentions)
                found.link_preview = None  # the old text's; media fetches the new one's
                found.edited_at = at
                found.version = seq
            return Entry(seq, stream_seq, realtime.MESSAGE_UPDATED, at, {"id": event.message_id})
        case MessagePinned() | MessageUnpinned() | MessagePreviewed():
            found = view.messages.get(event.message_id)
            if found is not None:
                if isinstance(event, MessagePreviewed):
                    # None for an erased author's message (its text is blank).
                    found.link_preview = event.preview if found.content else None
                elif isinstance(event, MessagePinned):
                    found.pinned_at, found.pinned_by = at, event.by
                else:
                    found.pinned_at = found.pinned_by = None
                found.version = seq
            return Entry(seq, stream_seq, realtime.MESSAGE_UPDATED, at, {"id": event.message_id})
        case MessageDeleted() | MessageModerated():
            found = view.messages.get(event.message_id)
            if found is not None:
                if _deletes(event):
                    found.deleted = True
                    found.pinned_at = found.pinned_by = None  # a deleted message is unpinned
                else:
                    found.hidden = event.action == "hide"  # type: ignore[union-attr]
                found.version = seq
            if _deletes(event):
                message_seq = found.seq if found is not None else 0
                data = realtime.deleted_payload(event.message_id, message_seq, seq)
                return Entry(seq, stream_seq, realtime.MESSAGE_DELETED, at, data)
            return Entry(seq, stream_seq, realtime.MESSAGE_UPDATED, at, {"id": event.message_id})
        case ReactionAdded() | ReactionRemoved():
            added = isinstance(event, ReactionAdded)
            found = view.messages.get(event.message_id)
            if found is not None:
                key = (event.emoji, event.user_id)
                if added:
                    found.reactions.setdefault(key, seq)
                else:
                    found.reactions.pop(key, None)
            name = realtime.REACTION_ADDED if added else realtime.REACTION_REMOVED
            data = realtime.reaction_payload(event.message_id, event.emoji, event.user_id, seq)
            return Entry(seq, stream_seq, name, at, data)
        case ReadMarked():
            data = realtime.read_payload(event.user_id, event.up_to, at, seq)
            if event.parent_id is not None:
                key = (event.parent_id, event.user_id)
                view.thread_reads[key] = max(view.thread_reads.get(key, 0), event.up_to)
                data["parent_id"] = event.parent_id
                return Entry(seq, stream_seq, realtime.MESSAGE_READ, at, data)
            part = view.participant(event.user_id, seq)
            part.last_read_seq = max(part.last_read_seq, event.up_to)
            part.seq = seq
            return Entry(seq, stream_seq, realtime.MESSAGE_READ, at, data)
        case ConversationUpdated():
            view.title = event.title
            view.metadata = dict(event.metadata)
            view.pin_policy = event.pin_policy
            data = {"id": view.id}
            return Entry(seq, stream_seq, realtime.CONVERSATION_UPDATED, at, data)
        case ConversationFrozen() | ConversationUnfrozen():
            # Shown as a conversation.updated: its ``frozen`` tells clients to stop posting.
            view.frozen = isinstance(event, ConversationFrozen)
            data = {"id": view.id}
            return Entry(seq, stream_seq, realtime.CONVERSATION_UPDATED, at, data)
        case ParticipantAdded():
            part = view.participant(event.user_id, seq)
            if not part.active:
                part.joined_seq = seq  # a returning participant is listed last
            part.active = True
            part.seq = seq
            data = realtime.participant_payload(event.user_id, seq)
            return Entry(seq, stream_seq, realtime.PARTICIPANT_ADDED, at, data)
        case ParticipantRemoved():
            part = view.participant(event.user_id, seq)
            part.active = False
            part.seq = seq
            data = realtime.participant_payload(event.user_id, seq)
            return Entry(seq, stream_seq, realtime.PARTICIPANT_REMOVED, at, data)
        case ParticipantMerged():
            return _merged(view, event, seq, stream_seq)
    return None


def _merged(view: ConversationView, event: ParticipantMerged, seq: int, stream_seq: int) -> Entry:
    """A visitor merged into a known user: the user takes over their membership, read mark
    and messages; to everyone else it reads as the visitor leaving (``merged_into``)."""
    known = view.participants.get(event.into_id)
    was_member = known is not None and known.active
    gone = view.participant(event.user_id, seq)
    kept = view.participant(event.into_id, seq)
    if not was_member:
        kept.joined_seq = gone.joined_seq  # in the visitor's place
    kept.active = True
    kept.last_read_seq = max(kept.last_read_seq, gone.last_read_seq)
    kept.seq = seq
    gone.active = False
    gone.seq = seq
    for message in view.messages.values():
        if message.sender_id == event.user_id:
            message.sender_id = event.into_id
    data = {**realtime.participant_payload(event.user_id, seq), "merged_into": event.into_id}
    return Entry(seq, stream_seq, realtime.PARTICIPANT_REMOVED, event.at, data)


def _replied(parent: MessageView | None, reply: MessageView, seq: int) -> None:
    """A reply folded into its parent's thread summary (if the view holds the parent)."""
    if parent is None:
        return
    parent.reply_count += 1
    parent.last_reply_id = reply.id
    parent.last_reply_at = reply.created_at
    if reply.sender_id is not None and reply.sender_id not in parent.thread_participants:
        parent.thread_participants = [*parent.thread_participants, reply.sender_id]
    parent.version = seq


def _created(view: ConversationView, event: ConversationCreated, stream_seq: int) -> Entry:
    view.id = event.conversation_id
    view.kind = event.kind
    view.pin_policy = event.pin_policy
    view.title = event.title
    view.metadata = dict(event.metadata)
    view.created_by = event.created_by
    view.created_at = event.at
    view.last_seq = event.seq
    view.stream_seq = stream_seq
    view.last_activity_at = event.at
    for user_id in event.participant_ids:
        view.participant(user_id, event.seq)
    data = {"participants": [{"id": uid} for uid in event.participant_ids]}
    return Entry(event.seq, stream_seq, realtime.CONVERSATION_CREATED, event.at, data)


# What erasure leaves of a user's messages (as message fields): no content, no metadata,
# no mentions, no link preview.
ERASED_MESSAGE: dict[str, Any] = {
    "content": "",
    "metadata": {},
    "mentions": [],
    "link_preview": None,
}


def in_force(restrictions: Mapping[str, datetime | None], user_id: str, now: datetime) -> bool:
    """Whether ``user_id`` is restricted (muted, banned) at ``now``: ``restrictions`` maps
    user ids to when theirs ends (None: until lifted); a timed one lifts itself when its
    time passes. The write side and every fanout node decide by this one rule."""
    if user_id not in restrictions:
        return False
    until = restrictions[user_id]
    return until is None or until > now


def blank(message: MessageView) -> None:
    """What erasure leaves of a message (``ERASED_MESSAGE``)."""
    message.content = ERASED_MESSAGE["content"]
    message.metadata = dict(ERASED_MESSAGE["metadata"])
    message.mentions = []
    message.link_preview = None


def erase(view: ConversationView, user_id: str) -> list[str]:
    """Blank ``user_id``'s messages in ``view``; the ids blanked."""
    blanked = []
    for message in view.messages.values():
        if message.sender_id == user_id:
            blank(message)
            blanked.append(message.id)
    return blanked


# -- rendering -------------------------------------------------------------------------------


def reactions(pairs: Iterable[tuple[str, str]], viewer: str | None) -> dict[str, ReactionSummary]:
    """``{emoji: {count, me}}`` from (emoji, user) pairs in the order they were added;
    emojis in order of first use."""
    counts: dict[str, int] = {}
    mine: set[str] = set()
    for emoji, user_id in pairs:
        counts[emoji] = counts.get(emoji, 0) + 1
        if user_id == viewer:
            mine.add(emoji)
    return {emoji: ReactionSummary(count=n, me=emoji in mine) for emoji, n in counts.items()}


def shown_attachment_ids(message: MessageView, moderator: bool = False) -> list[str]:
    """The attachments a message shows (its link preview's image too): none once it is
    deleted or (but to moderators) hidden."""
    gone = message.deleted if moderator else message.gone
    if gone:
        return []
    preview = message.link_preview
    image = [preview.image.id] if preview is not None and preview.image is not None else []
    return [*message.attachment_ids, *image]


def shown_preview(
    message: MessageView, gone: bool, attachments: Mapping[str, Attachment] | None
) -> LinkPreview | None:
    """A message's link preview; its image with fresh URLs when ``attachments`` has them
    (left out if media no longer has it), as stored otherwise."""
    preview = message.link_preview
    if gone or preview is None or preview.image is None or attachments is None:
        return None if gone else preview
    return msgspec.structs.replace(preview, image=attachments.get(preview.image.id))


def message_object(
    message: MessageView,
    viewer: str | None,
    author: Sender | None,
    attachments: Mapping[str, Attachment] | None = None,
    *,
    moderator: bool = False,
) -> Message:
    """The public message object. ``attachments``: objects with fresh URLs by id (an id
    missing there, deleted by media, is left out); None: what media stored for the
    message, without URLs. ``moderator``: the workspace's moderators' view, a
    ``ModeratedMessage`` (a hidden message keeps its content, flagged ``hidden``)."""
    gone = message.deleted if moderator else message.gone
    if gone:
        shown: list[Attachment] = []
    elif attachments is not None:
        shown = [attachments[i] for i in message.attachment_ids if i in attachments]
    else:
        shown = list(message.attachments)
    made = (ModeratedMessage if moderator else Message)(
        id=message.id,
        conversation_id=message.conversation_id,
        seq=message.seq,
        sender=author,
        content="" if gone else message.content,
        attachments=shown,
        reply_to=message.reply_to,
        metadata=dict(message.metadata),
        reactions=reactions(message.reactions, viewer),
        created_at=message.created_at,
        edited_at=message.edited_at,
        deleted=gone,
        client_msg_id=message.client_msg_id,
        type=message.message_type,
        mentions=[] if gone or not message.content else list(message.mentions),
        parent_id=message.parent_id,
        thread=thread_summary(message),
        pinned_at=message.pinned_at,
        pinned_by=message.pinned_by,
        link_preview=shown_preview(message, gone, attachments),
    )
    if moderator and message.hidden and not message.deleted:
        made = msgspec.structs.replace(made, hidden=True)
    return made


_plain = msgspec.to_builtins


def thread_summary(message: MessageView) -> ThreadSummary | None:
    """A top-level message's thread, once it has replies: its author first among those
    who took part."""
    if not message.reply_count:
        return None
    author = message.sender_id
    people = [p for p in message.thread_participants if p != author]
    if author is not None:
        people.insert(0, author)
    return ThreadSummary(
        reply_count=message.reply_count,
        last_reply_id=message.last_reply_id,
        last_reply_at=message.last_reply_at,
        participants=people,
    )


def payload(
    entry: Entry,
    message: MessageView | None,
    author: Sender | None,
    attachments: Mapping[str, Attachment] | None = None,
    *,
    conversation: ConversationView | None = None,
) -> dict[str, Any] | None:
    """The data of ``entry``'s real-time event, with ``message`` (the one the entry names,
    as it is now) and its author's current profile. None: a message entry whose message
    is unknown here (it cannot be rendered).

    ``conversation.updated`` shows ``conversation`` (its title and metadata now); None
    without it. ``conversation.created`` is rendered by ``created_payload`` (it goes to
    user channels and needs profiles); here it is its stored data.
    """
    if entry.name == realtime.CONVERSATION_UPDATED:
        if conversation is None:
            return None
        return updated_payload(conversation, entry.seq)
    if entry.name in MESSAGE_OBJECT_EVENTS:
        if message is None:
            return None
        data: dict[str, Any] = _plain(message_object(message, None, author, attachments))
        data["event_seq"] = entry.seq
        return data
    return {**entry.data, "event_seq": entry.seq}


def updated_payload(view: ConversationView, event_seq: int) -> dict[str, Any]:
    """``conversation.updated``: the conversation's title, metadata and whether it is
    frozen, as they are now."""
    return {
        "id": view.id,
        "title": view.title,
        "metadata": dict(view.metadata),
        "frozen": view.frozen,
        "event_seq": event_seq,
    }


def created_payload(
    view: ConversationView, entry: Entry, profiles: Mapping[str, realtime.ProfileLike]
) -> dict[str, Any]:
    """``conversation.created`` on each creator's ``private-user.{id}``: the conversation
    as it was created, people as they are shown now."""
    ids = [p["id"] for p in entry.data.get("participants", ()) if isinstance(p, dict)]
    assert view.created_at is not None
    conversation = Conversation(
        id=view.id,
        type=view.kind,  # type: ignore[arg-type]
        title=view.title,
        metadata=dict(view.metadata),
        participants=[realtime.participant(u, 0, profiles.get(u)) for u in ids],
        last_message=None,
        unread_count=0,
        last_seq=entry.seq,
        created_at=view.created_at,
        last_activity_at=view.created_at,
    )
    data: dict[str, Any] = _plain(conversation)
    data["event_seq"] = entry.seq
    return data

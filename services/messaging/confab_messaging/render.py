"""Read-model rows turned into the public objects, through the one fold's renderers.

One place decides what a message looks like, whoever asks: the reply of a
write, a page of history, a conversation's last message, and every real-time
payload (``confab.conversation``, shared with the fanout). Hidden or deleted
messages are tombstones everywhere: content ``""``, no attachments,
``deleted: true``. People are shown by their current profile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confab import realtime
from confab.contracts.events.messaging import Attachment, ConversationCreated, MessagePosted
from confab.contracts.events.moderation import MessageShadowed, MessageShadowEdited
from confab.contracts.messaging import Conversation, Message, Participant, Sender
from confab.conversation import MessageView, message_object
from confab_messaging.store import Row, UserRow

Users = Mapping[str, UserRow]
Attachments = Mapping[str, Attachment]  # by id, with fresh URLs (from media)


# -- people --------------------------------------------------------------------------------


def profile(user_id: str, users: Users) -> tuple[str, str | None]:
    """(name, avatar_url) as shown to others: erased users are "Deleted user"."""
    return realtime.shown(users.get(user_id))


def sender(sender_id: str | None, users: Users) -> Sender | None:
    return realtime.sender(sender_id, users.get(sender_id) if sender_id is not None else None)


def participant(user_id: str, last_read_seq: int, users: Users) -> Participant:
    return realtime.participant(user_id, last_read_seq, users.get(user_id))


# -- messages ------------------------------------------------------------------------------


def message_for(
    row: Row,
    pairs: Iterable[tuple[str, str]],
    viewer: str | None,
    users: Users,
    attachments: Attachments | None = None,
    *,
    moderator: bool = False,
) -> Message:
    """A ``messages`` row as the public object (``moderator``: as the workspace's
    moderators see it); ``attachments`` with fresh URLs by id."""
    view = MessageView.from_row(row, pairs)
    author = sender(row["sender_id"], users)
    return message_object(view, viewer, author, attachments or {}, moderator=moderator)


def posted_message(
    event: MessagePosted, author: Sender | None, attachments: Attachments | None = None
) -> Message:
    """The reply to a post, straight from the decided event (no read-model round trip)."""
    return message_object(MessageView.posted(event), None, author, attachments or {})


def shadowed_view(
    event: MessageShadowed,
    stream_seq: int = 0,
    *,
    edit: MessageShadowEdited | None = None,
    deleted: bool = False,
) -> MessageView:
    """A shadowed post as a message: placed after the message ``after_seq`` (its ``seq``),
    with its last edit (``edit``) and its deletion, if any."""
    view = MessageView(
        id=event.message_id,
        conversation_id=event.conversation_id,
        seq=event.after_seq,
        sender_id=event.sender_id,
        content=event.content,
        metadata=dict(event.metadata),
        attachment_ids=[],
        reply_to=event.reply_to,
        client_msg_id=event.client_msg_id,
        created_at=event.at,
        version=event.after_seq,
        stream_seq=stream_seq,
    )
    if edit is not None:
        view.content, view.edited_at = edit.content, edit.at
    view.deleted = deleted
    return view


def shadowed_message(
    event: MessageShadowed,
    author: Sender | None,
    *,
    edit: MessageShadowEdited | None = None,
    deleted: bool = False,
) -> Message:
    """The reply to a shadowed post (or its edit): the message as its sender sees it."""
    view = shadowed_view(event, edit=edit, deleted=deleted)
    return message_object(view, None, author, {})


# -- conversations -------------------------------------------------------------------------


def conversation(
    row: Row,
    members: Iterable[tuple[str, int]],
    users: Users,
    *,
    last_message: Message | None,
    unread_count: int,
) -> Conversation:
    return Conversation(
        id=row["id"],
        type=row["type"],
        title=row["title"],
        metadata=dict(row["metadata"] or {}),
        participants=[participant(uid, read, users) for uid, read in members],
        last_message=last_message,
        unread_count=unread_count,
        last_seq=row["last_seq"],
        created_at=row["created_at"],
        last_activity_at=row["last_activity_at"],
        frozen=bool(row.get("frozen")),
    )


def created_conversation(event: ConversationCreated, users: Users) -> Conversation:
    return Conversation(
        id=event.conversation_id,
        type=event.kind,
        title=event.title,
        metadata=dict(event.metadata),
        participants=[participant(uid, 0, users) for uid in event.participant_ids],
        last_message=None,
        unread_count=0,
        last_seq=event.seq,
        created_at=event.at,
        last_activity_at=event.at,
    )

"""Read-model rows and events turned into the public objects and the real-time payloads.

One place decides what a message looks like, whoever asks: the reply of a
write, a page of history, a conversation's last message, and the payload of a
real-time event. Hidden or deleted messages are tombstones everywhere: content
``""``, no attachments, ``deleted: true``.

Payloads stored in the ``events`` table name users by id only (``sender:
{"id": …}``, participants without profile): profiles change and users are
erased, and a replay must give the same rows whenever it runs. ``enrich``
fills the current profile in when the payload is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from confab.contracts.messaging import (
    Attachment,
    Conversation,
    ConversationCreated,
    Message,
    MessagePosted,
    Participant,
    Sender,
)
from confab.realtime import (
    CONVERSATION_CREATED,
    ERASED_NAME,
    MESSAGE_CREATED,
    MESSAGE_UPDATED,
    UNKNOWN_NAME,
    attachment_ids,
    message,
    plain,
    posted_row,
)
from confab_messaging.store import Row, UserRow

# Real-time event names (api.md, "Real-time events").

Users = Mapping[str, UserRow]
Attachments = Mapping[str, Attachment]  # by id, with fresh URLs (from media)


# -- people --------------------------------------------------------------------------------


def profile(user_id: str, users: Users) -> tuple[str, str | None]:
    """(name, avatar_url) as shown to others: erased users are "Deleted user"."""
    row = users.get(user_id)
    if row is None:
        return UNKNOWN_NAME, None
    if row.erased:
        return ERASED_NAME, None
    return row.name, row.avatar_url


def sender(sender_id: str | None, users: Users) -> Sender | None:
    if sender_id is None:
        return None
    name, avatar = profile(sender_id, users)
    return Sender(id=sender_id, name=name, avatar_url=avatar)


def participant(user_id: str, last_read_seq: int, users: Users) -> Participant:
    name, avatar = profile(user_id, users)
    return Participant(id=user_id, name=name, avatar_url=avatar, last_read_seq=last_read_seq)


# -- messages ------------------------------------------------------------------------------


def message_for(
    row: Row,
    pairs: Iterable[tuple[str, str]],
    viewer: str | None,
    users: Users,
    attachments: Attachments | None = None,
) -> Message:
    return message(row, pairs, viewer, sender(row["sender_id"], users), attachments)


def posted_message(
    event: MessagePosted, author: Sender | None, attachments: Attachments | None = None
) -> Message:
    """The reply to a post, straight from the decided event (no read-model round trip)."""
    return message(posted_row(event, 0), (), None, author, attachments)


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


# -- real-time payloads --------------------------------------------------------------------


def message_payload(row: Row, pairs: Iterable[tuple[str, str]], event_seq: int) -> dict[str, Any]:
    """``message.created`` / ``message.updated``: the message object, reactions' ``me`` false."""
    data: dict[str, Any] = plain(message(row, pairs, None, None))
    data["sender"] = {"id": row["sender_id"]} if row["sender_id"] is not None else None
    # By id, like the sender: URLs expire, so ``enrich`` fills them in when read.
    data["attachments"] = [{"id": i} for i in attachment_ids(row)]
    data["event_seq"] = event_seq
    return data


def conversation_payload(event: ConversationCreated) -> dict[str, Any]:
    data: dict[str, Any] = plain(created_conversation(event, {}))
    data.pop("stream_seq", None)
    data.pop("created", None)
    data["participants"] = [{"id": uid, "last_read_seq": 0} for uid in event.participant_ids]
    data["event_seq"] = event.seq
    return data


def payload_user_ids(name: str, data: Mapping[str, Any]) -> set[str]:
    """The users whose profile ``enrich`` will fill into a stored payload."""
    if name in (MESSAGE_CREATED, MESSAGE_UPDATED):
        found = data.get("sender")
        return {found["id"]} if isinstance(found, dict) and "id" in found else set()
    if name == CONVERSATION_CREATED:
        return {p["id"] for p in data.get("participants", []) if isinstance(p, dict)}
    return set()


def payload_attachment_ids(name: str, data: Mapping[str, Any]) -> list[str]:
    """The attachments whose objects ``enrich`` will fill into a stored payload."""
    if name not in (MESSAGE_CREATED, MESSAGE_UPDATED):
        return []
    return [a["id"] for a in data.get("attachments") or () if isinstance(a, dict) and "id" in a]


def enrich(
    name: str, data: Mapping[str, Any], users: Users, attachments: Attachments | None = None
) -> dict[str, Any]:
    """A stored payload with the current profiles of the users it names, and the
    attachment objects (with fresh URLs) of the attachments it names."""
    out = dict(data)
    if name in (MESSAGE_CREATED, MESSAGE_UPDATED):
        found = out.get("sender")
        if isinstance(found, dict) and "id" in found:
            out["sender"] = plain(sender(found["id"], users))
        ids = payload_attachment_ids(name, out)
        if ids or "attachments" in out:
            have = attachments or {}
            out["attachments"] = [plain(have[i]) for i in ids if i in have]
    elif name == CONVERSATION_CREATED:
        out["participants"] = [
            plain(participant(p["id"], int(p.get("last_read_seq", 0)), users))
            for p in out.get("participants", [])
        ]
    return out

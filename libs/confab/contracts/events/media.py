"""Media's stored events: an attachment stored, attached to one message, deleted.

One subject per attachment in ``MEDIA``: ``media.evt.<workspace>.<attachment>``.
An attachment exists once ``attachment.stored`` is in the log (its objects are
in the bucket by then) and stops existing at ``attachment.deleted``. It is
*attached* at ``attachment.attached``, which media appends when it sees the
``message.posted`` that names it (one message, once). An upload nobody
attached is deleted with reason ``upload_expired``, a decision that loses to
an ``attachment.attached`` appended meanwhile. An image is served inline only
if media re-encoded it from its pixels (``AttachmentStored.reencoded``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from confab.contracts.events.base import Event


def subject(workspace_id: str, attachment_id: str) -> str:
    return f"media.evt.{workspace_id}.{attachment_id}"


# ``user_erased``: its uploader was erased (their uploads and their messages' link preview
# images go with their personal data).
DeleteReason = Literal["message_deleted", "ingest_abandoned", "upload_expired", "user_erased"]


class AttachmentStored(Event, kw_only=True, frozen=True):
    type = "attachment.stored"
    workspace_id: str
    attachment_id: str
    conversation_id: str
    uploader_id: str
    filename: str  # sanitised display name
    content_type: str  # from the content, never the client's claim
    size: int  # of the object served
    width: int | None = None
    height: int | None = None
    key: str  # workspaces/<workspace>/attachments/<id>.<ext>
    thumbnail_key: str | None = None
    thumbnail_content_type: str | None = None
    sha256: str  # hex, of the object served
    at: datetime
    # An image media encoded afresh from its pixels (nothing else of the upload's bytes
    # survives): the only objects served inline. Absent (False) in events of older builds.
    reencoded: bool = False


class AttachmentAttached(Event, kw_only=True, frozen=True):
    """A message of the attachment's conversation, sent by its uploader, names it."""

    type = "attachment.attached"
    workspace_id: str
    attachment_id: str
    conversation_id: str
    message_id: str
    at: datetime


class AttachmentDeleted(Event, kw_only=True, frozen=True):
    type = "attachment.deleted"
    workspace_id: str
    attachment_id: str
    reason: DeleteReason
    message_id: str | None = None
    at: datetime

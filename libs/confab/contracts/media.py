"""Media's requests and replies: files widgets attach to messages, checked by content and
kept in S3-compatible storage.

What media stores (an attachment's subject in ``MEDIA`` and its events) is in
``confab.contracts.events.media``; what is here may change with the API.

Until it is attached an upload is its uploader's alone: ``GetAttachments``
with a ``reader_id`` leaves it out for anyone else. An upload not attached
within media's TTL (``CONFAB_MEDIA_UPLOAD_TTL_SECONDS``) can no longer be
attached, and is purged a grace period later: ``attachment.deleted`` with
reason ``upload_expired`` is appended first (a decision that loses to an
``attachment.attached`` appended meanwhile), then its objects are removed. A
deletion for any other reason removes the objects before appending.

The gateway streams an upload into the JetStream object store ``uploads``
(temporary: ``UPLOAD_TTL_SECONDS``) under the attachment's id, then asks
media to ingest it (``IngestUpload``). Media alone talks to object storage;
others get short-lived presigned URLs from it (``GetAttachments``). An image
is served inline only if media re-encoded it from its pixels
(``AttachmentStored.reencoded``); every other object is served as a download.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

import msgspec

from confab.contracts.base import Ok, Reply, Request
from confab.contracts.events.messaging import Attachment

UPLOADS_BUCKET = "uploads"
UPLOAD_TTL_SECONDS = 3600  # a temporary upload the gateway never handed over goes after this
UPLOAD_CHUNK_BYTES = 128 * 1024
DEFAULT_MAX_BYTES = 25 * 1024 * 1024
FILENAME_MAX = 255

# A display name as the client sent it: no path (no separators, not "." or ".."), no
# control or bidirectional-override characters (those disguise extensions: "gnp.exe"
# shown as "exe.png").
Filename = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=1024,
        pattern=r"^(?!\.{1,2}\Z)[^/\\\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]+\Z",
    ),
]
FILENAME_RULE = "must be a plain file name: no path separators or control characters"


# -- replies ---------------------------------------------------------------------------


class UploadPolicy(Reply, kw_only=True, frozen=True):
    """What a workspace accepts: the gateway enforces ``max_bytes`` while streaming."""

    max_bytes: int
    allowed_types: list[str]


class StoredAttachment(Reply, kw_only=True, frozen=True):
    """An attachment with fresh presigned URLs, and whose it is."""

    attachment: Attachment
    conversation_id: str
    uploader_id: str
    expires_at: datetime  # when its URLs stop working


class AttachmentList(Reply, kw_only=True, frozen=True):
    data: list[StoredAttachment]


# -- commands and queries ------------------------------------------------------------------


class GetUploadPolicy(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "media.q.upload_policy"
    reply: ClassVar[type[msgspec.Struct]] = UploadPolicy
    workspace_id: str


class IngestUpload(Request, kw_only=True, frozen=True):
    """Check, process and store the upload ``uploads/<attachment_id>``, then delete it.

    The temporary upload is deleted whatever the outcome. The caller's deadline
    (``Confab-Deadline``) bounds the ingest: past it, nothing is stored.
    """

    subject: ClassVar[str] = "media.cmd.ingest"
    reply: ClassVar[type[msgspec.Struct]] = StoredAttachment
    workspace_id: str
    conversation_id: str
    uploader_id: str
    attachment_id: str
    filename: str | None = None  # as the client sent it; media sanitises it


class GetAttachments(Request, kw_only=True, frozen=True):
    """Stored attachments of a workspace with fresh URLs; unknown or deleted ids are left out.

    ``conversation_id`` and ``uploader_id``, when given, leave out the
    attachments of another conversation or uploader. ``reader_id``, when given,
    leaves out uploads not attached to a message yet unless ``reader_id``
    uploaded them. With ``uploader_id`` or ``reader_id``, uploads past their
    TTL and still not attached are left out too (they can no longer be attached).
    """

    subject: ClassVar[str] = "media.q.get_attachments"
    reply: ClassVar[type[msgspec.Struct]] = AttachmentList
    workspace_id: str
    attachment_ids: Annotated[list[str], msgspec.Meta(max_length=1000)]
    conversation_id: str | None = None
    uploader_id: str | None = None
    reader_id: str | None = None


class FetchPreview(Request, kw_only=True, frozen=True):
    """Fetch the preview of a message's first link (``url``, found by messaging in the text
    of ``version``: the seq of the post or edit), and attach it to the message by
    messaging's ``AttachPreview``. ``Ok`` once media has taken the job (or declined it: the
    workspace has previews off, or the URL is refused); the fetch happens afterwards. The
    URL travels only in this request: the log keeps the text sealed."""

    subject: ClassVar[str] = "media.cmd.fetch_preview"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    workspace_id: str
    conversation_id: str
    message_id: str
    sender_id: str | None = None
    version: int
    url: Annotated[str, msgspec.Meta(max_length=2048)]

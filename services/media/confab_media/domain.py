"""The media decider and its rules: file types, per-workspace policies, names and keys.

Pure functions, no I/O: what ``content`` found in a file and what the handler
looked up come in as arguments. Each attachment (one subject of ``MEDIA``) is
an aggregate whose life is short: ``attachment.stored`` once, perhaps
``attachment.attached`` once, and perhaps ``attachment.deleted`` once after
them. An attachment is attached only while it exists; an expired upload is
deleted only while it is not attached.

The decider (``confab.decider``): ``decide(command, state) -> Decision`` over
the commands ``StoreAttachment``, ``Attach``, ``Expire`` and ``Delete``, each
a typed value carrying what it needs (``now``, the event an ingest made);
every one of them appends at most one event, and nothing when it would not
change the attachment.
"""

from __future__ import annotations

import fnmatch
import os
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import msgspec

from confab.contracts.events import Event
from confab.contracts.events.media import (
    AttachmentAttached,
    AttachmentDeleted,
    AttachmentStored,
    DeleteReason,
)
from confab.contracts.media import DEFAULT_MAX_BYTES, FILENAME_MAX, FILENAME_RULE, Filename
from confab.decider import NOTHING, Decider, Decision, emit
from confab.errors import Conflict, InvalidRequest

# -- file types ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileType:
    """A type media recognises by content: its MIME type, the extension it is stored
    under, and the extensions a display name of this type may end with."""

    mime: str
    ext: str
    kind: str  # image | document | text | audio | video
    extensions: tuple[str, ...] = ()

    def names_ok(self, extension: str) -> bool:
        return extension.lower() in (self.ext, *self.extensions)


def _types(*types: FileType) -> dict[str, FileType]:
    return {t.mime: t for t in types}


OOXML = "application/vnd.openxmlformats-officedocument"
ODF = "application/vnd.oasis.opendocument"

TYPES: dict[str, FileType] = _types(
    FileType("image/png", "png", "image"),
    FileType("image/jpeg", "jpg", "image", ("jpeg", "jpe", "jfif")),
    FileType("image/gif", "gif", "image"),
    FileType("image/webp", "webp", "image"),
    FileType("application/pdf", "pdf", "document"),
    FileType(
        "text/plain",
        "txt",
        "text",
        ("text", "csv", "tsv", "md", "markdown", "log", "json", "yaml", "yml", "ini", "rst"),
    ),
    FileType(f"{OOXML}.wordprocessingml.document", "docx", "document"),
    FileType(f"{OOXML}.spreadsheetml.sheet", "xlsx", "document"),
    FileType(f"{OOXML}.presentationml.presentation", "pptx", "document"),
    FileType("application/msword", "doc", "document", ("dot",)),
    FileType("application/vnd.ms-excel", "xls", "document"),
    FileType("application/vnd.ms-powerpoint", "ppt", "document", ("pps",)),
    FileType(f"{ODF}.text", "odt", "document"),
    FileType(f"{ODF}.spreadsheet", "ods", "document"),
    FileType(f"{ODF}.presentation", "odp", "document"),
    FileType("application/rtf", "rtf", "document"),
    FileType("audio/mpeg", "mp3", "audio"),
    FileType("audio/mp4", "m4a", "audio", ("aac", "mp4")),
    FileType("audio/aac", "aac", "audio"),
    FileType("audio/ogg", "ogg", "audio", ("oga", "opus")),
    FileType("audio/x-wav", "wav", "audio"),
    FileType("audio/x-flac", "flac", "audio"),
    FileType("video/mp4", "mp4", "video", ("m4v",)),
    FileType("video/x-m4v", "m4v", "video", ("mp4",)),
    FileType("video/quicktime", "mov", "video", ("qt",)),
    FileType("video/webm", "webm", "video"),
    FileType("video/3gpp", "3gp", "video"),
)

# Aliases the sniffer may report for a type above.
ALIASES = {"image/apng": "image/png"}

# Every type media recognises is accepted unless a workspace narrows the list.
DEFAULT_ALLOWED: tuple[str, ...] = tuple(TYPES)

IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}


# -- policies ---------------------------------------------------------------------------------


class PolicyInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A workspace's override as configured (``CONFAB_MEDIA_WORKSPACE_POLICIES``)."""

    max_bytes: int | None = None
    allowed_types: list[str] | None = None
    link_previews: bool | None = None  # None: the deployment's default


@dataclass(frozen=True, slots=True)
class Policy:
    max_bytes: int = DEFAULT_MAX_BYTES
    allowed: tuple[str, ...] = DEFAULT_ALLOWED  # MIME types or patterns such as "image/*"
    link_previews: bool = True  # fetch previews of the first link of messages

    def allows(self, mime: str) -> bool:
        return any(fnmatch.fnmatchcase(mime, pattern) for pattern in self.allowed)


def parse_types(text: str) -> tuple[str, ...]:
    """``"image/*, application/pdf"`` as a tuple; empty: the default list."""
    found = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    return found or DEFAULT_ALLOWED


def parse_policies(text: str, default: Policy) -> dict[str, Policy]:
    """``{"<workspace>": {"max_bytes": …, "allowed_types": [...], "link_previews": …}}``;
    ValueError if malformed."""
    if not text.strip():
        return {}
    try:
        raw = msgspec.json.decode(text, type=dict[str, PolicyInput])
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"not a JSON object of workspace policies: {exc}") from None
    out: dict[str, Policy] = {}
    for workspace_id, given in raw.items():
        if given.max_bytes is not None and given.max_bytes < 1:
            raise ValueError(f"{workspace_id}: max_bytes must be positive")
        out[workspace_id] = Policy(
            max_bytes=given.max_bytes if given.max_bytes is not None else default.max_bytes,
            allowed=(
                tuple(t.lower() for t in given.allowed_types)
                if given.allowed_types is not None
                else default.allowed
            ),
            link_previews=(
                given.link_previews if given.link_previews is not None else default.link_previews
            ),
        )
    return out


def policy_for(workspace_id: str, default: Policy, overrides: Mapping[str, Policy]) -> Policy:
    return overrides.get(workspace_id, default)


# -- names and keys -------------------------------------------------------------------------

# Reserved or troublesome on common file systems: replaced in the name we keep.
_RESERVED = str.maketrans({c: "_" for c in '<>:"|?*'})


def check_filename(raw: str) -> None:
    """InvalidRequest unless ``raw`` is a plain name (no path, no control characters)."""
    try:
        msgspec.convert(raw, Filename)
    except msgspec.ValidationError:
        raise InvalidRequest("The file name is not valid.", {"filename": FILENAME_RULE}) from None


def sanitize_filename(raw: str | None, file_type: FileType) -> str:
    """The display name kept: the client's name, checked, normalised, shortened, and ending
    with an extension that matches the content (``notes.html`` holding text becomes
    ``notes.html.txt``; a missing name becomes ``file.<ext>``)."""
    if raw is None or not raw.strip():
        return f"file.{file_type.ext}"
    check_filename(raw)
    name = unicodedata.normalize("NFC", raw).translate(_RESERVED)
    name = " ".join(name.split()).strip(" .") or "file"
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or not file_type.names_ok(extension):
        name = f"{name}.{file_type.ext}"
    return _shorten(name, FILENAME_MAX)


def _shorten(name: str, max_bytes: int) -> str:
    """At most ``max_bytes`` of UTF-8, keeping the extension."""
    if len(name.encode()) <= max_bytes:
        return name
    stem, ext = os.path.splitext(name)
    room = max_bytes - len(ext.encode())
    cut = stem.encode()[:room].decode("utf-8", "ignore").rstrip(" .") or "file"
    return cut + ext


def object_key(workspace_id: str, attachment_id: str, ext: str) -> str:
    return f"workspaces/{workspace_id}/attachments/{attachment_id}.{ext}"


def thumbnail_key(workspace_id: str, attachment_id: str, ext: str) -> str:
    return f"workspaces/{workspace_id}/attachments/{attachment_id}.thumb.{ext}"


def attachment_prefix(workspace_id: str, attachment_id: str) -> str:
    """Every object of one attachment starts with this (and no other attachment's does)."""
    return f"workspaces/{workspace_id}/attachments/{attachment_id}."


def served_inline(content_type: str, reencoded: bool) -> bool:
    """Only images media encoded afresh are shown in the page; everything else is a
    download (``Content-Disposition: attachment``), whatever its type."""
    return reencoded and content_type in IMAGE_FORMATS


def served_type(content_type: str) -> str:
    """The ``Content-Type`` an object is served with (text is always UTF-8, checked)."""
    return content_type + ("; charset=utf-8" if content_type == "text/plain" else "")


def content_disposition(filename: str, inline: bool) -> str:
    """RFC 6266: an ASCII fallback and the exact name as RFC 5987 UTF-8."""
    fallback = (
        (unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode() or "file")
        .replace('"', "_")
        .replace("\\", "_")
    )
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


# -- the decider ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttachmentState:
    stored: AttachmentStored | None = None
    attached: AttachmentAttached | None = None
    deleted: AttachmentDeleted | None = None

    @property
    def exists(self) -> bool:
        return self.stored is not None and self.deleted is None


class StoreAttachment(msgspec.Struct, kw_only=True, frozen=True):
    """Record what an ingest stored (the event, made by the handler from the file)."""

    stored: AttachmentStored


class Attach(msgspec.Struct, kw_only=True, frozen=True):
    """A posted message claims the attachment (messaging checked it; the log decides once)."""

    conversation_id: str
    sender_id: str | None
    message_id: str
    now: datetime


class Expire(msgspec.Struct, kw_only=True, frozen=True):
    """Delete an upload nobody attached within ``ttl``."""

    now: datetime
    ttl: timedelta


class Delete(msgspec.Struct, kw_only=True, frozen=True):
    workspace_id: str
    attachment_id: str
    reason: DeleteReason
    message_id: str | None
    now: datetime


Command = StoreAttachment | Attach | Expire | Delete


def initial() -> AttachmentState:
    return AttachmentState()


def evolve(state: AttachmentState, event: Event) -> AttachmentState:
    if isinstance(event, AttachmentStored) and state.stored is None:
        return replace(state, stored=event)
    if isinstance(event, AttachmentAttached) and state.attached is None:
        return replace(state, attached=event)
    if isinstance(event, AttachmentDeleted) and state.deleted is None:
        return replace(state, deleted=event)
    return state


def decide(command: Command, state: AttachmentState) -> Decision[None]:
    """What ``command`` does to the attachment in ``state``."""
    match command:
        case StoreAttachment():
            # Store once: nothing if this attachment was stored already (a retried ingest).
            if state.deleted is not None:
                raise Conflict("This attachment was deleted.")
            return NOTHING if state.stored is not None else emit(command.stored)
        case Attach():
            return _attach(command, state)
        case Expire():
            # Nothing if it is attached (even a moment ago), deleted, unknown, or not that old.
            if not expired(state, now=command.now, ttl=command.ttl):
                return NOTHING
            assert state.stored is not None
            return emit(
                AttachmentDeleted(
                    workspace_id=state.stored.workspace_id,
                    attachment_id=state.stored.attachment_id,
                    reason="upload_expired",
                    at=command.now,
                )
            )
        case Delete():
            # Delete once: nothing if it was never stored or is deleted already.
            if state.stored is None or state.deleted is not None:
                return NOTHING
            return emit(
                AttachmentDeleted(
                    workspace_id=command.workspace_id,
                    attachment_id=command.attachment_id,
                    reason=command.reason,
                    message_id=command.message_id,
                    at=command.now,
                )
            )
    raise TypeError(f"not an attachment command: {type(command).__name__}")


DECIDER: Decider[Command, AttachmentState] = Decider(initial=initial, evolve=evolve, decide=decide)


def _attach(command: Attach, state: AttachmentState) -> Decision[None]:
    """Attach once, to a message of its conversation by its uploader; nothing otherwise
    (unknown, deleted, attached already, or not this message's to claim)."""
    stored = state.stored
    if stored is None or state.deleted is not None or state.attached is not None:
        return NOTHING
    if stored.conversation_id != command.conversation_id or stored.uploader_id != command.sender_id:
        return NOTHING
    return emit(
        AttachmentAttached(
            workspace_id=stored.workspace_id,
            attachment_id=stored.attachment_id,
            conversation_id=command.conversation_id,
            message_id=command.message_id,
            at=command.now,
        )
    )


def expired(state: AttachmentState, *, now: datetime, ttl: timedelta) -> bool:
    """An upload that exists, was never attached, and was stored longer than ``ttl`` ago."""
    stored = state.stored
    return (
        stored is not None
        and state.deleted is None
        and state.attached is None
        and stored.at + ttl < now
    )


def deletable(ids: Iterable[Any]) -> list[str]:
    """Attachment ids named by a message event, each once, in order."""
    return list(dict.fromkeys(i for i in ids if isinstance(i, str) and i))

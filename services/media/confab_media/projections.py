"""What media follows: its own events into the read model, and messages.

``AttachmentsProjection`` keeps ``media.attachments`` from ``MEDIA``.

``MessageLinks`` follows ``CONVERSATIONS`` through the same runner (so one
process at a time, a checkpoint, and redelivery after a crash): a
``message.posted`` names the attachments it claims, and each is attached
(``attachment.attached`` appended); a ``message.deleted``, or a
``message.moderated`` that deletes, names the message's attachments, and each
is deleted (objects removed, then ``attachment.deleted`` appended). Every step
is idempotent, so a batch repeated after a crash changes nothing the first run
did. Its tables hold only the checkpoint. Its name is new with the attached
events: an older deployment's media replays ``CONVERSATIONS`` once from the
start under it, attaching what older builds never recorded, and no upload
expires before its conversation has been replayed (see ``Commands.purge``).

``ErasedFiles`` follows ``IDENTITY``'s user events for ``user.erased``: every attachment
the erased user uploaded (their files, and the link preview images media stored for
their messages) is deleted like a deleted message's (objects removed, then
``attachment.deleted`` with reason ``user_erased``). Asynchronous, as deleting a
message's attachments is: a second or so after the erasure, and after a restart from
its checkpoint; its first run replays every erasure so far.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from confab.bus import CONVERSATIONS, IDENTITY, MEDIA
from confab.contracts.events.identity import UserErased
from confab.contracts.events.media import AttachmentAttached, AttachmentDeleted, AttachmentStored
from confab.contracts.events.messaging import MessageDeleted, MessageModerated, MessagePosted
from confab.events import Envelope
from confab.projection import Projection
from confab_media.domain import deletable
from confab_media.store import SCHEMA, define_tables

# (event subject, attachment id, message id, correlation) -> done
DeleteAttachment = Callable[[str, str, str, str], Awaitable[None]]
# (event subject, the message posted, correlation) -> done
AttachToMessage = Callable[[str, MessagePosted, str], Awaitable[None]]
# (workspace id, user id, correlation) -> done
EraseFiles = Callable[[str, str, str], Awaitable[None]]
USER_SUBJECTS = ("identity.evt.*.user.*",)


class AttachmentsProjection(Projection):
    stream = MEDIA.name
    subjects = MEDIA.subjects

    def __init__(self, name: str = "media.attachments") -> None:
        self.name = name
        self.metadata = sa.MetaData(schema=SCHEMA)
        self.table = define_tables(self.metadata)
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        t = self.table
        rows: dict[str, dict[str, Any]] = {}
        attachings: list[dict[str, Any]] = []
        deletions: list[dict[str, Any]] = []
        for envelope in events:
            event = envelope.event
            if isinstance(event, AttachmentStored):
                rows[event.attachment_id] = {
                    "id": event.attachment_id,
                    "workspace_id": event.workspace_id,
                    "conversation_id": event.conversation_id,
                    "uploader_id": event.uploader_id,
                    "filename": event.filename,
                    "content_type": event.content_type,
                    "size": event.size,
                    "width": event.width,
                    "height": event.height,
                    "object_key": event.key,
                    "thumbnail_key": event.thumbnail_key,
                    "thumbnail_content_type": event.thumbnail_content_type,
                    "sha256": event.sha256,
                    "created_at": event.at,
                    "deleted_at": None,
                    "delete_reason": None,
                    "message_id": None,
                    "seq": envelope.seq,
                    "reencoded": event.reencoded,
                    "attached_to": None,
                    "attached_at": None,
                }
            elif isinstance(event, AttachmentAttached):
                changes = {"attached_to": event.message_id, "attached_at": event.at}
                _change(rows, attachings, event.attachment_id, envelope.seq, changes)
            elif isinstance(event, AttachmentDeleted):
                changes = {
                    "deleted_at": event.at,
                    "delete_reason": event.reason,
                    "message_id": event.message_id,
                }
                _change(rows, deletions, event.attachment_id, envelope.seq, changes)
        if rows:
            stmt = insert(t).on_conflict_do_nothing(index_elements=[t.c.id])
            await conn.execute(stmt, list(rows.values()))
        # In stream order: an attachment is attached (if ever) before it is deleted.
        for batch in (attachings, deletions):
            if batch:
                columns = [k.removeprefix("b_") for k in batch[0] if k not in ("b_id", "b_seq")]
                await conn.execute(
                    t.update()
                    .where(t.c.id == sa.bindparam("b_id"), t.c.seq < sa.bindparam("b_seq"))
                    .values(
                        seq=sa.bindparam("b_seq"), **{c: sa.bindparam(f"b_{c}") for c in columns}
                    ),
                    batch,
                )


def _change(
    rows: dict[str, dict[str, Any]],
    later: list[dict[str, Any]],
    attachment_id: str,
    seq: int,
    changes: dict[str, Any],
) -> None:
    """Apply ``changes`` to a row inserted in this batch, or queue them for a row written
    earlier (applied only if an earlier event wrote it: a replayed batch changes nothing)."""
    pending = rows.get(attachment_id)
    if pending is not None:
        pending.update(changes, seq=seq)
    else:
        later.append(
            {"b_id": attachment_id, "b_seq": seq, **{f"b_{k}": v for k, v in changes.items()}}
        )


class MessageLinks(Projection):
    """Attaches the attachments of posted messages and deletes those of deleted ones (side
    effects in ``MEDIA`` and the bucket, no tables of its own)."""

    stream = CONVERSATIONS.name
    subjects = CONVERSATIONS.subjects

    def __init__(
        self,
        attach: AttachToMessage,
        delete: DeleteAttachment,
        name: str = "media.message_links",
    ) -> None:
        self.name = name
        self.metadata = sa.MetaData(schema=SCHEMA)
        self.attach = attach
        self.delete = delete
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        for envelope in events:
            event = envelope.event
            if isinstance(event, MessagePosted):
                if event.attachment_ids:
                    await self.attach(envelope.subject, event, envelope.correlation)
                continue
            if isinstance(event, MessageModerated) and event.action != "delete":
                continue
            if not isinstance(event, MessageDeleted | MessageModerated):
                continue
            for attachment_id in deletable(event.attachment_ids):
                await self.delete(
                    envelope.subject, attachment_id, event.message_id, envelope.correlation
                )


class ErasedFiles(Projection):
    """Deletes the attachments of erased users (side effects in ``MEDIA`` and the bucket,
    no tables of its own)."""

    stream = IDENTITY.name
    subjects = USER_SUBJECTS

    def __init__(self, erase: EraseFiles, name: str = "media.erased_files") -> None:
        self.name = name
        self.metadata = sa.MetaData(schema=SCHEMA)
        self.erase = erase
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        for envelope in events:
            event = envelope.event
            if isinstance(event, UserErased):
                await self.erase(event.workspace_id, event.user_id, envelope.correlation)

"""What media follows: its own events into the read model, and message deletions.

``AttachmentsProjection`` keeps ``media.attachments`` from ``MEDIA``.

``MessageDeletions`` follows ``CONVERSATIONS`` through the same runner (so one
process at a time, a checkpoint, and redelivery after a crash): a
``message.deleted``, or a ``message.moderated`` that deletes, names the
message's attachments, and each is deleted (objects removed, then
``attachment.deleted`` appended). Every step is idempotent, so a batch
repeated after a crash changes nothing the first run did. Its tables hold only
the checkpoint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from confab.bus import CONVERSATIONS, MEDIA
from confab.contracts.media import AttachmentDeleted, AttachmentStored
from confab.contracts.messaging import MessageDeleted, MessageModerated
from confab.events import Envelope
from confab.projection import Projection
from confab_media.domain import deletable
from confab_media.store import SCHEMA, define_tables

# (event subject, attachment id, message id, correlation) -> done
DeleteAttachment = Callable[[str, str, str, str], Awaitable[None]]


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
                }
            elif isinstance(event, AttachmentDeleted):
                pending = rows.get(event.attachment_id)
                if pending is not None:
                    pending.update(
                        deleted_at=event.at,
                        delete_reason=event.reason,
                        message_id=event.message_id,
                        seq=envelope.seq,
                    )
                else:
                    deletions.append(
                        {
                            "b_id": event.attachment_id,
                            "b_at": event.at,
                            "b_reason": event.reason,
                            "b_message": event.message_id,
                            "b_seq": envelope.seq,
                        }
                    )
        if rows:
            stmt = insert(t).on_conflict_do_nothing(index_elements=[t.c.id])
            await conn.execute(stmt, list(rows.values()))
        if deletions:
            await conn.execute(
                t.update()
                .where(t.c.id == sa.bindparam("b_id"), t.c.seq < sa.bindparam("b_seq"))
                .values(
                    deleted_at=sa.bindparam("b_at"),
                    delete_reason=sa.bindparam("b_reason"),
                    message_id=sa.bindparam("b_message"),
                    seq=sa.bindparam("b_seq"),
                ),
                deletions,
            )


class MessageDeletions(Projection):
    """Deletes the attachments of deleted messages (side effects, no tables of its own)."""

    stream = CONVERSATIONS.name
    subjects = CONVERSATIONS.subjects

    def __init__(self, delete: DeleteAttachment, name: str = "media.message_deletions") -> None:
        self.name = name
        self.metadata = sa.MetaData(schema=SCHEMA)
        self.delete = delete
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        for envelope in events:
            event = envelope.event
            if isinstance(event, MessageModerated) and event.action != "delete":
                continue
            if not isinstance(event, MessageDeleted | MessageModerated):
                continue
            for attachment_id in deletable(event.attachment_ids):
                await self.delete(
                    envelope.subject, attachment_id, event.message_id, envelope.correlation
                )

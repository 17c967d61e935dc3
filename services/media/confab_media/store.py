"""The media read model: one row per attachment in schema ``media``, fed by ``MEDIA``.

Written only by ``projections.AttachmentsProjection``; a replay into empty
tables gives the same rows (every value comes from the events, every row keeps
the stream sequence of the event that last wrote it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

SCHEMA = "media"


def define_tables(metadata: sa.MetaData) -> sa.Table:
    ts = sa.DateTime(timezone=True)
    return sa.Table(
        "attachments",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("conversation_id", sa.Text, nullable=False),
        sa.Column("uploader_id", sa.Text, nullable=False),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("content_type", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("width", sa.Integer, nullable=True),
        sa.Column("height", sa.Integer, nullable=True),
        sa.Column("object_key", sa.Text, nullable=False),
        sa.Column("thumbnail_key", sa.Text, nullable=True),
        sa.Column("thumbnail_content_type", sa.Text, nullable=True),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("deleted_at", ts, nullable=True),
        sa.Column("delete_reason", sa.Text, nullable=True),
        sa.Column("message_id", sa.Text, nullable=True),  # the message whose deletion deleted it
        sa.Column("seq", sa.BigInteger, nullable=False),  # MEDIA stream sequence
        sa.Index("attachments_conversation", "workspace_id", "conversation_id"),
    )


METADATA = sa.MetaData(schema=SCHEMA)
ATTACHMENTS = define_tables(METADATA)


class Store:
    """Queries of the read model (reads only)."""

    def __init__(self, engine: AsyncEngine, table: sa.Table = ATTACHMENTS) -> None:
        self.engine = engine
        self.t = table

    async def attachments(
        self, workspace_id: str, ids: Iterable[str], *, include_deleted: bool = False
    ) -> dict[str, dict[str, Any]]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        t = self.t
        query = sa.select(t).where(t.c.workspace_id == workspace_id, t.c.id.in_(wanted))
        if not include_deleted:
            query = query.where(t.c.deleted_at.is_(None))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {r.id: dict(r._mapping) for r in rows}

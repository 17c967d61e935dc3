"""The media read model: one row per attachment in schema ``media``, fed by ``MEDIA``.

Written only by ``projections.AttachmentsProjection``; a replay into empty
tables gives the same rows (every value comes from the events, every row keeps
the stream sequence of the event that last wrote it).

Columns are only ever added, nullable or with a default, so ``upgrade`` can
bring the table of an older build up to date in place (PostgreSQL fills the
default without rewriting rows); rows written before then read as an older
build wrote them (``reencoded`` false: served as downloads).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from confab.db import create_tables

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
        sa.Column("reencoded", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("attached_to", sa.Text, nullable=True),  # the message it is attached to
        sa.Column("attached_at", ts, nullable=True),
        sa.Index("attachments_conversation", "workspace_id", "conversation_id"),
        # The few uploads waiting to be attached (or to expire), oldest first.
        sa.Index(
            "attachments_unattached",
            "created_at",
            postgresql_where=sa.text("deleted_at IS NULL AND attached_to IS NULL"),
        ),
    )


METADATA = sa.MetaData(schema=SCHEMA)
ATTACHMENTS = define_tables(METADATA)


async def upgrade(engine: AsyncEngine, table: sa.Table = ATTACHMENTS) -> None:
    """Create the table, or add the columns and indexes an older build's table lacks
    (``confab.db.create_tables`` does both)."""
    assert table.metadata.schema is not None
    await create_tables(engine, table.metadata)


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

    async def uploaded_by(self, workspace_id: str, uploader_id: str) -> list[str]:
        """The ids of the attachments ``uploader_id`` uploaded that are not deleted."""
        t = self.t
        query = sa.select(t.c.id).where(
            t.c.workspace_id == workspace_id,
            t.c.uploader_id == uploader_id,
            t.c.deleted_at.is_(None),
        )
        async with self.engine.connect() as conn:
            return [r.id for r in (await conn.execute(query.order_by(t.c.id))).all()]

    async def unattached(self, *, before: datetime, limit: int) -> list[dict[str, Any]]:
        """Uploads stored before ``before`` and neither attached nor deleted, oldest first."""
        t = self.t
        query = (
            sa.select(t.c.id, t.c.workspace_id, t.c.conversation_id, t.c.created_at)
            .where(t.c.deleted_at.is_(None), t.c.attached_to.is_(None), t.c.created_at < before)
            .order_by(t.c.created_at)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

"""The webhooks service's tables, in schema ``webhooks``.

- ``endpoints``: the read model of ``WEBHOOKS`` (``projections.EndpointsProjection``),
  rebuilt by replay like every read model; each row keeps the stream sequence of the
  event that last wrote it, and ``since``: when the endpoint was created, by the
  stream's clock, so it gets the events stored after that.
- ``deliveries``: the work: one row per (endpoint, event) the endpoint asked for,
  written by the intake (``projections.Intake``) in the transaction that moves its
  checkpoint, so no event is ever missed or queued twice (unique per endpoint and log
  position). A row holds references (stream, sequence, conversation, and the timeline
  entry's ids), never content: the payload is rendered when it is sent. Its status,
  attempts and the receiver's last answer are written by the sender. This is not in the
  log on purpose: attempts are not facts of the tenant's domain, and appending several
  events per message would cost every send.
- ``endpoint_health``: since when an endpoint has been failing (cleared by a success),
  so "failing for days" survives restarts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

SCHEMA = "webhooks"
ts = sa.DateTime(timezone=True)


def define_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table]:
    endpoints = sa.Table(
        "endpoints",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event_types", JSONB, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("disabled_reason", sa.Text, nullable=True),
        # [{"value": "whsec_…", "expires_at": null | RFC 3339}], the current one first.
        sa.Column("secrets", JSONB, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("since", ts, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Index("endpoints_workspace", "workspace_id", "id"),
    )
    deliveries = sa.Table(
        "deliveries",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("endpoint_id", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),  # the intake: conversations, …
        sa.Column("part", sa.Integer, nullable=False),  # its partition
        sa.Column("lane", sa.Text, nullable=False),  # what orders it: conversation, user, …
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("conversation_id", sa.Text, nullable=True),
        sa.Column("event_seq", sa.Integer, nullable=True),
        sa.Column("ref", JSONB, nullable=False),
        sa.Column("stored_at", ts, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_attempt_at", ts, nullable=True),
        sa.Column("next_attempt_at", ts, nullable=True),
        sa.Column("delivered_at", ts, nullable=True),
        # Asked to be sent again (retry): the owner of its partition picks it up.
        sa.Column("requeued", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("endpoint_id", "stream", "seq", name="deliveries_once"),
        sa.Index("deliveries_endpoint", "endpoint_id", "id"),
        sa.Index(
            "deliveries_pending",
            "source",
            "part",
            "id",
            postgresql_where=sa.text("status = 'pending'"),
        ),
        sa.Index("deliveries_requeued", "source", "part", postgresql_where=sa.text("requeued")),
        sa.Index(
            "deliveries_done",
            "delivered_at",
            postgresql_where=sa.text("status IN ('delivered', 'cancelled')"),
        ),
    )
    health = sa.Table(
        "endpoint_health",
        metadata,
        sa.Column("endpoint_id", sa.Text, primary_key=True),
        sa.Column("failing_since", ts, nullable=True),
        sa.Column("last_success_at", ts, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("updated_at", ts, nullable=False),
    )
    return endpoints, deliveries, health


PRUNE_BATCH = 5000  # rows removed in one transaction

METADATA = sa.MetaData(schema=SCHEMA)
ENDPOINTS, DELIVERIES, HEALTH = define_tables(METADATA)
DELIVERY_COLUMNS = [c.name for c in DELIVERIES.columns]

# The sender's outcomes, one statement for many: rows not (yet) committed are not matched,
# and come back in the answer's absence.
RECORD = sa.text(
    f"""
UPDATE {SCHEMA}.deliveries AS d SET
  status = v.status, attempts = v.attempts, last_status = v.last_status,
  last_error = v.last_error, last_attempt_at = v.at, next_attempt_at = v.next_at,
  delivered_at = CASE WHEN v.status = 'delivered' THEN v.at ELSE d.delivered_at END
FROM unnest(:ids, :statuses, :attempts, :last_statuses, :errors, :ats, :next_ats)
  AS v(id, status, attempts, last_status, last_error, at, next_at)
WHERE d.id = v.id
RETURNING d.id
"""
).bindparams(
    sa.bindparam("ids", type_=ARRAY(sa.BigInteger)),
    sa.bindparam("statuses", type_=ARRAY(sa.Text)),
    sa.bindparam("attempts", type_=ARRAY(sa.Integer)),
    sa.bindparam("last_statuses", type_=ARRAY(sa.Integer)),
    sa.bindparam("errors", type_=ARRAY(sa.Text)),
    sa.bindparam("ats", type_=ARRAY(ts)),
    sa.bindparam("next_ats", type_=ARRAY(ts)),
)


class Store:
    """Reads of the read model and the deliveries, and the few writes the API asks for."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.e, self.d, self.h = ENDPOINTS, DELIVERIES, HEALTH

    async def endpoint(self, workspace_id: str, endpoint_id: str) -> dict[str, Any] | None:
        e = self.e
        query = sa.select(e).where(
            e.c.id == endpoint_id, e.c.workspace_id == workspace_id, e.c.deleted.is_(False)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return dict(row._mapping) if row else None

    async def endpoints(
        self, workspace_id: str, *, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        e = self.e
        query = (
            sa.select(e)
            .where(e.c.workspace_id == workspace_id, e.c.deleted.is_(False))
            .order_by(e.c.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(e.c.id > after)
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

    async def count(self, workspace_id: str) -> int:
        e = self.e
        query = sa.select(sa.func.count()).where(
            e.c.workspace_id == workspace_id, e.c.deleted.is_(False)
        )
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def all_endpoints(self) -> list[dict[str, Any]]:
        e = self.e
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(e).where(e.c.deleted.is_(False)))).all()
            health = (await conn.execute(sa.select(self.h))).all()
        failing = {h.endpoint_id: h.failing_since for h in health}
        return [{**r._mapping, "failing_since": failing.get(r.id)} for r in rows]

    async def deliveries(
        self, endpoint_id: str, *, status: str | None, before: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Newest first."""
        d = self.d
        query = sa.select(d).where(d.c.endpoint_id == endpoint_id).order_by(d.c.id.desc())
        if status is not None:
            query = query.where(d.c.status == status)
        if before is not None:
            query = query.where(d.c.id < before)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).all()
        return [dict(r._mapping) for r in rows]

    async def requeue(
        self,
        endpoint_id: str,
        *,
        delivery_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        status: str | None = None,
    ) -> list[dict[str, Any]]:
        """Make deliveries due again, with a fresh schedule; the rows changed."""
        d = self.d
        query = d.update().where(d.c.endpoint_id == endpoint_id)
        if delivery_id is not None:
            query = query.where(d.c.id == delivery_id, d.c.status != "cancelled")
        if since is not None:
            query = query.where(d.c.stored_at >= since)
        if until is not None:
            query = query.where(d.c.stored_at < until)
        if status is not None:
            query = query.where(d.c.status == status)
        query = query.values(
            status="pending", attempts=0, requeued=True, next_attempt_at=sa.func.now()
        ).returning(d)
        async with self.engine.begin() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

    async def take_requeued(self, partitions: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
        """The rows of ``partitions`` (``(source, part)``) the API asked to send again,
        cleared of the mark in the same statement.

        The sender asks twice a second, so this must stay an index scan of the few marked
        rows (``deliveries_requeued``) however many deliveries are kept. The predicate is
        the index's own, plain ``requeued``: the planner cannot match ``requeued IS
        true`` to it and read the whole table each time, which made every copy's
        PostgreSQL slower with every delivery kept."""
        d = self.d
        # One IN of (source, part) pairs: compiled once and cached, however many are owned.
        match = sa.tuple_(d.c.source, d.c.part).in_(sorted(partitions))
        query = d.update().where(d.c.requeued, match).values(requeued=False).returning(d)
        async with self.engine.begin() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

    async def prune(
        self, before: datetime, *, batch: int = PRUNE_BATCH, budget: float = 10.0
    ) -> int:
        """Remove delivered and cancelled deliveries finished before ``before``, a batch
        of rows per transaction (short locks), until a batch comes back short or
        ``budget`` seconds have gone (the next round goes on); how many.

        One batch a round could not keep up: at 3,000 deliveries a second a minute makes
        180,000 rows."""
        d = self.d
        old = (
            sa.select(d.c.id)
            .where(d.c.status.in_(("delivered", "cancelled")), d.c.delivered_at < before)
            .limit(batch)
            .scalar_subquery()
        )
        statement = d.delete().where(d.c.id.in_(old))
        removed = 0
        ends = time.monotonic() + budget
        while True:
            async with self.engine.begin() as conn:
                count = int((await conn.execute(statement)).rowcount or 0)
            removed += count
            if count < batch or time.monotonic() > ends:
                return removed

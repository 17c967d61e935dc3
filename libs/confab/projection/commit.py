"""The batch commit: a batch of events and its checkpoint rows in one transaction.

A batch is applied in one transaction that also moves the checkpoint rows of
the partitions this process owns, so a crash anywhere loses nothing and applies
nothing twice: redelivered events at or below their partition's checkpoint are
skipped. The projection's own row is kept at the lowest of the partition rows
in every commit, so it always says "everything up to here is applied"
(``wait_for``, ``confab projections status`` and rebuilds read that one row),
and the commit notifies every process when it moves (``checkpoints``).

A read model can be swapped under a running projection (``confab projections
rebuild``): every batch transaction first takes its schema's swap lock in
shared mode, which a swap holds exclusively while it renames schemas, so a
batch lands wholly before or wholly after a swap. A batch that finds a
checkpoint is no longer the one this process wrote (a swapped-in read model,
or a process that lost its lock and still committed) is rolled back with
``CheckpointMoved``, and the caller resumes from the checkpoints it finds; a
swapped-in read model has only the projection's own row, and the partition rows
start from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from confab.db import create_tables
from confab.events import Envelope
from confab.metrics import PROJECTION_APPLIED, PROJECTION_CHECKPOINT
from confab.projection.base import Projection, lock_key
from confab.projection.checkpoints import NOTIFY_CHANNEL, notification


def swap_lock_key(schema: str) -> int:
    """The advisory lock a swap of ``schema`` holds exclusively and each batch shares."""
    return lock_key(f"swap:{schema}")


class CheckpointMoved(Exception):
    """A checkpoint is not where this runner left it: resume from where they are."""


class BatchCommit:
    """The checkpoint rows of the partitions this process owns, and the commits that move
    them. ``positions`` is each owned partition's checkpoint as last read or written here."""

    def __init__(self, engine: AsyncEngine, projection: Projection) -> None:
        self.engine = engine
        self.projection = projection
        self.positions: dict[int, int] = {}
        self.applied = 0  # events applied by this process
        self._rows = projection.checkpoint_names()

    async def setup(self) -> int:
        """Create the tables and checkpoint rows; the projection's checkpoint."""
        await create_tables(self.engine, self.projection.metadata)
        async with self.engine.begin() as conn:
            await self._ensure_rows(conn)
            return await self._read_checkpoint(conn)

    async def resume(self, owned: set[int]) -> int:
        """Read where each of the ``owned`` partitions is (its row made if missing, as after
        a swap); the projection's checkpoint."""
        async with self.engine.begin() as conn:
            await self._ensure_rows(conn)
            self.positions = await self._read_positions(conn, owned)
            return await self._read_checkpoint(conn)

    async def read_checkpoint(self) -> int:
        """The projection's checkpoint as the database has it now (a ``CheckpointReader``)."""
        async with self.engine.connect() as conn:
            return await self._read_checkpoint(conn)

    async def commit(self, events: Sequence[Envelope], last_seq: int) -> int | None:
        """Apply the events of owned partitions after their checkpoints and move those to
        ``last_seq``, the batch's last sequence, all in one transaction; the projection's
        new checkpoint if that moved it. Raises ``CheckpointMoved`` (nothing applied)."""
        p = self.projection
        owned = {self._rows[k]: k for k in self.positions}
        try:
            overall, fresh = await self._commit(events, last_seq, owned)
        except BaseException:
            p.rolled_back()
            raise
        if fresh:
            p.committed()
        for k in self.positions:
            self.positions[k] = max(self.positions[k], last_seq)
        self.applied += len(fresh)
        PROJECTION_APPLIED.labels(p.name).inc(len(fresh))
        if overall is not None:
            PROJECTION_CHECKPOINT.labels(p.name).set(overall)
        return overall

    async def _commit(
        self, events: Sequence[Envelope], last_seq: int, owned: dict[str, int]
    ) -> tuple[int | None, list[Envelope]]:
        p = self.projection
        table = p.checkpoints
        async with self.engine.begin() as conn:
            # First, before any table is named: a swap renames the schema under this lock.
            await conn.execute(
                sa.text("SELECT pg_advisory_xact_lock_shared(:key)"),
                {"key": swap_lock_key(p.metadata.schema or "public")},
            )
            rows = await conn.execute(
                sa.select(table.c.name, table.c.last_seq)
                .where(table.c.name.in_(sorted(owned)))
                .order_by(table.c.name)
                .with_for_update()
            )
            found = {owned[row_name]: int(seq) for row_name, seq in rows.all()}
            if found != self.positions:
                raise CheckpointMoved(f"found {found}, left {self.positions}")
            fresh = [e for e in events if e.seq > found[p.partition_of(e.subject)]]
            if fresh:
                await p.apply(conn, fresh)
            behind = [n for n, k in owned.items() if found[k] < last_seq]
            if behind:
                await conn.execute(
                    table.update()
                    .where(table.c.name.in_(behind))
                    .values(last_seq=last_seq, updated_at=sa.func.now())
                )
            overall = await self._move_overall(conn, last_seq) if behind else None
            if overall is not None:
                await conn.execute(
                    sa.text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": NOTIFY_CHANNEL, "payload": notification(p.name, overall)},
                )
        return overall, fresh

    async def _move_overall(self, conn: AsyncConnection, last_seq: int) -> int:
        """Set the projection's row to the lowest partition checkpoint, and return it.

        Its row lock is taken before the partitions are read: whoever commits
        last then sees every other process's partitions as committed, so the row
        never stays below where all partitions are.
        """
        if self.projection.partitions == 1:
            return last_seq
        table = self.projection.checkpoints
        name = self.projection.name
        await conn.execute(
            sa.select(table.c.last_seq).where(table.c.name == name).with_for_update()
        )
        lowest = (
            sa.select(sa.func.min(table.c.last_seq))
            .where(table.c.name.in_(self._rows))
            .scalar_subquery()
        )
        row = await conn.execute(
            table.update()
            .where(table.c.name == name)
            .values(last_seq=sa.func.greatest(table.c.last_seq, lowest), updated_at=sa.func.now())
            .returning(table.c.last_seq)
        )
        return int(row.scalar_one())

    async def _ensure_rows(self, conn: AsyncConnection) -> None:
        """The projection's row, and a row per partition starting where the projection is
        (after a swap, only the projection's row is there)."""
        table = self.projection.checkpoints
        insert = sa.dialects.postgresql.insert
        await conn.execute(
            insert(table).values(name=self.projection.name, last_seq=0).on_conflict_do_nothing()
        )
        if self.projection.partitions > 1:
            start = await self._read_checkpoint(conn)
            await conn.execute(
                insert(table)
                .values([{"name": n, "last_seq": start} for n in self._rows])
                .on_conflict_do_nothing()
            )

    async def _read_positions(self, conn: AsyncConnection, partitions: set[int]) -> dict[int, int]:
        table = self.projection.checkpoints
        names = {self._rows[k]: k for k in partitions}
        rows = await conn.execute(
            sa.select(table.c.name, table.c.last_seq).where(table.c.name.in_(sorted(names)))
        )
        return {names[row_name]: int(seq) for row_name, seq in rows.all()}

    async def _read_checkpoint(self, conn: AsyncConnection) -> int:
        table = self.projection.checkpoints
        row = await conn.execute(
            sa.select(table.c.last_seq).where(table.c.name == self.projection.name)
        )
        return int(row.scalar_one_or_none() or 0)

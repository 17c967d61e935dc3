"""The batch commit on its own (real PostgreSQL, no NATS): events and checkpoint rows in
one transaction, redelivered events skipped, the projection's row at the lowest partition's,
a batch rolled back when a checkpoint moved under it, and batches held by a swap."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from confab import bus
from confab.db import plain_url
from confab.events import Envelope
from confab.projection import NOTIFY_CHANNEL, BatchCommit, CheckpointMoved, swap_lock_key
from libs.tests.test_projection import Counted, Counts, counts
from libs.tests.test_projection_partitions import PARTITIONS, Journal, checkpoints, journal


def envelope(spec: bus.StreamSpec, key: str, seq: int) -> Envelope:
    """An event as the runner hands it over: opened, with its subject and sequence."""
    return Envelope(
        event=Counted(key=key),
        type=Counted.type,
        schema=1,
        msg_id=uuid.uuid4().hex,
        workspace="w1",
        actor="",
        correlation="",
        subject=spec.subjects[0].replace(">", f"w1.{key}"),
        seq=seq,
    )


@pytest.fixture
async def notified(fresh_database_url: str) -> AsyncIterator[asyncio.Queue[str]]:
    """Every checkpoint notification sent in the test's database, in order."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(plain_url(fresh_database_url))
    await conn.add_listener(NOTIFY_CHANNEL, lambda *args: queue.put_nowait(args[-1]))
    yield queue
    await conn.close()


async def test_a_batch_moves_its_checkpoint_with_it_and_skips_what_came_before(
    engine: AsyncEngine, stream_spec: bus.StreamSpec, notified: asyncio.Queue[str]
) -> None:
    projection = Counts(stream_spec)
    batches = BatchCommit(engine, projection)
    assert await batches.setup() == 0
    assert await batches.resume({0}) == 0
    assert batches.positions == {0: 0}

    a1, b2, a3 = (envelope(stream_spec, k, s) for k, s in [("a", 1), ("b", 2), ("a", 3)])
    assert await batches.commit([a1, b2], 2) == 2
    assert await counts(engine, projection) == {"a": 1, "b": 1}
    assert batches.positions == {0: 2}
    assert await batches.read_checkpoint() == 2
    assert await asyncio.wait_for(notified.get(), 10) == f"{projection.name}:2"

    # Redelivered with one new event: only the new one is applied.
    assert await batches.commit([a1, b2, a3], 3) == 3
    assert await counts(engine, projection) == {"a": 2, "b": 1}
    assert batches.applied == 3
    assert await asyncio.wait_for(notified.get(), 10) == f"{projection.name}:3"

    # A batch of nothing readable still moves the checkpoint past it; one wholly
    # before it moves nothing and tells nobody.
    assert await batches.commit([], 5) == 5
    assert await batches.commit([a3], 4) is None
    assert await batches.read_checkpoint() == 5
    assert await asyncio.wait_for(notified.get(), 10) == f"{projection.name}:5"
    assert notified.empty()


class Told(Counts):
    """Counts, and what it was told of each batch's transaction."""

    def __init__(self, spec: bus.StreamSpec) -> None:
        super().__init__(spec)
        self.told: list[str] = []

    def committed(self) -> None:
        self.told.append("committed")

    def rolled_back(self) -> None:
        self.told.append("rolled back")


async def test_a_batch_is_rolled_back_when_a_checkpoint_is_not_the_one_it_left(
    engine: AsyncEngine, stream_spec: bus.StreamSpec
) -> None:
    projection = Told(stream_spec)
    batches = BatchCommit(engine, projection)
    await batches.setup()
    await batches.resume({0})
    await batches.commit([envelope(stream_spec, "a", 1)], 1)
    # Another writer moves the row (a swapped-in read model, or a process that lost
    # its lock and still committed).
    table = projection.checkpoints
    async with engine.begin() as conn:
        await conn.execute(table.update().where(table.c.name == projection.name).values(last_seq=9))

    with pytest.raises(CheckpointMoved):
        await batches.commit([envelope(stream_spec, "b", 2)], 2)
    assert await counts(engine, projection) == {"a": 1}  # nothing of the batch landed
    # The projection hears which: what it started outside the transaction is undone.
    assert projection.told == ["committed", "rolled back"]
    assert await batches.read_checkpoint() == 9
    assert batches.applied == 1

    # Resumed from where the row is, the events up to it are not applied again.
    assert await batches.resume({0}) == 9
    assert batches.positions == {0: 9}
    assert await batches.commit([envelope(stream_spec, "b", 2)], 9) is None
    assert await batches.commit([envelope(stream_spec, "c", 10)], 10) == 10
    assert await counts(engine, projection) == {"a": 1, "c": 1}


async def test_partition_rows_move_apart_and_the_projection_row_stays_at_the_lowest(
    engine: AsyncEngine, stream_spec: bus.StreamSpec
) -> None:
    projection = Journal(stream_spec, "here")
    low = BatchCommit(engine, projection)
    high = BatchCommit(engine, Journal(stream_spec, "there"))
    await low.setup()
    await high.resume(set(range(PARTITIONS // 2, PARTITIONS)))
    await low.resume(set(range(PARTITIONS // 2)))
    rows = await checkpoints(engine, projection)
    assert rows == dict.fromkeys([projection.name, *projection.checkpoint_names()], 0)

    events = [envelope(stream_spec, f"k{i}", i + 1) for i in range(40)]
    last = events[-1].seq

    def of(batches: BatchCommit) -> list[Envelope]:
        return [e for e in events if projection.partition_of(e.subject) in batches.positions]

    assert await low.commit(of(low), last) == 0  # the other half is still at 0
    rows = await checkpoints(engine, projection)
    names = projection.checkpoint_names()
    assert [rows[n] for n in names] == [last] * 4 + [0] * 4
    assert rows[projection.name] == 0
    assert await high.commit(of(high), last) == last
    rows = await checkpoints(engine, projection)
    assert [rows[n] for n in [projection.name, *names]] == [last] * (PARTITIONS + 1)
    applied = await journal(engine, projection)
    assert sorted(seq for _, seq, _ in applied) == [e.seq for e in events]

    # A swapped-in read model has only the projection's row: the partitions start from it.
    table = projection.checkpoints
    async with engine.begin() as conn:
        await conn.execute(table.delete().where(table.c.name.in_(names)))
        await conn.execute(table.update().values(last_seq=100))
    assert await low.resume({0, 1}) == 100
    assert low.positions == {0: 100, 1: 100}
    rows = await checkpoints(engine, projection)
    assert [rows[n] for n in [projection.name, *names]] == [100] * (PARTITIONS + 1)


async def test_a_batch_waits_while_a_swap_holds_the_schema_and_then_lands(
    engine: AsyncEngine, stream_spec: bus.StreamSpec, fresh_database_url: str
) -> None:
    projection = Counts(stream_spec)
    batches = BatchCommit(engine, projection)
    await batches.setup()
    await batches.resume({0})
    key = swap_lock_key(projection.metadata.schema or "public")
    swap = await asyncpg.connect(plain_url(fresh_database_url))
    try:
        tx = swap.transaction()
        await tx.start()
        await swap.execute("SELECT pg_advisory_xact_lock($1)", key)  # as a swap takes it
        batch = asyncio.create_task(batches.commit([envelope(stream_spec, "a", 1)], 1))
        deadline = time.monotonic() + 10
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        while not await swap.fetchval(waiting):
            assert time.monotonic() < deadline, "the batch never asked for the swap lock"
            await asyncio.sleep(0.02)
        assert not batch.done()
        assert await counts(engine, projection) == {}
        await tx.commit()
        assert await asyncio.wait_for(batch, 10) == 1
        assert await counts(engine, projection) == {"a": 1}
    finally:
        await swap.close()

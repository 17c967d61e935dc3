"""Rebuild, swap and verify of a read model while its live projection runs (real NATS and
PostgreSQL). The projection counts events per key and is deliberately not idempotent by
itself: an event lost or applied twice anywhere shows in the counts."""

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence

import asyncpg
import sqlalchemy as sa
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from confab import bus
from confab.contracts.events import Event
from confab.db import plain_url
from confab.eventlog import append
from confab.events import Envelope
from confab.projection import Projection, ProjectionRunner
from confab.readmodels import ReadModel
from confab.rebuild import Progress, ReadModelRebuild, RowDiff
from confab.streamread import Start, StreamReader, parse_since, position


class Tallied(Event, kw_only=True, frozen=True):
    type = "test.tallied"
    key: str


class Tally(Projection):
    def __init__(self, stream: bus.StreamSpec, schema: str, table: str = "tallies") -> None:
        self.name = f"tally_{stream.name.lower()}" + table.removeprefix("tallies")
        self.stream = stream.name
        self.subjects = stream.subjects
        self.metadata = sa.MetaData(schema=schema)
        self.table = sa.Table(
            table,
            self.metadata,
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("n", sa.Integer, nullable=False),
        )
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        for envelope in events:
            stmt = sa.dialects.postgresql.insert(self.table).values(key=envelope.event.key, n=1)
            await conn.execute(
                stmt.on_conflict_do_update(index_elements=["key"], set_={"n": self.table.c.n + 1})
            )


def model_for(spec: bus.StreamSpec) -> ReadModel:
    live = f"tally_{uuid.uuid4().hex[:8]}"
    return ReadModel("tally", lambda schema=live, keys=None: [Tally(spec, schema)])


def subject_of(key: str, spec: bus.StreamSpec) -> str:
    return spec.subjects[0].replace(">", f"w1.{key}")


async def publish(nc: NATS, spec: bus.StreamSpec, keys: list[str]) -> int:
    js = nc.jetstream()
    seq = 0
    for key in keys:
        subject = subject_of(key, spec)
        stored = await append(
            js, spec.name, subject, Tallied(key=key), msg_id=uuid.uuid4().hex, workspace="w1"
        )
        seq = stored.seq
    return seq


async def tallies(engine: AsyncEngine, schema: str, table: str = "tallies") -> Counter[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.text(f'SELECT key, n FROM "{schema}".{table}'))
        return Counter(dict(rows.all()))


async def test_a_rebuild_swaps_in_under_a_live_runner_and_loses_nothing(
    nc: NATS, stream_spec: bus.StreamSpec, engine: AsyncEngine, fresh_database_url: str
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    model = model_for(stream_spec)
    live = model.projections()[0]
    runner = ProjectionRunner(js, engine, fresh_database_url, live, batch_size=7)
    await runner.start()
    keys = [f"k{i % 13}" for i in range(300)]
    first = await publish(nc, stream_spec, keys)
    assert await runner.wait_for(first, timeout=20)

    # Writes go on during the whole rebuild and swap.
    more = [f"k{i % 17}" for i in range(400)]
    writer = asyncio.create_task(publish(nc, stream_spec, more))
    job = ReadModelRebuild(js, engine, model, batch_size=50)
    async with job.exclusive():
        await job.prepare()
        await job.converge(Progress())
        swapped = await job.swap(Progress())
    assert swapped.paused_seconds < 5
    last = await writer
    assert await runner.wait_for(last, timeout=20)
    assert not await job.scratch_exists()

    # Every event counted exactly once in the swapped-in tables, which the runner goes on
    # feeding from the checkpoint the rebuild wrote.
    assert await tallies(engine, model.schema) == Counter(keys + more)
    after = await publish(nc, stream_spec, ["late"])
    assert await runner.wait_for(after, timeout=20)
    assert (await tallies(engine, model.schema))["late"] == 1
    await runner.stop()


async def test_an_interrupted_rebuild_resumes_from_its_own_checkpoint(
    nc: NATS, stream_spec: bus.StreamSpec, engine: AsyncEngine
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    model = model_for(stream_spec)
    keys = [f"k{i % 5}" for i in range(120)]
    last = await publish(nc, stream_spec, keys)
    halfway = last - 60

    first = ReadModelRebuild(js, engine, model, batch_size=16)
    await first.prepare()
    await first.catch_up(Progress(), until={first.projections[0].name: halfway})
    assert first.positions() == {first.projections[0].name: halfway}

    # A new process (the command run again) picks up where the first one stopped.
    again = ReadModelRebuild(js, engine, model, batch_size=16)
    assert await again.scratch_exists()
    assert await again.prepare() == {again.projections[0].name: halfway}
    progress = Progress()
    await again.converge(progress)
    assert progress.done == 60
    await again.swap(progress)
    assert await tallies(engine, model.schema) == Counter(keys)


async def test_verify_reports_every_row_that_differs_from_the_log(
    nc: NATS, stream_spec: bus.StreamSpec, engine: AsyncEngine, fresh_database_url: str
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    model = model_for(stream_spec)
    runner = ProjectionRunner(js, engine, fresh_database_url, model.projections()[0])
    await runner.start()
    last = await publish(nc, stream_spec, ["a", "b", "a", "c"])
    assert await runner.wait_for(last, timeout=20)

    async def verify() -> tuple[bool, list[RowDiff]]:
        found: list[RowDiff] = []
        job = ReadModelRebuild(js, engine, model, purpose="verify")
        await job.drop_scratch()
        await job.prepare()
        result = await job.verify(Progress(), found.append)
        await job.drop_scratch()
        return result.identical, found

    assert await verify() == (True, [])
    async with engine.begin() as conn:
        schema = model.schema
        await conn.execute(sa.text(f"UPDATE \"{schema}\".tallies SET n = 5 WHERE key = 'a'"))
        await conn.execute(sa.text(f"DELETE FROM \"{schema}\".tallies WHERE key = 'b'"))
        await conn.execute(sa.text(f"INSERT INTO \"{schema}\".tallies VALUES ('zz', 1)"))
    identical, found = await verify()
    assert not identical
    by_key = {d.key["key"]: d for d in found}
    assert set(by_key) == {"a", "b", "zz"}
    assert by_key["a"].kind == "changed" and by_key["a"].columns == ["n"]
    assert (by_key["a"].live or {})["n"] == 5 and (by_key["a"].rebuilt or {})["n"] == 2
    assert by_key["b"].kind == "missing" and by_key["zz"].kind == "extra"
    await runner.stop()


class PartitionedTally(Tally):
    partitions = 4


async def test_verify_and_rebuild_of_a_partitioned_projection_whose_partitions_are_apart(
    nc: NATS, stream_spec: bus.StreamSpec, engine: AsyncEngine, fresh_database_url: str
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    schema = f"tally_{uuid.uuid4().hex[:8]}"
    model = ReadModel(
        "tally", lambda schema=schema, keys=None: [PartitionedTally(stream_spec, schema)]
    )
    live = model.projections()[0]
    runner = ProjectionRunner(js, engine, fresh_database_url, live, batch_size=7)
    # Another copy that holds partitions 2 and 3 and is stuck: theirs fall behind.
    stuck = await asyncpg.connect(plain_url(fresh_database_url))
    lock = "SELECT pg_advisory_lock($1::int, $2::int)"
    await stuck.execute(lock, runner._member_class, 12345)
    for k in (2, 3):
        await stuck.execute(lock, runner._partition_class, k)
    await runner.start()
    try:
        keys = [f"k{i % 13}" for i in range(200)]
        last = await publish(nc, stream_spec, keys)
        names = live.checkpoint_names()

        async def rows() -> dict[str, int]:
            async with engine.connect() as conn:
                found = await conn.execute(
                    sa.text(f'SELECT name, last_seq FROM "{schema}".projection_checkpoints')
                )
                return dict(found.all())

        deadline = asyncio.get_running_loop().time() + 20
        while [(await rows()).get(n) for n in names] != [last, last, 0, 0]:
            assert asyncio.get_running_loop().time() < deadline, await rows()
            await asyncio.sleep(0.05)
        assert runner.owned == {0, 1}
        assert (await rows())[live.name] == 0  # the lowest partition's
        mine = Counter(
            k for k in keys if live.partition_of(f"{stream_spec.subjects[0][:-1]}w1.{k}") < 2
        )
        assert await tallies(engine, schema) == mine

        # Verify compares each partition up to its own checkpoint.
        job = ReadModelRebuild(js, engine, model, purpose="verify")
        await job.drop_scratch()
        await job.prepare()
        found: list[RowDiff] = []
        result = await job.verify(Progress(), found.append)
        await job.drop_scratch()
        assert (result.identical, found) == (True, [])

        # A rebuild swaps in every event; the partitions start again from its checkpoint.
        job = ReadModelRebuild(js, engine, model, batch_size=50)
        async with job.exclusive():
            await job.prepare()
            await job.converge(Progress())
            await job.swap(Progress())
        assert await tallies(engine, schema) == Counter(keys)
        await stuck.close()  # the stuck copy goes: this one takes its partitions
        more = [f"k{i % 7}" for i in range(50)]
        after = await publish(nc, stream_spec, more)
        assert await runner.wait_for(after, timeout=20)
        assert runner.owned == {0, 1, 2, 3}
        assert await tallies(engine, schema) == Counter(keys + more)
        assert [(await rows())[n] for n in [live.name, *names]] == [after] * 5
    finally:
        await stuck.close()
        await runner.stop()


async def test_a_rebuild_shared_by_two_processes_resumes_with_its_lanes_apart(
    nc: NATS, stream_spec: bus.StreamSpec, engine: AsyncEngine
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    schema = f"tally_{uuid.uuid4().hex[:8]}"
    model = ReadModel(
        "tally",
        lambda schema=schema, keys=None: [
            PartitionedTally(stream_spec, schema),
            Tally(stream_spec, schema, "tallies_second"),
        ],
    )
    keys = [f"k{i % 11}" for i in range(150)]
    last = await publish(nc, stream_spec, keys)  # the stream's own: 1 to 150
    partitioned, second = (p.name for p in model.projections())

    # The first process's share (lane 0 of the partitioned projection; the other
    # projection is the second's, by turns) stops halfway; the second never ran.
    first = ReadModelRebuild(js, engine, model, batch_size=16, part=(0, 2))
    assert [(r.projection.name, r.lane) for r in first.replayers] == [(partitioned, 0)]
    await first.prepare()
    await first.catch_up(Progress(), until={partitioned: 75})

    # Run again whole: each lane and projection resumes from its own row, and once
    # swapped in, the projection's row is where its lanes ended.
    again = ReadModelRebuild(js, engine, model, batch_size=16)
    await again.prepare()
    assert sorted(r.position for r in again.replayers) == [0, 0, 75]
    progress = Progress()
    async with again.exclusive():
        await again.converge(progress)
        await again.swap(progress)
    # Each event counted once for each projection that applied it: lane 0 of the
    # partitioned projection had applied its events up to 75.
    lanes = [model.projections()[0].partition_of(subject_of(k, stream_spec)) % 2 for k in keys]
    assert progress.done == 150 + lanes.count(1) + lanes[75:].count(0)
    assert await tallies(engine, schema) == Counter(keys)
    assert await tallies(engine, schema, "tallies_second") == Counter(keys)
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(f'SELECT name, last_seq FROM "{schema}".projection_checkpoints')
        )
        assert dict(rows.all()) == {partitioned: last, second: last}


async def test_a_stream_reader_reads_a_range_in_batches_and_stops(
    nc: NATS, stream_spec: bus.StreamSpec
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    last = await publish(nc, stream_spec, [f"k{i}" for i in range(25)])
    first = last - 24

    async def read(start: Start, until: int | None = None) -> list[int]:
        async with StreamReader(js, stream_spec.name, stream_spec.subjects, start, batch=4) as r:
            seqs = []
            async for msgs in r.batches(until=until):
                assert 1 <= len(msgs) <= 4
                seqs += [position(m)[0] for m in msgs]
            return seqs

    assert await read(Start()) == list(range(first, last + 1))
    assert await read(Start(seq=first + 20)) == list(range(first + 20, last + 1))
    assert await read(Start(seq=first), until=first + 9) == list(range(first, first + 10))
    assert await read(Start(new_only=True)) == []
    assert await read(Start(time=parse_since("1h"))) == list(range(first, last + 1))
    assert (await js.stream_info(stream_spec.name)).state.consumer_count == 0


async def test_dropping_a_retired_schema_never_deadlocks_a_query_still_reading_it(
    nc: NATS, stream_spec: bus.StreamSpec, engine: AsyncEngine
) -> None:
    """A query that began before a swap may hold one retired table and then ask for
    another. A ``DROP … CASCADE`` that had locked that other table and waited for the
    first would deadlock with it, and PostgreSQL would abort one of them (seen once in CI,
    under a rebuild with live traffic). The drop lets go instead, and retries once the
    query is done: the query never waits long or fails, and the schema goes."""
    model = model_for(stream_spec)
    job = ReadModelRebuild(nc.jetstream(), engine, model)
    schema = job.retired_schema
    tables = [f"t{i}" for i in range(20)]
    async with engine.begin() as conn:
        await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        for table in tables:
            await conn.execute(sa.text(f'CREATE TABLE "{schema}".{table} (n int)'))
    async with engine.connect() as reader:
        await reader.execute(sa.text("SET statement_timeout = '10s'"))
        await reader.execute(sa.text(f'SELECT count(*) FROM "{schema}".t10'))  # held now
        drop = asyncio.create_task(job._drop(schema))
        await _until_a_lock_is_awaited(engine)  # the drop is in: it waits for t10
        for table in tables:  # the query goes on through every other table, and is served
            await reader.execute(sa.text(f'SELECT count(*) FROM "{schema}".{table}'))
        await reader.commit()
    await asyncio.wait_for(drop, 30)
    async with engine.connect() as conn:
        found = await conn.execute(
            sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}
        )
        assert found.first() is None


async def _until_a_lock_is_awaited(engine: AsyncEngine, timeout: float = 10.0) -> None:
    """Until some session waits for a lock (the server's state: asked for, no event to
    wait on), or fail after ``timeout``. The wait itself is PostgreSQL's, bounded here."""
    async with engine.connect() as conn:
        await conn.execute(sa.text(f"SET statement_timeout = '{int(timeout * 1000)}ms'"))
        await conn.execute(
            sa.text(
                "DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted) "
                "LOOP PERFORM pg_sleep(0.01); END LOOP; END $$"
            )
        )

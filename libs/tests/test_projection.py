import asyncio
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from confab import bus
from confab.contracts.events import Event
from confab.eventlog import append
from confab.events import Envelope
from confab.projection import Projection, ProjectionRunner
from tests.waiting import until


class Counted(Event, kw_only=True, frozen=True):
    type = "test.counted"
    key: str


class Counts(Projection):
    """Deliberately not idempotent by itself: applying an event twice would show."""

    def __init__(self, stream: bus.StreamSpec) -> None:
        self.name = f"counts_{stream.name.lower()}"
        self.stream = stream.name
        self.subjects = stream.subjects
        self.metadata = sa.MetaData(schema="testproj")
        self.table = sa.Table(
            "counts",
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


async def publish(nc: NATS, spec: bus.StreamSpec, keys: list[str]) -> int:
    js = nc.jetstream()
    seq = 0
    for key in keys:
        subject = spec.subjects[0].replace(">", f"w1.{key}")
        seq = (
            await append(
                js, spec.name, subject, Counted(key=key), msg_id=uuid.uuid4().hex, workspace="w1"
            )
        ).seq
    return seq


async def counts(engine: AsyncEngine, projection: Counts) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(projection.table.c.key, projection.table.c.n))
        return {key: n for key, n in rows.all()}


async def test_events_are_applied_once_with_the_checkpoint(
    nc: NATS, stream_spec: bus.StreamSpec, engine: AsyncEngine, fresh_database_url: str
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    projection = Counts(stream_spec)
    last = await publish(nc, stream_spec, ["a", "b", "a"])
    runner = ProjectionRunner(js, engine, fresh_database_url, projection, batch_size=2)
    await runner.start()
    assert await runner.wait_for(last, timeout=10)
    assert await counts(engine, projection) == {"a": 2, "b": 1}
    await runner.stop()


async def test_a_batch_redelivered_after_a_crash_between_commit_and_ack_is_skipped(
    nc: NATS, stream_spec: bus.StreamSpec, engine: AsyncEngine, fresh_database_url: str
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    projection = Counts(stream_spec)
    last = await publish(nc, stream_spec, ["x", "y", "x", "z"])

    # A first runner commits a batch, then "crashes" before acknowledging it:
    # the messages go back to the consumer (nak), as after an ack timeout.
    crashed = ProjectionRunner(js, engine, fresh_database_url, projection, batch_size=10)
    await crashed.prepare()
    crashed.owned = {0}  # as if it held the lock of the projection's one partition
    psub = await crashed._subscribe()
    msgs = await psub.fetch(10, timeout=5)
    assert msgs[-1].metadata.sequence.stream == last
    await crashed._apply_until_done(msgs)
    for m in msgs:
        await m.nak()
    await psub.unsubscribe()
    await crashed.stop()
    assert await counts(engine, projection) == {"x": 2, "y": 1, "z": 1}

    # The next runner receives the same batch again and must not apply it twice.
    runner = ProjectionRunner(js, engine, fresh_database_url, projection, batch_size=10)
    await runner.start()
    more = await publish(nc, stream_spec, ["z"])
    assert await runner.wait_for(more, timeout=10)
    assert await counts(engine, projection) == {"x": 2, "y": 1, "z": 2}
    await runner.stop()


async def test_a_reader_waiting_ends_the_runners_linger(
    nc: NATS, stream_spec: bus.StreamSpec, engine: AsyncEngine, fresh_database_url: str
) -> None:
    """After a short batch the runner waits a minute for more events; a reader waiting
    for an event not applied yet ends that wait, and so does stopping."""
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    projection = Counts(stream_spec)
    runner = ProjectionRunner(js, engine, fresh_database_url, projection, linger=60.0)
    await runner.start()
    await publish(nc, stream_spec, ["a"])

    async def applied() -> bool:  # looked at in the database: nobody waits on the runner
        return await counts(engine, projection) == {"a": 1}

    await until(applied, "the first event to be applied")
    second = await publish(nc, stream_spec, ["b"])
    assert await runner.wait_for(second, timeout=10)  # not after the minute
    assert await counts(engine, projection) == {"a": 1, "b": 1}
    await runner.stop(timeout=10)
    assert runner._task is not None and not runner._task.cancelled()  # it ended by itself


async def test_wait_for_returns_as_soon_as_the_checkpoint_reaches_seq(
    nc: NATS, stream_spec: bus.StreamSpec, engine: AsyncEngine, fresh_database_url: str
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    projection = Counts(stream_spec)
    runner = ProjectionRunner(js, engine, fresh_database_url, projection)
    await runner.start()
    first = await publish(nc, stream_spec, ["warm"])
    assert await runner.wait_for(first, timeout=10)

    waiter = asyncio.create_task(runner.wait_for(first + 1, timeout=30))
    await asyncio.sleep(0)  # let it start waiting
    assert not waiter.done()
    target = await publish(nc, stream_spec, ["go"])
    assert target == first + 1
    assert await asyncio.wait_for(waiter, 15)  # woke on the commit, well before 30 s
    assert runner.checkpoint >= target
    assert await runner.wait_for(target + 1000, timeout=0.2) is False
    await runner.stop()


async def test_a_projection_of_a_stream_not_made_yet_waits_for_it(
    nc: NATS, stream_spec: bus.StreamSpec, engine: AsyncEngine, fresh_database_url: str
) -> None:
    js = nc.jetstream()
    projection = Counts(stream_spec)
    runner = ProjectionRunner(js, engine, fresh_database_url, projection)
    await runner.start()  # before the stream exists, as at a stack's start
    await until(lambda: runner.last_error, "the runner to say why it waits", 10)
    assert runner.last_error == f"stream {stream_spec.name} does not exist yet"
    await bus.ensure_streams(js, [stream_spec])
    last = await publish(nc, stream_spec, ["late"])
    assert await runner.wait_for(last, timeout=15)  # it tried again and went on
    assert await counts(engine, projection) == {"late": 1}
    await runner.stop()


async def test_only_one_process_feeds_a_projection_and_others_learn_its_checkpoint(
    nc: NATS, stream_spec: bus.StreamSpec, engine: AsyncEngine, fresh_database_url: str
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    projection = Counts(stream_spec)
    first = ProjectionRunner(js, engine, fresh_database_url, projection)
    second = ProjectionRunner(js, engine, fresh_database_url, Counts(stream_spec))
    await first.start()
    await second.start()
    last = await publish(nc, stream_spec, [f"k{i}" for i in range(30)])
    assert await first.wait_for(last, timeout=10)
    assert await second.wait_for(last, timeout=10)  # learned through NOTIFY
    assert [first.is_leader, second.is_leader].count(True) == 1
    assert sum((await counts(engine, projection)).values()) == 30

    # The leader stops; the standby takes over and keeps the read model moving.
    leader, standby = (first, second) if first.is_leader else (second, first)
    await leader.stop()
    more = await publish(nc, stream_spec, ["after"])
    assert await standby.wait_for(more, timeout=15)
    assert standby.is_leader
    assert (await counts(engine, projection))["after"] == 1
    await standby.stop()

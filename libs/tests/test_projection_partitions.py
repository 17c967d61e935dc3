"""Two processes share a partitioned projection, keeping each key's order, and one that
dies hands its partitions to the other: nothing is applied twice or out of order."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import sqlalchemy as sa
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from confab import bus
from confab.db import create_engine
from confab.eventlog import append
from confab.events import Envelope
from confab.projection import Projection, ProjectionRunner
from confab_infra.testing import TestBackends
from libs.tests.test_projection import Counted

PARTITIONS = 8


class Journal(Projection):
    """Writes down every event it applies, in the order it applies them, and by whom."""

    partitions = PARTITIONS

    def __init__(self, stream: bus.StreamSpec, label: str) -> None:
        self.name = f"journal_{stream.name.lower()}"
        self.stream = stream.name
        self.subjects = stream.subjects
        self.label = label
        self.metadata = sa.MetaData(schema="testpart")
        self.table = sa.Table(
            "applied",
            self.metadata,
            sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
            sa.Column("key", sa.Text, nullable=False),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("runner", sa.Text, nullable=False),
        )
        super().__init__()

    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        await conn.execute(
            self.table.insert(),
            [{"key": e.event.key, "seq": e.seq, "runner": self.label} for e in events],
        )


async def publish(nc: NATS, spec: bus.StreamSpec, keys: Sequence[str]) -> dict[int, str]:
    """Append one event per key, in order; the key of each stream sequence."""
    js = nc.jetstream()
    published: dict[int, str] = {}
    for key in keys:
        subject = spec.subjects[0].replace(">", f"w1.{key}")
        ack = await append(
            js, spec.name, subject, Counted(key=key), msg_id=uuid.uuid4().hex, workspace="w1"
        )
        published[ack.seq] = key
    return published


async def journal(engine: AsyncEngine, projection: Journal) -> list[tuple[str, int, str]]:
    async with engine.connect() as conn:
        t = projection.table
        rows = await conn.execute(sa.select(t.c.key, t.c.seq, t.c.runner).order_by(t.c.id))
        return [(key, seq, runner) for key, seq, runner in rows.all()]


async def until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


def check_each_once_in_order(
    applied: list[tuple[str, int, str]], published: dict[int, str]
) -> dict[str, set[str]]:
    """Every published event applied exactly once, each key's in stream order; which
    runners applied each key."""
    seqs = [seq for _, seq, _ in applied]
    assert len(seqs) == len(set(seqs)), "an event was applied twice"
    assert set(seqs) == set(published), "events are missing"
    per_key: dict[str, list[int]] = defaultdict(list)
    runners: dict[str, set[str]] = defaultdict(set)
    for key, seq, runner in applied:
        assert published[seq] == key
        per_key[key].append(seq)
        runners[key].add(runner)
    for key, order in per_key.items():
        assert order == sorted(order), f"{key} was applied out of order: {order}"
    return runners


async def checkpoints(engine: AsyncEngine, projection: Journal) -> dict[str, int]:
    async with engine.connect() as conn:
        t = projection.checkpoints
        rows = await conn.execute(sa.select(t.c.name, t.c.last_seq))
        return {name: seq for name, seq in rows.all()}


def start_copy(nats_url: str, database_url: str, spec: bus.StreamSpec) -> subprocess.Popen[bytes]:
    """Another process running the projection (``main`` below), to be killed with SIGKILL."""
    args = [nats_url, database_url, spec.name, spec.subjects[0]]
    return subprocess.Popen(
        [sys.executable, "-m", "libs.tests.test_projection_partitions", *args],
        cwd=Path(__file__).parents[2],
    )


async def applied_by(engine: AsyncEngine, projection: Journal, runner: str, after: int) -> int:
    async with engine.connect() as conn:
        t = projection.table
        query = sa.select(sa.func.count()).where(t.c.runner == runner, t.c.seq > after)
        return int((await conn.execute(query)).scalar_one())


async def test_two_processes_share_the_partitions_and_one_takes_over_when_the_other_dies(
    nc: NATS,
    stream_spec: bus.StreamSpec,
    engine: AsyncEngine,
    fresh_database_url: str,
    backends: TestBackends,
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    journal_of = Journal(stream_spec, "here")
    here = ProjectionRunner(js, engine, fresh_database_url, journal_of, batch_size=16)
    await here.start()
    other = start_copy(backends.nats_url, fresh_database_url, stream_spec)
    try:
        await until(lambda: len(here.owned) == PARTITIONS // 2, "the two processes share")

        keys = [f"k{i}" for i in range(40)]
        published = await publish(nc, stream_spec, keys * 10)
        assert await here.wait_for(max(published), timeout=20)
        by_key = check_each_once_in_order(await journal(engine, journal_of), published)
        # Each key went to the one process owning its partition, and both did work.
        prefix = stream_spec.subjects[0][:-1]
        for key, who in by_key.items():
            mine = journal_of.partition_of(f"{prefix}w1.{key}") in here.owned
            assert who == ({"here"} if mine else {"other"})
        assert {r for who in by_key.values() for r in who} == {"here", "other"}

        # The other process is killed in the middle of a stream of events, with batches
        # fetched and not committed.
        before = max(published)
        sending = asyncio.create_task(publish(nc, stream_spec, keys * 10))
        deadline = time.monotonic() + 20
        while await applied_by(engine, journal_of, "other", before) < 20:
            assert time.monotonic() < deadline, "the other process applies nothing"
            await asyncio.sleep(0.02)
        other.send_signal(signal.SIGKILL)
        other.wait()
        published.update(await sending)
        await until(lambda: len(here.owned) == PARTITIONS, "this process owns every partition")
        assert await here.wait_for(max(published), timeout=30)
        check_each_once_in_order(await journal(engine, journal_of), published)

        # The projection's own row is the lowest of the partitions', which are all at the end.
        rows = await checkpoints(engine, journal_of)
        parts = [rows[name] for name in journal_of.checkpoint_names()]
        assert rows[journal_of.name] == min(parts) == max(published)

        # A new copy joins, gets its share, and the work is shared again.
        other = start_copy(backends.nats_url, fresh_database_url, stream_spec)
        await until(lambda: len(here.owned) == PARTITIONS // 2, "shared again")
        before = max(published)
        published.update(await publish(nc, stream_spec, keys * 2))
        assert await here.wait_for(max(published), timeout=20)
        check_each_once_in_order(await journal(engine, journal_of), published)
        assert await applied_by(engine, journal_of, "other", before) > 0
    finally:
        other.kill()
        other.wait()
        await here.stop()


async def test_a_single_process_owns_every_partition_and_health_says_which(
    nc: NATS, stream_spec: bus.StreamSpec, engine: AsyncEngine, fresh_database_url: str
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    projection = Journal(stream_spec, "only")
    runner = ProjectionRunner(js, engine, fresh_database_url, projection)
    await runner.start()
    try:
        await until(lambda: len(runner.owned) == PARTITIONS, "it owns every partition")
        assert runner.describe() == f"partitions 0,1,2,3,4,5,6,7 of {PARTITIONS}"
        published = await publish(nc, stream_spec, ["x", "y", "x"])
        assert await runner.wait_for(max(published), timeout=10)
        check_each_once_in_order(await journal(engine, projection), published)
    finally:
        await runner.stop()


async def _run_copy(nats_url: str, database_url: str, stream: str, subject: str) -> None:
    nc = await bus.connect(nats_url, "projection-copy")
    engine = create_engine(database_url, pool_size=4)
    spec = bus.StreamSpec(stream, (subject,))
    runner = ProjectionRunner(
        nc.jetstream(), engine, database_url, Journal(spec, "other"), batch_size=16
    )
    await runner.start()
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(_run_copy(*sys.argv[1:5]))

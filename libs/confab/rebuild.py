"""Rebuilding a read model from the log next to the live one, swapping it in, and verifying.

A read model is the set of tables of one PostgreSQL schema (``messaging``), written
by its projections (``confab.readmodels``). Rebuilding replays each projection's
stream into the same tables in a scratch schema (``messaging_rebuild``), with its
own checkpoint rows, while the live schema keeps serving and its runners keep
applying new events. An interrupted rebuild resumes from the scratch checkpoints.

Each stream is read, parsed and opened once for all the projections that follow
it (``StreamReplay``); each projection applies the batches in order at its own
pace, each in a transaction of its own with its checkpoint, while the next
batches are fetched and opened.

The swap, in one transaction:

1. take the schema's swap lock exclusively (``projection.swap_lock_key``): every
   live batch transaction takes it in shared mode before touching a table, so
   the batch in flight finishes and the next one waits — queries keep running;
2. replay the last few events into the scratch tables, so each scratch
   checkpoint is at least where the live one is;
3. ``ALTER SCHEMA messaging RENAME TO messaging_retired`` and
   ``ALTER SCHEMA messaging_rebuild RENAME TO messaging`` (renames are
   transactional in PostgreSQL, so readers see the old schema or the new one);
4. announce the new checkpoints (NOTIFY) and commit.

The waiting live batch then finds a checkpoint that is not the one it wrote,
rolls back, and its runner recreates its consumer from the swapped-in
checkpoint (``projection.CheckpointMoved``). Queries are not disturbed: names
in prepared statements are resolved again after a schema changes, and the
tables have the same columns. The retired schema is dropped afterwards.

Verifying rebuilds into ``<schema>_verify`` up to exactly the live checkpoints
(taken with the live runners paused for a moment, under the same lock, in a
repeatable-read snapshot), then compares every table row by row in SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from bisect import bisect_right
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from nats.js import JetStreamContext
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from confab.db import create_tables
from confab.events import Envelope, UnknownEvent, open_envelope
from confab.logging import get_logger
from confab.personal import KeyRing
from confab.projection import NOTIFY_CHANNEL, Projection, _lock_key, swap_lock_key
from confab.readmodels import ReadModel
from confab.streamread import Start, StreamReader, position

log = get_logger("confab.rebuild")

CHECKPOINTS = "projection_checkpoints"


class RebuildError(Exception):
    """The rebuild cannot go on; the message is one line for the operator."""


class Progress:
    """Counts events to replay and replayed; subclasses show it."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.started = time.monotonic()

    def add_total(self, n: int) -> None:
        self.total += n
        self.changed()

    def advance(self, n: int) -> None:
        self.done += n
        self.changed()

    def changed(self) -> None:
        """Called on every change; throttle in subclasses."""

    def finish(self) -> None:
        """Called once the replay is over."""

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0


# -- the garbage collector ------------------------------------------------------------------

_relaxed = 0  # replays under way in this process that relaxed the collector
_saved = gc.get_threshold()  # the thresholds before the first of them


@contextlib.contextmanager
def fewer_collections(threshold: int = 100_000) -> Iterator[None]:
    """Collect cyclic garbage less often while a replay runs.

    A replay allocates millions of short-lived objects (messages, envelopes, events,
    views, rows), nearly all freed by reference counting. At the default threshold
    (700 allocations) the collector ran about 200 times a second, its older
    generations scanning the process's long-lived objects (tables, statements,
    modules), and took about a fifth of the replay's CPU (24 → 17 s for 600,000
    events replayed, measured). The objects alive when the replay starts are frozen
    (never scanned), and the youngest generation is collected every ``threshold``
    allocations; both are restored when the last replay of the process ends.
    """
    global _relaxed, _saved
    if _relaxed == 0:
        _saved = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(max(_saved[0], threshold), *_saved[1:])
    _relaxed += 1
    try:
        yield
    finally:
        _relaxed -= 1
        if _relaxed == 0:
            gc.set_threshold(*_saved)
            gc.unfreeze()


# -- one stream, read once for every projection that follows it ------------------------------


@dataclass
class _Feed:
    """What one projection takes from a pass over its stream."""

    replayer: Replayer
    stop: int | None  # apply nothing past this sequence (None: to the end of the stream)
    limits: Sequence[int]  # per partition, when they differ (verify); else empty
    read: int = 0  # messages of its range seen (as its own reader would have read them)


class _Batch:
    """Messages of one fetch (their sequences) and the events opened from them."""

    __slots__ = ("event_seqs", "events", "seqs")

    def __init__(self, seqs: list[int], events: list[Envelope]) -> None:
        self.seqs = seqs
        self.events = events
        self.event_seqs = [e.seq for e in events]


class Replayer:
    """Applies one projection's batches to its scratch tables, each with its checkpoint."""

    def __init__(self, engine: AsyncEngine, projection: Projection) -> None:
        self.engine = engine
        self.projection = projection
        self.position = 0

    async def prepare(self) -> None:
        await create_tables(self.engine, self.projection.metadata)
        table = self.projection.checkpoints
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.dialects.postgresql.insert(table)
                .values(name=self.projection.name, last_seq=0)
                .on_conflict_do_nothing()
            )
            row = await conn.execute(
                sa.select(table.c.last_seq).where(table.c.name == self.projection.name)
            )
            self.position = int(row.scalar_one())

    async def commit(self, events: Sequence[Envelope], last_seq: int) -> None:
        table = self.projection.checkpoints
        name = self.projection.name
        async with self.engine.begin() as conn:
            # Scratch tables: a crash may lose the last commits, never half of one (the
            # checkpoint moves with the rows), and the replay just does them again.
            await conn.execute(sa.text("SET LOCAL synchronous_commit TO off"))
            row = await conn.execute(
                sa.select(table.c.last_seq).where(table.c.name == name).with_for_update()
            )
            applied = int(row.scalar_one())
            if applied != self.position:
                raise RebuildError(f"{name}: something else writes {table.schema}")
            fresh = [e for e in events if e.seq > applied]
            if fresh:
                await self.projection.apply(conn, fresh)
            await conn.execute(
                table.update()
                .where(table.c.name == name)
                .values(last_seq=last_seq, updated_at=sa.func.now())
            )
        self.position = last_seq


class StreamReplay:
    """One pass over a stream for every projection of the read model that follows it.

    Each message is fetched, parsed and opened once, whatever the number of
    projections (they share ``stream`` and ``subjects``). Each projection then
    applies the batches in order, each in a transaction of its own that moves its
    checkpoint with its rows, at its own pace: while one waits for PostgreSQL,
    another folds, and the next batches are fetched and opened. The reader waits
    for the slowest projection (at most two batches queued for each), so memory
    stays bounded. Each projection sees every event past its checkpoint once, in
    stream order.
    """

    def __init__(
        self,
        js: JetStreamContext,
        replayers: Sequence[Replayer],
        *,
        batch_size: int = 2000,
    ) -> None:
        first = replayers[0].projection
        self.js = js
        self.replayers = list(replayers)
        self.stream = first.stream
        self.subjects = list(first.subjects)
        self.batch_size = batch_size
        self.skipped = 0

    async def run(
        self,
        progress: Progress,
        until: dict[str, int] | None = None,
        limits: dict[str, Sequence[int]] | None = None,
    ) -> int:
        """Replay each projection from its checkpoint to the end of the stream (or to its
        sequence in ``until``); return how many messages they read, counted once per
        projection. With ``limits`` (a projection's checkpoint of each partition), only
        the events of a partition up to its own limit are applied (to compare with a live
        read model whose partitions are at different places)."""
        feeds = []
        for r in self.replayers:
            name = r.projection.name
            cut = (limits or {}).get(name, ())
            stop = max(cut) if cut else (None if until is None else until.get(name, 0))
            if stop is None or stop > r.position:
                feeds.append(_Feed(r, stop, cut))
        if not feeds:
            return 0
        stops = [f.stop for f in feeds]
        last_wanted = None if None in stops else max(s for s in stops if s is not None)
        start = min(f.replayer.position for f in feeds) + 1
        reader = StreamReader(
            self.js, self.stream, self.subjects, Start(seq=start), batch=self.batch_size
        )
        queues: list[asyncio.Queue[_Batch | None]] = [asyncio.Queue(2) for _ in feeds]
        async with reader:
            progress.add_total(reader.pending * len(feeds))
            try:
                async with asyncio.TaskGroup() as group:
                    for feed, queue in zip(feeds, queues, strict=True):
                        group.create_task(self._follow(feed, queue, progress))
                    async for msgs in reader.batches(until=last_wanted):
                        where = list(map(position, msgs))
                        events = [e for e in map(self._open, msgs, where) if e is not None]
                        batch = _Batch([w[0] for w in where], events)
                        for queue in queues:
                            await queue.put(batch)  # waits for the slowest projection
                    for queue in queues:
                        await queue.put(None)
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None  # one projection's error, as it was
            # Counted at the start, but past a projection's stop (or before its
            # checkpoint): not read this time.
            progress.add_total(-(reader.pending * len(feeds) - sum(f.read for f in feeds)))
        return sum(f.read for f in feeds)

    @staticmethod
    async def _follow(feed: _Feed, queue: asyncio.Queue[_Batch | None], progress: Progress) -> None:
        """Apply the batches of one projection, in order, as they come."""
        r = feed.replayer
        while (batch := await queue.get()) is not None:
            seqs, events = batch.seqs, batch.events
            end = seqs[-1] if feed.stop is None else min(seqs[-1], feed.stop)
            if end <= r.position:
                continue
            read = bisect_right(seqs, end) - bisect_right(seqs, r.position)
            event_seqs = batch.event_seqs
            mine = events[bisect_right(event_seqs, r.position) : bisect_right(event_seqs, end)]
            if feed.limits:
                p = r.projection
                mine = [e for e in mine if e.seq <= feed.limits[p.partition_of(e.subject)]]
            await r.commit(mine, end)
            feed.read += read
            progress.advance(read)

    def _open(self, msg: Any, where: tuple[int, int, int]) -> Envelope | None:
        seq, _, ns = where
        try:
            return open_envelope(
                msg.headers or {},
                msg.data,
                subject=msg.subject,
                seq=seq,
                time=datetime.fromtimestamp(ns / 1e9, UTC),
            )
        except (UnknownEvent, KeyError, ValueError) as exc:
            self.skipped += 1
            log.error("rebuild_skipped_event", stream=self.stream, seq=seq, error=str(exc))
            return None


# -- a whole read model ----------------------------------------------------------------------


@dataclass
class RowDiff:
    table: str
    key: dict[str, Any]
    live: dict[str, Any] | None  # None: the row is missing from the live read model
    rebuilt: dict[str, Any] | None  # None: the log does not produce this live row

    @property
    def kind(self) -> str:
        if self.live is None:
            return "missing"
        if self.rebuilt is None:
            return "extra"
        return "changed"

    @property
    def columns(self) -> list[str]:
        if self.live is None or self.rebuilt is None:
            return []
        names = list(self.live) + [c for c in self.rebuilt if c not in self.live]
        return [c for c in names if self.live.get(c) != self.rebuilt.get(c)]


@dataclass
class Verification:
    checkpoints: dict[str, int]  # projection -> the stream sequence both sides are at
    differences: dict[str, int] = field(default_factory=dict)  # table -> rows that differ
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows compared (live side)
    checkpoint_mismatch: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not any(self.differences.values()) and not self.checkpoint_mismatch


@dataclass
class Swapped:
    checkpoints: dict[str, int]
    paused_seconds: float
    caught_up_in_pause: int


def partition_limits(projection: Projection, checkpoints: dict[str, int]) -> list[int]:
    """The checkpoint of each of ``projection``'s partitions in ``checkpoints`` (none if it
    has one partition, or they are not there yet: all are then at its own checkpoint)."""
    names = projection.checkpoint_names()
    if projection.partitions == 1 or not all(n in checkpoints for n in names):
        return []
    return [checkpoints[n] for n in names]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ReadModelRebuild:
    """Rebuild (``purpose="rebuild"``) or verify (``"verify"``) one read model."""

    def __init__(
        self,
        js: JetStreamContext,
        engine: AsyncEngine,
        model: ReadModel,
        *,
        purpose: str = "rebuild",
        batch_size: int = 2000,
        keys: KeyRing | None = None,
    ) -> None:
        self.js = js
        self.engine = engine
        self.model = model
        self.live_schema = model.schema
        self.scratch_schema = f"{self.live_schema}_{purpose}"
        self.retired_schema = f"{self.live_schema}_retired"
        # Without keys, sealed personal fields replay as erased.
        self.projections = model.projections(self.scratch_schema, keys)
        self.replayers = [Replayer(engine, p) for p in self.projections]
        by_stream: dict[tuple[str, tuple[str, ...]], list[Replayer]] = {}
        for r in self.replayers:
            key = (r.projection.stream, tuple(r.projection.subjects))
            by_stream.setdefault(key, []).append(r)
        self.streams = [StreamReplay(js, rs, batch_size=batch_size) for rs in by_stream.values()]
        self.batch_size = batch_size

    # -- set-up --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """One rebuild (or verification) of a read model at a time, across machines."""
        async with self.engine.connect() as conn:
            key = _lock_key(f"scratch:{self.scratch_schema}")
            got = (
                await conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
            ).scalar_one()
            await conn.commit()
            if not got:
                raise RebuildError(
                    f"another process is already writing {self.scratch_schema}; "
                    "wait for it to finish"
                )
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    await conn.commit()

    async def scratch_exists(self) -> bool:
        async with self.engine.connect() as conn:
            return await _schema_exists(conn, self.scratch_schema)

    async def drop_scratch(self) -> None:
        await self._drop(self.scratch_schema)

    async def _drop(self, schema: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE"))

    async def prepare(self) -> dict[str, int]:
        """Create the scratch tables (or find them); return where each projection resumes."""
        for replayer in self.replayers:
            await replayer.prepare()
        return self.positions()

    def positions(self) -> dict[str, int]:
        return {r.projection.name: r.position for r in self.replayers}

    @property
    def skipped(self) -> int:
        """Stored events that could not be opened (logged, left out of every projection)."""
        return sum(s.skipped for s in self.streams)

    async def live_checkpoints(self, conn: AsyncConnection | None = None) -> dict[str, int]:
        if conn is None:
            async with self.engine.connect() as own:
                return await self.live_checkpoints(own)
        if not await _schema_exists(conn, self.live_schema):
            return {}
        rows = await conn.execute(
            sa.text(f"SELECT name, last_seq FROM {quote_ident(self.live_schema)}.{CHECKPOINTS}")
        )
        return {name: int(seq) for name, seq in rows.all()}

    # -- replaying -----------------------------------------------------------------------

    async def catch_up(
        self,
        progress: Progress,
        until: dict[str, int] | None = None,
        *,
        per_partition: bool = False,
    ) -> int:
        """Every projection to the end of its stream (or to the checkpoints ``until``, read
        from a read model), concurrently. A partitioned projection goes to its own
        checkpoint, where all its partitions are, or with ``per_partition`` each partition
        to its own, once and for all: later events of the partitions that were behind are
        then never applied."""
        limits: dict[str, Sequence[int]] = {}
        if until is not None and per_partition:
            for r in self.replayers:
                cut = partition_limits(r.projection, until)
                if cut:
                    limits[r.projection.name] = cut
        runs = [s.run(progress, until, limits) for s in self.streams]
        with fewer_collections():
            return sum(await asyncio.gather(*runs))

    async def converge(self, progress: Progress, rounds: int = 20) -> None:
        """Catch up until a round finds little left, so a final catch-up is short."""
        for _ in range(rounds):
            if await self.catch_up(progress) <= self.batch_size:
                return

    # -- swapping ------------------------------------------------------------------------

    async def swap(self, progress: Progress) -> Swapped:
        await self._drop(self.retired_schema)  # left by a swap interrupted before its clean-up
        live = quote_ident(self.live_schema)
        scratch = quote_ident(self.scratch_schema)
        retired = quote_ident(self.retired_schema)
        names = [p.name for p in self.projections]
        async with self.engine.connect() as conn:
            async with conn.begin():
                await conn.execute(sa.text("SET LOCAL lock_timeout = '60s'"))
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:k)"),
                    {"k": swap_lock_key(self.live_schema)},
                )
                paused = time.monotonic()
                # Live batches wait now; bring the scratch copy to the end of the log.
                final = await self.catch_up(progress)
                behind = {
                    name: seq
                    for name, seq in (await self.live_checkpoints(conn)).items()
                    if name in names and seq > self.positions()[name]
                }
                if behind:
                    raise RebuildError(f"the rebuilt read model is behind the live one: {behind}")
                if await _schema_exists(conn, self.live_schema):
                    # Projections of the schema that are not rebuilt (side effects only, no
                    # tables) keep their place.
                    await conn.execute(
                        sa.text(
                            f"INSERT INTO {scratch}.{CHECKPOINTS} (name, last_seq, updated_at) "
                            f"SELECT name, last_seq, updated_at FROM {live}.{CHECKPOINTS} "
                            # Partition rows of a rebuilt projection stay behind: its
                            # runners start them again from its row.
                            "WHERE split_part(name, '#', 1) <> ALL(:names) "
                            "ON CONFLICT (name) DO NOTHING"
                        ),
                        {"names": names},
                    )
                    await conn.execute(sa.text(f"ALTER SCHEMA {live} RENAME TO {retired}"))
                await conn.execute(sa.text(f"ALTER SCHEMA {scratch} RENAME TO {live}"))
                for name, seq in self.positions().items():
                    await conn.execute(
                        sa.text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": NOTIFY_CHANNEL, "payload": f"{name}:{seq}"},
                    )
            paused_for = time.monotonic() - paused
        log.info("read_model_swapped", schema=self.live_schema, paused_seconds=round(paused_for, 3))
        await self._drop(self.retired_schema)
        return Swapped(self.positions(), paused_for, final)

    # -- verifying -----------------------------------------------------------------------

    async def verify(self, progress: Progress, report: Callable[[RowDiff], None]) -> Verification:
        """Replay to the live checkpoints, then compare every table; ``report`` each row that
        differs as it is found."""
        # Follow the live read model until it is close, without holding anything.
        for _ in range(20):
            target = await self.live_checkpoints()
            if await self.catch_up(progress, until=target) <= self.batch_size:
                break
        async with self.engine.connect() as hold, self.engine.connect() as snap:
            await hold.begin()
            await hold.execute(sa.text("SET LOCAL lock_timeout = '60s'"))
            await hold.execute(
                sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": swap_lock_key(self.live_schema)}
            )
            # The live runners are paused: both sides can be brought to one point.
            target = await self.live_checkpoints(hold)
            await self.catch_up(progress, until=target, per_partition=True)
            snapshot = await snap.execution_options(isolation_level="REPEATABLE READ")
            await snapshot.begin()
            await snapshot.execute(sa.text("SELECT 1"))  # the snapshot is taken here
            await hold.rollback()  # live runners go on; the snapshot keeps this moment
            result = Verification(checkpoints=self.positions())
            for r in self.replayers:
                name, seq = r.projection.name, r.position
                live_seq = max(partition_limits(r.projection, target), default=target.get(name, 0))
                if live_seq != seq:
                    result.checkpoint_mismatch[name] = (live_seq, seq)
            for table in self._tables():
                differences, rows = await self._compare(snapshot, table, report)
                result.differences[table.name] = differences
                result.rows[table.name] = rows
            await snapshot.rollback()
        return result

    def _tables(self) -> list[sa.Table]:
        seen: dict[str, sa.Table] = {}
        for projection in self.projections:
            for table in projection.metadata.sorted_tables:
                if table.name != CHECKPOINTS:
                    seen.setdefault(table.name, table)
        return list(seen.values())

    async def _compare(
        self, conn: AsyncConnection, table: sa.Table, report: Callable[[RowDiff], None]
    ) -> tuple[int, int]:
        live = f"{quote_ident(self.live_schema)}.{quote_ident(table.name)}"
        scratch = f"{quote_ident(self.scratch_schema)}.{quote_ident(table.name)}"
        keys = [c.name for c in table.primary_key.columns]
        if not await _table_exists(conn, self.live_schema, table.name):
            live = f"(SELECT * FROM {scratch} WHERE false)"
        on = " AND ".join(f"l.{quote_ident(k)} = s.{quote_ident(k)}" for k in keys)
        key_list = ", ".join(f"COALESCE(l.{quote_ident(k)}, s.{quote_ident(k)})" for k in keys)
        rows = (await conn.execute(sa.text(f"SELECT count(*) FROM {live} AS x"))).scalar_one()
        query = (
            f"SELECT to_jsonb(l) AS live, to_jsonb(s) AS rebuilt "
            f"FROM {live} AS l FULL OUTER JOIN {scratch} AS s ON {on} "
            f"WHERE to_jsonb(l) IS DISTINCT FROM to_jsonb(s) ORDER BY {key_list}"
        )
        found = 0
        result = await conn.stream(sa.text(query).columns(live=JSONB, rebuilt=JSONB))
        async for live_row, rebuilt_row in result:
            side = live_row if live_row is not None else rebuilt_row
            report(
                RowDiff(
                    table=f"{self.live_schema}.{table.name}",
                    key={k: side[k] for k in keys},
                    live=live_row,
                    rebuilt=rebuilt_row,
                )
            )
            found += 1
        return found, int(rows)


async def _schema_exists(conn: AsyncConnection, schema: str) -> bool:
    row = await conn.execute(
        sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}
    )
    return row.first() is not None


async def _table_exists(conn: AsyncConnection, schema: str, table: str) -> bool:
    row = await conn.execute(
        sa.text("SELECT to_regclass(:name) IS NOT NULL"),
        {"name": f"{quote_ident(schema)}.{quote_ident(table)}"},
    )
    return bool(row.scalar_one())

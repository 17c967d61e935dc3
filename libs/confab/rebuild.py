"""Rebuilding a read model from the log next to the live one, swapping it in, and verifying.

A read model is the set of tables of one PostgreSQL schema (``messaging``), written
by its projections (``confab.readmodels``). Rebuilding replays each projection's
stream into the same tables in a scratch schema (``messaging_rebuild``), with its
own checkpoint rows, while the live schema keeps serving and its runners keep
applying new events. An interrupted rebuild resumes from the scratch checkpoints.

Each stream is read, parsed and opened once for all the projections that follow
it (``StreamReplay``); each projection applies the batches in order at its own
pace, each in a transaction of its own with its checkpoint, while the next
batches are fetched and opened. A partitioned projection is replayed in lanes
(``LANES``), each taking whole conversations (its partitions ``k`` with
``k % LANES == i``) with a scratch checkpoint row of its own, as the live runners
of those partitions would apply them; the swap sets the projection's own row
where its lanes ended and drops theirs. The lanes and the other projections can
be shared out to helper processes (``Helpers``, ``shares``): each process reads
the stream and applies its share, then the first catches up alone and swaps.

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
import json
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


# Dropping a schema (a retired read model, an abandoned scratch copy) waits this long for
# each lock it needs, then lets go and tries again, for at most DROP_PATIENCE_SECONDS.
DROP_LOCK_WAIT = "200ms"
DROP_PATIENCE_SECONDS = 120.0
LOCK_NOT_AVAILABLE = "55P03"
DEADLOCK_DETECTED = "40P01"


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


LANES = 2  # how many ways a partitioned projection's replay is split (by its partitions)
# Connections a rebuild's engine keeps: one per projection or lane replayed at once (six
# for messaging), the lock's and the swap's. Fewer, and the pool opens and closes one
# (a PostgreSQL process) for every batch of those beyond it.
REBUILD_POOL = 10


def lane_row(projection: Projection, lane: int, lanes: int) -> str:
    """The scratch checkpoint row of one lane (the partition count in it: a build with
    another count would cut the conversations differently)."""
    return f"{projection.name}@{lane}/{lanes}/{projection.partitions}"


def lane_rows(projection: Projection, lanes: int) -> list[str]:
    return [lane_row(projection, lane, lanes) for lane in range(lanes)]


def lanes_of(projection: Projection) -> int:
    return min(LANES, projection.partitions)


@dataclass
class _Feed:
    """What one projection takes from a pass over its stream."""

    replayer: Replayer
    stop: int | None  # apply nothing past this sequence (None: to the end of the stream)
    limits: Sequence[int]  # per partition, when they differ (verify); else empty
    read: int = 0  # messages of its range (and lane) it took: each counted once per projection


class _Batch:
    """Messages of one fetch (their sequences and subjects) and the events opened from them."""

    __slots__ = ("event_seqs", "events", "seqs", "subjects")

    def __init__(self, seqs: list[int], subjects: list[str], events: list[Envelope]) -> None:
        self.seqs = seqs
        self.subjects = subjects
        self.events = events
        self.event_seqs = [e.seq for e in events]


class Replayer:
    """Applies one projection's batches (or one lane's) to its scratch tables, each batch
    in a transaction with its checkpoint row.

    A partitioned projection is replayed in ``LANES`` lanes: lane ``i`` applies the
    events of the partitions ``k`` with ``k % LANES == i`` (whole conversations, in
    stream order, as the live runners of those partitions would), with a checkpoint
    row of its own (``lane_row``). The projection's own row is set from the lanes
    when the read model is swapped in.
    """

    def __init__(
        self, engine: AsyncEngine, projection: Projection, lane: int = 0, lanes: int = 1
    ) -> None:
        self.engine = engine
        self.projection = projection
        self.lane = lane
        self.lanes = lanes
        self.row = projection.name if lanes == 1 else lane_row(projection, lane, lanes)
        self.position = 0

    def takes(self, subject: str) -> bool:
        """Whether this lane applies the events of ``subject``."""
        return self.lanes == 1 or self.projection.partition_of(subject) % self.lanes == self.lane

    async def prepare(self) -> None:
        await create_tables(self.engine, self.projection.metadata)
        table = self.projection.checkpoints
        name = self.projection.name
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.dialects.postgresql.insert(table)
                .values(name=name, last_seq=0)
                .on_conflict_do_nothing()
            )
            if self.lanes > 1:
                found = await conn.execute(
                    sa.select(table.c.name).where(table.c.name.startswith(f"{name}@"))
                )
                others = set(found.scalars()) - set(lane_rows(self.projection, self.lanes))
                if others:
                    raise RebuildError(
                        f"{name}: {table.schema} was replayed with other lanes "
                        f"({', '.join(sorted(others))}); start it over with --restart"
                    )
                # A new lane starts where the projection's row is.
                start = sa.select(table.c.last_seq).where(table.c.name == name).scalar_subquery()
                await conn.execute(
                    sa.dialects.postgresql.insert(table)
                    .values(name=self.row, last_seq=start)
                    .on_conflict_do_nothing()
                )
            row = await conn.execute(sa.select(table.c.last_seq).where(table.c.name == self.row))
            self.position = int(row.scalar_one())

    async def commit(self, events: Sequence[Envelope], last_seq: int) -> None:
        table = self.projection.checkpoints
        name = self.row
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
    projections (they share ``stream`` and ``subjects``). Each projection (or lane of
    one) then applies the batches in order, each in a transaction of its own that
    moves its checkpoint with its rows, at its own pace: while one waits for
    PostgreSQL, another folds, and the next batches are fetched and opened. The
    reader waits for the slowest (at most two batches queued for each), so memory
    stays bounded. Each projection sees every event past its checkpoint once, in
    stream order (a lane: those of its conversations).
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
        # Each message is counted once per projection (a projection's lanes share it).
        readers = len({f.replayer.projection.name for f in feeds})
        async with reader:
            progress.add_total(reader.pending * readers)
            try:
                async with asyncio.TaskGroup() as group:
                    for feed, queue in zip(feeds, queues, strict=True):
                        group.create_task(self._follow(feed, queue, progress))
                    async for msgs in reader.batches(until=last_wanted):
                        where = list(map(position, msgs))
                        events = [e for e in map(self._open, msgs, where) if e is not None]
                        subjects = [m.subject for m in msgs]
                        batch = _Batch([w[0] for w in where], subjects, events)
                        for queue in queues:
                            await queue.put(batch)  # waits for the slowest projection
                    for queue in queues:
                        await queue.put(None)
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None  # one projection's error, as it was
            # Counted at the start, but past a projection's stop (or before its
            # checkpoint): not read this time.
            progress.add_total(-(reader.pending * readers - sum(f.read for f in feeds)))
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
            first, last = bisect_right(seqs, r.position), bisect_right(seqs, end)
            read = sum(map(r.takes, batch.subjects[first:last]))  # its lane's messages
            event_seqs = batch.event_seqs
            mine = events[bisect_right(event_seqs, r.position) : bisect_right(event_seqs, end)]
            if r.lanes > 1:
                mine = [e for e in mine if r.takes(e.subject)]
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


@dataclass
class Helpers:
    """Other processes to share a replay with: ``argv`` + ``["--part", "i/n"]`` for each
    part ``i`` from 1 to ``processes - 1`` (``confab projections rebuild NAME``), with
    ``env``. Each writes JSON lines on stdout (``part_line``), and stops when its stdin
    (a pipe from this process) closes."""

    argv: list[str]
    env: dict[str, str]
    processes: int = 2


def part_line(**fields: Any) -> str:
    """One line of a helper's report: ``{"total": n}``, ``{"advanced": n}``, or at the end
    ``{"done": {"events", "skipped", "cpu_seconds", "peak_rss_mb"}}``."""
    return json.dumps(fields, separators=(",", ":"))


def shares(replayers: Sequence[Replayer], parts: int) -> list[int]:
    """Which part (process) replays each replayer: a lane by its number (so each process
    has whole conversations), the projections of one lane in turn from the last part
    (the first one also swaps)."""
    out = []
    single = 0
    for r in replayers:
        if r.lanes > 1:
            out.append(r.lane % parts)
        else:
            out.append(parts - 1 - single % parts)
            single += 1
    return out


class ReadModelRebuild:
    """Rebuild (``purpose="rebuild"``) or verify (``"verify"``) one read model.

    With ``part=(i, n)`` it replays only part ``i`` of ``n`` (``shares``): another
    process's share of a rebuild (``converge`` with ``Helpers``)."""

    def __init__(
        self,
        js: JetStreamContext,
        engine: AsyncEngine,
        model: ReadModel,
        *,
        purpose: str = "rebuild",
        batch_size: int = 2000,
        keys: KeyRing | None = None,
        part: tuple[int, int] = (0, 1),
    ) -> None:
        self.js = js
        self.engine = engine
        self.model = model
        self.purpose = purpose
        self.keys = keys
        self.part = part
        self.live_schema = model.schema
        self.scratch_schema = f"{self.live_schema}_{purpose}"
        self.retired_schema = f"{self.live_schema}_retired"
        # Without keys, sealed personal fields replay as erased.
        self.projections = model.projections(self.scratch_schema, keys)
        everyone = [
            Replayer(engine, p, lane, lanes_of(p))
            for p in self.projections
            for lane in range(lanes_of(p))
        ]
        mine, parts = part
        self.replayers = [
            r for r, k in zip(everyone, shares(everyone, parts), strict=True) if k == mine
        ]
        by_stream: dict[tuple[str, tuple[str, ...]], list[Replayer]] = {}
        for r in self.replayers:
            key = (r.projection.stream, tuple(r.projection.subjects))
            by_stream.setdefault(key, []).append(r)
        self.streams = [StreamReplay(js, rs, batch_size=batch_size) for rs in by_stream.values()]
        self.batch_size = batch_size
        self.helper_reports: list[dict[str, Any]] = []  # what each helper said at its end

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

    async def locked_elsewhere(self) -> bool:
        """Whether another session holds ``exclusive()`` (a helper's parent must)."""
        async with self.engine.connect() as conn:
            key = _lock_key(f"scratch:{self.scratch_schema}")
            got = (
                await conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
            ).scalar_one()
            if got:
                await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            await conn.commit()
            return not got

    async def scratch_exists(self) -> bool:
        async with self.engine.connect() as conn:
            return await _schema_exists(conn, self.scratch_schema)

    async def drop_scratch(self) -> None:
        await self._drop(self.scratch_schema)

    async def _drop(self, schema: str) -> None:
        """Drop ``schema`` and its tables, never holding a live transaction up: a query that
        began before a swap may still hold a retired table while it asks for another, and a
        ``DROP … CASCADE`` that locked some tables and waited on that one would deadlock
        with it (PostgreSQL would then abort one of the two, perhaps the query). Each try
        waits at most ``DROP_LOCK_WAIT`` for a lock, well under the deadlock check's second,
        lets go of all it took, and tries again a little later."""
        deadline = time.monotonic() + DROP_PATIENCE_SECONDS
        pause = 0.05
        while True:
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(sa.text(f"SET LOCAL lock_timeout = '{DROP_LOCK_WAIT}'"))
                    await conn.execute(
                        sa.text(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
                    )
                return
            except sa.exc.DBAPIError as exc:
                code = getattr(exc.orig, "sqlstate", None)
                if code not in (LOCK_NOT_AVAILABLE, DEADLOCK_DETECTED):
                    raise
                if time.monotonic() > deadline:
                    raise RebuildError(
                        f"could not drop {schema}: its tables stayed in use for "
                        f"{DROP_PATIENCE_SECONDS:g} s; run the command again to drop it"
                    ) from None
            await asyncio.sleep(pause)  # the transactions in the way finish meanwhile
            pause = min(1.0, pause * 2)

    async def prepare(self) -> dict[str, int]:
        """Create the scratch tables (or find them); return where each projection resumes."""
        for replayer in self.replayers:
            await replayer.prepare()
        return self.positions()

    def positions(self) -> dict[str, int]:
        """Where each projection is: everything up to here applied (by all its lanes)."""
        found: dict[str, int] = {}
        for r in self.replayers:
            name = r.projection.name
            found[name] = min(found.get(name, r.position), r.position)
        return found

    async def _join_lanes(self, conn: AsyncConnection) -> None:
        """The projection's own checkpoint row where all its lanes are, and the lanes' rows
        gone: the runners know only that row. The lanes were just brought to the end of
        the stream, each batch taken by all of them: they are at one place, or apart only
        by messages the projection does not follow (then the lowest is exact)."""
        positions = self.positions()
        for p in self.projections:
            if lanes_of(p) == 1:
                continue
            table = p.checkpoints
            await conn.execute(
                table.update()
                .where(table.c.name == p.name)
                .values(last_seq=positions[p.name], updated_at=sa.func.now())
            )
            await conn.execute(table.delete().where(table.c.name.in_(lane_rows(p, lanes_of(p)))))

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

    async def converge(
        self, progress: Progress, rounds: int = 20, *, helpers: Helpers | None = None
    ) -> None:
        """Catch up until a round finds little left, so a final catch-up is short. With
        ``helpers``, the replay is first shared with other processes (``shares``), each
        projection's lanes and checkpoints apart; then this process catches up alone."""
        if helpers is not None and helpers.processes > 1:
            await self._replay_in_parts(progress, helpers)
            await self.prepare()  # where the parts left each projection
        for _ in range(rounds):
            if await self.catch_up(progress) <= self.batch_size:
                return

    async def _replay_in_parts(self, progress: Progress, helpers: Helpers) -> None:
        n = helpers.processes
        mine = ReadModelRebuild(
            self.js,
            self.engine,
            self.model,
            purpose=self.purpose,
            batch_size=self.batch_size,
            keys=self.keys,
            part=(0, n),
        )
        await mine.prepare()
        procs: list[asyncio.subprocess.Process] = []
        try:
            for i in range(1, n):
                procs.append(
                    await asyncio.create_subprocess_exec(
                        *helpers.argv,
                        "--part",
                        f"{i}/{n}",
                        env=helpers.env,
                        # Never written: it closes when this process ends, however it
                        # ends, and the helper stops then.
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                    )
                )
            async with asyncio.TaskGroup() as group:
                group.create_task(mine.converge(progress))
                for i, proc in enumerate(procs, start=1):
                    group.create_task(self._follow_helper(proc, f"{i}/{n}", progress))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.terminate()
                    await proc.wait()
                if proc.stdin is not None:
                    proc.stdin.close()

    async def _follow_helper(
        self, proc: asyncio.subprocess.Process, part: str, progress: Progress
    ) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        errors = asyncio.ensure_future(proc.stderr.read())
        async for line in proc.stdout:
            try:
                said = json.loads(line)
            except ValueError:
                continue
            if "advanced" in said:
                progress.advance(int(said["advanced"]))
            elif "total" in said:
                progress.add_total(int(said["total"]))
            elif "done" in said:
                self.helper_reports.append(said["done"])
        code = await proc.wait()
        text = (await errors).decode("utf-8", "replace").strip()
        if code != 0:
            last = text.splitlines()[-1] if text else f"exit code {code}"
            raise RebuildError(f"the helper process replaying part {part} failed: {last}")

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
                await self._join_lanes(conn)
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

"""The projection runner: events from a durable pull consumer into PostgreSQL read models.

A batch of events is applied in one transaction that also moves the
projection's checkpoint, so a crash anywhere loses nothing and applies nothing
twice: redelivered events at or below the checkpoint are skipped.

A projection's work can be split into partitions (``Projection.partitions``): every
event belongs to the partition its key hashes to (for conversations, the
conversation), so the events of one key are applied by one process at a time, in
stream order. A process owns a partition by holding a PostgreSQL advisory lock on a
dedicated connection; live processes are counted the same way (one lock each), and
each takes a fair share of the partitions, gives back what it holds beyond it, and
picks up what a dead process held. A projection of one partition is led by one
process while the others stand by.

Each owned partition has its own checkpoint row (``name#k/P``), and the projection's
own row (``name``) is kept at the lowest of them in every commit, so it always
says "everything up to here is applied": ``wait_for``, ``confab projections status``
and rebuilds read that one row. Every process reads the whole stream through a
consumer of its own and applies the events of the partitions it owns; the
database work, which is most of the cost, is what gets shared.

Every process learns the projection's checkpoint through LISTEN/NOTIFY, so
``wait_for`` works wherever a query lands; the listening connection is made again
after a database restart, and the checkpoint re-read then, since notifications
sent meanwhile are lost.

A read model can be swapped under a running projection (``confab projections
rebuild``): every batch transaction first takes its schema's swap lock in
shared mode, which a swap holds exclusively while it renames schemas, so a
batch lands wholly before or wholly after a swap. A batch that finds a
checkpoint is no longer the one this runner wrote (a swapped-in read model, or
a process that lost its lock and still committed) is rolled back, and the
consumer is recreated from the checkpoints it finds; a swapped-in read model
has only the projection's own row, and the partition rows start from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import asyncpg
import sqlalchemy as sa
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from confab.db import checkpoint_table, create_tables, plain_url
from confab.events import Envelope, UnknownEvent, open_envelope, parse_time
from confab.logging import get_logger
from confab.metrics import PROJECTION_APPLIED, PROJECTION_CHECKPOINT

log = get_logger("confab.projection")

NOTIFY_CHANNEL = "confab_checkpoints"

# How often a process counts the live ones and takes or gives back partitions.
BALANCE_INTERVAL = 1.0

# Advisory locks with two int keys show as (classid, objid) with objsubid 2 in pg_locks.
_HELD_WHERE = """
locktype = 'advisory' AND objsubid = 2 AND granted
AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_HELD = f"""
SELECT classid::bigint AS class, objid::bigint AS key FROM pg_locks
WHERE {_HELD_WHERE} AND classid::bigint = ANY($1::bigint[])
"""
_TRY = "SELECT pg_try_advisory_lock($1::int, $2::int)"
_UNLOCK = "SELECT pg_advisory_unlock($1::int, $2::int)"


class Projection(ABC):
    """A read model fed by one stream. Subclasses declare tables on ``metadata``."""

    name: str  # unique across the platform, e.g. "identity"
    stream: str
    subjects: Sequence[str]
    metadata: sa.MetaData
    # How many ways the work can be split across processes. Events with one
    # ``partition_key`` are always applied in order by one process. Changing it
    # takes every copy down at once (or a rebuild): the partitions start again
    # from the projection's checkpoint, so ``apply`` must then tolerate events
    # after it a second time.
    partitions: int = 1

    def __init__(self) -> None:
        self.checkpoints = checkpoint_table(self.metadata)

    @abstractmethod
    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        """Apply ``events`` (in stream order, none applied before) inside ``conn``'s transaction."""

    def partition_key(self, subject: str) -> str:
        """What orders events: those with one key go to one partition (the subject here)."""
        return subject

    def partition_of(self, subject: str) -> int:
        if self.partitions == 1:
            return 0
        return zlib.crc32(self.partition_key(subject).encode()) % self.partitions

    def checkpoint_names(self) -> list[str]:
        """The checkpoint row of each partition."""
        return partition_rows(self.name, self.partitions)


def partition_rows(name: str, partitions: int) -> list[str]:
    if partitions == 1:
        return [name]
    return [f"{name}#{k}/{partitions}" for k in range(partitions)]


def partition_lock_class(projection: Projection) -> int:
    return _lock_class(f"{projection.name}/{projection.partitions}")


async def partition_holders(conn: AsyncConnection, projection: Projection) -> list[int]:
    """How many partitions each live process of ``projection`` holds, most first."""
    rows = await conn.execute(
        sa.text(
            f"SELECT count(*) FROM pg_locks WHERE {_HELD_WHERE} AND classid::bigint = :class "
            "GROUP BY pid ORDER BY 1 DESC"
        ),
        {"class": partition_lock_class(projection)},
    )
    return [int(n) for (n,) in rows.all()]


def _lock_key(name: str) -> int:
    digest = hashlib.blake2b(f"confab.projection.{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_class(name: str) -> int:
    """The first half of a two-part advisory lock key (non-negative, as pg_locks shows it)."""
    return _lock_key(name) & 0x7FFFFFFF


def consumer_name(projection: str) -> str:
    return "proj_" + projection.replace(".", "_")


def swap_lock_key(schema: str) -> int:
    """The advisory lock a swap of ``schema`` holds exclusively and each batch shares."""
    return _lock_key(f"swap:{schema}")


class CheckpointMoved(Exception):
    """A checkpoint is not where this runner left it: resume from where they are."""


def open_message(msg: Msg) -> Envelope:
    """The envelope of a message from a JetStream consumer (raises on unknown events)."""
    meta = msg.metadata
    stamp: Any = meta.timestamp
    return open_envelope(
        msg.headers or {},
        msg.data,
        subject=msg.subject,
        seq=meta.sequence.stream,
        time=parse_time(stamp) if isinstance(stamp, str) else stamp,
    )


class ProjectionRunner:
    def __init__(
        self,
        js: JetStreamContext,
        engine: AsyncEngine,
        database_url: str,
        projection: Projection,
        *,
        batch_size: int = 256,
        fetch_timeout: float = 1.0,
        linger: float = 0.0,
    ) -> None:
        self.js = js
        self.engine = engine
        self.database_url = database_url
        self.projection = projection
        self.batch_size = batch_size
        self.fetch_timeout = fetch_timeout
        # After a batch smaller than ``batch_size``, wait this long before fetching again:
        # fewer, larger transactions for projections nobody reads their writes from.
        self.linger = linger
        self.checkpoint = 0  # the projection's: every partition is at least here
        self.owned: set[int] = set()  # the partitions this process applies
        # Each owned partition's checkpoint as this runner last read or wrote it.
        self._positions: dict[int, int] = {}
        self.applied = 0
        self.last_error: str | None = None
        self._rows = projection.checkpoint_names()
        self._partition_class = partition_lock_class(projection)
        self._member_class = _lock_class(f"{projection.name}/members")
        self._member = 0
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._listening: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        """True while this process applies some of the projection's events."""
        return bool(self.owned)

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        await self.prepare()
        self._task = asyncio.create_task(self._run(), name=f"projection:{self.projection.name}")

    async def prepare(self) -> None:
        """Create the tables and checkpoint rows, and listen for other processes' checkpoints."""
        await create_tables(self.engine, self.projection.metadata)
        async with self.engine.begin() as conn:
            await self._ensure_checkpoints(conn)
            self.checkpoint = await self._read_checkpoint(conn)
        self._listener = await self._listen()
        self._listening = asyncio.create_task(
            self._keep_listening(), name=f"projection-listen:{self.projection.name}"
        )

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand (commit and ack), then stop."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listening
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()

    async def wait_for(self, seq: int, timeout: float = 2.0) -> bool:
        """Return True as soon as the checkpoint reaches ``seq``; False after ``timeout``."""
        if self.checkpoint >= seq:
            return True
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.checkpoint >= seq), timeout
                )
            except TimeoutError:
                return False
        return True

    def describe(self) -> str:
        """Which partitions this process applies, for health answers."""
        if self.projection.partitions == 1:
            return "leader" if self.owned else "standby"
        owned = ",".join(map(str, sorted(self.owned))) or "none"
        return f"partitions {owned} of {self.projection.partitions}"

    # -- other processes' checkpoints -----------------------------------------

    async def _listen(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(plain_url(self.database_url))
        await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        return conn

    async def _keep_listening(self) -> None:
        """Listen again whenever the listening connection is lost (a database restart);
        without this a standby's ``wait_for`` would never see another checkpoint."""
        while not self._stopping.is_set():
            if self._listener is not None and not self._listener.is_closed():
                await self._pause(1.0)
                continue
            try:
                listener = await self._listen()
                try:
                    async with self.engine.connect() as conn:  # what was missed meanwhile
                        await self._advance(await self._read_checkpoint(conn))
                except BaseException:
                    await listener.close()
                    raise
                self._listener = listener
                log.info("projection_listening_again", projection=self.projection.name)
            except (OSError, asyncpg.PostgresError, sa.exc.DBAPIError) as exc:
                log.warning("projection_listen_retry", projection=self.projection.name,
                            error=str(exc) or type(exc).__name__)  # fmt: skip
                await self._pause(1.0)

    # -- owning partitions --------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                lock = await asyncpg.connect(plain_url(self.database_url))
            except (OSError, asyncpg.PostgresError) as exc:
                self.last_error = f"database: {exc}"
                await self._pause(1.0)
                continue
            try:
                await self._join(lock)
                await self._work(lock)
            except Exception as exc:
                self.last_error = str(exc) or type(exc).__name__
                log.exception("projection_failed", projection=self.projection.name)
                await self._pause(1.0)
            finally:
                self.owned.clear()  # the locks go with the connection
                with contextlib.suppress(Exception):
                    await lock.close()

    async def _join(self, lock: asyncpg.Connection) -> None:
        """Count as a live process of this projection for as long as ``lock`` is open."""
        while True:
            self._member = random.randrange(1 << 31)
            if await lock.fetchval(_TRY, self._member_class, self._member):
                return

    async def _balance(self, lock: asyncpg.Connection) -> bool:
        """Take a fair share of the partitions, give back any beyond it; True if that changed
        what this process owns. Only called between batches."""
        classes = [self._member_class, self._partition_class]
        held = await lock.fetch(_HELD, classes)
        members = sum(1 for r in held if r["class"] == self._member_class) or 1
        taken = {r["key"] for r in held if r["class"] == self._partition_class}
        count = self.projection.partitions
        share = -(-count // members)
        before = set(self.owned)
        for k in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - share)]:
            await lock.execute(_UNLOCK, self._partition_class, k)
            self.owned.discard(k)
        # Look from a place of this process's own, so that newcomers spread out.
        offset = self._member % count
        free = sorted(
            (k for k in range(count) if k not in taken), key=lambda k: (k - offset) % count
        )
        for k in free:
            if len(self.owned) >= share:
                break
            if await lock.fetchval(_TRY, self._partition_class, k):
                self.owned.add(k)
        if self.owned != before:
            log.info("projection_partitions", projection=self.projection.name,
                     owned=sorted(self.owned), processes=members)  # fmt: skip
        return self.owned != before

    async def _work(self, lock: asyncpg.Connection) -> None:
        psub: Any = None
        try:
            while not self._stopping.is_set():
                if lock.is_closed():
                    raise ConnectionError("lost the projection lock connection")
                changed = await self._balance(lock)
                if not self.owned:
                    if psub is not None:
                        await _unsubscribe(psub)
                        psub = None
                    await self._pause(BALANCE_INTERVAL)
                    continue
                if changed or psub is None:
                    if psub is not None:
                        await _unsubscribe(psub)
                    psub = None  # unsubscribed, even if subscribing again fails
                    psub = await self._subscribe()
                    self.last_error = None
                if not await self._consume(psub, lock, time.monotonic() + BALANCE_INTERVAL):
                    await _unsubscribe(psub)
                    psub = None  # a checkpoint moved: subscribe again from where it is
        finally:
            if psub is not None:
                await _unsubscribe(psub)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- consuming ---------------------------------------------------------

    async def _subscribe(self) -> Any:
        """Bind to a durable consumer created afresh at the lowest owned checkpoint.

        The database checkpoints are the truth; the consumer only says where to
        resume. It is recreated whenever what this process owns changes: events
        a dead process had fetched but not applied must come again, and an
        acknowledge-all from this one would otherwise cover them.
        """
        p = self.projection
        durable = self._durable()
        async with self.engine.begin() as conn:
            await self._ensure_checkpoints(conn)
            self._positions = await self._read_positions(conn, self.owned)
            overall = await self._read_checkpoint(conn)
        await self._advance(overall)
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(p.stream, durable)
        start = min(self._positions.values()) + 1
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.ALL,
            ack_wait=30,
            max_deliver=-1,
            max_ack_pending=self.batch_size * 4,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start > 1 else DeliverPolicy.ALL,
            opt_start_seq=start if start > 1 else None,
            filter_subjects=list(p.subjects),
            # A process that dies leaves its consumer behind; the server removes it.
            inactive_threshold=300.0,
        )
        await self.js.add_consumer(p.stream, config)
        return await self.js.pull_subscribe_bind(durable=durable, stream=p.stream)

    def _durable(self) -> str:
        name = consumer_name(self.projection.name)
        return name if self.projection.partitions == 1 else f"{name}_{self._member:08x}"

    async def _consume(self, psub: Any, lock: asyncpg.Connection, until: float) -> bool:
        """Fetch and apply batches until ``until``; False if a checkpoint moved meanwhile."""
        while not self._stopping.is_set() and time.monotonic() < until:
            if lock.is_closed():
                raise ConnectionError("lost the projection lock connection")
            try:
                msgs = await psub.fetch(self.batch_size, timeout=self.fetch_timeout)
            except TimeoutError:  # nats-py raises both its own and the builtin one
                continue
            if not msgs:  # a pull can end with only a status message
                continue
            try:
                await self._apply_until_done(msgs)
            except CheckpointMoved as moved:
                # A rebuilt read model was swapped in: go on from its checkpoints.
                log.info("projection_checkpoint_moved", projection=self.projection.name,
                         reason=str(moved))  # fmt: skip
                return False
            await msgs[-1].ack()  # AckAll: acknowledges the whole batch
            if self.linger and len(msgs) < self.batch_size:
                await self._pause(self.linger)
        return True

    async def _apply_until_done(self, msgs: list[Msg]) -> None:
        """Apply one fetched batch, retrying the same batch while the database is down."""
        mine = self._mine(msgs)
        events = [e for e in map(self._open, mine) if e is not None]
        last_seq = msgs[-1].metadata.sequence.stream
        delay = 0.2
        while True:
            try:
                await self._commit(events, last_seq)
                self.last_error = None
                return
            except (OSError, asyncpg.PostgresError, sa.exc.DBAPIError) as exc:
                self.last_error = f"database: {exc}"
                log.warning("projection_retry", projection=self.projection.name, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _mine(self, msgs: list[Msg]) -> list[Msg]:
        """The messages of owned partitions not applied yet (others are not even opened)."""
        if self.projection.partitions == 1:
            return msgs
        partition_of, positions = self.projection.partition_of, self._positions
        return [
            m
            for m in msgs
            if m.metadata.sequence.stream > positions.get(partition_of(m.subject), 1 << 62)
        ]

    def _open(self, msg: Msg) -> Envelope | None:
        try:
            return open_message(msg)
        except (UnknownEvent, KeyError, ValueError) as exc:
            log.error(
                "projection_skipped_event",
                projection=self.projection.name,
                seq=msg.metadata.sequence.stream,
                error=str(exc),
            )
            return None

    async def _commit(self, events: list[Envelope], last_seq: int) -> None:
        table = self.projection.checkpoints
        name = self.projection.name
        owned = {self._rows[k]: k for k in self._positions}
        async with self.engine.begin() as conn:
            # First, before any table is named: a swap renames the schema under this lock.
            await conn.execute(
                sa.text("SELECT pg_advisory_xact_lock_shared(:key)"),
                {"key": swap_lock_key(self.projection.metadata.schema or "public")},
            )
            rows = await conn.execute(
                sa.select(table.c.name, table.c.last_seq)
                .where(table.c.name.in_(sorted(owned)))
                .order_by(table.c.name)
                .with_for_update()
            )
            found = {owned[row_name]: int(seq) for row_name, seq in rows.all()}
            if found != self._positions:
                raise CheckpointMoved(f"found {found}, left {self._positions}")
            partition_of = self.projection.partition_of
            fresh = [e for e in events if e.seq > found[partition_of(e.subject)]]
            if fresh:
                await self.projection.apply(conn, fresh)
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
                    {"channel": NOTIFY_CHANNEL, "payload": f"{name}:{overall}"},
                )
        for k in self._positions:
            self._positions[k] = max(self._positions[k], last_seq)
        self.applied += len(fresh)
        PROJECTION_APPLIED.labels(name).inc(len(fresh))
        if overall is not None:
            PROJECTION_CHECKPOINT.labels(name).set(overall)
            await self._advance(overall)

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

    async def _ensure_checkpoints(self, conn: AsyncConnection) -> None:
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

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        name, _, seq = payload.rpartition(":")
        if name == self.projection.name:
            asyncio.get_running_loop().create_task(self._advance(int(seq)))

    async def _advance(self, seq: int) -> None:
        if seq > self.checkpoint:
            self.checkpoint = seq
            async with self._changed:
                self._changed.notify_all()


async def _unsubscribe(psub: Any) -> None:
    with contextlib.suppress(Exception):
        await psub.unsubscribe()

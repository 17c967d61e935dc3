"""The projection runner: events from a durable pull consumer into PostgreSQL read models.

A batch of events is applied in one transaction that also moves the
projection's checkpoint, so a crash anywhere loses nothing and applies nothing
twice: redelivered events at or below the checkpoint are skipped. One process
at a time feeds a projection (a PostgreSQL advisory lock held on a dedicated
connection); others stand by and take over when it dies. Every process learns
checkpoints through LISTEN/NOTIFY, so ``wait_for`` works wherever a query lands; the
listening connection is made again after a database restart, and the checkpoint
re-read then, since notifications sent meanwhile are lost.

A read model can be swapped under a running projection (``confab projections
rebuild``): every batch transaction first takes its schema's swap lock in
shared mode, which a swap holds exclusively while it renames schemas, so a
batch lands wholly before or wholly after a swap. A batch that finds the
checkpoint is no longer the one this runner wrote (a swapped-in read model, or
a leader that lost its lock and still committed) is rolled back, and the
consumer is recreated from the checkpoint it found.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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


class Projection(ABC):
    """A read model fed by one stream. Subclasses declare tables on ``metadata``."""

    name: str  # unique across the platform, e.g. "identity"
    stream: str
    subjects: Sequence[str]
    metadata: sa.MetaData

    def __init__(self) -> None:
        self.checkpoints = checkpoint_table(self.metadata)

    @abstractmethod
    async def apply(self, conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        """Apply ``events`` (in stream order, none applied before) inside ``conn``'s transaction."""


def _lock_key(name: str) -> int:
    digest = hashlib.blake2b(f"confab.projection.{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def consumer_name(projection: str) -> str:
    return "proj_" + projection.replace(".", "_")


def swap_lock_key(schema: str) -> int:
    """The advisory lock a swap of ``schema`` holds exclusively and each batch shares."""
    return _lock_key(f"swap:{schema}")


class CheckpointMoved(Exception):
    """The checkpoint is not where this runner left it: resume from where it is."""

    def __init__(self, found: int) -> None:
        super().__init__(f"the checkpoint moved to {found}")
        self.found = found


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
        self.checkpoint = 0
        self._position = 0  # the checkpoint as this runner last read or wrote it
        self.is_leader = False
        self.applied = 0
        self.last_error: str | None = None
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._listening: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        await self.prepare()
        self._task = asyncio.create_task(self._run(), name=f"projection:{self.projection.name}")

    async def prepare(self) -> None:
        """Create the tables and checkpoint row, and listen for other processes' checkpoints."""
        await create_tables(self.engine, self.projection.metadata)
        async with self.engine.begin() as conn:
            await self._ensure_checkpoint(conn)
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

    # -- the loop ----------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                lock = await asyncpg.connect(plain_url(self.database_url))
            except (OSError, asyncpg.PostgresError) as exc:
                self.last_error = f"database: {exc}"
                await self._pause(1.0)
                continue
            try:
                if await self._acquire(lock):
                    self.is_leader = True
                    log.info("projection_leading", projection=self.projection.name)
                    await self._consume(lock)
            except Exception as exc:
                self.last_error = str(exc) or type(exc).__name__
                log.exception("projection_failed", projection=self.projection.name)
                await self._pause(1.0)
            finally:
                self.is_leader = False
                with contextlib.suppress(Exception):
                    await lock.close()

    async def _acquire(self, lock: asyncpg.Connection) -> bool:
        key = _lock_key(self.projection.name)
        while not self._stopping.is_set():
            if await lock.fetchval("SELECT pg_try_advisory_lock($1)", key):
                return True
            await self._pause(1.0)
        return False

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _subscribe(self) -> Any:
        """Bind to a durable consumer created afresh at the checkpoint.

        The database checkpoint is the truth; the consumer only says where to
        resume. It is recreated each time this process becomes the leader:
        events a dead leader had fetched but not applied must come again, and
        an acknowledge-all from the new leader would otherwise cover them.
        """
        p = self.projection
        durable = consumer_name(p.name)
        async with self.engine.begin() as conn:
            await self._ensure_checkpoint(conn)
            self._position = await self._read_checkpoint(conn)
        await self._advance(self._position)
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(p.stream, durable)
        start = self._position + 1
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.ALL,
            ack_wait=30,
            max_deliver=-1,
            max_ack_pending=self.batch_size * 4,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start > 1 else DeliverPolicy.ALL,
            opt_start_seq=start if start > 1 else None,
            filter_subjects=list(p.subjects),
        )
        await self.js.add_consumer(p.stream, config)
        return await self.js.pull_subscribe_bind(durable=durable, stream=p.stream)

    async def _consume(self, lock: asyncpg.Connection) -> None:
        psub = await self._subscribe()
        self.last_error = None
        try:
            while not self._stopping.is_set():
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
                    # A rebuilt read model was swapped in: go on from its checkpoint.
                    log.info(
                        "projection_checkpoint_moved",
                        projection=self.projection.name,
                        was=self._position,
                        now=moved.found,
                    )
                    with contextlib.suppress(Exception):
                        await psub.unsubscribe()
                    psub = await self._subscribe()
                    continue
                await msgs[-1].ack()  # AckAll: acknowledges the whole batch
                if self.linger and len(msgs) < self.batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.linger)
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _apply_until_done(self, msgs: list[Msg]) -> None:
        """Apply one fetched batch, retrying the same batch while the database is down."""
        events = [e for e in map(self._open, msgs) if e is not None]
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
        async with self.engine.begin() as conn:
            # First, before any table is named: a swap renames the schema under this lock.
            await conn.execute(
                sa.text("SELECT pg_advisory_xact_lock_shared(:key)"),
                {"key": swap_lock_key(self.projection.metadata.schema or "public")},
            )
            row = await conn.execute(
                sa.select(table.c.last_seq).where(table.c.name == name).with_for_update()
            )
            applied = row.scalar_one_or_none()
            if applied != self._position:
                raise CheckpointMoved(applied or 0)
            fresh = [e for e in events if e.seq > applied]
            if fresh:
                await self.projection.apply(conn, fresh)
            if last_seq > applied:
                await conn.execute(
                    table.update()
                    .where(table.c.name == name)
                    .values(last_seq=last_seq, updated_at=sa.func.now())
                )
                await conn.execute(
                    sa.text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": NOTIFY_CHANNEL, "payload": f"{name}:{last_seq}"},
                )
        self._position = max(applied, last_seq)
        self.applied += len(fresh)
        PROJECTION_APPLIED.labels(name).inc(len(fresh))
        PROJECTION_CHECKPOINT.labels(name).set(last_seq)
        await self._advance(last_seq)

    async def _ensure_checkpoint(self, conn: AsyncConnection) -> None:
        await conn.execute(
            sa.dialects.postgresql.insert(self.projection.checkpoints)
            .values(name=self.projection.name, last_seq=0)
            .on_conflict_do_nothing()
        )

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

"""The projection runner: events from a durable pull consumer into PostgreSQL read models.

The loop over the parts beside this module: while this process holds its
ownership connection (``ownership``), it balances the partitions between
batches; whenever what it owns changes, or a checkpoint moved under it, it makes
its consumer afresh at the lowest owned checkpoint (``consumer``); then it
fetches a batch, keeps the events of owned partitions not applied yet, commits
them with their checkpoint rows (``commit``), and acknowledges the batch. Every
other process hears of the new checkpoint (``checkpoints``).

Invariants: a batch is acknowledged only after its commit, so a crash anywhere
loses nothing (the events come again) and applies nothing twice (the
checkpoints skip them); a batch the database cannot take is retried as it is,
never skipped; a batch whose checkpoint moved is dropped unacknowledged and
read again from where the checkpoints are.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncEngine

from confab.logging import get_logger
from confab.projection.base import DATABASE_ERRORS, Projection, pause
from confab.projection.checkpoints import CheckpointWatch
from confab.projection.commit import BatchCommit, CheckpointMoved
from confab.projection.consumer import (
    Place,
    durable_name,
    open_or_skip,
    subscribe_from,
    unsubscribe,
)
from confab.projection.ownership import BALANCE_INTERVAL, Ownership
from confab.projection.pull import fetch
from confab.streamread import position

log = get_logger("confab.projection")


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
        # fewer, larger transactions. A transaction costs about as much as a few dozen
        # events, so at a moderate rate, with a batch per event or two, it is most of the
        # cost. A reader waiting for what has not been applied yet (``wait_for``) cuts
        # the wait short, so read-your-writes never waits for it in this process.
        # Runners that linger fetch with ``pull.fetch``, a third of nats-py's CPU per
        # message. The others keep nats-py's: their batches are as large as what arrives
        # while the loop comes back, and its slower fetch (a loop turn per message) makes
        # them about twice as large under load; with the faster one, PostgreSQL's share
        # per message grew by what the fetch saved (bench/README.md, session 10).
        self.linger = linger
        self._wake = asyncio.Event()  # ends a linger: a reader waits, or stop
        self.last_error: str | None = None
        self.ownership = Ownership(database_url, projection)
        self.batches = BatchCommit(engine, projection)
        self.watch = CheckpointWatch(database_url, projection.name, self.batches)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def checkpoint(self) -> int:
        """The projection's checkpoint: every partition is at least here."""
        return self.watch.checkpoint

    @property
    def owned(self) -> set[int]:
        """The partitions this process applies."""
        return self.ownership.owned

    @owned.setter
    def owned(self, partitions: set[int]) -> None:
        self.ownership.owned = partitions

    @property
    def applied(self) -> int:
        """How many events this process has applied."""
        return self.batches.applied

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
        await self.watch.start(await self.batches.setup())

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand (commit and ack), then stop."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self.watch.stop()

    async def wait_for(self, seq: int, timeout: float = 2.0) -> bool:
        """Return True as soon as the checkpoint reaches ``seq``; False after ``timeout``."""
        if self.watch.checkpoint < seq:
            self._wake.set()  # no lingering while somebody waits
        return await self.watch.wait_for(seq, timeout)

    def describe(self) -> str:
        """Which partitions this process applies, for health answers."""
        return self.ownership.describe()

    # -- the loop ------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.ownership.connect()
            except (OSError, asyncpg.PostgresError) as exc:
                self.last_error = f"database: {exc}"
                await pause(self._stopping, 1.0)
                continue
            try:
                await self.ownership.join()
                await self._work()
            except Exception as exc:
                if _stream_missing(exc):  # its service has not made it yet: at start-up
                    self.last_error = f"stream {self.projection.stream} does not exist yet"
                    log.info("projection_waiting_for_stream", projection=self.projection.name,
                             stream=self.projection.stream)  # fmt: skip
                else:
                    self.last_error = str(exc) or type(exc).__name__
                    log.exception("projection_failed", projection=self.projection.name)
                await pause(self._stopping, 1.0)
            finally:
                await self.ownership.release()

    async def _work(self) -> None:
        """Balance, subscribe when what is owned changed, consume; until stopped or the
        lock connection is lost."""
        psub: Any = None
        try:
            while not self._stopping.is_set():
                self.ownership.check()
                changed = await self.ownership.balance()
                if psub is not None and (changed or not self.owned):
                    await unsubscribe(psub)
                    psub = None  # unsubscribed, even if subscribing again fails
                if not self.owned:
                    await pause(self._stopping, BALANCE_INTERVAL)
                    continue
                if psub is None:
                    psub = await self._subscribe()
                    self.last_error = None
                if not await self._consume(psub, time.monotonic() + BALANCE_INTERVAL):
                    await unsubscribe(psub)
                    psub = None  # a checkpoint moved: subscribe again from where it is
        finally:
            if psub is not None:
                await unsubscribe(psub)

    async def _subscribe(self) -> Any:
        """A consumer made afresh at the lowest checkpoint of the owned partitions."""
        await self.watch.advance(await self.batches.resume(self.owned))
        start = min(self.batches.positions.values()) + 1
        durable = durable_name(self.projection, self.ownership.member)
        return await subscribe_from(self.js, self.projection, durable, start, self.batch_size)

    async def _consume(self, psub: Any, until: float) -> bool:
        """Fetch and apply batches until ``until``; False if a checkpoint moved meanwhile."""
        while not self._stopping.is_set() and time.monotonic() < until:
            self.ownership.check()
            try:
                if self.linger:
                    msgs = await fetch(psub, self.batch_size, self.fetch_timeout)
                else:
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
                await self._linger()
        return True

    async def _linger(self) -> None:
        """Wait ``linger`` seconds for more events to gather, unless somebody waits for
        the events already there (or the runner stops)."""
        await pause(self._wake, self.linger)
        if not self._stopping.is_set():
            self._wake.clear()

    async def _apply_until_done(self, msgs: list[Msg]) -> None:
        """Apply one fetched batch, retrying the same batch while the database is down."""
        name = self.projection.name
        events = [e for m, at in self._mine(msgs) if (e := open_or_skip(name, m, at)) is not None]
        last_seq = position(msgs[-1])[0]
        delay = 0.2
        while True:
            try:
                overall = await self.batches.commit(events, last_seq)
                self.last_error = None
                break
            except DATABASE_ERRORS as exc:
                self.last_error = f"database: {exc}"
                log.warning("projection_retry", projection=name, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if overall is not None:
            await self.watch.advance(overall)

    def _mine(self, msgs: list[Msg]) -> list[tuple[Msg, Place]]:
        """The messages of owned partitions not applied yet (others are not even opened),
        each with its place in the stream, read once."""
        placed = [(m, position(m)) for m in msgs]
        if self.projection.partitions == 1:
            return placed
        partition_of, positions = self.projection.partition_of, self.batches.positions
        return [
            (m, at) for m, at in placed if at[0] > positions.get(partition_of(m.subject), 1 << 62)
        ]

    # -- what tests written before the split look at ---------------------------

    @property
    def _member_class(self) -> int:
        return self.ownership.member_class

    @property
    def _partition_class(self) -> int:
        return self.ownership.partition_class

    @property
    def _listener(self) -> asyncpg.Connection | None:
        return self.watch.listener


STREAM_NOT_FOUND = 10059  # JetStream's error code


def _stream_missing(exc: Exception) -> bool:
    return isinstance(exc, NotFoundError) and exc.err_code == STREAM_NOT_FOUND

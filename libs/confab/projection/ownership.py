"""Partition ownership: which live process applies which partitions of a projection.

A process owns a partition by holding a PostgreSQL advisory lock on a dedicated
connection; live processes are counted the same way (one lock each, a random
member key), and each takes a fair share of the partitions, gives back what it
holds beyond it, and picks up what a dead process held. A projection of one
partition is led by one process while the others stand by.

Invariants: a partition is owned by at most one process at a time (the lock);
the locks go with the connection, so what a dead process held is free as soon
as its connection is gone; what a process owns changes only in ``balance``,
which the runner calls between batches only.
"""

from __future__ import annotations

import contextlib
import random

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from confab.db import plain_url
from confab.logging import get_logger
from confab.projection.base import Projection, lock_key

log = get_logger("confab.projection")

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


def lock_class(name: str) -> int:
    """The first half of a two-part advisory lock key (non-negative, as pg_locks shows it)."""
    return lock_key(name) & 0x7FFFFFFF


def partition_lock_class(projection: Projection) -> int:
    return lock_class(f"{projection.name}/{projection.partitions}")


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


class Ownership:
    """This process's membership and partitions, held on a connection of their own."""

    def __init__(self, database_url: str, projection: Projection) -> None:
        self.database_url = database_url
        self.projection = projection
        self.owned: set[int] = set()  # the partitions this process applies
        self.member = 0  # this process's member key (kept across reconnects)
        self.member_class = lock_class(f"{projection.name}/members")
        self.partition_class = partition_lock_class(projection)
        self._lock: asyncpg.Connection | None = None

    async def connect(self) -> None:
        """Open the connection that will hold the locks (raises while the database is down)."""
        self._lock = await asyncpg.connect(plain_url(self.database_url))

    async def join(self) -> None:
        """Count as a live process of this projection for as long as the connection is open."""
        lock = self._connection()
        while True:
            self.member = random.randrange(1 << 31)
            if await lock.fetchval(_TRY, self.member_class, self.member):
                return

    def check(self) -> None:
        """Raise if the connection holding the locks is gone (so are the locks)."""
        self._connection()

    async def balance(self) -> bool:
        """Take a fair share of the partitions, give back any beyond it; True if that changed
        what this process owns."""
        lock = self._connection()
        classes = [self.member_class, self.partition_class]
        held = await lock.fetch(_HELD, classes)
        members = sum(1 for r in held if r["class"] == self.member_class) or 1
        taken = {r["key"] for r in held if r["class"] == self.partition_class}
        count = self.projection.partitions
        share = -(-count // members)
        before = set(self.owned)
        for k in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - share)]:
            await lock.execute(_UNLOCK, self.partition_class, k)
            self.owned.discard(k)
        # Look from a place of this process's own, so that newcomers spread out.
        offset = self.member % count
        free = sorted(
            (k for k in range(count) if k not in taken), key=lambda k: (k - offset) % count
        )
        for k in free:
            if len(self.owned) >= share:
                break
            if await lock.fetchval(_TRY, self.partition_class, k):
                self.owned.add(k)
        if self.owned != before:
            log.info("projection_partitions", projection=self.projection.name,
                     owned=sorted(self.owned), processes=members)  # fmt: skip
        return self.owned != before

    async def release(self) -> None:
        """Give back everything: close the connection (the locks go with it)."""
        self.owned.clear()
        lock, self._lock = self._lock, None
        if lock is not None:
            with contextlib.suppress(Exception):
                await lock.close()

    def describe(self) -> str:
        """Which partitions this process applies, for health answers."""
        if self.projection.partitions == 1:
            return "leader" if self.owned else "standby"
        owned = ",".join(map(str, sorted(self.owned))) or "none"
        return f"partitions {owned} of {self.projection.partitions}"

    def _connection(self) -> asyncpg.Connection:
        if self._lock is None or self._lock.is_closed():
            raise ConnectionError("lost the projection lock connection")
        return self._lock

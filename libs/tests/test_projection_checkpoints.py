"""Checkpoint notifications on their own (real PostgreSQL, no NATS): ``wait_for`` wakes on
its projection's NOTIFY and no other, the checkpoint never goes back, and the watch listens
again after its connection is cut, reading what it missed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from confab.db import plain_url
from confab.projection import NOTIFY_CHANNEL, CheckpointWatch

NAME = "watched"


class Known:
    """A ``CheckpointReader`` answering what the test says the database holds (reading the
    real row is ``BatchCommit``'s part, tested in test_projection_commit.py)."""

    def __init__(self) -> None:
        self.seq = 0
        self.reads = 0

    async def read_checkpoint(self) -> int:
        self.reads += 1
        return self.seq


@pytest.fixture
async def admin(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(plain_url(fresh_database_url))
    yield conn
    await conn.close()


async def cut(database_url: str, conn: asyncpg.Connection) -> None:
    """End ``conn``'s server process, as a database restart does."""
    admin = await asyncpg.connect(plain_url(database_url))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", conn.get_server_pid())
    finally:
        await admin.close()


async def notify(admin: asyncpg.Connection, name: str, seq: int) -> None:
    await admin.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, f"{name}:{seq}")


async def test_wait_for_wakes_on_its_projections_notification_only(
    fresh_database_url: str, admin: asyncpg.Connection
) -> None:
    watch = CheckpointWatch(fresh_database_url, NAME, Known())
    await watch.start(3)
    try:
        assert watch.checkpoint == 3
        assert await watch.wait_for(3, timeout=0)  # reached already: no wait at all
        waiter = asyncio.create_task(watch.wait_for(10, timeout=30))
        await notify(admin, "other", 50)  # another projection's
        await notify(admin, f"{NAME}.more", 50)  # a name it is a prefix of
        await notify(admin, NAME, 7)
        assert await watch.wait_for(7, timeout=10)
        # Notifications arrive in order: the others came first and moved nothing.
        assert watch.checkpoint == 7
        assert not waiter.done()
        await notify(admin, NAME, 12)
        assert await asyncio.wait_for(waiter, 10)  # woke on it, well before 30 s
        assert watch.checkpoint == 12
        assert await watch.wait_for(13, timeout=0.1) is False
    finally:
        await watch.stop()


async def test_the_checkpoint_only_moves_forward(fresh_database_url: str) -> None:
    watch = CheckpointWatch(fresh_database_url, NAME, Known())
    await watch.start(5)
    try:
        await watch.advance(4)
        assert watch.checkpoint == 5
        waiter = asyncio.create_task(watch.wait_for(9, timeout=10))
        await watch.advance(9)
        assert await waiter
        assert watch.checkpoint == 9
    finally:
        await watch.stop()


async def test_it_listens_again_after_its_connection_is_cut_and_reads_what_it_missed(
    fresh_database_url: str, admin: asyncpg.Connection
) -> None:
    known = Known()
    watch = CheckpointWatch(fresh_database_url, NAME, known)
    await watch.start(1)
    try:
        assert watch.listener is not None
        before = watch.listener.get_server_pid()
        await cut(fresh_database_url, watch.listener)
        # Commits meanwhile notify nobody: only reading the checkpoint again finds them.
        known.seq = 42
        await notify(admin, NAME, 42)
        assert await watch.wait_for(42, timeout=15)
        assert known.reads >= 1
        assert watch.listener.get_server_pid() != before

        await notify(admin, NAME, 50)  # and it hears the next ones again
        assert await watch.wait_for(50, timeout=10)
    finally:
        await watch.stop()
    assert watch.listener.is_closed()

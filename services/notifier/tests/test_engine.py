"""The decision engine on a real PostgreSQL, with a clock the test drives.

The projection's ``apply`` folds events in a transaction as the runner would; the engine's
``tick(now)`` decides what is due at ``now``. No NATS: what is checked here is that the
pending rows, the decisions and their idempotency live in the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from confab.contracts.events.messaging import (
    ConversationCreated,
    MessageDeleted,
    MessagePosted,
    ReadMarked,
)
from confab.db import create_engine, create_tables
from confab.events import Envelope
from confab_notifier.engine import Engine
from confab_notifier.projections import ConversationsProjection
from confab_notifier.store import TABLES

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
WS, CONV = "ws_1", "c_1"
DELAY = 60.0
MENTION_DELAY = 10.0  # ConversationsProjection's default


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(fresh_database_url, 4)
    projection = ConversationsProjection(partitions=4, default_delay=DELAY)
    await create_tables(engine, projection.metadata)
    yield engine
    await engine.dispose()


class Log:
    """Events of one conversation, folded as the runner folds them."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.projection = ConversationsProjection(partitions=4, default_delay=DELAY)
        self.seq = 0
        self.stream_seq = 0

    async def add(self, make: Any, **fields: Any) -> Any:
        self.seq += 1
        self.stream_seq += 1
        at = fields.pop("at", T0 + timedelta(seconds=self.seq))
        event = make(conversation_id=CONV, seq=self.seq, at=at, **fields)
        envelope = Envelope.of(
            event, workspace=WS, subject=f"conv.evt.{WS}.{CONV}", seq=self.stream_seq
        )
        async with self.engine.begin() as conn:
            await self.projection.apply(conn, [envelope])
        return event

    async def post(self, sender: str, text: str = "hi", **fields: Any) -> MessagePosted:
        return await self.add(
            MessagePosted, message_id=f"msg{self.seq + 1}", sender_id=sender, content=text,
            **fields,
        )  # fmt: skip


def engine_of(db: AsyncEngine, offered: list[dict[str, Any]]) -> Engine:
    return Engine(db, lambda: {0, 1, 2, 3}, None, offer=offered.extend)


async def outbox(db: AsyncEngine) -> list[Any]:
    async with db.connect() as conn:
        return list((await conn.execute(sa.select(TABLES.outbox))).all())


async def test_due_only_after_the_delay_one_digest_and_never_twice(db: AsyncEngine) -> None:
    log = Log(db)
    await log.add(ConversationCreated, kind="group", participant_ids=["ann", "bob", "cy"])
    for text in ("one", "two", "three", "four", "five"):
        await log.post("ann", text)
    offered: list[dict[str, Any]] = []
    engine = engine_of(db, offered)
    first_due = T0 + timedelta(seconds=2 + DELAY)  # the first message's time + the delay
    assert await engine.tick(first_due - timedelta(seconds=1)) == 0
    assert await engine.tick(first_due) == 2  # bob and cy, ann sent them
    rows = await outbox(db)
    assert sorted(r.user_id for r in rows) == ["bob", "cy"]
    assert all(len(r.message_ids) == 5 and r.first_seq == 2 and r.last_seq == 6 for r in rows)
    assert [r["user_id"] for r in sorted(offered, key=lambda r: r["user_id"])] == ["bob", "cy"]
    # Another process (a restart, a copy) deciding again decides nothing more.
    again: list[dict[str, Any]] = []
    assert await engine_of(db, again).tick(first_due + timedelta(hours=1)) == 0
    assert len(await outbox(db)) == 2 and again == []


async def test_a_read_cancels_and_a_deleted_message_is_left_out(db: AsyncEngine) -> None:
    log = Log(db)
    await log.add(ConversationCreated, kind="direct", participant_ids=["ann", "bob"])
    first = await log.post("ann", "read me")
    await log.add(ReadMarked, user_id="bob", up_to=first.seq)
    engine = engine_of(db, [])
    assert await engine.tick(T0 + timedelta(hours=1)) == 0  # nothing pending
    kept = await log.post("ann", "kept")
    gone = await log.post("ann", "gone")
    await log.add(MessageDeleted, message_id=gone.message_id, by="ann")
    assert await engine.tick(T0 + timedelta(hours=1)) == 1
    [row] = await outbox(db)
    assert row.message_ids == [kept.message_id]


async def test_two_engines_at_once_decide_each_notification_once(db: AsyncEngine) -> None:
    log = Log(db)
    people = [f"u{i}" for i in range(60)]
    await log.add(ConversationCreated, kind="group", participant_ids=["ann", *people])
    await log.post("ann", "to all")
    a, b = engine_of(db, []), engine_of(db, [])
    a.batch = b.batch = 7  # many small transactions, interleaved
    now = T0 + timedelta(hours=1)

    async def drain(engine: Engine) -> int:
        total = 0
        while n := await engine.tick(now):
            total += n
        return total

    decided = await asyncio.gather(drain(a), drain(b))
    assert sum(decided) == 60
    rows = await outbox(db)
    assert sorted(r.user_id for r in rows) == sorted(people)


async def test_a_mention_makes_the_notification_due_sooner(db: AsyncEngine) -> None:
    log = Log(db)
    await log.add(ConversationCreated, kind="group", participant_ids=["ann", "bob", "cy"])
    await log.post("ann", "plain")  # seq 2: due at 2 s + the delay for both
    mention = [{"user_id": "cy", "start": 0, "end": 3}]
    await log.post("ann", "@cy look", mentions=mention)  # seq 3: cy's due sooner
    engine = engine_of(db, [])
    cy_due = T0 + timedelta(seconds=3 + MENTION_DELAY)
    assert await engine.tick(cy_due - timedelta(seconds=1)) == 0
    assert await engine.tick(cy_due) == 1
    [row] = await outbox(db)
    assert (row.user_id, len(row.message_ids)) == ("cy", 2)  # one digest of both
    assert await engine.tick(T0 + timedelta(seconds=2 + DELAY)) == 1  # bob, at the delay

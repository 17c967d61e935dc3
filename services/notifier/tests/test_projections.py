"""The conversations projection on a real PostgreSQL: a run of posts, applied in one
statement per table, leaves exactly the rows that applying the posts one by one leaves
(messages, the senders' read marks, the others' pending rows with their due times)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from confab.contracts.events.messaging import ConversationCreated, Mention, MessagePosted
from confab.contracts.events.notifier import SettingsSet
from confab.db import create_engine, create_tables
from confab.events import Envelope
from confab_notifier.projections import ConversationsProjection, NotifierProjection

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
FAST_WS, SLOW_WS = "ws_fast", "ws_slow"  # the second has a delay of its own (600 s)


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(fresh_database_url, 4)
    await create_tables(engine, ConversationsProjection(partitions=4).metadata)
    yield engine
    await engine.dispose()


def envelope(ws: str, event: Any, seq: int) -> Envelope:
    conversation = getattr(event, "conversation_id", "")
    subject = f"conv.evt.{ws}.{conversation}" if conversation else f"notifier.evt.{ws}"
    return Envelope.of(event, workspace=ws, subject=subject, seq=seq)


def history() -> tuple[list[Envelope], list[Envelope]]:
    """Two conversations' set-up (and a first post), then a run of posts across both:
    senders posting twice, a post with no sender, mentions, a mention of the sender."""
    stream = 0
    seqs: dict[str, int] = {}

    def make(ws: str, cls: Any, conversation_id: str, **fields: Any) -> Envelope:
        nonlocal stream
        stream += 1
        seq = seqs[conversation_id] = seqs.get(conversation_id, 0) + 1
        at = T0 + timedelta(seconds=stream)
        event = cls(conversation_id=conversation_id, seq=seq, at=at, **fields)
        return envelope(ws, event, stream)

    def post(ws: str, cid: str, sender: str | None, *mentioned: str) -> Envelope:
        mentions = [Mention(user_id=uid, start=0, end=3) for uid in mentioned]
        return make(
            ws, MessagePosted, cid, message_id=f"msg{stream + 1}", sender_id=sender,
            content="hi", mentions=mentions,
        )  # fmt: skip

    setup = [
        make(FAST_WS, ConversationCreated, "c1", kind="group", participant_ids=["u1", "u2", "u3"]),
        make(SLOW_WS, ConversationCreated, "c2", kind="group", participant_ids=["u1", "u4"]),
        post(FAST_WS, "c1", "u2"),  # u1 and u3 have a pending row before the run
    ]
    run = [
        post(FAST_WS, "c1", "u1", "u3"),
        post(SLOW_WS, "c2", "u4", "u1"),
        post(FAST_WS, "c1", "u2", "u2"),
        post(FAST_WS, "c1", None),
        post(SLOW_WS, "c2", "u1"),
        post(FAST_WS, "c1", "u1"),
        post(SLOW_WS, "c2", "u4"),
    ]
    return setup, run


TABLES = {  # what a post writes, by table
    "messages": "conversation_id, seq, message_id, sender_id, mentions, kind, at",
    "members": "conversation_id, user_id, read_up_to",
    "pending": "user_id, conversation_id, workspace_id, part, first_seq, last_seq, due_at",
}


async def rows(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    async with engine.connect() as conn:
        for table, columns in TABLES.items():
            result = await conn.execute(
                sa.text(f"SELECT {columns} FROM notifier.{table} ORDER BY 1, 2")
            )
            out[table] = [tuple(row) for row in result]
    return out


async def apply(engine: AsyncEngine, batches: Sequence[Sequence[Envelope]]) -> None:
    projection = ConversationsProjection(partitions=4)
    settings = NotifierProjection()
    slow = SettingsSet(workspace_id=SLOW_WS, delay_seconds=600, at=T0)
    async with engine.begin() as conn:
        await settings.apply(conn, [envelope(SLOW_WS, slow, 1)])
    for batch in batches:
        async with engine.begin() as conn:
            await projection.apply(conn, batch)


async def test_a_run_of_posts_leaves_the_rows_of_posts_applied_one_by_one(
    db: AsyncEngine,
) -> None:
    setup, run = history()
    await apply(db, [setup, *([e] for e in run)])
    one_by_one = await rows(db)
    async with db.begin() as conn:
        await conn.execute(
            sa.text("TRUNCATE notifier.messages, notifier.members, notifier.pending")
        )
    await apply(db, [setup, run])
    assert await rows(db) == one_by_one

    pending = {(r[0], r[1]): r[4:] for r in one_by_one["pending"]}  # first, last, due
    assert pending == {
        # Mentioned in c1's seq 3 (12:00:04): due 10 s later, before the others' 60 s.
        ("u3", "c1"): (2, 6, T0 + timedelta(seconds=4 + 10)),
        ("u1", "c1"): (2, 5, T0 + timedelta(seconds=3 + 60)),
        # u2's own posts (one mentioning u2) are not pending for u2.
        ("u2", "c1"): (3, 6, T0 + timedelta(seconds=4 + 60)),
        # The slow workspace: 600 s, but a mention's 10 s still applies.
        ("u1", "c2"): (2, 4, T0 + timedelta(seconds=5 + 10)),
        ("u4", "c2"): (3, 3, T0 + timedelta(seconds=8 + 600)),
    }
    marks = {(r[0], r[1]): r[2] for r in one_by_one["members"]}
    assert marks == {("c1", "u1"): 6, ("c1", "u2"): 4, ("c1", "u3"): 0, ("c2", "u1"): 3,
                     ("c2", "u4"): 4}  # fmt: skip

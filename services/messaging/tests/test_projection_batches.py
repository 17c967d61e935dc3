"""Messaging's conversation projection gives the same rows however the stream is cut into
batches (real PostgreSQL): every event in one batch, each in a batch of its own, or two.

A rebuild (batches of 2,000) and the live runners (512, or fewer) cut the stream
differently, and ``confab projections verify`` compares what they wrote row by row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from confab.contracts.events import Event
from confab.contracts.events.messaging import (
    ConversationCreated,
    MessageEdited,
    MessagePosted,
    ReactionAdded,
    ReactionRemoved,
    ReadMarked,
    subject,
)
from confab.db import create_engine, create_tables
from confab.events import Envelope
from confab_infra.testing import TestBackends, fresh_database
from confab_messaging.projections import ConversationsProjection

WS = "ws_batches"
CID = "conv_batches"
START = datetime(2025, 1, 1, tzinfo=UTC)


def envelopes(events: Sequence[Event]) -> list[Envelope]:
    return [
        Envelope(
            event=e,
            type=e.type,
            schema=e.schema,
            msg_id=f"m{n}",
            workspace=WS,
            actor="test",
            correlation=f"m{n}",
            subject=subject(WS, CID),
            seq=n,
        )
        for n, e in enumerate(events, start=1)
    ]


def at(seq: int) -> datetime:
    return START + timedelta(seconds=seq)


def post(seq: int, message_id: str, sender: str, content: str) -> Event:
    return MessagePosted(
        conversation_id=CID,
        seq=seq,
        at=at(seq),
        message_id=message_id,
        sender_id=sender,
        content=content,
    )


def react(seq: int, message_id: str, emoji: str, user: str, *, add: bool = True) -> Event:
    kind = ReactionAdded if add else ReactionRemoved
    return kind(
        conversation_id=CID, seq=seq, at=at(seq), message_id=message_id, emoji=emoji, user_id=user
    )


def history() -> list[Event]:
    ann, bob = "usr_ann", "usr_bob"
    return [
        ConversationCreated(
            conversation_id=CID, seq=1, at=at(1), kind="group", participant_ids=[ann, bob]
        ),
        post(2, "m1", ann, "a"),
        post(3, "m2", bob, "hi"),
        react(4, "m1", "+", bob),
        react(5, "m1", "+", bob),  # added again without a removal: it keeps seq 4
        react(6, "m2", "+", ann),
        react(7, "m2", "+", ann, add=False),
        react(8, "m2", "+", ann),  # removed, then added again: the new seq
        react(9, "m2", "-", bob),
        react(10, "m2", "-", bob, add=False),
        MessageEdited(
            conversation_id=CID, seq=11, at=at(11), message_id="m1", content="edited", by=ann
        ),
        ReadMarked(conversation_id=CID, seq=12, at=at(12), user_id=bob, up_to=2),
        post(13, "m3", ann, "x"),
    ]


async def project(url: str, batches: list[list[Envelope]]) -> dict[str, list[dict[str, Any]]]:
    projection = ConversationsProjection()
    engine = create_engine(url, pool_size=1)
    try:
        await create_tables(engine, projection.metadata)
        for batch in batches:
            async with engine.begin() as conn:
                await projection.apply(conn, batch)
        t = projection.tables
        out = {}
        async with engine.connect() as conn:
            for table in (t.conversations, t.participants, t.messages, t.reactions, t.events):
                keys = list(table.primary_key.columns)
                rows = await conn.execute(sa.select(table).order_by(*keys))
                out[table.name] = [dict(r._mapping) for r in rows]
        return out
    finally:
        await engine.dispose()


async def test_the_rows_do_not_depend_on_how_the_stream_is_cut(backends: TestBackends) -> None:
    stream = envelopes(history())
    with fresh_database(backends.database_url) as url:
        whole = await project(url, [stream])
    with fresh_database(backends.database_url) as url:
        one_by_one = await project(url, [[e] for e in stream])
    with fresh_database(backends.database_url) as url:
        # m2's reaction is stored by the first batch, removed and added again in the second.
        halves = await project(url, [stream[:6], stream[6:]])
    assert whole == one_by_one == halves
    assert [(r["message_id"], r["emoji"], r["seq"]) for r in whole["reactions"]] == [
        ("m1", "+", 4),
        ("m2", "+", 8),
    ]
    unread = {p["user_id"]: p["unread_count"] for p in whole["participants"]}
    assert unread == {"usr_ann": 1, "usr_bob": 1}
    assert [m["content"] for m in whole["messages"]] == ["edited", "hi", "x"]
    assert len(whole["events"]) == 13

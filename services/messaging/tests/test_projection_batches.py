"""Messaging's conversation projection gives the same rows however the stream is cut into
batches (real PostgreSQL): every event in one batch, each in a batch of its own, or two.

A rebuild (batches of 2,000) and the live runners (512, or fewer) cut the stream
differently, and ``confab projections verify`` compares what they wrote row by row.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from confab.contracts.events import Event
from confab.contracts.events.messaging import (
    ConversationCreated,
    MessageDeleted,
    MessageEdited,
    MessageModerated,
    MessagePosted,
    ParticipantAdded,
    ParticipantMerged,
    ParticipantRemoved,
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
        Envelope.of(e, workspace=WS, subject=subject(WS, CID), seq=n)
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


async def project(
    url: str,
    batches: list[list[Envelope]],
    after_batch: Callable[[Any, Any], Awaitable[None]] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The rows ``batches`` leave; ``after_batch(conn, tables)`` looks in each batch's
    transaction after it was applied."""
    projection = ConversationsProjection()
    engine = create_engine(url, pool_size=1)
    try:
        await create_tables(engine, projection.metadata)
        for batch in batches:
            async with engine.begin() as conn:
                await projection.apply(conn, batch)
                if after_batch is not None:
                    await after_batch(conn, projection.tables)
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


# -- unread counts: the increment for posts, the recount for the rest ---------------------

GROUP, DIRECT = "conv_group", "conv_direct"
ANN, BOB, CAT, DAN, VISITOR = "usr_ann", "usr_bob", "usr_cat", "usr_dan", "usr_visitor"


def busy_history() -> list[Envelope]:
    """Two conversations whose counts every kind of change moves: posts (by a member, by
    nobody, in a thread), reads, a deletion and a moderator's hide and restore of posts
    made in the same stretch, a join, a leave and a visitor merged into a member."""
    seqs: dict[str, int] = {}
    out: list[Envelope] = []

    def add(cid: str, make: type[Event], **fields: Any) -> None:
        seq = seqs[cid] = seqs.get(cid, 0) + 1
        n = len(out) + 1
        event = make(conversation_id=cid, seq=seq, at=at(n), **fields)
        out.append(Envelope.of(event, workspace=WS, subject=subject(WS, cid), seq=n))

    def say(cid: str, mid: str, sender: str | None, parent: str | None = None) -> None:
        add(cid, MessagePosted, message_id=mid, sender_id=sender, content=mid, parent_id=parent)

    add(GROUP, ConversationCreated, kind="group", participant_ids=[ANN, BOB, CAT, VISITOR])
    add(DIRECT, ConversationCreated, kind="direct", participant_ids=[ANN, BOB])
    for n in range(6):
        say(GROUP, f"g{n}", (ANN, BOB, None)[n % 3])
        say(DIRECT, f"d{n}", (ANN, BOB)[n % 2])
    say(GROUP, "v1", VISITOR)
    say(GROUP, "t1", CAT, parent="g0")  # a thread reply counts in its thread only
    add(GROUP, ReadMarked, user_id=BOB, up_to=5)
    say(GROUP, "g6", ANN)
    add(GROUP, MessageDeleted, message_id="g6", by=ANN)  # posted and deleted together
    say(GROUP, "g7", BOB)
    add(GROUP, MessageModerated, message_id="g1", action="hide", by="key_1")
    add(DIRECT, ReadMarked, user_id=ANN, up_to=4)
    say(DIRECT, "d6", BOB)
    add(GROUP, ParticipantAdded, user_id=DAN)
    say(GROUP, "g8", CAT)
    add(GROUP, ParticipantMerged, user_id=VISITOR, into_id=DAN)
    say(GROUP, "g9", DAN)
    add(GROUP, MessageModerated, message_id="g1", action="restore", by="key_1")
    add(GROUP, ParticipantRemoved, user_id=CAT)
    say(GROUP, "g10", None)
    for n in range(11, 15):
        say(GROUP, f"g{n}", (ANN, BOB)[n % 2])
        say(DIRECT, f"d{n}", ANN)
    return out


async def exact_unread(conn: Any, t: Any) -> dict[tuple[str, str], tuple[int, int]]:
    """Each participant's stored count beside the count from the messages."""
    p, m = t.participants, t.messages
    counted = (
        sa.select(sa.func.count())
        .where(
            m.c.conversation_id == p.c.conversation_id,
            m.c.seq > p.c.last_read_seq,
            sa.not_(m.c.deleted),
            sa.not_(m.c.hidden),
            m.c.parent_id.is_(None),
            m.c.sender_id.is_distinct_from(p.c.user_id),
        )
        .scalar_subquery()
    )
    rows = await conn.execute(
        sa.select(p.c.conversation_id, p.c.user_id, p.c.unread_count, counted)
    )
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


async def all_exact(conn: Any, tables: Any, counts: dict[tuple[str, str], Any]) -> None:
    """Every stored count is the exact one (``counts``: what was found)."""
    counts.update(await exact_unread(conn, tables))
    wrong = {k: v for k, v in counts.items() if v[0] != v[1]}
    assert not wrong, wrong


async def test_unread_counts_stay_exact_however_the_stream_is_cut(
    backends: TestBackends,
) -> None:
    stream = busy_history()
    cuts: list[list[list[Envelope]]] = [[stream], [[e] for e in stream]]
    for seed in range(4):
        rng = random.Random(seed)
        points = sorted(rng.sample(range(1, len(stream)), 6))
        cuts.append(
            [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
        )
    finals = []
    for batches in cuts:
        counts: dict[tuple[str, str], tuple[int, int]] = {}
        with fresh_database(backends.database_url) as url:
            await project(url, batches, functools.partial(all_exact, counts=counts))
        finals.append({k: v[0] for k, v in counts.items()})
    assert all(final == finals[0] for final in finals)
    # Ann read the direct conversation up to 4: Bob's three posts after it. Dan joined,
    # then took the visitor's place, read mark (none) and posts.
    assert finals[0] == {
        (DIRECT, ANN): 3,
        (DIRECT, BOB): 7,
        (GROUP, ANN): 11,
        (GROUP, BOB): 7,
        (GROUP, CAT): 14,
        (GROUP, DAN): 13,
        (GROUP, VISITOR): 15,
    }

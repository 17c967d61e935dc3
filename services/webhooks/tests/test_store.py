"""The deliveries table on a real PostgreSQL: the intake's writes, requeued rows, pruning."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from confab.db import create_engine, create_tables
from confab_webhooks.projections import Intake, _ids_statement
from confab_webhooks.store import DELIVERIES, METADATA, Store

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=4)
RECENT = NOW - timedelta(hours=1)


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(fresh_database_url, 2)
    await create_tables(engine, METADATA)
    yield engine
    await engine.dispose()


def row(seq: int, status: str, finished: datetime | None) -> dict[str, Any]:
    return {
        "workspace_id": "ws_1",
        "endpoint_id": "wh_1",
        "source": "conversations",
        "part": 0,
        "lane": "conv_1",
        "stream": "CONVERSATIONS",
        "seq": seq,
        "event_type": "message.created",
        "ref": {"id": f"msg_{seq}"},
        "stored_at": finished or OLD,
        "status": status,
        "delivered_at": finished,
    }


async def test_prune_removes_every_old_finished_delivery_a_batch_at_a_time(
    db: AsyncEngine,
) -> None:
    rows = (
        [row(n, "delivered", OLD) for n in range(25)]
        + [row(100 + n, "cancelled", OLD) for n in range(2)]
        + [row(200 + n, "delivered", RECENT) for n in range(3)]  # kept: not old yet
        + [row(300, "pending", None), row(301, "failed", None)]  # kept: not finished
    )
    async with db.begin() as conn:
        await conn.execute(sa.insert(DELIVERIES), rows)
    store = Store(db)
    # Ten at a time: one round goes on until a batch comes back short.
    assert await store.prune(NOW - timedelta(days=3), batch=10) == 27
    async with db.connect() as conn:
        left = (await conn.execute(sa.select(DELIVERIES.c.seq).order_by("seq"))).scalars()
        assert list(left) == [200, 201, 202, 300, 301]
    assert await store.prune(NOW - timedelta(days=3), batch=10) == 0


async def test_requeued_rows_are_taken_once_by_an_index_scan_however_many_are_kept(
    db: AsyncEngine,
) -> None:
    """The sender asks for requeued rows twice a second: with thousands of deliveries
    kept, that must read the few marked rows (``deliveries_requeued``), never the table."""
    kept = [row(n, "delivered", RECENT) | {"part": n % 8, "requeued": False} for n in range(5000)]
    marked = [
        row(9000, "pending", None) | {"requeued": True, "part": 1},
        row(9001, "pending", None) | {"requeued": True, "part": 2},
        row(9002, "pending", None) | {"requeued": True, "part": 5},  # not asked for
    ]
    async with db.begin() as conn:
        await conn.execute(sa.insert(DELIVERIES), kept + marked)
        await conn.execute(sa.text("ANALYZE webhooks.deliveries"))
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(db.sync_engine, "before_cursor_execute", seen)
    store = Store(db)
    taken = await store.take_requeued([("conversations", 1), ("conversations", 2)])
    sa.event.remove(db.sync_engine, "before_cursor_execute", seen)
    assert sorted(r["seq"] for r in taken) == [9000, 9001]
    assert await store.take_requeued([("conversations", 1), ("conversations", 2)]) == []

    (update,) = [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
    parts = [("conversations", 1), ("conversations", 2)]
    params = tuple(v for pair in parts for v in pair)
    async with db.connect() as conn:
        plan = (await conn.exec_driver_sql(f"EXPLAIN {update}", (False, *params))).all()
    text = "\n".join(r[0] for r in plan)
    assert "deliveries_requeued" in text and "Seq Scan" not in text, text


async def test_the_intake_writes_a_batch_applied_again_once_and_goes_on(db: AsyncEngine) -> None:
    """The intake writes plainly (no speculative insertion); a batch whose rows are there
    already (its checkpoint went back) falls back to skipping them, in the same
    transaction, which stays usable."""
    intake = Intake("conversations", 8, offer=lambda rows: None)
    now = datetime.now(UTC)
    later = now + timedelta(seconds=5)

    async def batch(conn: Any, first_seq: int, count: int) -> int:
        ids = (
            await conn.execute(await _ids_statement(conn, DELIVERIES), {"n": count})
        ).scalar_one()
        params: dict[str, Any] = {
            "e_workspace_id": ["ws_1"] * count,
            "e_part": [0] * count,
            "e_lane": ["conv_1"] * count,
            "e_seq": list(range(first_seq, first_seq + count)),
            "e_event_type": ["message.created"] * count,
            "e_conversation_id": ["conv_1"] * count,
            "e_event_seq": list(range(first_seq, first_seq + count)),
            "e_ref": ['{"id": "m"}'] * count,
            "e_stored_at": [now] * count,
            "d_id": ids,
            "d_endpoint_id": ["wh_1"] * count,
            "d_event": list(range(1, count + 1)),
            # Two outcomes, each sent once: odd sequences failed, even ones delivered.
            "d_outcome": [1 + seq % 2 for seq in range(first_seq, first_seq + count)],
            "o_status": ["delivered", "pending"],
            "o_attempts": [1, 1],
            "o_last_status": [200, 500],
            "o_last_error": [None, "HTTP 500"],
            "o_last_attempt_at": [now, now],
            "o_next_attempt_at": [None, later],
            "source": "conversations",
            "stream": "CONVERSATIONS",
        }
        return await intake._write(conn, params)

    async with db.begin() as conn:
        assert await batch(conn, 1, 3) == 3
    async with db.begin() as conn:
        assert await batch(conn, 2, 3) == 1  # 2 and 3 were written before: only 4
        assert await batch(conn, 10, 2) == 2  # the transaction goes on
    async with db.connect() as conn:
        rows = (await conn.execute(sa.select(DELIVERIES).order_by(DELIVERIES.c.id))).all()
    assert [r.seq for r in rows] == [1, 2, 3, 4, 10, 11]
    assert [r.id for r in rows] == sorted({r.id for r in rows})  # ids ascend, once each
    for r in rows:
        if r.seq % 2:
            assert (r.status, r.last_status, r.last_error) == ("pending", 500, "HTTP 500")
            assert (r.next_attempt_at, r.delivered_at) == (later, None)
        else:
            assert (r.status, r.last_status, r.last_error) == ("delivered", 200, None)
            assert (r.next_attempt_at, r.delivered_at) == (None, now)
        assert (r.attempts, r.last_attempt_at) == (1, now)

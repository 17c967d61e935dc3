"""``confab.db.BulkInsert`` (real PostgreSQL): rows written in one unnested statement are
the rows a plain insert of each writes, to the JSON ``null`` and the SQL NULL, and the
conflict clause applies as on any insert."""

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from confab.db import BulkInsert, create_tables, unique


def table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("big", sa.BigInteger, nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("flag", sa.Boolean, nullable=False),
        sa.Column("doc", sa.JSON, nullable=True),  # None is stored as JSON null
        sa.Column("tags", JSONB, nullable=True),
    )


ROWS = [
    {
        "id": "a",
        "n": 1,
        "big": 2**40,
        "at": datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "flag": True,
        "doc": {"z": 1, "a": [1, "two", None]},
        "tags": [{"user_id": "u1"}],
    },
    {"id": "b", "n": 2, "big": None, "at": None, "flag": False, "doc": None, "tags": None},
    {"id": "c", "n": 3, "big": 0, "at": None, "flag": False, "doc": "text", "tags": {}},
]


async def dump(engine: AsyncEngine, t: sa.Table) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        found = await conn.execute(
            sa.text(
                "SELECT id, to_jsonb(x), doc IS NULL, doc::text, tags IS NULL "
                f'FROM "{t.schema}"."{t.name}" x ORDER BY id'
            )
        )
        return [tuple(r) for r in found]


async def test_bulk_rows_are_the_rows_a_plain_insert_writes(engine: AsyncEngine) -> None:
    metadata = sa.MetaData(schema="bulk")
    plain, bulk = table(metadata, "plain"), table(metadata, "bulk")
    await create_tables(engine, metadata)
    async with engine.begin() as conn:
        await conn.execute(insert(plain), ROWS)
        many = BulkInsert(bulk, list(ROWS[0]))
        await conn.execute(many.statement, many.params(conn.dialect, ROWS))
    assert await dump(engine, bulk) == await dump(engine, plain)

    # A conflict clause as on any insert: update where the stored n is older.
    stmt = many.statement
    guarded = stmt.on_conflict_do_update(
        index_elements=[bulk.c.id],
        set_={"n": stmt.excluded.n, "doc": stmt.excluded.doc},
        where=bulk.c.n < stmt.excluded.n,
    )
    newer = [{**ROWS[0], "n": 5, "doc": None}, {**ROWS[1], "n": 1, "doc": [1]}]
    async with engine.begin() as conn:
        await conn.execute(guarded, many.params(conn.dialect, newer))
        rows = await conn.execute(sa.select(bulk.c.id, bulk.c.n, bulk.c.doc).order_by(bulk.c.id))
        assert [tuple(r) for r in rows] == [("a", 5, None), ("b", 2, None), ("c", 3, "text")]


def test_unique_tells_rows_that_repeat_a_key() -> None:
    assert unique(ROWS, ["id"])
    assert not unique([*ROWS, ROWS[0]], ["id"])
    assert unique([{"a": 1, "b": 1}, {"a": 1, "b": 2}], ["a", "b"])
    assert not unique([{"a": 1, "b": 1}, {"a": 1, "b": 1}], ["a", "b"])

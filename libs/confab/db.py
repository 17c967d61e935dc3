"""PostgreSQL access for read models: engines, schemas, projection checkpoints, and many
rows written in one statement (``BulkInsert``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def asyncpg_url(url: str) -> str:
    """``postgresql://…`` as SQLAlchemy's asyncpg dialect wants it."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("database URL must start with postgresql://")


def plain_url(url: str) -> str:
    """``postgresql://…`` as asyncpg itself wants it."""
    return asyncpg_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """The pool of a service. No ping before each use (a round trip per transaction, a
    tenth of a projection's CPU): a connection PostgreSQL dropped fails its statement as a
    disconnect, SQLAlchemy then discards the whole pool, and the caller's retry (a
    projection's batch is applied again; a request answers 503 with a retry hint) gets
    new connections."""
    return create_async_engine(
        asyncpg_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        hide_parameters=True,  # errors must not echo values (hashes, personal data) into logs
        # JSON columns are written on every projected event and read on many requests:
        # msgspec is several times faster than the json module both ways.
        json_serializer=_json_text,
        json_deserializer=msgspec.json.decode,
    )


def _json_text(value: Any) -> str:
    return _JSON.encode(value).decode()


_JSON = msgspec.json.Encoder()


def checkpoint_table(metadata: sa.MetaData) -> sa.Table:
    """One row per projection: the last stream sequence applied, written with the data."""
    return sa.Table(
        "projection_checkpoints",
        metadata,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        extend_existing=True,
    )


async def create_tables(engine: AsyncEngine, metadata: sa.MetaData) -> None:
    """Create the schema, tables and indexes if missing, and bring a table an older build
    made up to date with additive changes: columns it lacks are added (they must be
    nullable or have a server default), then indexes it lacks are created (``create_all``
    alone skips an existing table). Safe to run from several processes at once."""
    async with engine.begin() as conn:
        # Serialise concurrent creators: CREATE … IF NOT EXISTS still races in PostgreSQL.
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7267265)"))
        if metadata.schema:
            await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{metadata.schema}"'))
        await conn.run_sync(metadata.create_all)
        await conn.run_sync(_bring_up_to_date, metadata)


def _bring_up_to_date(conn: sa.Connection, metadata: sa.MetaData) -> None:
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name, table.schema)}
        for column in table.columns:
            if column.name not in present:
                spec = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
                name = conn.dialect.identifier_preparer.format_table(table)
                conn.execute(sa.text(f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {spec}"))
        for index in table.indexes:
            index.create(conn, checkfirst=True)


# -- many rows in one statement ---------------------------------------------------------------


class BulkInsert:
    """``INSERT INTO table (columns) SELECT … FROM unnest(…)``: many rows in one statement.

    Each column's values are bound as one array, so PostgreSQL plans and runs one
    statement per batch instead of one per row (``executemany``), and the driver
    encodes a few arrays instead of a parameter list per row. Values go through
    each column's own bind processing (JSON is serialised exactly as a plain insert
    would), travel as text for JSON columns and are cast back in the statement.

    ``statement`` is the bare insert; add the conflict clause to it (``excluded``
    works as on any insert). Rows must not repeat a conflict key when the clause
    updates (PostgreSQL refuses to update a row twice in one statement): callers
    check with ``unique`` and fall back to ``executemany`` otherwise.
    """

    def __init__(self, table: sa.Table, columns: Sequence[str]) -> None:
        self.table = table
        self.columns = list(columns)
        arrays = []
        selected: list[Any] = []
        for name in self.columns:
            column = table.c[name]
            as_text = isinstance(column.type, sa.JSON)
            element = sa.Text() if as_text else column.type
            arrays.append(sa.cast(sa.bindparam(f"u_{name}"), ARRAY(element)))
        source = sa.func.unnest(*arrays).table_valued(*self.columns).render_derived()
        for name in self.columns:
            column = table.c[name]
            value = source.c[name]
            selected.append(
                sa.cast(value, column.type) if isinstance(column.type, sa.JSON) else value
            )
        self.statement = insert(table).from_select(self.columns, sa.select(*selected))
        self._processors: dict[str, list[Callable[[Any], Any] | None]] = {}

    def params(
        self, dialect: sa.Dialect, rows: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[Any]]:
        """The arrays to bind for ``rows`` (mappings with every column)."""
        processors = self._processors.get(dialect.name)
        if processors is None:
            processors = self._processors[dialect.name] = [
                self.table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                for name in self.columns
            ]
        out: dict[str, list[Any]] = {}
        for name, process in zip(self.columns, processors, strict=True):
            values = [row[name] for row in rows]
            out[f"u_{name}"] = values if process is None else [process(v) for v in values]
        return out


def unique(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> bool:
    """No two of ``rows`` have the same values in ``keys``."""
    if len(keys) == 1:
        (key,) = keys
        return len({row[key] for row in rows}) == len(rows)
    return len({tuple(row[k] for k in keys) for row in rows}) == len(rows)

"""A standby projection process keeps learning checkpoints after losing its LISTEN
connection (as in a database restart): queries with ``min_seq`` that land on it must not
wait on a checkpoint it can no longer hear about."""

import asyncpg
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncEngine

from confab import bus
from confab.db import plain_url
from confab.projection import ProjectionRunner
from libs.tests.test_projection import Counts, publish


async def test_a_standby_listens_again_after_its_connection_is_cut(
    nc: NATS, stream_spec: bus.StreamSpec, engine: AsyncEngine, fresh_database_url: str
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js, [stream_spec])
    first = ProjectionRunner(js, engine, fresh_database_url, Counts(stream_spec))
    second = ProjectionRunner(js, engine, fresh_database_url, Counts(stream_spec))
    await first.start()
    await second.start()
    try:
        last = await publish(nc, stream_spec, ["a"])
        assert await first.wait_for(last, timeout=10)
        assert await second.wait_for(last, timeout=10)
        standby = second if first.is_leader else first
        assert standby._listener is not None
        admin = await asyncpg.connect(plain_url(fresh_database_url))
        try:
            pid = standby._listener.get_server_pid()
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        more = await publish(nc, stream_spec, ["b", "c"])
        assert await standby.wait_for(more, timeout=15)
    finally:
        await first.stop()
        await second.stop()

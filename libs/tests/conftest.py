import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncEngine

from confab import bus
from confab.db import create_engine


@pytest.fixture
async def nc(backends) -> AsyncIterator[NATS]:
    client = await bus.connect(backends.nats_url, "test")
    yield client
    await client.close()


@pytest.fixture
async def engine(fresh_database_url: str) -> AsyncIterator[AsyncEngine]:
    """A connection pool on a fresh database, for the projection runners of a test."""
    engine = create_engine(fresh_database_url, pool_size=6)
    yield engine
    await engine.dispose()


@pytest.fixture
def stream_spec() -> bus.StreamSpec:
    """A stream of its own per test, shaped like the platform's streams."""
    token = uuid.uuid4().hex[:10]
    return bus.StreamSpec(f"TEST_{token}", (f"t{token}.evt.>",))

import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from confab import bus


@pytest.fixture
async def nc(backends) -> AsyncIterator[NATS]:
    client = await bus.connect(backends.nats_url, "test")
    yield client
    await client.close()


@pytest.fixture
def stream_spec() -> bus.StreamSpec:
    """A stream of its own per test, shaped like the platform's streams."""
    token = uuid.uuid4().hex[:10]
    return bus.StreamSpec(f"TEST_{token}", (f"t{token}.evt.>",))

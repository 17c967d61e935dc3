"""Fixtures of the fanout tests: a fanout process per session, test apps, real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from confab import bus
from confab_fanout.testing import (
    FAST_TIMERS,
    AuthServer,
    FanoutNode,
    IdentityStub,
    TestApp,
    bucket_env,
    create_app,
    wait_app_known,
)
from confab_infra.backends import EmbeddedNats
from confab_infra.testing import temp_data_dir


@pytest.fixture(scope="session")
def fanout_nats_url() -> Iterator[str]:
    """A NATS server of the fanout tests' own: their identity stub answers in identity's
    queue group, which must not leak into other tests sharing the session's server."""
    with temp_data_dir("confab-fanout-nats-") as data_dir:
        server = EmbeddedNats(data_dir)
        try:
            yield server.start()
        finally:
            server.stop()


@pytest.fixture(scope="session")
async def nats(fanout_nats_url: str) -> AsyncIterator[NATS]:
    nc = await bus.connect(fanout_nats_url, "fanout-tests")
    await bus.ensure_streams(nc.jetstream(), [bus.IDENTITY])
    yield nc
    await bus.close(nc)


@pytest.fixture(scope="session")
async def identity(nats: NATS) -> AsyncIterator[IdentityStub]:
    stub = IdentityStub(nats)
    await stub.start()
    yield stub
    await stub.stop()


@pytest.fixture(scope="session")
async def auth_server() -> AsyncIterator[AuthServer]:
    server = AuthServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fanout-logs")


@pytest.fixture(scope="session")
async def node(
    fanout_nats_url: str, identity: IdentityStub, log_dir: Path
) -> AsyncIterator[FanoutNode]:
    """One fanout process for the session's tests (each works in apps of its own)."""
    fanout = FanoutNode(fanout_nats_url, log_dir, env={**FAST_TIMERS, **bucket_env()}).start()
    try:
        await fanout.wait_ready()
        yield fanout
    finally:
        fanout.terminate()


async def _new_app(
    nats: NATS, node: FanoutNode, identity: IdentityStub, auth_server: AuthServer
) -> TestApp:
    created = await create_app(nats.jetstream())
    identity.add(created)
    auth_server.add(created)
    await wait_app_known(node, created)
    return created


@pytest.fixture
async def app(
    nats: NATS, node: FanoutNode, identity: IdentityStub, auth_server: AuthServer
) -> TestApp:
    """A new workspace, known to the fanout from its ``workspace.created`` event."""
    return await _new_app(nats, node, identity, auth_server)


@pytest.fixture(scope="module")
async def module_app(
    nats: NATS, node: FanoutNode, identity: IdentityStub, auth_server: AuthServer
) -> TestApp:
    """One workspace for a whole module's long run (the fuzz, Autobahn)."""
    return await _new_app(nats, node, identity, auth_server)

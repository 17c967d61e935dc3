"""The pieces of `confab up --cluster`: a NATS cluster on loopback, and HAProxy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import nats
import pytest
from aiohttp import web
from nats.js.api import StreamConfig

from confab_infra.backends import BackendError, EmbeddedNatsCluster, Frontend, HAProxy, free_port
from confab_infra.balancer import find_haproxy
from confab_infra.testing import temp_data_dir


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with temp_data_dir("confab-infra-cluster-") as path:
        yield path


async def test_a_stream_at_r3_survives_a_killed_node_which_rejoins(data_dir: Path) -> None:
    cluster = EmbeddedNatsCluster(data_dir)
    try:
        url = await asyncio.to_thread(cluster.start)
        assert len(url.split(",")) == 3
        nc = await nats.connect(servers=url.split(","))
        try:
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="T", subjects=["t.>"], num_replicas=3))
            await js.publish("t.a", b"1")
            info = await js.stream_info("T")
            assert info.cluster is not None
            leader = next(
                n for n in cluster.nodes if n.route and n.route.server_name == info.cluster.leader
            )
            assert leader.process is not None
            leader.process.kill()
            await asyncio.to_thread(leader.process.wait)
            # Two of three are a quorum: a new leader takes writes (after an election).
            for _ in range(100):
                try:
                    await js.publish("t.a", b"2", timeout=1)
                    break
                except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError):
                    await asyncio.sleep(0.1)
            await asyncio.to_thread(leader.start)  # same ports: it rejoins
            assert leader.url in url
            assert (await js.stream_info("T")).state.messages == 2
        finally:
            await nc.close()
    finally:
        await asyncio.to_thread(cluster.stop)


@pytest.fixture
async def two_servers() -> AsyncIterator[list[int]]:
    """Two HTTP servers that say which one answered (and serve the health check)."""
    runners, ports = [], []
    for name in ("one", "two"):

        async def answer(_request: web.Request, name: str = name) -> web.Response:
            return web.Response(text=name)

        app = web.Application()
        app.router.add_get("/metrics", answer)
        app.router.add_get("/who", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        ports.append(port)
    yield ports
    for runner in runners:
        await runner.cleanup()


async def test_haproxy_spreads_requests_and_skips_a_dead_server(
    data_dir: Path, two_servers: list[int]
) -> None:
    try:
        find_haproxy()
    except BackendError as exc:
        pytest.skip(str(exc))
    dead = free_port()  # nothing listens there
    servers = tuple(("127.0.0.1", p) for p in [*two_servers, dead])
    proxy = HAProxy(data_dir, [Frontend("web", "127.0.0.1", free_port(), servers)])
    await asyncio.to_thread(proxy.start)
    try:
        base = f"http://127.0.0.1:{proxy.frontends[0].port}"
        async with aiohttp.ClientSession() as http:
            seen = []
            for _ in range(12):
                async with http.get(f"{base}/who") as response:
                    assert response.status == 200  # the dead one is retried elsewhere
                    seen.append(await response.text())
        assert set(seen) == {"one", "two"}
    finally:
        await asyncio.to_thread(proxy.stop)

"""Slow clients cannot starve others, on the gateway and on the fanout (``confab.httpserver``).

Each server runs with small limits: 2 s for headers, 2 s for a body, 2 s idle, 8
connections per address. From 127.0.0.2 the test holds 8 connections (four send
part of their headers, four their headers and part of a body; one of each keeps
trickling a byte at a time, which must not buy it more time); a ninth from that
address is refused at once with 429. Meanwhile clients from 127.0.0.1 keep getting
answers. Then every slow connection gets its 408, in the server's JSON error body,
and is closed; the address has its places back; a kept-alive connection that sends
nothing more is closed too. The deadlines (30 s) only bound a hang: nothing here
measures how fast anything happens.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from confab import bus
from confab.bench.fanout import client_frame
from confab.service import Service
from confab_fanout.testing import FanoutNode, bucket_env
from confab_gateway import app as gateway_app
from confab_gateway.settings import GatewaySettings
from confab_infra.ports import free_port
from confab_infra.testing import TestBackends
from tests.rawhttp import DEADLINE, connect, one_answer, request, until_closed
from tests.waiting import until

SLOW = "127.0.0.2"  # the slow clients' address; everyone else is 127.0.0.1
CAP = 8
LIMITS = {
    "http_header_timeout": 2.0,
    "http_body_timeout": 2.0,
    "http_body_min_rate": 1_000_000,  # a body of 1,000 bytes earns no extra time
    "http_idle_timeout": 2.0,
}
ADMIN_TOKEN = "admin-token-for-slow-client-tests"


@dataclass
class Server:
    port: int
    fast_path: str  # answered 200 at once
    body_path: str  # a POST whose body the server reads before anything else it does
    body_headers: str
    error_code: Callable[[Any], Any]  # the code in the server's error body
    codes: dict[int, Any]  # status -> the code it carries


@pytest.fixture(scope="module", params=["gateway", "fanout"])
async def server(
    request: pytest.FixtureRequest, backends: TestBackends, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    nc = await bus.connect(backends.nats_url, "test-slow-clients")
    await bus.ensure_streams(nc.jetstream(), [bus.IDENTITY])  # both follow it from the start
    await bus.close(nc)
    if request.param == "gateway":
        port = free_port()
        gateway = Service(
            "gateway",
            GatewaySettings(
                nats_url=backends.nats_url,
                instance=f"slow-{uuid.uuid4().hex[:6]}",
                port=port,
                admin_token=ADMIN_TOKEN,
                max_connections_per_address=CAP,
                **LIMITS,  # type: ignore[arg-type]
            ),
        )
        await gateway.start()
        try:
            await gateway_app.setup(gateway)
            yield Server(
                port,
                "/openapi.json",
                "/api/admin/workspaces",
                f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n",
                lambda body: body["error"]["code"],
                {408: "request_timeout", 429: "rate_limited"},
            )
        finally:
            await gateway.stop()
    else:
        env = {f"CONFAB_{name.upper()}": str(value) for name, value in LIMITS.items()}
        env["CONFAB_FANOUT_MAX_CONNECTIONS_PER_ADDRESS"] = str(CAP)
        # A refused WebSocket waits this long for the client's close: longer than the
        # WebSocket test takes to open its eight.
        env["CONFAB_FANOUT_SHUTDOWN_GRACE"] = "20"
        logs = tmp_path_factory.mktemp("slow-fanout")
        node = FanoutNode(backends.nats_url, logs, env={**env, **bucket_env()}).start()
        try:
            await node.wait_ready()
            yield Server(
                node.port,
                "/healthz",
                "/apps/1/events",
                "Content-Type: application/json\r\n",
                lambda body: body["code"],
                {408: 408, 429: 429},
            )
        finally:
            node.terminate()


async def fast_get(server: Server, address: str = "127.0.0.1") -> int:
    reader, writer = await connect(server.port, address)
    writer.write(request("GET", server.fast_path, []))
    try:
        return (await until_closed(reader)).status
    finally:
        writer.close()


async def trickle(writer: asyncio.StreamWriter) -> None:
    """One byte every 0.1 s until the server closes the connection."""
    try:
        while not writer.is_closing():
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(0.1)
    except (ConnectionError, OSError):
        pass


async def test_slow_connections_are_cut_off_and_capped_while_others_are_served(
    server: Server,
) -> None:
    slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for i in range(CAP):
        reader, writer = await connect(server.port, SLOW)
        if i % 2 == 0:  # part of the headers
            writer.write(f"GET {server.fast_path} HTTP/1.1\r\nHost: t\r\nX-Slow: ".encode())
        else:  # the headers and part of the body
            writer.write(
                f"POST {server.body_path} HTTP/1.1\r\nHost: t\r\n{server.body_headers}"
                'Content-Length: 1000\r\n\r\n{"name": "'.encode()
            )
        await writer.drain()
        slow.append((reader, writer))
    tricklers = [asyncio.create_task(trickle(writer)) for _, writer in slow[:2]]
    assert await fast_get(server) == 200  # the server has taken all 8 in by now

    reader, writer = await connect(server.port, SLOW)
    over = await until_closed(reader)
    writer.close()
    assert (over.status, server.error_code(over.body)) == (429, server.codes[429]), over
    assert int(over.headers["retry-after"]) >= 1

    answers = [await fast_get(server) for _ in range(20)]
    assert answers == [200] * 20

    for reader, writer in slow:
        cut = await until_closed(reader)
        writer.close()
        assert (cut.status, server.error_code(cut.body)) == (408, server.codes[408]), cut
        assert "retry-after" not in cut.headers

    await asyncio.gather(*tricklers)

    # Their places are given back as they close.
    deadline = time.monotonic() + DEADLINE
    while await fast_get(server, SLOW) != 200:
        assert time.monotonic() < deadline, "the slow address never got its places back"
        await asyncio.sleep(0.1)


async def test_a_kept_alive_connection_that_sends_nothing_more_is_closed(server: Server) -> None:
    reader, writer = await connect(server.port)
    writer.write(f"GET {server.fast_path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    assert (await one_answer(reader)).status == 200
    assert await asyncio.wait_for(reader.read(), DEADLINE) == b""  # closed by the server
    writer.close()


UPGRADE = (
    b"GET /app/no-such-key?protocol=7 HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
CLIENT_CLOSE = client_frame((1000).to_bytes(2, "big"), 0x8)


@pytest.mark.parametrize("server", ["fanout"], indirect=True)  # the server of WebSockets
async def test_websockets_count_against_their_address_until_they_close(server: Server) -> None:
    """A WebSocket leaves aiohttp after its handshake (``take_over``) but keeps its place
    in its address's count: a ninth connection is refused while eight are open, and
    the places come back once they close."""
    sockets = []
    for _ in range(CAP):
        reader, writer = await connect(server.port, SLOW)
        writer.write(UPGRADE)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert head.startswith(b"HTTP/1.1 101"), head
        # Refused (no identity service answers this node: 4100), as Pusher does: a
        # pusher:error, then a close frame with its code; the server waits for ours.
        frames = b""
        while (at := frames.find(b"\x88")) < 0 or len(frames) < at + 2 + frames[at + 1]:
            frames += await asyncio.wait_for(reader.read(4096), DEADLINE)
        code = int.from_bytes(frames[at + 2 : at + 4], "big")
        assert b'"pusher:error"' in frames and f'\\"code\\":{code}'.encode() in frames, frames
        sockets.append((reader, writer))

    reader, writer = await connect(server.port, SLOW)  # refused before it sends a byte
    over = await until_closed(reader)
    writer.close()
    assert over.status == 429, over

    for reader, writer in sockets:  # each answers the server's close; the server hangs up
        writer.write(CLIENT_CLOSE)
        assert await asyncio.wait_for(reader.read(), DEADLINE) == b""
        writer.close()

    async def served() -> bool:
        try:
            return await fast_get(server, SLOW) == 200
        except ConnectionResetError:  # refused (429) before it read our request
            return False

    await until(served, "the address to get its places back")

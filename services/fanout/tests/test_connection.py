"""A socket's writes and idle handling: with a fake transport (no network), and
with a real loopback TCP connection for the writes that go straight to the socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

from confab.bench.fanout import client_frame
from confab_fanout import protocol
from confab_fanout.apps import App
from confab_fanout.connection import Connection, raw_socket
from confab_fanout.fanout import Fanout
from confab_fanout.settings import FanoutSettings


class FakeTransport:
    """Records what is written; answers our close frame as a client does, and is then lost."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.buffered = 0
        self.aborted = False
        self.protocol: Connection | None = None

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.aborted

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.protocol is not None and any(op == 0x8 for op, _ in parse(data)):
            answer = client_frame((1000).to_bytes(2, "big"), 0x8)
            asyncio.get_running_loop().call_soon(self.protocol.data_received, answer)

    def close(self) -> None:
        if not self.aborted:
            self.aborted = True
            if self.protocol is not None:
                asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    abort = close

    def closed_with(self) -> int | None:
        """The code of the close frame written, if any."""
        codes = [
            int.from_bytes(payload[:2], "big")
            for raw in self.written
            for op, payload in parse(raw)
            if op == 0x8
        ]
        return codes[0] if codes else None


def parse(raw: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, payload) of each unmasked frame in ``raw``."""
    out = []
    while raw:
        size, head = raw[1] & 0x7F, 2
        if size == 126:
            size, head = int.from_bytes(raw[2:4], "big"), 4
        out.append((raw[0] & 0x0F, raw[head : head + size]))
        raw = raw[head + size :]
    return out


def fanout(**settings: Any) -> Fanout:
    values = {
        "send_buffer_bytes": 1000,
        "ping_interval": 10.0,
        "pong_timeout": 5.0,
        **settings,
    }
    return Fanout(FanoutSettings(**values), None, None, None)  # type: ignore[arg-type]


def connection(node: Fanout, now: float = 0.0) -> tuple[Connection, FakeTransport]:
    transport = FakeTransport()
    app = App("ws_1", "key", "secret")
    conn = Connection(node, transport, app, "1.1", now)  # type: ignore[arg-type]
    transport.protocol = conn
    node.register(conn)
    return conn, transport


def frames(transport: FakeTransport) -> list[Any]:
    """The text frames written, decoded."""
    return [json.loads(p) for raw in transport.written for op, p in parse(raw) if op == 0x1]


async def settle(node: Fanout) -> None:
    while node._tasks:
        await asyncio.gather(*node._tasks)


async def test_a_socket_too_far_behind_is_closed_with_4200_and_skipped() -> None:
    node = fanout()
    conn, transport = connection(node)
    first, later = protocol.ws_text(b'{"n":1}'), protocol.ws_text(b'{"n":2}')
    conn.send(first)
    transport.buffered = 1001  # the client stopped reading
    conn.send(later)
    conn.send(later)
    assert transport.written == [first]  # nothing more is queued for it
    await settle(node)
    error = frames(transport)[-1]
    assert error["event"] == "pusher:error" and json.loads(error["data"])["code"] == 4200
    assert transport.closed_with() == protocol.RECONNECT
    assert transport.aborted  # the client answered the close; the connection went


async def test_delivery_writes_the_same_bytes_to_every_socket() -> None:
    node = fanout()
    conns = [connection(node) for _ in range(3)]
    for conn, _ in conns:
        conn.socket_id = f"1.{id(conn)}"
        node.join(conn, "news", protocol.Kind.PUBLIC)
    excluded = conns[0][0].socket_id
    sent = node.deliver_local("ws_1", ["news", "empty"], "App\\Ev", '{"a":1}', excluded)
    assert sent == 2
    written = [t.written for _, t in conns]
    assert written[0] == [] and written[1] == written[2]
    assert written[1][0] is written[2][0]  # one frame object for all
    assert frames(conns[1][1])[0] == {"event": "App\\Ev", "channel": "news", "data": '{"a":1}'}


async def test_silent_sockets_are_pinged_then_closed_with_4201() -> None:
    node = fanout()
    _, transport = connection(node, now=0.0)
    node.sweep(9.0)
    assert transport.written == []
    node.sweep(10.5)
    assert frames(transport) == [{"event": "pusher:ping", "data": "{}"}]
    node.sweep(12.0)  # within the pong timeout
    assert len(transport.written) == 1
    node.sweep(16.0)
    await settle(node)
    assert transport.closed_with() == protocol.PONG_NOT_RECEIVED


async def test_a_client_using_control_pings_gets_control_pings() -> None:
    node = fanout()
    conn, transport = connection(node, now=0.0)
    conn.control_pings = True
    node.sweep(11.0)
    assert transport.written == [protocol.ws_ping()]
    # Anything received clears the ping (the read loop does this on every frame).
    conn.last_seen, conn.ping_sent = 12.0, 0.0
    node.sweep(20.0)
    assert len(transport.written) == 1


# -- writes straight to a real socket ---------------------------------------------------------


class Accepted(asyncio.Protocol):
    """The server side of one loopback connection: its transport, and what it reads
    and its loss passed on to the ``Connection`` made on it."""

    def __init__(self, accepted: asyncio.Future[asyncio.Transport]) -> None:
        self.accepted = accepted
        self.lost = accepted.get_loop().create_future()
        self.conn: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.accepted.set_result(transport)

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.conn.connection_lost(exc)
        self.lost.set_result(None)


@contextlib.asynccontextmanager
async def loopback() -> AsyncIterator[tuple[asyncio.Transport, socket.socket, Accepted]]:
    """A server transport and its (non-blocking) client socket, both with small buffers
    so that a client that does not read fills them quickly."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()
    protocols: list[Accepted] = []

    def accept() -> Accepted:
        protocols.append(Accepted(accepted))
        return protocols[-1]

    server = await loop.create_server(accept, "127.0.0.1", 0)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    await loop.sock_connect(client, server.sockets[0].getsockname())
    transport = await asyncio.wait_for(accepted, 10)
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        yield transport, client, protocols[0]
    finally:
        transport.abort()
        client.close()
        server.close()
        await server.wait_closed()


def real_connection(node: Fanout, transport: asyncio.Transport, accepted: Accepted) -> Connection:
    sock = raw_socket(transport)
    assert sock is not None  # a plain TCP socket of the selector loop
    conn = Connection(node, transport, App("ws_1", "key", "secret"), "1.1", 0.0, sock)
    accepted.conn = conn
    node.register(conn)
    return conn


async def read_frames(client: socket.socket, count: int, timeout: float = 10.0) -> list[Any]:
    """The first ``count`` frames the client gets (unmasked server frames): text frames
    decoded, a close frame as ``{"close": code}``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    buf, out = b"", []
    while len(out) < count:
        chunk = await asyncio.wait_for(loop.sock_recv(client, 65536), deadline - loop.time())
        assert chunk, "the server closed the connection"
        buf += chunk
        while len(buf) >= 2:
            size, head = buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    break
                size, head = int.from_bytes(buf[2:4], "big"), 4
            if len(buf) < head + size:
                break
            assert buf[0] in (0x81, 0x88)  # a whole, final frame: nothing interleaved
            payload = buf[head : head + size]
            out.append(
                json.loads(payload)
                if buf[0] == 0x81
                else {"close": int.from_bytes(payload[:2], "big")}
            )
            buf = buf[head + size :]
    return out


def numbered(n: int) -> bytes:
    return protocol.ws_text(json.dumps({"n": n, "pad": "x" * 1000}).encode())


async def test_frames_to_a_socket_arrive_whole_and_in_order() -> None:
    node = fanout()
    async with loopback() as (transport, client, accepted):
        conn = real_connection(node, transport, accepted)
        for n in range(3):
            conn.send(numbered(n))
        assert transport.get_write_buffer_size() == 0  # all taken by the socket at once
        assert [f["n"] for f in await read_frames(client, 3)] == [0, 1, 2]


async def test_what_a_full_socket_does_not_take_is_queued_in_order_until_the_bound() -> None:
    node = fanout(send_buffer_bytes=64 * 1024)
    async with loopback() as (transport, client, accepted):
        conn = real_connection(node, transport, accepted)
        sent = 0
        while not conn.closing:  # the client reads nothing: its buffers fill, then ours
            conn.send(numbered(sent))
            sent += 1
        assert transport.get_write_buffer_size() > 0
        # Every frame before the one refused arrives whole and in order, then the 4200.
        *arrived, error, close = await read_frames(client, sent + 1)
        assert [f["n"] for f in arrived] == list(range(sent - 1))
        assert error["event"] == "pusher:error" and json.loads(error["data"])["code"] == 4200
        assert close == {"close": protocol.RECONNECT}
        client.send(client_frame((1000).to_bytes(2, "big"), 0x8))  # the client's answer
        await settle(node)
        await asyncio.wait_for(accepted.lost, 10)  # then the server closes the connection


async def test_a_socket_closed_under_the_connection_takes_no_more_writes() -> None:
    node = fanout()
    async with loopback() as (transport, _, accepted):
        conn = real_connection(node, transport, accepted)
        sock = conn.sock
        assert sock is not None
        transport.abort()
        await asyncio.wait_for(accepted.lost, 10)
        assert sock.fileno() == -1  # its descriptor number is free for the next connection
        conn.send(numbered(0))
        assert conn.closing

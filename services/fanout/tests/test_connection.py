"""A socket's writes and idle handling, with a fake transport (no network)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from confab_fanout import protocol
from confab_fanout.apps import App
from confab_fanout.connection import Connection
from confab_fanout.fanout import Fanout
from confab_fanout.settings import FanoutSettings


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.buffered = 0
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.aborted

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True


class FakeWebSocket:
    def __init__(self) -> None:
        self.closed_with: tuple[int, bytes] | None = None

    async def close(self, *, code: int, message: bytes) -> bool:
        self.closed_with = (code, message)
        return True


def fanout(**settings: Any) -> Fanout:
    values = {
        "fanout_send_buffer_bytes": 1000,
        "fanout_ping_interval": 10.0,
        "fanout_pong_timeout": 5.0,
        **settings,
    }
    return Fanout(FanoutSettings(**values), None, None, None)  # type: ignore[arg-type]


def connection(node: Fanout, now: float = 0.0) -> tuple[Connection, FakeTransport, FakeWebSocket]:
    transport, ws = FakeTransport(), FakeWebSocket()
    app = App("ws_1", "key", "secret")
    conn = Connection(node, ws, transport, app, "1.1", now)  # type: ignore[arg-type]
    node.register(conn)
    return conn, transport, ws


def frames(transport: FakeTransport) -> list[Any]:
    out = []
    for raw in transport.written:
        payload = raw[2:] if raw[1] < 126 else raw[4:]
        out.append(json.loads(payload) if payload else raw)
    return out


async def settle(node: Fanout) -> None:
    while node._tasks:
        await asyncio.gather(*node._tasks)


async def test_a_socket_too_far_behind_is_closed_with_4200_and_skipped() -> None:
    node = fanout()
    conn, transport, ws = connection(node)
    first, later = protocol.ws_text(b'{"n":1}'), protocol.ws_text(b'{"n":2}')
    conn.send(first)
    transport.buffered = 1001  # the client stopped reading
    conn.send(later)
    conn.send(later)
    assert transport.written == [first]  # nothing more is queued for it
    await settle(node)
    error = frames(transport)[-1]
    assert error["event"] == "pusher:error" and json.loads(error["data"])["code"] == 4200
    assert ws.closed_with is not None and ws.closed_with[0] == protocol.RECONNECT


async def test_delivery_writes_the_same_bytes_to_every_socket() -> None:
    node = fanout()
    conns = [connection(node) for _ in range(3)]
    for conn, _, _ in conns:
        conn.socket_id = f"1.{id(conn)}"
        node.join(conn, "news", protocol.Kind.PUBLIC)
    excluded = conns[0][0].socket_id
    sent = node.deliver_local("ws_1", ["news", "empty"], "App\\Ev", '{"a":1}', excluded)
    assert sent == 2
    written = [t.written for _, t, _ in conns]
    assert written[0] == [] and written[1] == written[2]
    assert written[1][0] is written[2][0]  # one frame object for all
    assert frames(conns[1][1])[0] == {"event": "App\\Ev", "channel": "news", "data": '{"a":1}'}


async def test_silent_sockets_are_pinged_then_closed_with_4201() -> None:
    node = fanout()
    _, transport, ws = connection(node, now=0.0)
    node.sweep(9.0)
    assert transport.written == []
    node.sweep(10.5)
    assert frames(transport) == [{"event": "pusher:ping", "data": "{}"}]
    node.sweep(12.0)  # within the pong timeout
    assert len(transport.written) == 1
    node.sweep(16.0)
    await settle(node)
    assert ws.closed_with is not None and ws.closed_with[0] == protocol.PONG_NOT_RECEIVED


async def test_a_client_using_control_pings_gets_control_pings() -> None:
    node = fanout()
    conn, transport, _ = connection(node, now=0.0)
    conn.control_pings = True
    node.sweep(11.0)
    assert transport.written == [protocol.ws_ping()]
    # Anything received clears the ping (the read loop does this on every frame).
    conn.last_seen, conn.ping_sent = 12.0, 0.0
    node.sweep(20.0)
    assert len(transport.written) == 1

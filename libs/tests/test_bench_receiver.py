"""The webhooks bench's receiver process (``python -m confab.bench.webhooks PORT``), fed
raw bytes as the deliveries' client writes them: requests written ahead in one write,
a request split across reads, and what it refuses. Every delivery it records must be
verified with ``standardwebhooks`` against the secrets the bench told it."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime

import aiohttp
from standardwebhooks.webhooks import Webhook

from confab.bench.webhooks import RemoteReceiver, content_length, header_pairs

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def delivery(path: str, message_id: str, body: bytes, secret: str = SECRET) -> bytes:
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(message_id, now, body.decode())
    head = (
        f"POST /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        f"webhook-id: {message_id}\r\nwebhook-timestamp: {int(now.timestamp())}\r\n"
        f"webhook-signature: {signature}\r\n\r\n"
    )
    return head.encode() + body


async def answers(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    found = []
    for _ in range(count):
        head = await reader.readuntil(b"\r\n\r\n")
        length = content_length(head)
        assert length >= 0
        await reader.readexactly(length)
        found.append(head.split(b"\r\n", 1)[0])
    return found


def test_a_heads_length_and_headers_are_read_as_http_says() -> None:
    assert content_length(b"POST / HTTP/1.1\r\nCONTENT-LENGTH: 12") == 12
    assert content_length(b"GET / HTTP/1.1\r\nHost: x") == 0
    assert content_length(b"POST / HTTP/1.1\r\nContent-Length: twelve") == -1
    assert content_length(b"POST / HTTP/1.1\r\nContent-Length: -1") == -1
    assert content_length(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked") == -1
    assert header_pairs(b"POST / HTTP/1.1\r\nWebhook-Id: msg_1\r\nX:  y ") == {
        "webhook-id": "msg_1",
        "x": "y",
    }


async def test_requests_written_ahead_or_split_are_each_recorded_and_verified() -> None:
    async with aiohttp.ClientSession() as http:
        receiver = await RemoteReceiver.start(http)
        try:
            await receiver.tell("a", [SECRET])
            reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
            three = b"".join(delivery("a", f"msg_{i}", b'{"n": %d}' % i) for i in range(3))
            writer.write(three)  # written ahead: one write
            assert await answers(reader, 3) == [b"HTTP/1.1 200 OK"] * 3
            fourth = delivery("a", "msg_3", b'{"n": 3, "text": "split"}')
            # The head cut in two, then the body: three writes (on loopback, most often
            # three reads).
            writer.write(fourth[:40])
            await writer.drain()
            writer.write(fourth[40:-5])
            await writer.drain()
            writer.write(fourth[-5:])
            assert await answers(reader, 1) == [b"HTTP/1.1 200 OK"]
            # Signed with another secret: recorded, not verified.
            writer.write(delivery("a", "msg_4", b"{}", secret="whsec_" + "A" * 32))
            assert await answers(reader, 1) == [b"HTTP/1.1 200 OK"]
            # A chunked body is refused, and the connection closed.
            writer.write(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            assert await answers(reader, 1) == [b"HTTP/1.1 400 Bad Request"]
            assert await reader.read() == b""
            writer.close()
            arrived = await receiver.arrived()
        finally:
            await receiver.close()
    assert [(r.path, r.message_id, r.verified) for r in arrived] == [
        ("a", "msg_0", True),
        ("a", "msg_1", True),
        ("a", "msg_2", True),
        ("a", "msg_3", True),
        ("a", "msg_4", False),
    ]


async def test_the_receiver_takes_only_spare_cpu_and_ends_with_the_bench() -> None:
    """It leads a session of its own at nice 19, its session too (with Linux's autogroups
    a process's own nice value counts only within its session), and it ends when the
    bench's end of its standard input closes, however the bench ends."""
    from pathlib import Path

    import psutil

    from confab.priority import autogroup_nice

    async with aiohttp.ClientSession() as http:
        receiver = await RemoteReceiver.start(http)
        process = receiver.process
        try:
            pid = process.pid
            assert psutil.Process(pid).nice() == 19
            assert os.getsid(pid) == pid
            assert autogroup_nice(Path(f"/proc/{pid}/autogroup")) in (None, 19)
            process.stdin.close()
            assert await asyncio.wait_for(process.wait(), 30) == 0
        finally:
            await receiver.close()

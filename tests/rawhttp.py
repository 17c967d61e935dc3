"""HTTP/1.1 over a bare socket, for tests that send what no client library would.

Bad bytes in headers and bodies, partial requests, a chosen source address (any
127.x.y.z reaches the server on loopback and counts as another client).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

DEADLINE = 30.0  # bounds a hang; nothing measures how fast an answer comes


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw) if self.raw else None


async def connect(
    port: int, address: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return Answer(int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body)


async def until_closed(reader: asyncio.StreamReader) -> Answer:
    """Everything the server sends before it closes: one answer."""
    return parse(await asyncio.wait_for(reader.read(), DEADLINE))


async def one_answer(reader: asyncio.StreamReader) -> Answer:
    """One answer on a kept-alive connection, read to its Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    answer = parse(head)
    length = int(answer.headers.get("content-length", "0"))
    answer.raw = await asyncio.wait_for(reader.readexactly(length), DEADLINE)
    return answer


def request(method: str, target: str, headers: list[bytes], body: bytes = b"") -> bytes:
    """A whole request that asks the server to close after answering."""
    lines = [
        f"{method} {target} HTTP/1.1".encode(),
        b"Host: confab.test",
        b"Connection: close",
        f"Content-Length: {len(body)}".encode(),
        *headers,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def send(
    port: int, method: str, target: str, headers: list[bytes], body: bytes = b""
) -> Answer:
    reader, writer = await connect(port)
    try:
        writer.write(request(method, target, headers, body))
        return await until_closed(reader)
    finally:
        writer.close()

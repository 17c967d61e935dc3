"""``bus.Client``'s header parser: the same dicts as nats-py's own, on a real round trip
and on what a careless or hostile publisher could put in a header block."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from confab import bus

BLOCKS = [
    b"Nats-Msg-Id: 01JF8ZK3\r\nConfab-Event: message.posted\r\nConfab-Schema: 1\r\n\r\n",
    b"A B: space in the name\r\nok: 1\r\n",
    b" padded :  value  \r\n",
    b"\xff\xfe: not ascii\r\n",
    b": an empty name\r\n",
    b"bad-value:\xff\xfe\r\n",
    b"a\x1cb: a separator control character, which str.isspace() calls space\r\n",
    b"Tab\t: a tab after the name\r\n",
    b"no colon at all\r\n",
    b"k:v:w\r\n",
    b"dup: 1\r\ndup: 2\r\n",
    "Unicode: café ✓\r\n".encode(),
    b"",
]


@pytest.mark.parametrize("raw", BLOCKS)
def test_headers_parse_as_nats_py_parses_them(raw: bytes) -> None:
    assert bus.parse_header_lines(raw) == NATS._parse_header_lines(raw)


async def test_connections_use_it_and_headers_arrive_whole(nc: NATS) -> None:
    assert isinstance(nc, bus.Client)
    sub = await nc.subscribe("test.headers.roundtrip")
    headers = {"Confab-Event": "message.posted", "Confab-Actor": "usr_1", "X-Note": "a: b ✓"}
    await nc.publish("test.headers.roundtrip", b"{}", headers=headers)
    msg = await sub.next_msg(timeout=5)
    assert msg.headers == headers
    await sub.unsubscribe()

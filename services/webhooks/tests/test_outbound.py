"""The deliveries' HTTP client against a receiver that misbehaves on purpose.

The receiver is a raw asyncio server on loopback: each test says, request by request,
what bytes it answers with (or that it closes the connection, or says nothing), and
reads back what arrived and on how many connections. The address checks themselves are
tested in ``test_egress.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop

from confab_infra.backends import free_port
from confab_webhooks.outbound import (
    HEAD_LIMIT,
    PIPELINE_DEPTH,
    Answer,
    Outbound,
    origin_of,
    request_head,
)
from confab_webhooks.settings import WebhooksSettings

OK = b"HTTP/1.1 204 No Content\r\n\r\n"
CLOSE = b""  # close the connection instead of answering
SILENT = None  # never answer

Script = Callable[[int, int], bytes | None]  # (connection number, request on it) -> answer


@dataclass
class Receiver:
    url: str
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    script: Script = lambda _c, _r: OK
    close_after: bool = False  # close each connection after answering
    delay: float = 0.0  # seconds before each answer is written (in order)
    together: int = 0  # reads that brought more than one whole request (pipelined)
    on_request: Callable[[], None] | None = None  # after each request is recorded


class _Server(asyncio.Protocol):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.buffer = b""
        self.count = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.receiver.connections += 1
        self.number = self.receiver.connections

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        whole = 0
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(rest) < length:
                break
            whole += 1
            self.receiver.together += whole == 2
            self.buffer = rest[length:]
            self.receiver.requests.append(head + b"\r\n\r\n" + rest[:length])
            if self.receiver.on_request is not None:
                self.receiver.on_request()
            self.count += 1
            answer = self.receiver.script(self.number, self.count)
            if answer is None:
                continue
            if answer == CLOSE:
                self.transport.close()
                return
            if self.receiver.delay:
                loop = asyncio.get_running_loop()
                loop.call_later(self.receiver.delay, self.transport.write, answer)
                continue
            self.transport.write(answer)
            if self.receiver.close_after:
                self.transport.close()
                return


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Receiver]:
    port = free_port()
    found = Receiver(f"http://127.0.0.1:{port}/hooks/in")
    server = await asyncio.get_running_loop().create_server(
        lambda: _Server(found), "127.0.0.1", port
    )
    try:
        yield found
    finally:
        server.close()


@contextlib.asynccontextmanager
async def outbound(**options: Any) -> AsyncIterator[Outbound]:
    client = Outbound(
        WebhooksSettings(allow_private=True, response_limit_bytes=32, timeout_seconds=1.0),
        **options,
    )
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving() as found:
        yield found


@pytest.fixture
async def client() -> AsyncIterator[Outbound]:
    async with outbound() as found:
        yield found


HEADERS = {"content-type": "application/json", "webhook-id": "msg_1"}


async def test_requests_share_one_kept_alive_connection(
    receiver: Receiver, client: Outbound
) -> None:
    for n in range(5):
        answer = await client.post(receiver.url, b'{"n": %d}' % n, HEADERS)
        assert answer.status == 204 and answer.error is None
    assert receiver.connections == 1
    first = receiver.requests[0]
    assert first.startswith(b"POST /hooks/in HTTP/1.1\r\n")
    port = receiver.url.split(":")[2].split("/")[0]
    assert f"Host: 127.0.0.1:{port}\r\n".encode() in first
    assert b"Content-Length: 8\r\n" in first and b"webhook-id: msg_1\r\n" in first
    assert [r.rsplit(b"\r\n\r\n", 1)[1] for r in receiver.requests] == [
        b'{"n": %d}' % n for n in range(5)
    ]


async def test_a_connection_the_receiver_closes_is_not_reused(
    receiver: Receiver, client: Outbound
) -> None:
    # "Connection: close", an HTTP/1.0 answer, and a close with no word at all.
    answers = {
        1: b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        2: b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    }
    receiver.script = lambda c, _r: answers.get(c, OK)
    for _ in range(4):
        assert (await client.post(receiver.url, b"{}", HEADERS)).status in (200, 204)
    assert receiver.connections == 3


async def test_a_request_on_a_connection_closed_under_it_is_sent_once_more(
    receiver: Receiver, client: Outbound
) -> None:
    # The receiver closes its first connection as the second request arrives on it.
    receiver.script = lambda c, r: CLOSE if (c, r) == (1, 2) else OK
    assert (await client.post(receiver.url, b"{}", HEADERS)).status == 204
    assert (await client.post(receiver.url, b"{}", HEADERS)).status == 204
    assert receiver.connections == 2 and len(receiver.requests) == 3
    # On a new connection a close before answering is an error, not sent again.
    receiver.script = lambda c, _r: CLOSE if c == 3 else OK
    client.close_idle()
    answer = await client.post(receiver.url, b"{}", HEADERS)
    assert answer.status is None
    assert answer.error == "the receiver closed the connection before answering"
    assert len(receiver.requests) == 4


async def test_a_request_without_a_task_goes_only_on_a_connection_open_already(
    receiver: Receiver, client: Outbound
) -> None:
    """``pipelined`` (the sender's usual course, answered in a callback) takes an open
    connection as ``post`` would, and leaves the rest to ``post``: a first request, a
    URL that is no URL, and one whose connection closed before any byte of its answer."""
    assert client.pipelined(receiver.url, b"{}", HEADERS) is None  # nothing open yet
    assert client.pipelined("ftp://example.com/", b"{}", HEADERS) is None
    assert (await client.post(receiver.url, b"{}", HEADERS)).status == 204
    waiter = client.pipelined(receiver.url, b'{"n": 1}', HEADERS)
    assert waiter is not None
    await asyncio.wait([waiter])
    assert client.answer_of(waiter) == Answer(204, None)
    assert receiver.connections == 1 and len(receiver.requests) == 2
    # Closed under it: to be sent again (None), which ``post`` then does on a new one.
    receiver.script = lambda c, r: CLOSE if (c, r) == (1, 3) else OK
    waiter = client.pipelined(receiver.url, b"{}", HEADERS)
    assert waiter is not None
    await asyncio.wait([waiter])
    assert client.answer_of(waiter) is None
    assert (await client.post(receiver.url, b"{}", HEADERS)).status == 204
    assert receiver.connections == 2
    # No answer in time is an answer without a status, as from ``post``.
    receiver.script = lambda _c, _r: SILENT
    waiter = client.pipelined(receiver.url, b"{}", HEADERS)
    assert waiter is not None
    await asyncio.wait([waiter])
    assert client.answer_of(waiter) == Answer(None, "timed out")


async def test_answers_are_read_as_http_says(receiver: Receiver, client: Outbound) -> None:
    answers = {
        # An interim 100 Continue, then the answer.
        1: b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        # Retry-After, with a chunked body.
        2: b"HTTP/1.1 429 Too Many Requests\r\nRetry-After:  120 \r\n"
        b"Transfer-Encoding: chunked\r\n\r\n4\r\nslow\r\n5\r\n down\r\n0\r\n\r\n",
        # A body longer than the limit (32 bytes): cut, and the connection closed.
        3: b"HTTP/1.1 500 Oops\r\nContent-Length: 100000\r\n\r\n" + b"e" * 100_000,
        # A body read until the receiver closes the connection.
        4: b"HTTP/1.1 200 OK\r\n\r\nfine",
    }
    receiver.script = lambda _c, r: answers.get(r, OK)
    # Each answer on the connection the one before left open, or on a new one.
    first = await client.post(receiver.url, b"{}", HEADERS)
    second = await client.post(receiver.url, b"{}", HEADERS)
    third = await client.post(receiver.url, b"{}", HEADERS)
    assert (first.status, first.error) == (202, None)
    assert (second.status, second.error, second.retry_after) == (429, "HTTP 429: slow down", "120")
    assert third.status == 500 and third.error == "HTTP 500: " + "e" * 32
    receiver.script = lambda _c, _r: answers[4]
    receiver.close_after = True
    fourth = await client.post(receiver.url, b"{}", HEADERS)
    assert (fourth.status, fourth.error) == (200, None)
    assert receiver.connections == 2  # the cut answer closed the first


async def test_headers_without_end_are_cut_off(receiver: Receiver, client: Outbound) -> None:
    endless = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * (HEAD_LIMIT * 4) + b"\r\n\r\n"
    receiver.script = lambda c, _r: endless if c == 1 else OK
    answer = await client.post(receiver.url, b"{}", HEADERS)
    assert (answer.status, answer.error) == (None, "the answer's headers are too long")
    assert (await client.post(receiver.url, b"{}", HEADERS)).status == 204
    assert receiver.connections == 2


async def test_what_is_not_http_or_comes_too_late_is_no_answer(
    receiver: Receiver, client: Outbound
) -> None:
    receiver.script = lambda c, _r: b"SSH-2.0-OpenSSH_9.6\r\n\r\n" if c == 1 else SILENT
    garbage = await client.post(receiver.url, b"{}", HEADERS)
    assert garbage.status is None and garbage.error is not None
    assert garbage.error.startswith("not an HTTP answer"), garbage.error
    silent = await client.post(receiver.url, b"{}", HEADERS)
    assert (silent.status, silent.error) == (None, "timed out")
    # Neither connection is used again.
    receiver.script = lambda _c, _r: OK
    assert (await client.post(receiver.url, b"{}", HEADERS)).status == 204
    assert receiver.connections == 3


async def test_a_kept_alive_connection_that_goes_silent_times_out_and_is_closed(
    receiver: Receiver, client: Outbound
) -> None:
    """The bound on an attempt on a reused connection is the connection's own timer."""
    receiver.script = lambda c, r: SILENT if (c, r) == (1, 2) else OK
    assert (await client.post(receiver.url, b"{}", HEADERS)).status == 204
    silent = await client.post(receiver.url, b"{}", HEADERS)
    assert (silent.status, silent.error) == (None, "timed out")
    assert (await client.post(receiver.url, b"{}", HEADERS)).status == 204
    assert receiver.connections == 2  # the silent one was not used again


async def test_a_request_written_later_on_a_connection_times_out_at_its_own_deadline(
    receiver: Receiver, client: Outbound
) -> None:
    """The connection's one timer is not set anew for every answer: set for the first
    request's deadline, it finds a later request at the head when it fires, and waits
    for that one's own deadline before timing it out."""
    receiver.script = lambda c, r: SILENT if (c, r) == (1, 3) else OK
    loop = asyncio.get_running_loop()
    first = loop.time()
    assert (await client.post(receiver.url, b"{}", HEADERS)).status == 204
    receiver.delay = 0.3  # the second answer comes late, so the third's deadline is later
    second = client.pipelined(receiver.url, b"{}", HEADERS)
    assert second is not None and (await second).status == 204
    sent = loop.time()
    assert sent >= first + 0.3
    third = client.pipelined(receiver.url, b"{}", HEADERS)
    assert third is not None
    ended: list[float] = []
    third.add_done_callback(lambda _: ended.append(loop.time()))
    await asyncio.wait([third])
    answer = Outbound.answer_of(third)
    assert answer is not None and (answer.status, answer.error) == (None, "timed out")
    assert ended[0] >= sent + 1.0  # its own deadline (timeout_seconds=1), not the first's
    assert receiver.connections == 1


def _ids(receiver: Receiver) -> list[str]:
    return [r.split(b"webhook-id: ", 1)[1].split(b"\r\n", 1)[0].decode() for r in receiver.requests]


async def _many(client: Outbound, url: str, first: int, n: int) -> list[Answer]:
    """``n`` posts at once (as lanes of several conversations send), ids from ``first``."""
    return list(
        await asyncio.gather(
            *(client.post(url, b"{}", {"webhook-id": f"msg_{i}"}) for i in range(first, first + n))
        )
    )


async def test_requests_to_a_quick_receiver_are_written_ahead_on_one_connection(
    receiver: Receiver,
) -> None:
    # Every answer counts as quick here: what is tested is what pipelining does.
    async with outbound(pipeline_budget=60.0) as client:
        answers = await _many(client, receiver.url, 0, 20)  # nothing answered yet: 20 connections
        assert receiver.connections == 20 and receiver.together == 0
        client.close_idle()
        assert (await client.post(receiver.url, b"{}", {"webhook-id": "msg_20"})).status == 204
        answers += await _many(client, receiver.url, 21, 30)
        # More than PIPELINE_DEPTH at once: the rest on new connections.
        answers += await _many(client, receiver.url, 51, PIPELINE_DEPTH + 2)
    assert [a.status for a in answers] == [204] * (50 + PIPELINE_DEPTH + 2)
    # After the first answer on it, one connection took the next 30, and they arrived
    # together: fewer writes and reads than requests, answered in order.
    assert receiver.together >= 1
    assert _ids(receiver)[20:51] == [f"msg_{i}" for i in range(20, 51)]
    assert receiver.connections == 21 + 2


async def test_a_slow_receiver_gets_one_request_at_a_time_per_connection(
    receiver: Receiver, client: Outbound
) -> None:
    receiver.delay = 0.05  # above the budget: writing ahead would make it slower still
    assert (await client.post(receiver.url, b"{}", {"webhook-id": "msg_0"})).status == 204
    answers = await _many(client, receiver.url, 1, 5)
    assert [a.status for a in answers] == [204] * 5
    assert receiver.connections == 5 and receiver.together == 0


async def test_requests_written_ahead_and_dropped_are_sent_again_one_at_a_time(
    receiver: Receiver,
) -> None:
    """A receiver that answers the first of several requests written ahead and closes:
    the rest are sent once more, and it is not sent requests ahead any more."""
    receiver.script = lambda c, r: CLOSE if (c, r) == (1, 3) else OK
    async with outbound(pipeline_budget=60.0) as client:
        assert (await client.post(receiver.url, b"{}", {"webhook-id": "msg_0"})).status == 204
        answers = await _many(client, receiver.url, 1, 6)
        assert [a.status for a in answers] == [204] * 6
        assert receiver.together == 1  # the six arrived together on the first connection
        # msg_1 answered; msg_2 closed the connection; msg_2 … msg_6 sent again, each on
        # a connection of its own.
        assert sorted(set(_ids(receiver))) == [f"msg_{i}" for i in range(7)]
        assert receiver.connections == 6
        answers = await _many(client, receiver.url, 7, 5)
        assert [a.status for a in answers] == [204] * 5
        assert receiver.together == 1  # none written ahead since
        assert receiver.connections == 6  # the idle ones were used


async def test_a_receiver_that_stops_answering_times_out_what_was_written_ahead(
    receiver: Receiver,
) -> None:
    # The first connection answers its first request, then nothing more.
    receiver.script = lambda c, r: SILENT if c == 1 and r > 1 else OK
    async with outbound(pipeline_budget=60.0) as client:
        assert (await client.post(receiver.url, b"{}", {"webhook-id": "msg_0"})).status == 204
        answers = await _many(client, receiver.url, 1, 4)
        # Those behind the first waited as long: their attempts are over too, and they are
        # not sent again (the sender retries them later, as any attempt that timed out).
        assert [(a.status, a.error) for a in answers] == [(None, "timed out")] * 4
        assert receiver.together == 1 and len(receiver.requests) == 5
        # The origin is slow now, by its average answer time: nothing is written ahead.
        answers = await _many(client, receiver.url, 5, 3)
        assert [a.status for a in answers] == [204] * 3
        assert receiver.together == 1
        assert sorted(_ids(receiver)[5:]) == ["msg_5", "msg_6", "msg_7"]


async def test_a_request_given_up_on_leaves_the_others_on_its_connection_alone(
    receiver: Receiver,
) -> None:
    receiver.delay = 0.05  # answers come after the one given up on is cancelled
    async with outbound(pipeline_budget=60.0) as client:
        assert (await client.post(receiver.url, b"{}", {"webhook-id": "msg_0"})).status == 204
        posts = [
            asyncio.create_task(client.post(receiver.url, b"{}", {"webhook-id": f"msg_{i}"}))
            for i in range(1, 6)
        ]
        written = asyncio.Event()  # all five written ahead, on the first connection
        receiver.on_request = lambda: written.set() if len(receiver.requests) == 6 else None
        await written.wait()
        posts[1].cancel()
        done = await asyncio.gather(*posts, return_exceptions=True)
        assert isinstance(done[1], asyncio.CancelledError)
        assert [a.status for a in done if isinstance(a, Answer)] == [204] * 4
        # The answers stayed in step: the connection is still good for more.
        assert (await client.post(receiver.url, b"{}", {"webhook-id": "msg_6"})).status == 204
        assert receiver.connections == 1 and receiver.together == 1


async def test_nothing_can_be_smuggled_through_the_url() -> None:
    origin = origin_of("http://example.com/a b\r\nX-Evil: 1?q=x y#frag")
    assert origin.target == "/a%20bX-Evil:%201?q=x%20y"  # CR and LF are dropped
    assert origin.host_header == "example.com"
    head = request_head(origin, {"webhook-id": "msg_1"}, 2)
    assert b"\r\nX-Evil" not in head and head.endswith(b"webhook-id: msg_1\r\n\r\n")
    assert origin_of("https://[2001:db8::1]:8443/").host_header == "[2001:db8::1]:8443"
    assert origin_of("https://bücher.example/hook").host_header == "xn--bcher-kva.example"
    assert origin_of("https://example.com:443").target == "/"
    with pytest.raises(ValueError):
        origin_of("ftp://example.com/")


def test_on_uvloop_as_the_service_runs() -> None:
    """The same client on uvloop (its transports are not asyncio's classes)."""

    async def scenario() -> None:
        async with serving() as receiver, outbound() as client:
            receiver.script = lambda _c, r: (
                b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy"
                if r == 2
                else b"NOT HTTP\r\n\r\n"
                if r == 3
                else OK
            )
            first = await client.post(receiver.url, b"{}", HEADERS)
            second = await client.post(receiver.url, b"{}", HEADERS)
            third = await client.post(receiver.url, b"{}", HEADERS)
            fourth = await client.post(receiver.url, b"{}", HEADERS)
            assert (first.status, second.status, second.retry_after) == (204, 503, "7")
            assert second.error == "HTTP 503: busy"
            assert third.status is None and (third.error or "").startswith("not an HTTP")
            assert fourth.status == 204 and receiver.connections == 2

    uvloop.run(scenario())

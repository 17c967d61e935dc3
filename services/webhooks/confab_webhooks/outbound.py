"""The HTTP client every delivery and ping goes through: small POSTs over kept-alive HTTP/1.1.

A delivery needs little of HTTP: send one small POST, then read the status, the
``Retry-After`` header and the first bytes of the body. aiohttp's client spent 60 to 90 µs
of CPU on each one: its request and response objects, its connector, its timers. With
three endpoints that was a third of what a message cost the whole stack. This client
writes the request with one ``write`` and parses the answer with llhttp (``httptools``):
about 10 µs. It keeps these rules:

- **Addresses.** It connects only to addresses ``GuardedResolver`` lets through. Each new
  connection resolves the name again, so DNS rebinding is refused as before. An IP literal
  is checked first (``check_host``). TLS uses the system's trust store and the URL's host
  name (SNI, certificate check).
- **No redirects.** A 3xx is an answer like any other.
- **Bounded answers.** At most ``response_limit_bytes`` of a body are read. A longer body
  closes the connection instead of being drained. Headers longer than ``HEAD_LIMIT`` are
  no answer: a receiver cannot make this process hold more than that of one.
- **Bounded attempts.** A whole attempt (connecting, writing, the answer) is bounded by
  ``timeout_seconds``. A connection that timed out or broke is closed, never reused. On
  a connection the bound is one timer of the connection's (``loop.call_at``), not an
  ``asyncio.timeout`` per request. It is not set anew for every answer: when it fires, it
  times out the request whose answer comes next if that one's deadline has passed, and
  is otherwise set again for it.
- **Kept-alive connections, pipelined to a quick receiver.** Connections are kept per
  origin (scheme, host, port) and closed after ``IDLE_SECONDS`` unused. Requests are
  written ahead on a connection that has answered before (HTTP/1.1 pipelining, answers
  in the order of the requests) while the origin's answers are quick: its moving
  average answer time, times the requests that would be waiting, within
  ``PIPELINE_BUDGET``, and at most ``PIPELINE_DEPTH`` of them. The requests written in
  one turn of the loop go out in one ``write``, and the receiver reads them, and answers
  them, in one go: on loopback a write and a read per request were most of what a
  delivery cost both sides. A slow receiver gets one request at a time on each
  connection and more connections, as before, so it is not made slower. An answer that
  says ``Connection: close`` (or comes as HTTP/1.0 without keep-alive) is the last on
  its connection.
- **Requests that were not answered.** A receiver may close a kept-alive connection
  just as a request goes out on it, or close it after answering the first of several
  requests written ahead. A request that got no byte of an answer is sent once more on a
  new connection. Deliveries are at least once already, and a retry keeps its
  ``webhook-id`` (RFC 9112 9.3.2: a client that pipelines retries what was not answered).
  An origin that dropped requests written ahead without saying so is sent one request
  at a time per connection for ``PIPELINE_PAUSE``.
- **Per-conversation order.** Pipelining never puts two deliveries of one lane on the
  wire together: a lane sends its next delivery only once the one before is answered
  (``delivery``). What shares a connection is other lanes' requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, urlsplit

import httptools

from confab import __version__
from confab.egress import GuardedResolver, RefusedAddress, check_host, ip_literal
from confab.errors import ConfabError
from confab_webhooks.settings import WebhooksSettings

IDLE_SECONDS = 15.0  # as aiohttp's and most servers' keep-alive
HEAD_LIMIT = 64 * 1024  # an answer's status line and headers, at most
PIPELINE_DEPTH = 32  # requests waiting for their answers on one connection, at most
PIPELINE_BUDGET = 0.01  # seconds a request may wait behind others, by the estimate
PIPELINE_PAUSE = 600.0  # seconds an origin that dropped pipelined requests is not sent them
ANSWER_WEIGHT = 0.2  # of the newest answer time in an origin's moving average
USER_AGENT = f"Confab-Webhooks/{__version__}"
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None  # None: no answer
    error: str | None
    retry_after: str | None = None


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a URL's requests go, and what they start with."""

    scheme: str
    host: str  # as in the URL, IDNA-encoded; no brackets around IPv6
    port: int
    target: str  # path and query, percent-encoded
    host_header: str
    head: bytes  # what every request to this URL starts with: its request line, Host, User-Agent

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


@functools.lru_cache(maxsize=1024)  # an endpoint's URL is parsed once, not per delivery
def origin_of(url: str) -> Origin:
    """The origin and request target of an http(s) URL (ValueError if it is not one)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    host = parts.hostname
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        host = host.encode("idna").decode("ascii")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    shown = f"[{host}]" if ":" in host else host
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_QUERY_SAFE)
    host_header = shown if port == default else f"{shown}:{port}"
    head = f"POST {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
    return Origin(parts.scheme, host, port, target, host_header, head.encode("latin-1"))


def request_head(origin: Origin, headers: dict[str, str], length: int) -> bytes:
    """A POST's request line and headers (values are the caller's own: no CR or LF)."""
    lines = [f"Content-Length: {length}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    lines.append("\r\n")
    return origin.head + "\r\n".join(lines).encode("latin-1")


class _NoAnswer(Exception):
    """The receiver's side broke off or answered something that is not HTTP."""


def _failure(exc: BaseException) -> Answer:
    """An attempt that got no answer, as its ``Answer`` (what is not such a failure is
    raised again)."""
    if isinstance(exc, TimeoutError):
        return Answer(None, "timed out")
    if isinstance(exc, RefusedAddress):
        return Answer(None, f"refused: {exc}")
    if isinstance(exc, ssl.SSLError):
        return Answer(None, f"TLS: {exc.reason or exc}"[:300])
    if isinstance(exc, _NoAnswer):
        return Answer(None, str(exc)[:300])
    if isinstance(exc, OSError):
        return Answer(None, f"cannot connect: {exc or type(exc).__name__}"[:300])
    raise exc


class _Stale(_NoAnswer):
    """A request written on a connection that closed before any byte of its answer."""


@dataclass(slots=True)
class _Exchange:
    """One request written on a connection, waiting for its answer."""

    waiter: asyncio.Future[Answer]
    deadline: float  # the loop's clock
    since: float  # when the receiver could start on it: written, or the one before answered


class _Route:
    """An origin's connections, and how fast it answers (whether to pipeline to it)."""

    __slots__ = ("answer_time", "budget", "connections", "serial_until")

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.connections: list[_Connection] = []
        self.answer_time: float | None = None  # seconds, a moving average; None: no answer yet
        self.serial_until = 0.0  # it dropped pipelined requests: one at a time until then

    def observe(self, seconds: float) -> None:
        if self.answer_time is None:
            self.answer_time = seconds
        else:
            self.answer_time += ANSWER_WEIGHT * (seconds - self.answer_time)

    def room(self, connection: _Connection, now: float) -> bool:
        """Whether one more request may be written behind those on ``connection``."""
        waiting = len(connection.line)
        return (
            connection.answered > 0
            and waiting < PIPELINE_DEPTH
            and self.answer_time is not None
            and self.answer_time * (waiting + 1) <= self.budget
            and now >= self.serial_until
        )


class _Connection(asyncio.Protocol):
    """One kept-alive connection: requests written in order, their answers parsed as they
    come, in the same order (HTTP/1.1 pipelining)."""

    def __init__(self, route: _Route, limit: int) -> None:
        self.route = route
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.line: deque[_Exchange] = deque()  # written, not answered yet: the head first
        self.out: list[bytes] = []  # to be written at the end of this turn of the loop
        self.flush: asyncio.Handle | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.reusable = True
        self.answered = 0
        self.idle_since = time.monotonic()
        self._reset()

    def _reset(self) -> None:
        self.status: int | None = None
        self.retry_after: str | None = None
        self.body = bytearray()
        self.received = 0  # bytes since the last answer ended
        self.begun = False  # the head's answer has begun
        self.headers_done = False

    # -- asyncio --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.line:
            self._drop(None)  # bytes nobody asked for: the connection cannot be trusted
            return
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self.line:
                self._answer(reusable=False)
        except httptools.HttpParserError as exc:
            self._drop(_NoAnswer(f"not an HTTP answer: {exc}"))
        else:
            if self.line and not self.headers_done and self.received > HEAD_LIMIT:
                self._drop(_NoAnswer("the answer's headers are too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reusable:
            return  # closed here, and everything written was settled then
        if len(self.line) > 1:
            # Requests written ahead were dropped without a word: this receiver is not
            # sent more than one at a time on a connection for a while.
            self.route.serial_until = time.monotonic() + PIPELINE_PAUSE
        if not self.line:
            self._drop(None)
        elif self.headers_done:
            self._answer(reusable=False)  # an answer read until the connection closed
        elif not self.begun and self.answered:
            self._drop(_Stale("the receiver closed the kept-alive connection"))
        else:
            self._drop(_NoAnswer("the receiver closed the connection before answering"))

    # -- httptools' callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.begun = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        room = self.limit - len(self.body)
        if room > 0:
            self.body += body[:room]
        if len(body) > room and self.line:
            self._answer(reusable=False)  # the rest is not read

    def on_message_complete(self) -> None:
        if self.status is not None and 100 <= self.status < 200:
            self._reset()  # an interim answer (100 Continue): the real one follows
            self.begun = True
            return
        if self.line:
            self._answer(reusable=self.parser.should_keep_alive())

    # -- requests and answers -------------------------------------------------------------

    def send(self, payload: bytes, deadline: float) -> asyncio.Future[Answer]:
        """The answer to ``payload``, written after those already on this connection
        (with them, in one write, if they are written in the same turn of the loop). It
        is ``TimeoutError`` if none by ``deadline`` (the loop's clock)."""
        loop = asyncio.get_running_loop()
        exchange = _Exchange(loop.create_future(), deadline, loop.time())
        self.line.append(exchange)
        if self.timer is None:
            self.timer = loop.call_at(deadline, self._time_out)
        self.out.append(payload)
        if self.flush is None:
            self.flush = loop.call_soon(self._write)
        return exchange.waiter

    def _write(self) -> None:
        self.flush = None
        out, self.out = self.out, []
        if self.reusable and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _answer(self, *, reusable: bool) -> None:
        """The head's answer is in (whole, or all there will be of it)."""
        exchange = self.line.popleft()
        status = self.status or 0
        error = None
        if not 200 <= status < 300:
            text = bytes(self.body).decode("utf-8", "replace").strip().replace("\n", " ")
            error = f"HTTP {status}" + (f": {text[:200]}" if text else "")
        if not exchange.waiter.done():
            exchange.waiter.set_result(Answer(status, error, self.retry_after))
        loop = exchange.waiter.get_loop()
        now = loop.time()
        self.route.observe(now - exchange.since)
        self.answered += 1
        self._reset()
        if not reusable:
            self._drop(None)
        elif self.line:
            # Its bound is the timer set already, for an earlier deadline: it looks again
            # when it fires (``_time_out``), rather than being set anew for every answer.
            self.line[0].since = now
        else:
            self.idle_since = time.monotonic()

    def _time_out(self) -> None:
        """The connection's one timer: the request whose answer comes next has timed
        out, or the timer is set again for its deadline (or, if none waits, not at all)."""
        self.timer = None
        if not self.line:
            return
        head = self.line[0]
        loop = asyncio.get_running_loop()
        if head.deadline > loop.time():
            self.timer = loop.call_at(head.deadline, self._time_out)
            return
        self.route.observe(head.deadline - head.since)
        self._drop(TimeoutError())

    def _drop(self, head: Exception | None) -> None:
        """Close, never to be reused: the head's answer is ``head`` (if given); every
        other request written on it is stale (sent again elsewhere, once)."""
        self.reusable = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        line, self.line = self.line, deque()
        for exchange in line:
            exc = head if head is not None else _Stale("the connection closed before answering")
            head = None
            if not exchange.waiter.done():
                exchange.waiter.set_exception(exc)
        with contextlib.suppress(ValueError):
            self.route.connections.remove(self)
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        self._drop(_NoAnswer("the client is closing"))


class Outbound:
    """Signed POSTs to endpoints, and nothing else (see the module's note)."""

    def __init__(
        self, settings: WebhooksSettings, pipeline_budget: float = PIPELINE_BUDGET
    ) -> None:
        self.pipeline_budget = pipeline_budget
        self.allow_private = settings.allow_private
        self.limit = settings.response_limit_bytes
        self.timeout = settings.timeout_seconds
        self.resolver = GuardedResolver(allow_private=self.allow_private)
        self._tls: ssl.SSLContext | None = None
        self._routes: dict[tuple[str, str, int], _Route] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="webhooks-idle-connections")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for route in self._routes.values():
            for connection in list(route.connections):
                connection.close()
        self._routes.clear()
        await self.resolver.close()

    def close_idle(self) -> None:
        """Close every kept-alive connection not in use (the next requests connect anew)."""
        for route in self._routes.values():
            for connection in list(route.connections):
                if not connection.line:
                    connection.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        """One attempt; every failure is an ``Answer`` without a status, never raised."""
        try:
            origin = self._origin(url)
        except ConfabError as exc:  # check_host
            return Answer(None, f"refused: {exc.message}")
        except ValueError as exc:
            return Answer(None, f"not a valid URL: {exc}")
        payload = request_head(origin, headers, len(body)) + body
        deadline = asyncio.get_running_loop().time() + self.timeout
        route = self._routes.get(origin.key)
        if route is None:
            route = self._routes[origin.key] = _Route(self.pipeline_budget)
        try:
            connection = self._take(route)
            if connection is not None:
                try:
                    return await connection.send(payload, deadline)
                except _Stale:
                    pass  # closed by the receiver before answering: once more, on a new one
            async with asyncio.timeout_at(deadline):
                connection = await self._connect(origin, route)
            return await connection.send(payload, deadline)
        except (TimeoutError, RefusedAddress, ssl.SSLError, _NoAnswer, OSError) as exc:
            return _failure(exc)

    def pipelined(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> asyncio.Future[Answer] | None:
        """The answer to a POST written on a connection open already (``post``'s, taken
        the same way), for a caller that would rather not wait in a task: read it with
        ``answer_of`` once done. None if no open connection may take it, or the URL is
        not one to send to: ``post`` then does all of it, and says why."""
        try:
            origin = self._origin(url)
        except (ConfabError, ValueError):
            return None
        route = self._routes.get(origin.key)
        connection = self._take(route) if route is not None else None
        if connection is None:
            return None
        payload = request_head(origin, headers, len(body)) + body
        return connection.send(payload, asyncio.get_running_loop().time() + self.timeout)

    @staticmethod
    def answer_of(waiter: asyncio.Future[Answer]) -> Answer | None:
        """What a ``pipelined`` request got; None if it must be sent again (``post``): its
        connection closed before any byte of its answer."""
        if waiter.cancelled():
            return Answer(None, "the client is closing")
        exc = waiter.exception()
        if exc is None:
            return waiter.result()
        if isinstance(exc, _Stale):
            return None
        return _failure(exc)

    def _origin(self, url: str) -> Origin:
        origin = origin_of(url)
        if not self.allow_private:
            check_host(origin.host, allow_private=False)
        return origin

    # -- the pool -------------------------------------------------------------------------

    @staticmethod
    def _take(route: _Route) -> _Connection | None:
        """The connection a request goes on: the fullest one it may be pipelined on (more
        requests to a write), else an idle one, else none (connect)."""
        now = time.monotonic()
        fullest: _Connection | None = None
        idle: _Connection | None = None
        for connection in route.connections:
            if connection.transport is None or connection.transport.is_closing():
                continue  # closed by the receiver a moment ago: ``connection_lost`` is due
            if not connection.line:
                idle = connection  # the most recently opened: least likely closed
            elif route.room(connection, now) and (
                fullest is None or len(connection.line) > len(fullest.line)
            ):
                fullest = connection
        return fullest or idle

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(IDLE_SECONDS / 3)
            horizon = time.monotonic() - IDLE_SECONDS
            for key, route in list(self._routes.items()):
                for connection in list(route.connections):
                    if not connection.line and connection.idle_since < horizon:
                        connection.close()
                if not route.connections and route.serial_until < time.monotonic():
                    del self._routes[key]

    async def _connect(self, origin: Origin, route: _Route) -> _Connection:
        loop = asyncio.get_running_loop()
        if ip_literal(origin.host) is not None:
            addresses = [(origin.host, origin.port)]
        else:
            found = await self.resolver.resolve(origin.host, origin.port, socket.AF_UNSPEC)
            addresses = [(r["host"], r["port"]) for r in found]
        tls = self._tls_context() if origin.scheme == "https" else None
        error: OSError | None = None
        for address, port in addresses:
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(route, self.limit),
                    address,
                    port,
                    ssl=tls,
                    server_hostname=origin.host if tls is not None else None,
                )
                route.connections.append(connection)
                return connection
            except OSError as exc:
                error = exc  # the next address, if the name has another
        raise error or OSError(f"{origin.host} has no address")

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

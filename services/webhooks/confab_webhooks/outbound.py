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
  a kept-alive connection the bound is one timer of the connection's (``loop.call_at``),
  not an ``asyncio.timeout`` per request: most attempts are that, and the context
  manager cost a few µs each.
- **Kept-alive connections.** One request at a time per connection. Idle connections are
  kept per origin (scheme, host, port) for ``IDLE_SECONDS``, at most ``concurrency`` of
  them. An answer that says ``Connection: close`` (or comes as HTTP/1.0 without
  keep-alive) is the last on its connection.
- **A stale connection.** A receiver may close a kept-alive connection just as a request
  goes out on it. Such a request fails before any byte of an answer, and it is sent once
  more on a new connection. Deliveries are at least once already, and a retry keeps its
  ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import time
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
    return Origin(parts.scheme, host, port, target, shown if port == default else f"{shown}:{port}")


def request_head(origin: Origin, headers: dict[str, str], length: int) -> bytes:
    """A POST's request line and headers (values are the caller's own: no CR or LF)."""
    lines = [
        f"POST {origin.target} HTTP/1.1",
        f"Host: {origin.host_header}",
        f"User-Agent: {USER_AGENT}",
        f"Content-Length: {length}",
    ]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


class _NoAnswer(Exception):
    """The receiver's side broke off or answered something that is not HTTP."""


class _Stale(_NoAnswer):
    """A reused connection closed before any byte of the answer."""


class _Connection(asyncio.Protocol):
    """One kept-alive connection: a request written, its answer parsed as it comes."""

    def __init__(self, origin_key: tuple[str, str, int], limit: int) -> None:
        self.origin_key = origin_key
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.reusable = True
        self.used = False  # has answered a request already
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status: int | None = None
        self.retry_after: str | None = None
        self.body = bytearray()
        self.received = 0  # bytes of the current answer so far
        self.headers_done = False

    # -- asyncio --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self._break()  # bytes nobody asked for: the connection cannot be trusted
            return
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish(reusable=False)
        except httptools.HttpParserError as exc:
            self._fail(_NoAnswer(f"not an HTTP answer: {exc}"))
        else:
            if not self.headers_done and self.received > HEAD_LIMIT:
                self._fail(_NoAnswer("the answer's headers are too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self.waiter is None or self.waiter.done():
            return
        if self.headers_done:
            self._finish(reusable=False)  # an answer read until the connection closed
        elif not self.received and self.used:
            self._fail(_Stale("the receiver closed the kept-alive connection"))
        else:
            self._fail(_NoAnswer("the receiver closed the connection before answering"))

    # -- httptools' callbacks -------------------------------------------------------------

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
        if len(body) > room and self.waiter is not None and not self.waiter.done():
            self._finish(reusable=False)  # the rest is not read

    def on_message_complete(self) -> None:
        if self.status is not None and 100 <= self.status < 200:
            received = self.received
            self._reset()  # an interim answer (100 Continue): the real one follows
            self.received = received
            return
        if self.waiter is not None and not self.waiter.done():
            self._finish(reusable=self.parser.should_keep_alive())

    # -- one request ----------------------------------------------------------------------

    def _finish(self, *, reusable: bool) -> None:
        assert self.waiter is not None
        status = self.status or 0
        error = None
        if not 200 <= status < 300:
            text = bytes(self.body).decode("utf-8", "replace").strip().replace("\n", " ")
            error = f"HTTP {status}" + (f": {text[:200]}" if text else "")
        self.waiter.set_result(Answer(status, error, self.retry_after))
        if not reusable:
            self._break()

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self._break()

    def _break(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    async def send(self, payload: bytes, deadline: float | None = None) -> Answer:
        """The answer to ``payload``; ``TimeoutError`` if none by ``deadline`` (the loop's
        clock), after which the connection is closed."""
        assert self.transport is not None
        self._reset()
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        if deadline is not None:
            self.timer = loop.call_at(deadline, self._fail, TimeoutError())
        self.transport.write(payload)
        try:
            return await self.waiter
        finally:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.waiter = None
            self.used = True

    def close(self) -> None:
        self._break()


class Outbound:
    """Signed POSTs to endpoints, and nothing else (see the module's note)."""

    def __init__(self, settings: WebhooksSettings) -> None:
        self.allow_private = settings.allow_private
        self.limit = settings.response_limit_bytes
        self.timeout = settings.timeout_seconds
        self.concurrency = settings.concurrency
        self.resolver = GuardedResolver(allow_private=self.allow_private)
        self._tls: ssl.SSLContext | None = None
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="webhooks-idle-connections")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self.close_idle()
        await self.resolver.close()

    def close_idle(self) -> None:
        """Close every kept-alive connection not in use (the next requests connect anew)."""
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        self._idle_count = 0

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        """One attempt; every failure is an ``Answer`` without a status, never raised."""
        try:
            origin = origin_of(url)
            if not self.allow_private:
                check_host(origin.host, allow_private=False)
        except ConfabError as exc:  # check_host
            return Answer(None, f"refused: {exc.message}")
        except ValueError as exc:
            return Answer(None, f"not a valid URL: {exc}")
        payload = request_head(origin, headers, len(body)) + body
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            connection = self._take(origin.key)
            if connection is not None:
                try:
                    return await self._exchange(connection, payload, deadline)
                except _Stale:
                    pass  # closed by the receiver while idle: once more, on a new one
            async with asyncio.timeout_at(deadline):
                connection = await self._connect(origin)
                return await self._exchange(connection, payload)
        except TimeoutError:
            return Answer(None, "timed out")
        except RefusedAddress as exc:
            return Answer(None, f"refused: {exc}")
        except ssl.SSLError as exc:
            return Answer(None, f"TLS: {exc.reason or exc}"[:300])
        except _NoAnswer as exc:
            return Answer(None, str(exc)[:300])
        except OSError as exc:
            return Answer(None, f"cannot connect: {exc or type(exc).__name__}"[:300])

    async def _exchange(
        self, connection: _Connection, payload: bytes, deadline: float | None = None
    ) -> Answer:
        try:
            answer = await connection.send(payload, deadline)
        except BaseException:
            connection.close()  # timed out or cancelled mid-answer: never reused
            raise
        self._give_back(connection)
        return answer

    # -- the pool -------------------------------------------------------------------------

    def _take(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()  # the most recently used: least likely closed
            self._idle_count -= 1
            if connection.reusable:
                return connection
        return None

    def _give_back(self, connection: _Connection) -> None:
        if not connection.reusable:
            return
        if self._idle_count >= self.concurrency:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.origin_key, []).append(connection)
        self._idle_count += 1

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(IDLE_SECONDS / 3)
            horizon = time.monotonic() - IDLE_SECONDS
            for key, connections in list(self._idle.items()):
                kept = []
                for connection in connections:
                    if connection.reusable and connection.idle_since > horizon:
                        kept.append(connection)
                    else:
                        connection.close()
                self._idle_count -= len(connections) - len(kept)
                if kept:
                    self._idle[key] = kept
                else:
                    del self._idle[key]

    async def _connect(self, origin: Origin) -> _Connection:
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
                    lambda: _Connection(origin.key, self.limit),
                    address,
                    port,
                    ssl=tls,
                    server_hostname=origin.host if tls is not None else None,
                )
                return connection
            except OSError as exc:
                error = exc  # the next address, if the name has another
        raise error or OSError(f"{origin.host} has no address")

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

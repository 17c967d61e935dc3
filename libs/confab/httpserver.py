"""An aiohttp server that slow clients cannot starve: the gateway's and the fanout's listener.

``GuardedRunner`` replaces ``web.AppRunner``. Every connection it accepts is held to:

- **Connections per client address** (``max_connections_per_address``; 0: none).
  Counted on accept by peer address; one over the limit gets a 429 in the
  service's error body and is closed before anything is read. Connections from a
  trusted proxy (``CONFAB_TRUSTED_PROXIES``, ``confab.addresses``) are not counted:
  every client behind it shares its address, and the proxy is where to cap them.
- **Header deadline** (``http_header_timeout``): from a request's first byte, its
  line and headers must be in within this many seconds, else 408 and close.
- **Body deadline** (``http_body_timeout`` + one second per ``http_body_min_rate``
  bytes received): reads of a body still short of it raise ``BodyTimeout`` (a
  ``TimeoutError``) in the handler, which answers 408; the connection then closes.
  A WebSocket upgrade has no body and is not timed.
- **Idle keep-alive** (``http_idle_timeout``): a connection with no request in
  progress (none yet, or the last one answered) for this long is closed.
- **Errors the parser finds** (a header line over 8,190 bytes, more than 128
  headers, a malformed request line or chunk) and anything that escapes a handler
  are answered in the service's JSON error body, not aiohttp's plain text. A body
  whose compression is malformed raises one of ``UNREADABLE_BODY`` where the
  handler reads it; the services answer 400.

**Taking a connection over** (``take_over``): a handler that upgrades the connection
(the fanout's WebSocket) can have it for a protocol of its own. The handler writes
nothing through aiohttp and returns ``Upgraded()``; aiohttp's request handler lets go
of the transport (no timer, no keep-alive, out of the server's table), and the count
per address moves with it, released when the new protocol's connection is lost.

aiohttp has no hook for the first two, so the runner makes its own ``Server``
(same handler, request factory and options) whose connections are a
``RequestHandler`` subclass: ``data_received`` starts the header deadline, the
request factory (a request has its headers) swaps it for the body deadline, and
``finish_response`` starts the idle one. One timer handle per connection; nothing
per byte beyond three attribute checks.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.http import HttpProcessingError, RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from confab.addresses import TrustedProxies
from confab.logging import get_logger
from confab.settings import Settings

log = get_logger("confab.httpserver")

# aiohttp's parser limits, kept at its defaults and stated here for the documentation.
MAX_LINE_BYTES = 8190
MAX_HEADERS = 128

ErrorBody = Callable[[int, str], bytes]  # (status, message) -> the service's JSON error body


# What reading a body raises when its chunked encoding or its compression is malformed.
UNREADABLE_BODY: tuple[type[Exception], ...] = (web.RequestPayloadError, HttpProcessingError)
UNREADABLE_MESSAGE = (
    "The request body could not be read: its chunked encoding or compression is malformed."
)


class BodyTimeout(TimeoutError):
    """Raised by reads of a request body that did not arrive in time."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ClientLimits:
    header_timeout: float
    body_timeout: float
    body_min_rate: int
    idle_timeout: float
    max_connections_per_address: int  # 0: no limit

    @classmethod
    def from_settings(cls, settings: Settings, max_connections_per_address: int) -> ClientLimits:
        return cls(
            header_timeout=settings.http_header_timeout,
            body_timeout=settings.http_body_timeout,
            body_min_rate=settings.http_body_min_rate,
            idle_timeout=settings.http_idle_timeout,
            max_connections_per_address=max_connections_per_address,
        )


class Guard:
    """What one listener's connections share: the limits, the counts per address, the
    canned answers."""

    def __init__(self, limits: ClientLimits, proxies: TrustedProxies, error_body: ErrorBody):
        self.limits = limits
        self.proxies = proxies
        self.error_body = error_body
        self.connections: dict[str, int] = {}
        most = limits.max_connections_per_address
        self.over_capacity = self.canned(
            429,
            f"Too many connections from your address: at most {most} at once.",
            {"Retry-After": "1"},
        )
        self.headers_late = self.canned(
            408, f"The request headers did not arrive within {limits.header_timeout:g} s."
        )

    def admit(self, address: str | None) -> tuple[bool, str | None]:
        """Whether a connection from ``address`` may open, and the key it was counted under."""
        most = self.limits.max_connections_per_address
        if address is None or not most or self.proxies.trusts(address):
            return True, None
        count = self.connections.get(address, 0)
        if count >= most:
            return False, None
        self.connections[address] = count + 1
        return True, address

    def release(self, key: str) -> None:
        left = self.connections.get(key, 0) - 1
        if left > 0:
            self.connections[key] = left
        else:
            self.connections.pop(key, None)

    def canned(self, status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
        """A whole HTTP/1.1 response that closes the connection, written without aiohttp."""
        body = self.error_body(status, message)
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Connection(RequestHandler):
    """aiohttp's connection with the guard's deadlines and per-address count.

    One timer at a time, by phase: ``idle`` (no request yet, or the last one is
    answered), ``headers`` (a request's first bytes are in), ``body`` (its headers
    are in, its body is not), or none while a handler works with the whole request.
    """

    __slots__ = (
        "_busy",
        "_counted",
        "_guard",
        "_handed",
        "_payload",
        "_phase",
        "_refused",
        "_started",
        "_timer",
    )

    def __init__(self, manager: web.Server, guard: Guard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._counted: str | None = None
        self._refused = False
        self._handed = False  # taken over (``hand_over``): nothing of it is ours any more
        self._busy = False  # between a request's headers and the end of its response
        self._payload: StreamReader | None = None  # the body of the latest request
        self._started = 0.0
        self._phase = ""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else None
        admitted, self._counted = self._guard.admit(address)
        if not admitted:
            self._refused = True
            # A stream transport (uvloop's is not a subclass of asyncio.Transport).
            cast(asyncio.Transport, transport).write(self._guard.over_capacity)
            transport.close()
            return
        super().connection_made(transport)
        self._arm("idle", self._guard.limits.idle_timeout, self._idle)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused or self._handed:
            return
        self._cancel()
        if self._counted is not None:
            self._guard.release(self._counted)
            self._counted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._busy and self._phase != "headers" and data and self._between_requests():
            self._arm("headers", self._guard.limits.header_timeout, self._headers_late)
        super().data_received(data)

    def _between_requests(self) -> bool:
        """No body of the last request still arriving (aiohttp reads it after the response)."""
        return self._payload is None or self._payload.is_eof()

    # -- called by the server's request factory and by aiohttp ---------------------------

    def request_started(self, message: RawRequestMessage, payload: StreamReader) -> None:
        self._cancel()
        self._busy = True
        self._payload = payload
        if not message.upgrade and not payload.is_eof():
            self._started = self._loop.time()
            self._arm("body", self._guard.limits.body_timeout, self._body_check)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._busy = False
            if not self._handed:
                self._arm("idle", self._guard.limits.idle_timeout, self._idle)

    def hand_over(self, protocol: asyncio.Protocol, head: bytes) -> Callable[[], None] | None:
        """Give the connection to ``protocol`` (see ``take_over``)."""
        transport = self.transport
        if transport is None or self._handed:
            raise ConnectionResetError("the connection is gone")
        self._cancel()
        self._handed = True
        tail, self._message_tail = self._message_tail, b""
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        counted, self._counted = self._counted, None
        self.transport = None  # so that force_close leaves it open
        self.force_close()  # the request loop ends when the handler returns
        manager = self._manager
        if manager is not None:
            manager.connection_lost(self, None)  # out of the server's table
        stream = cast(asyncio.Transport, transport)
        stream.set_protocol(protocol)
        protocol.connection_made(stream)
        stream.write(head)
        if not stream.is_reading():  # aiohttp pauses reading while its buffers are full
            stream.resume_reading()
        if tail:  # on the next turn of the loop: after the caller's greeting, say
            asyncio.get_running_loop().call_soon(protocol.data_received, tail)
        if counted is None:
            return None
        return functools.partial(self._guard.release, counted)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The parser's 400s and anything a handler let escape, in the service's error body."""
        if status >= 500:
            log.error(
                "request_failed",
                path=request.path,
                error_type=type(exc).__name__ if exc is not None else None,
            )
            text = "Something went wrong on our side."
        else:
            text = (
                "The request is malformed (its request line, a header or its chunked body) "
                f"or too long (a line over {MAX_LINE_BYTES} bytes, or over {MAX_HEADERS} headers)."
            )
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; it cannot become an error")
        response = web.Response(
            status=status,
            body=self._guard.error_body(status, text),
            content_type="application/json",
        )
        response.force_close()
        return response

    # -- deadlines ---------------------------------------------------------------------

    def _arm(self, phase: str, delay: float, callback: Callable[[], None]) -> None:
        self._cancel()
        self._phase = phase
        self._timer = self._loop.call_later(delay, callback)

    def _cancel(self) -> None:
        self._phase = ""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle(self) -> None:
        self._cancel()
        if not self._busy:
            self.force_close()

    def _headers_late(self) -> None:
        self._cancel()
        transport = self.transport
        if self._busy or transport is None or transport.is_closing():
            return
        transport.write(self._guard.headers_late)
        self.force_close()

    def _body_check(self) -> None:
        self._cancel()
        payload = self._payload
        if not self._busy or payload is None or payload.is_eof():
            return
        limits = self._guard.limits
        allowed = self._started + limits.body_timeout + payload.total_bytes / limits.body_min_rate
        if self._loop.time() < allowed:
            self._arm("body", allowed - self._loop.time(), self._body_check)
            return
        payload.set_exception(
            BodyTimeout(
                f"The request body did not arrive in time ({limits.body_timeout:g} s, plus "
                f"one second per {limits.body_min_rate} bytes received)."
            )
        )
        self.close()  # no next request on this connection


class _Server(web.Server):
    """aiohttp's server (same handler, request factory and options) making ``_Connection``s."""

    def __init__(self, plain: web.Server, guard: Guard) -> None:
        # Server keeps its connection options in _kwargs and its loop in _loop (aiohttp 3.x).
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )
        self._guard = guard
        self._make_request_of = plain.request_factory
        self.request_factory = self._request

    def _request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: Any,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if isinstance(protocol, _Connection):
            protocol.request_started(message, payload)
        return self._make_request_of(message, payload, protocol, writer, task)

    def __call__(self) -> RequestHandler:
        return _Connection(self, self._guard, loop=self._loop, **self._kwargs)


class Upgraded(web.StreamResponse):
    """What a handler returns once ``take_over`` has its connection: aiohttp writes
    nothing for it and keeps nothing of it."""

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def take_over(
    request: web.BaseRequest, protocol: asyncio.Protocol, head: bytes
) -> Callable[[], None] | None:
    """Move the request's connection to ``protocol``, write ``head`` (the handshake's
    answer), and feed it what the client sent after the request (on the next turn of
    the loop, so that what the handler writes first goes first); the handler then
    returns ``Upgraded()``.

    Returns what to call once the connection is lost: it releases the connection's
    count per address (None: it was not counted). Raises ``ConnectionResetError`` if
    the connection is gone already. Only for connections of a ``GuardedRunner``.
    """
    handler = request.protocol
    if not isinstance(handler, _Connection):
        raise TypeError("take_over needs a connection of a GuardedRunner")
    return handler.hand_over(protocol, head)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are held to ``guard``'s limits."""

    def __init__(self, app: web.Application, guard: Guard, **kwargs: Any) -> None:
        # aiohttp's own idle timer closes a connection that has not finished its headers
        # without a word; ours answer 408 first, so aiohttp's is set to fire after them.
        limits = guard.limits
        kwargs["keepalive_timeout"] = limits.idle_timeout + limits.header_timeout + 1
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        return _Server(await super()._make_server(), self.guard)

"""Request/reply over core NATS with queue groups, typed by the contracts.

A reply is the encoded reply struct; an error is an empty-ish body with the
``Confab-Error`` header and ``{code, message, details}``. "No responders" and
deadlines become ``Unavailable`` so a caller never hangs on a dead service.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import msgspec
import sqlalchemy as sa
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from confab.contracts.base import Request
from confab.errors import ConfabError, InternalError, InvalidRequest, Unavailable, error_from_wire
from confab.logging import bound, get_logger
from confab.metrics import RPC_HANDLED

log = get_logger("confab.rpc")

H_ERROR = "Confab-Error"
H_CORRELATION = "Confab-Correlation"
H_DEADLINE = "Confab-Deadline"

R = TypeVar("R")
Q = TypeVar("Q", bound=Request)
Handler = Callable[[Any, "CallContext"], Awaitable[msgspec.Struct]]


class WireError(msgspec.Struct, frozen=True):
    code: str
    message: str
    details: dict[str, Any] = {}


_encoder = msgspec.json.Encoder()
_error_decoder = msgspec.json.Decoder(WireError)
_reply_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


class CallContext(msgspec.Struct, kw_only=True, frozen=True):
    """What a handler knows about the call besides the request."""

    correlation: str = ""
    deadline: float = 0.0  # time.time() by which the caller stops waiting

    def remaining(self, default: float = 5.0) -> float:
        return max(0.05, self.deadline - time.time()) if self.deadline else default


# Failures of a backing store or the broker: the caller may retry (503); not a bug (500).
BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    NatsError,
    sa.exc.DBAPIError,
    asyncpg.PostgresError,
)


def typed_failure(exc: Exception, service: str, request: str) -> ConfabError:
    """An unexpected exception as a typed error, logged without its message or locals.

    Messages of database errors carry SQL parameters, and tracebacks' locals carry
    tokens and hashes: the log gets the type and the code locations only.
    """
    frames = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)]
    log.error(
        "rpc_handler_failed",
        service=service,
        request=request,
        error_type=type(exc).__name__,
        frames=frames,
    )
    if isinstance(exc, BACKEND_ERRORS):
        return Unavailable(f"The {service} service cannot reach its stores; try again.")
    return InternalError()


class RpcClient:
    def __init__(self, nc: NATS, timeout: float = 5.0) -> None:
        self.nc = nc
        self.timeout = timeout

    async def call(
        self,
        request: Request,
        *,
        subject: str | None = None,
        timeout: float | None = None,
        correlation: str = "",
    ) -> Any:
        """Send ``request`` and return its decoded reply, or raise the typed error it answered."""
        subject = subject or request.subject
        timeout = timeout or self.timeout
        headers = {H_DEADLINE: f"{time.time() + timeout:.3f}"}
        if correlation:
            headers[H_CORRELATION] = correlation
        service = subject.split(".", 1)[0]
        try:
            msg = await self.nc.request(
                subject, _encoder.encode(request), timeout=timeout, headers=headers
            )
        except NoRespondersError:
            raise Unavailable(f"The {service} service is not running.") from None
        except (NatsTimeout, TimeoutError):
            raise Unavailable(f"The {service} service did not answer in time.") from None
        if msg.headers and H_ERROR in msg.headers:
            wire = _error_decoder.decode(msg.data)
            raise error_from_wire(wire.code, wire.message, wire.details)
        reply_type = type(request).reply
        decoder = _reply_decoders.get(reply_type)
        if decoder is None:
            decoder = _reply_decoders[reply_type] = msgspec.json.Decoder(reply_type)
        return decoder.decode(msg.data)


class RpcServer:
    """Serves handlers on subjects with one queue group per service."""

    def __init__(self, nc: NATS, service: str, max_in_flight: int = 256) -> None:
        self.nc = nc
        self.service = service
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_in_flight)

    async def serve(
        self,
        request_type: type[Q],
        handler: Callable[[Q, CallContext], Awaitable[Any]],
        *,
        subject: str | None = None,
    ) -> None:
        decoder = msgspec.json.Decoder(request_type)

        async def on_message(msg: Msg) -> None:
            await self._slots.acquire()
            task = asyncio.create_task(self._handle(msg, decoder, handler))
            self._tasks.add(task)
            task.add_done_callback(self._done)

        sub = await self.nc.subscribe(
            subject or request_type.subject, queue=self.service, cb=on_message
        )
        self._subs.append(sub)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _handle(self, msg: Msg, decoder: msgspec.json.Decoder[Any], handler: Handler) -> None:
        headers = msg.headers or {}
        ctx = CallContext(
            correlation=headers.get(H_CORRELATION, ""),
            deadline=float(headers.get(H_DEADLINE, "0") or 0),
        )
        with bound(correlation_id=ctx.correlation or None, rpc=msg.subject):
            outcome = "ok"
            try:
                request = decoder.decode(msg.data)
                reply = await handler(request, ctx)
                await msg.respond(_encoder.encode(reply))
            except msgspec.ValidationError as exc:
                outcome = InvalidRequest.code
                await self._respond_error(msg, InvalidRequest(str(exc)))
            except ConfabError as exc:
                outcome = exc.code
                await self._respond_error(msg, exc)
            except Exception as exc:
                error = typed_failure(exc, self.service, msg.subject)
                outcome = error.code
                await self._respond_error(msg, error)
            RPC_HANDLED.labels(msg.subject, outcome).inc()

    async def _respond_error(self, msg: Msg, exc: ConfabError) -> None:
        if not msg.reply:
            return
        body = _encoder.encode(WireError(exc.code, exc.message, exc.details))
        await self.nc.publish(msg.reply, body, headers={H_ERROR: exc.code})

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking requests, then let those in flight finish."""
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

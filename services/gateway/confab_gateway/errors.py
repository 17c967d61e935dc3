"""Every failure leaves the gateway as the API's JSON error body, never a stack trace.

``X-Request-Id`` is the correlation id of everything a request causes (logs, RPCs,
the events it stores): a client's is kept only if it is 1 to ``MAX_REQUEST_ID``
printable ASCII characters, else the request gets a fresh one (echoed back either
way). A body that does not arrive in time (``confab.httpserver``) is 408.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from confab import inbound, metrics
from confab.errors import (
    BadRequest,
    ConfabError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    UnsupportedMediaType,
)
from confab.httpserver import UNREADABLE_BODY, UNREADABLE_MESSAGE, BodyTimeout
from confab.logging import bound, get_logger

log = get_logger("confab.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_encoder = msgspec.json.Encoder()

MAX_REQUEST_ID = 128


class RequestTimeout(ConfabError):
    code = "request_timeout"
    status = 408
    default_message = "The request did not arrive in time."


_HTTP_ERRORS: dict[int, type[ConfabError]] = {
    400: BadRequest,
    404: NotFound,
    408: RequestTimeout,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def error_body(status: int, message: str) -> bytes:
    """The API's error body for a status, for answers written below aiohttp's handlers."""
    error: ConfabError
    if status == 429:
        error = RateLimited(message, retry_after=1)
    elif status >= 500:
        error = ConfabError(message)
    else:
        error = _HTTP_ERRORS.get(status, BadRequest)(message)
    return _encoder.encode(error.body())


def correlation_of(request: web.Request) -> str:
    """The client's X-Request-Id if it is a short printable token, else a fresh one."""
    given = request.headers.get("X-Request-Id", "")
    return given if inbound.token_ok(given, MAX_REQUEST_ID) else uuid.uuid4().hex


def error_response(exc: ConfabError) -> web.Response:
    headers = {}
    if isinstance(exc, RateLimited | Unavailable):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return web.json_response(exc.body(), status=exc.status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    correlation = correlation_of(request)
    request["correlation"] = correlation
    route = (
        request.match_info.route.resource.canonical if request.match_info.route.resource else "-"
    )
    with bound(correlation_id=correlation):
        with metrics.HTTP_LATENCY.labels(route).time():
            try:
                response = await handler(request)
            except ConfabError as exc:
                response = error_response(exc)
            except BodyTimeout as exc:
                response = error_response(RequestTimeout(exc.message))
                response.force_close()
            except UNREADABLE_BODY:
                response = error_response(BadRequest(UNREADABLE_MESSAGE))
                response.force_close()
            except web.HTTPMethodNotAllowed as exc:
                allowed = ", ".join(sorted(exc.allowed_methods))
                error = BadRequest(
                    f"{request.method} is not allowed on {request.path}; use {allowed}."
                )
                response = web.json_response(error.body(), status=405, headers={"Allow": allowed})
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                cls = _HTTP_ERRORS.get(exc.status, BadRequest)
                response = error_response(cls(exc.reason))
            except Exception:
                log.exception("request_failed", route=route)
                response = error_response(ConfabError())
        response.headers["X-Request-Id"] = correlation
        metrics.HTTP_REQUESTS.labels(route, str(response.status)).inc()
        return response

"""Every failure leaves the gateway as the API's JSON error body, never a stack trace."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from confab import metrics
from confab.errors import (
    BadRequest,
    ConfabError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    UnsupportedMediaType,
)
from confab.logging import bound_contextvars, get_logger

log = get_logger("confab.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_ERRORS: dict[int, type[ConfabError]] = {
    400: BadRequest,
    404: NotFound,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def error_response(exc: ConfabError) -> web.Response:
    headers = {}
    if isinstance(exc, RateLimited | Unavailable):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return web.json_response(exc.body(), status=exc.status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    correlation = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    request["correlation"] = correlation
    route = (
        request.match_info.route.resource.canonical if request.match_info.route.resource else "-"
    )
    with bound_contextvars(correlation_id=correlation):
        with metrics.HTTP_LATENCY.labels(route).time():
            try:
                response = await handler(request)
            except ConfabError as exc:
                response = error_response(exc)
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

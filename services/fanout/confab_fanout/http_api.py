"""The Pusher HTTP API for backends (what the Pusher server SDKs and Laravel call).

Every request is signed with the app secret (``auth_key``, ``auth_timestamp``,
``auth_version``, ``body_md5``, ``auth_signature``). The app is found by its
signed ``auth_key``; the ``{app_id}`` in the path may be the workspace id or
its all-digit alias (pusher-http-python only takes digits). Limits and status
codes are Pusher's: 10 KB of data (413), 100 channels per trigger and 10 events
per batch (400), bad signature (401); past the per-app request rate (a
Confab limit, ``CONFAB_FANOUT_API_REQUESTS_PER_SECOND``), 429 with ``Retry-After``.
Bodies are decoded under ``confab.inbound``'s rules: not UTF-8 (or another charset
declared), nested deeper than 32 levels or holding an integer beyond 64 bits is
400; a body that does not arrive in time is 408. Every error, including those the
HTTP parser and the slow-client guard answer (``guarded_runner``), has the same
JSON shape: ``{"error": message, "code": status}``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from confab import inbound
from confab.addresses import TrustedProxies
from confab.errors import Unavailable
from confab.httpserver import (
    UNREADABLE_BODY,
    UNREADABLE_MESSAGE,
    BodyTimeout,
    ClientLimits,
    Guard,
    GuardedRunner,
)
from confab_fanout import auth, protocol
from confab_fanout.apps import App
from confab_fanout.fanout import Fanout
from confab_fanout.limits import api_rate_limit
from confab_fanout.metrics import API_EVENTS
from confab_fanout.protocol import Kind
from confab_fanout.settings import FanoutSettings

MAX_DATA_BYTES = 10 * 1024
MAX_CHANNELS = 100
MAX_BATCH = 10
MAX_BODY_BYTES = 256 * 1024  # ten events of 10 KB with room to spare


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class TriggerBody(msgspec.Struct, frozen=True):
    name: str
    data: msgspec.Raw
    channels: list[str] | None = None
    channel: str | None = None
    socket_id: str | None = None
    info: str | None = None


class BatchBody(msgspec.Struct, frozen=True):
    batch: list[TriggerBody]


class Event(msgspec.Struct, frozen=True):
    """A validated trigger."""

    name: str
    channels: list[str]
    data: str
    socket_id: str | None
    info: frozenset[str]


_string = msgspec.json.Decoder(str)

Handler = Callable[[web.Request, App, bytes], Awaitable[Any]]


class HttpApi:
    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout
        self.rate_limit = api_rate_limit(fanout.settings)

    def routes(self) -> list[web.RouteDef]:
        h = self._handler
        return [
            web.post("/apps/{app_id}/events", h(self.trigger)),
            web.post("/apps/{app_id}/batch_events", h(self.batch)),
            web.get("/apps/{app_id}/channels", h(self.channels)),
            web.get("/apps/{app_id}/channels/{channel}", h(self.channel)),
            web.get("/apps/{app_id}/channels/{channel}/users", h(self.users)),
            web.post("/apps/{app_id}/users/{user_id}/terminate_connections", h(self.terminate)),
            # pusher-http-python signs and sends terminate without /apps/{id}.
            web.post("/users/{user_id}/terminate_connections", h(self.terminate)),
        ]

    def _handler(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                app, body = await self._authenticate(request)
                self._check_rate(app)
                result = await handler(request, app, body)
            except BodyTimeout as exc:
                response = _error_response(ApiError(408, exc.message))
                response.force_close()
                return response
            except UNREADABLE_BODY:
                response = _error_response(ApiError(400, UNREADABLE_MESSAGE))
                response.force_close()
                return response
            except ApiError as exc:
                return _error_response(exc)
            return web.Response(body=msgspec.json.encode(result), content_type="application/json")

        return handle

    async def _authenticate(self, request: web.Request) -> tuple[App, bytes]:
        if not inbound.charset_ok(request.charset):
            raise ApiError(415, "Send the body as JSON in UTF-8 (charset=utf-8)")
        body = await request.read()
        params = dict(request.query)
        key = params.get("auth_key")
        if not key:
            raise ApiError(401, "Missing auth_key")
        try:
            app = await self.fanout.apps.by_key(key)
        except Unavailable:
            raise ApiError(503, "Apps cannot be looked up now; try again later") from None
        if app is None:
            raise ApiError(401, "Unknown auth_key")
        path_app = request.match_info.get("app_id")
        if path_app is not None and not app.matches_path_id(path_app):
            raise ApiError(404, f"Unknown app {path_app[:64]} for this auth_key")
        error = auth.check_request(app.secret, request.method, request.path, params, body)
        if error == "Invalid signature" and request.raw_path.split("?")[0] != request.path:
            raw = request.raw_path.split("?")[0]
            error = auth.check_request(app.secret, request.method, raw, params, body)
        if error is not None:
            raise ApiError(401, error)
        return app, body

    def _check_rate(self, app: App) -> None:
        limit = self.rate_limit
        if limit is None:
            return
        wait = limit.take(app.id)
        if wait:
            raise ApiError(
                429,
                f"Too many requests for this app: at most {limit.rate:g} per second "
                f"(bursts of {limit.burst}); retry after {math.ceil(wait * 1000) / 1000:g} s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    # -- triggering ----------------------------------------------------------------------

    async def trigger(self, request: web.Request, app: App, body: bytes) -> Any:
        event = _event(_decode(body, TriggerBody))
        await self._publish(app, event)
        return {"channels": self._info(app, event)} if event.info else {}

    async def batch(self, request: web.Request, app: App, body: bytes) -> Any:
        batch = _decode(body, BatchBody).batch
        if not batch:
            raise ApiError(400, "Batch is empty")
        if len(batch) > MAX_BATCH:
            raise ApiError(400, f"Batch too large: at most {MAX_BATCH} events")
        events = [_event(item, single=True) for item in batch]
        for event in events:
            await self._publish(app, event)
        if not any(event.info for event in events):
            return {}
        return {"batch": [self._info(app, event)[event.channels[0]] for event in events]}

    async def _publish(self, app: App, event: Event) -> None:
        await self.fanout.publish(app.id, event.channels, event.name, event.data, event.socket_id)
        API_EVENTS.inc()

    def _info(self, app: App, event: Event) -> dict[str, dict[str, int]]:
        view = self.fanout.presence.view
        out: dict[str, dict[str, int]] = {}
        for name in event.channels:
            entry: dict[str, int] = {}
            if "user_count" in event.info and protocol.channel_kind(name) is Kind.PRESENCE:
                entry["user_count"] = view.user_count(app.id, name)
            if "subscription_count" in event.info:
                entry["subscription_count"] = self.fanout.subscription_count(app.id, name)
            out[name] = entry
        return out

    # -- querying ------------------------------------------------------------------------

    async def channels(self, request: web.Request, app: App, body: bytes) -> Any:
        prefix = request.query.get("filter_by_prefix", "")
        info = _attributes(request)
        if "user_count" in info and not prefix.startswith("presence-"):
            raise ApiError(400, "user_count may only be requested with filter_by_prefix=presence-")
        view = self.fanout.presence.view
        out: dict[str, dict[str, int]] = {}
        for name in sorted(self.fanout.occupied_channels(app.id)):
            if not name.startswith(prefix):
                continue
            entry: dict[str, int] = {}
            if "user_count" in info:
                entry["user_count"] = view.user_count(app.id, name)
            if "subscription_count" in info:
                entry["subscription_count"] = self.fanout.subscription_count(app.id, name)
            out[name] = entry
        return {"channels": out}

    async def channel(self, request: web.Request, app: App, body: bytes) -> Any:
        name = _channel(request)
        info = _attributes(request)
        presence = protocol.channel_kind(name) is Kind.PRESENCE
        if "user_count" in info and not presence:
            raise ApiError(400, "user_count is only available on presence channels")
        view = self.fanout.presence.view
        count = self.fanout.subscription_count(app.id, name)
        out: dict[str, Any] = {"occupied": count > 0 or view.user_count(app.id, name) > 0}
        if "user_count" in info:
            out["user_count"] = view.user_count(app.id, name)
        if "subscription_count" in info:
            out["subscription_count"] = count
        return out

    async def users(self, request: web.Request, app: App, body: bytes) -> Any:
        name = _channel(request)
        if protocol.channel_kind(name) is not Kind.PRESENCE:
            raise ApiError(400, "Users are only available on presence channels")
        members = self.fanout.presence.view.members(app.id, name)
        return {"users": [{"id": uid} for uid in members]}

    async def terminate(self, request: web.Request, app: App, body: bytes) -> Any:
        user_id = request.match_info["user_id"]
        if not user_id or len(user_id) > 200:
            raise ApiError(400, "Invalid user id")
        await self.fanout.terminate_user(app.id, user_id)
        return {}


_decoders = {t: msgspec.json.Decoder(t) for t in (TriggerBody, BatchBody)}


def _decode(body: bytes, type_: type[Any]) -> Any:
    try:
        return inbound.decode(body, _decoders[type_])
    except (inbound.Refused, msgspec.DecodeError) as exc:
        raise ApiError(400, f"Invalid request body: {exc}") from None


def error_body(status: int, message: str) -> bytes:
    """The HTTP API's error body (Pusher's: a message and the status)."""
    return msgspec.json.encode({"error": message, "code": status})


def _error_response(exc: ApiError) -> web.Response:
    return web.Response(
        body=error_body(exc.status, exc.message),
        status=exc.status,
        content_type="application/json",
        headers=exc.headers,
    )


def guarded_runner(
    app: web.Application, settings: FanoutSettings, proxies: TrustedProxies, **kwargs: Any
) -> GuardedRunner:
    """The fanout's listener, held to the slow-client limits (``confab.httpserver``).

    Connections per address share the WebSocket limit's setting: with no proxy in
    front, every socket is a connection first, so the two counts agree.
    """
    limits = ClientLimits.from_settings(settings, settings.max_connections_per_address)
    return GuardedRunner(app, Guard(limits, proxies, error_body), **kwargs)


def _event(body: TriggerBody, single: bool = False) -> Event:
    if not body.name or len(body.name) > protocol.MAX_EVENT_NAME:
        raise ApiError(400, "Event name must be 1 to 200 characters")
    if single:
        channels = [body.channel] if body.channel else []
    else:
        channels = body.channels if body.channels is not None else []
        if body.channel:
            channels = [*channels, body.channel]
    if not channels:
        raise ApiError(400, "No channel given")
    if len(channels) > MAX_CHANNELS:
        raise ApiError(400, f"Too many channels: at most {MAX_CHANNELS}")
    for name in channels:
        if not protocol.valid_channel(name):
            raise ApiError(400, f"Invalid channel name {name[:200]!r}")
    if len(channels) > 1 and any(
        protocol.channel_kind(name) is Kind.ENCRYPTED for name in channels
    ):
        raise ApiError(400, "An encrypted channel must be triggered alone")
    raw = bytes(body.data)
    data = _string.decode(raw) if raw[:1] == b'"' else raw.decode()
    if len(data.encode()) > MAX_DATA_BYTES:
        raise ApiError(413, f"Event data too large: at most {MAX_DATA_BYTES} bytes")
    if body.socket_id is not None and not protocol.valid_socket_id(body.socket_id):
        raise ApiError(400, "Invalid socket_id")
    info = frozenset(a.strip() for a in (body.info or "").split(",") if a.strip())
    return Event(body.name, channels, data, body.socket_id, info)


def _attributes(request: web.Request) -> frozenset[str]:
    raw = request.query.get("info", "")
    return frozenset(a.strip() for a in raw.split(",") if a.strip())


def _channel(request: web.Request) -> str:
    name = request.match_info["channel"]
    if not protocol.valid_channel(name):
        raise ApiError(400, "Invalid channel name")
    return name

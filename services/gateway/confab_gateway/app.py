"""Wiring and start-up of the gateway: the HTTP API in front of the services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from confab.addresses import TrustedProxies
from confab.httpserver import ClientLimits, Guard, GuardedRunner
from confab.service import Service, StartupError, health_routes, run_service
from confab_gateway import (
    admin,
    admin_webhooks,
    attachments,
    broadcasting,
    conversations,
    dashboard,
    devmail,
    enforcement,
    keys,
    notifications,
    openapi,
    reports,
    search,
    support,
    threads,
    users,
    visitors,
    webhooks,
    widget,
)
from confab_gateway import web as pages
from confab_gateway.api import Endpoint, Router
from confab_gateway.auth import Authenticator
from confab_gateway.consistency import LastWrites
from confab_gateway.errors import error_body, error_middleware
from confab_gateway.health import platform_health
from confab_gateway.idempotency import Claims
from confab_gateway.ratelimit import RequestLimits, failed_authentications
from confab_gateway.settings import GatewaySettings

ROUTERS: list[Router] = [
    admin.router,
    users.router,
    conversations.router,
    widget.router,
    attachments.router,
    broadcasting.router,
    admin_webhooks.router,
    webhooks.router,
    keys.router,
    reports.router,
    support.router,
    visitors.router,
    threads.router,
    notifications.router,
    search.router,
    enforcement.router,
]


def endpoints() -> list[Endpoint]:
    """The public API (``/openapi.json``): the dashboard's own routes are left out."""
    return [
        e for router in ROUTERS for e in router.endpoints if not e.path.startswith("/dashboard/")
    ]


def build_app(service: Service, auth: Authenticator, claims: Claims) -> web.Application:
    assert isinstance(service.settings, GatewaySettings)
    app = web.Application(
        middlewares=[pages.cors_middleware, error_middleware],
        client_max_size=service.settings.max_body_bytes,
    )
    app["fanout_ws_url"] = service.settings.fanout_ws_url
    app["stream_replicas"] = service.settings.stream_replicas
    app["auth"] = auth
    app["idempotency"] = claims
    app["last_writes"] = LastWrites()
    limits = RequestLimits(service.settings)
    for router in [*ROUTERS, dashboard.router]:  # the dashboard's own API is not public
        router.install(app, service.client, auth, limits)
    spec = openapi.document(endpoints())

    async def health() -> tuple[int, Any]:
        return await platform_health(service.client)

    async def openapi_json(_request: web.Request) -> web.Response:
        return web.json_response(spec)

    app.add_routes([*health_routes(health), web.get("/openapi.json", openapi_json)])
    if service.settings.dev_mail_dir:
        app.add_routes(devmail.routes(Path(service.settings.dev_mail_dir)))
    pages.install(app, service.settings, service.client)
    return app


async def setup(service: Service) -> None:
    assert isinstance(service.settings, GatewaySettings)
    settings = service.settings
    try:
        proxies = TrustedProxies(settings.trusted_proxies)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    auth = Authenticator(
        service.client,
        settings.admin_token,
        stale_for=settings.auth_stale_seconds,
        failures=failed_authentications(settings),
        proxies=proxies,
    )
    await auth.start(service.js)
    service.on_stop(auth.stop)
    claims = await Claims.open(service.js, settings.idempotency_bucket, settings.stream_replicas)
    limits = ClientLimits.from_settings(settings, settings.max_connections_per_address)
    runner = GuardedRunner(
        build_app(service, auth, claims),
        Guard(limits, proxies, error_body),
        access_log=None,
        shutdown_timeout=10,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
        ) from None
    service.on_stop(runner.cleanup)


def main() -> None:
    run_service("gateway", GatewaySettings, setup)


if __name__ == "__main__":
    main()

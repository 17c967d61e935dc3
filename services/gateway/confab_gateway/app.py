"""Wiring and start-up of the gateway: the HTTP API in front of the services."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from confab.service import Service, StartupError, health_routes, run_service
from confab_gateway.errors import error_middleware
from confab_gateway.health import platform_health
from confab_gateway.settings import GatewaySettings


def build_app(service: Service) -> web.Application:
    assert isinstance(service.settings, GatewaySettings)
    app = web.Application(
        middlewares=[error_middleware], client_max_size=service.settings.max_body_bytes
    )
    app["service"] = service

    async def health() -> tuple[int, Any]:
        return await platform_health(service.client)

    app.add_routes(health_routes(health))
    return app


async def setup(service: Service) -> None:
    assert isinstance(service.settings, GatewaySettings)
    settings = service.settings
    runner = web.AppRunner(build_app(service), access_log=None, shutdown_timeout=10)
    await runner.setup()
    site = web.TCPSite(runner, settings.gateway_host, settings.gateway_port)
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {settings.gateway_host}:{settings.gateway_port}: {exc.strerror}"
        ) from None
    service.on_stop(runner.cleanup)


def main() -> None:
    run_service("gateway", GatewaySettings, setup)


if __name__ == "__main__":
    main()

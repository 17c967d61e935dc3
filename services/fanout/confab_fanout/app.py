"""Wiring and start-up of the fanout service."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from confab.service import Service, StartupError, health_routes, run_service
from confab_fanout.settings import FanoutSettings


async def setup(service: Service) -> None:
    assert isinstance(service.settings, FanoutSettings)
    settings = service.settings

    async def health() -> tuple[int, Any]:
        reply = await service.health()
        return (200 if reply.status == "ok" else 503), {"status": reply.status, **reply.checks}

    app = web.Application()
    app.add_routes(health_routes(health))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.fanout_host, settings.fanout_port)
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {settings.fanout_host}:{settings.fanout_port}: {exc.strerror}"
        ) from None
    service.on_stop(runner.cleanup)


def main() -> None:
    run_service("fanout", FanoutSettings, setup)


if __name__ == "__main__":
    main()

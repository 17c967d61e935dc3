"""Wiring and start-up of the fanout service.

The node (``Fanout``: sockets, channels, presence, cluster) is wired here to
the parts that speak for the event log: the conversations it follows
(``Feed``, from ``CONVERSATIONS`` through ``JetStreamLog``), the authority
checks (``Gatekeeper``, fed by an ``IDENTITY`` follower) and ``confab:resume``.

One port serves the Pusher WebSocket (``/app/{key}``), the Pusher HTTP API
(``/apps/{app_id}/…``), ``/healthz`` and ``/metrics``. On SIGTERM the listener
closes, every socket gets 4200 (clients reconnect to another node at once),
and the node leaves the cluster's presence state.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from confab.addresses import TrustedProxies
from confab.authority import Follower
from confab.contracts.fanout import GetWebhooks, SetWebhooks, WebhookConfig
from confab.errors import NotFound
from confab.ids import is_valid_id
from confab.rpc import CallContext
from confab.service import Service, StartupError, health_routes, run_service
from confab_fanout import connection
from confab_fanout.authority import Gatekeeper
from confab_fanout.fanout import Fanout
from confab_fanout.feed import Feed, JetStreamLog
from confab_fanout.http_api import MAX_BODY_BYTES, HttpApi, guarded_runner
from confab_fanout.inbox import Inbox
from confab_fanout.profiles import ProfileCache
from confab_fanout.resume import Resumer
from confab_fanout.settings import FanoutSettings


def make_app(fanout: Fanout, service: Service) -> web.Application:
    async def health() -> tuple[int, Any]:
        status, body = await service.http_health()
        return status, {**body, "connections": len(fanout.connections)}

    async def websocket(request: web.Request) -> web.StreamResponse:
        return await connection.serve(fanout, request)

    async def on_shutdown(_app: web.Application) -> None:
        await fanout.close_sockets()

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.add_routes(health_routes(health))
    app.add_routes([web.get("/app/{key}", websocket)])
    app.add_routes(HttpApi(fanout).routes())
    app.on_shutdown.append(on_shutdown)
    return app


async def setup(service: Service) -> None:
    assert isinstance(service.settings, FanoutSettings)
    settings = service.settings
    try:
        proxies = TrustedProxies(settings.trusted_proxies)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    keys = await service.key_ring()
    fanout = Fanout(settings, service.nc, service.js, service.client, proxies)
    await fanout.start()
    feed = Feed(
        service.nc,
        fanout,
        JetStreamLog(service.nc, service.js, keys),
        ProfileCache(service.nc, service.client, settings.profile_cache, keys=keys),
        keys=keys,
        keep=settings.resume_max_events,
        max_idle=settings.idle_conversations,
        recheck=settings.recheck_interval,
        recheck_window=settings.recheck_window,
    )
    inbox = Inbox(service.nc, fanout, JetStreamLog(service.nc, service.js, keys), keys)
    gate = Gatekeeper(fanout, feed)
    fanout.gate = gate
    follower = Follower(service.js, "fanout", gate.handle)
    await follower.start()  # before the first socket: it sees every change they live through
    Resumer(
        fanout,
        feed,
        settings.resume_max_events,
        settings.send_buffer_bytes,
    ).install()
    await feed.start()
    await inbox.start()

    async def check_cluster() -> str:
        view = fanout.presence.view
        if fanout.node_id not in view.alive:
            return f"failing: node {fanout.node_id} has no heartbeat in the presence bucket"
        return f"ok (node {fanout.node_id}, {len(view.alive)} nodes)"

    service.checks["cluster"] = check_cluster
    await serve_requests(fanout, service)
    runner = guarded_runner(
        make_app(fanout, service),
        settings,
        proxies,
        access_log=None,
        shutdown_timeout=settings.shutdown_grace + 1,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        await inbox.stop()
        await feed.stop()
        await follower.stop()
        await fanout.stop()
        raise StartupError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
        ) from None

    async def stop() -> None:
        await runner.cleanup()  # stops listening, then on_shutdown closes every socket
        await inbox.stop()
        await feed.stop()
        await follower.stop()
        await fanout.stop()

    service.on_stop(stop)


async def serve_requests(fanout: Fanout, service: Service) -> None:
    """What other services ask of the fanout (any node answers): webhook configuration."""

    async def workspace(workspace_id: str) -> str:
        if not is_valid_id(workspace_id) or await fanout.apps.by_id(workspace_id) is None:
            raise NotFound("Workspace not found.")
        return workspace_id

    async def set_webhooks(cmd: SetWebhooks, _ctx: CallContext) -> WebhookConfig:
        return await fanout.webhooks.set_config(await workspace(cmd.workspace_id), cmd.config)

    async def get_webhooks(query: GetWebhooks, _ctx: CallContext) -> WebhookConfig:
        return await fanout.webhooks.get_config(await workspace(query.workspace_id))

    await service.rpc.serve(SetWebhooks, set_webhooks)
    await service.rpc.serve(GetWebhooks, get_webhooks)


def main() -> None:
    run_service("fanout", FanoutSettings, setup)


if __name__ == "__main__":
    main()

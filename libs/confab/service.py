"""The life of a service process: settings, logging, NATS, database, RPC, projections.

Each service's ``app.py`` calls ``run_service`` with a set-up function that
declares what the service owns and registers its handlers and projections;
everything else (health answers, graceful drain on SIGTERM, clear start-up
errors, the event loop's lag on ``/metrics``: ``confab.looplag``, the heap frozen once
started) is here, once.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from confab import __version__, bus, looplag, metrics
from confab.contracts.system import HealthQuery, HealthReply
from confab.db import create_engine
from confab.errors import ConfabError
from confab.logging import configure, get_logger
from confab.personal import KeyRing
from confab.projection import Projection, ProjectionRunner
from confab.rlimits import raise_open_files
from confab.rpc import CallContext, RpcClient, RpcServer
from confab.settings import DatabaseSettings, Settings, SettingsError, load

S = TypeVar("S", bound=Settings)
HealthCheck = Callable[[], Awaitable[str]]

log = get_logger("confab.service")


class StartupError(Exception):
    """Start-up cannot go on; the message is the one line the operator sees."""


class Service:
    """A running service: its connections and the parts set-up registered."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.started = time.monotonic()
        self.nc: NATS
        self.js: JetStreamContext
        self.rpc: RpcServer
        self.client: RpcClient
        self.engine: AsyncEngine | None = None
        self.runners: dict[str, ProjectionRunner] = {}
        self.checks: dict[str, HealthCheck] = {}
        # Set once setup has registered every handler: health says "starting" until then,
        # so "every service healthy" (confab up, a readiness probe) means it answers.
        self.ready = False
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._keys: KeyRing | None = None

    # -- used by set-up functions --------------------------------------------

    async def declare(self, *streams: bus.StreamSpec) -> None:
        await bus.ensure_streams(self.js, streams, self.settings.stream_replicas)

    async def add_projection(self, projection: Projection, **options: Any) -> ProjectionRunner:
        if not isinstance(self.settings, DatabaseSettings) or self.engine is None:
            raise TypeError(f"{self.name} has no database settings for projections")
        runner = ProjectionRunner(
            self.js, self.engine, self.settings.database_url, projection, **options
        )
        await runner.start()
        self.runners[projection.name] = runner
        return runner

    async def key_ring(self) -> KeyRing:
        """The users' data keys (``confab.personal``), opened on first use."""
        if self._keys is None:
            self._keys = KeyRing(self.nc, self.js, replicas=self.settings.stream_replicas)
            await self._keys.open()
            self.on_stop(self._keys.close)
        return self._keys

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` at shutdown, before NATS and the database close (last added, first)."""
        self._on_stop.append(callback)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.nc = await _retry_until(
            lambda: bus.connect(
                s.nats_url,
                f"{self.name}:{s.instance_name}",
                user=s.nats_user,
                password=s.nats_password,
                tls_ca_file=s.nats_tls_ca_file,
            ),
            f"cannot reach NATS at {bus.display_url(s.nats_url)}",
            s.start_timeout,
        )
        self.js = self.nc.jetstream()
        self.client = RpcClient(self.nc, self.settings.rpc_timeout)
        self.rpc = RpcServer(self.nc, self.name)
        if isinstance(self.settings, DatabaseSettings):
            self.engine = create_engine(
                self.settings.database_url, self.settings.database_pool_size
            )
            await _retry_until(
                self._ping_database, "cannot reach PostgreSQL", self.settings.start_timeout
            )
            self.checks["database"] = self._check_database
        self.checks["nats"] = self._check_nats
        await self.rpc.serve(HealthQuery, self._health, subject=HealthQuery.subject_for(self.name))

    async def stop(self) -> None:
        await self.rpc.stop()
        for callback in reversed(self._on_stop):
            await callback()
        for runner in self.runners.values():
            await runner.stop()
        await bus.close(self.nc)
        if self.engine is not None:
            await self.engine.dispose()

    async def health(self) -> HealthReply:
        checks: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                checks[name] = await asyncio.wait_for(check(), 2.0)
            except Exception as exc:
                checks[name] = f"failing: {exc or type(exc).__name__}"
        if not self.ready:
            checks["setup"] = "failing: starting"
        for name, runner in self.runners.items():
            checks[f"projection:{name}"] = (
                f"failing: {runner.last_error}"
                if runner.last_error
                else f"ok ({runner.describe()}, at {runner.checkpoint})"
            )
        status = "ok" if all(v.startswith("ok") for v in checks.values()) else "degraded"
        return HealthReply(
            service=self.name,
            instance=self.settings.instance_name,
            status=status,
            checks=checks,
            version=__version__,
            uptime_seconds=round(time.monotonic() - self.started, 3),
        )

    async def http_health(self) -> tuple[int, dict[str, Any]]:
        """This process's health as an HTTP status and body (for /healthz)."""
        reply = await self.health()
        return (200 if reply.status == "ok" else 503), {"status": reply.status, **reply.checks}

    async def _health(self, _query: HealthQuery, _ctx: CallContext) -> HealthReply:
        return await self.health()

    async def _check_nats(self) -> str:
        return "ok" if self.nc.is_connected else "failing: disconnected"

    async def _check_database(self) -> str:
        await self._ping_database()
        return "ok"

    async def _ping_database(self) -> None:
        assert self.engine is not None
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))


async def _retry_until(attempt: Callable[[], Awaitable[Any]], what: str, timeout: float) -> Any:
    """Dependencies may start after us (containers, a restarting stack): retry for a while."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except (ConfabError, OSError, sa.exc.DBAPIError) as exc:
            if time.monotonic() > deadline:
                raise StartupError(f"{what}: {exc}") from None
            await asyncio.sleep(0.5)


def health_routes(health: Callable[[], Awaitable[tuple[int, Any]]]) -> list[web.RouteDef]:
    """``/healthz`` and ``/metrics`` for an aiohttp app; ``health`` returns (status, body)."""

    async def healthz(_request: web.Request) -> web.Response:
        status, body = await health()
        return web.json_response(body, status=status)

    async def metrics_view(_request: web.Request) -> web.Response:
        body, content_type = metrics.render()
        return web.Response(body=body, content_type=content_type)

    return [web.get("/healthz", healthz), web.get("/metrics", metrics_view)]


async def _serve_health(service: Service) -> None:
    app = web.Application()
    app.add_routes(health_routes(service.http_health))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = service.settings.http_host, service.settings.http_port
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    service.on_stop(runner.cleanup)


def run_service(
    name: str,
    settings_type: type[S],
    setup: Callable[[Service], Awaitable[None]],
    argv: Sequence[str] | None = None,
) -> None:
    """Entry point of ``confab-<name>``: run until SIGTERM/SIGINT, then drain and exit."""
    try:
        settings = load(settings_type, argv)
    except SettingsError as exc:
        print(f"confab-{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure(name, settings.log_level, settings.log_format)
    # Sockets are files: a fanout node holds one per client, so no service should be
    # stopped by a default soft limit of 1,024 when the hard one allows more.
    open_files = raise_open_files()
    log.info("open_files_limit", soft=open_files)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
            runner.run(_serve(name, settings, setup))
    except StartupError as exc:
        print(f"confab-{name}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when chosen and installed (not on Windows); else asyncio's default."""
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.info("event_loop_fallback", wanted="uvloop", reason="not installed")
        else:
            return uvloop.new_event_loop
    return None


def settle_the_heap() -> None:
    """Collect once, then freeze what start-up made (modules, tables, compiled statements,
    caches): it lives as long as the process, and a full collection that walked it paused
    a service for 60 to 160 ms under load (bench/README.md, session 12). Frozen, it is never
    walked again; what is made later is collected as before, each collection timed on
    ``/metrics`` (``confab_gc_pause_seconds``)."""
    gc.collect()
    gc.freeze()
    looplag.watch_collections()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()


async def _serve(
    name: str, settings: Settings, setup: Callable[[Service], Awaitable[None]]
) -> None:
    service = Service(name, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    if settings.loop_lag_interval:
        lag = looplag.start(loop, settings.loop_lag_interval)
        service.on_stop(lambda: _cancel(lag))
    await setup(service)
    service.ready = True
    if settings.http_port:
        await _serve_health(service)
    settle_the_heap()
    log.info("service_started", instance=settings.instance_name, loop=type(loop).__module__)
    await stop.wait()
    log.info("service_stopping")
    await service.stop()
    log.info("service_stopped")

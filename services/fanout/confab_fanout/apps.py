"""Pusher apps: each workspace is one app (id = workspace id, key/secret from identity).

The registry learns apps from identity, never from a config file:
- it follows ``live.identity.evt.*.workspace.*`` (stored ``workspace.created``
  events, re-published by the ``IDENTITY`` stream), so a new workspace works at
  once on every running node;
- on a cache miss it asks identity ``GetAppCredentials(app_key)`` (one request
  per key however many sockets ask at once); "not found" is remembered briefly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from confab.contracts.events.identity import WorkspaceCreated
from confab.contracts.identity import GetAppCredentials
from confab.errors import NotFound, Unavailable
from confab.events import H_EVENT, UnknownEvent, open_envelope
from confab.ids import is_valid_id, numeric_app_id
from confab.logging import get_logger
from confab.rpc import RpcClient

log = get_logger("confab.fanout.apps")

LIVE_WORKSPACES = "live.identity.evt.*.workspace.*"


@dataclass(frozen=True, slots=True)
class App:
    id: str
    key: str
    secret: str
    numeric_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "numeric_id", numeric_app_id(self.id))

    def matches_path_id(self, app_id: str) -> bool:
        return app_id in (self.id, self.numeric_id)


class AppRegistry:
    def __init__(self, nc: NATS, client: RpcClient, unknown_ttl: float = 5.0) -> None:
        self.nc = nc
        self.client = client
        self.unknown_ttl = unknown_ttl
        self._by_key: dict[str, App] = {}
        self._by_id: dict[str, App] = {}
        self._unknown: dict[str, float] = {}  # key or id -> monotonic time it was refused
        self._inflight: dict[str, asyncio.Future[App | None]] = {}
        self._sub: Subscription | None = None
        self._slots = asyncio.Semaphore(32)

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(LIVE_WORKSPACES, cb=self._on_event)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def add(self, app: App) -> None:
        if not is_valid_id(app.id):
            log.warning("app_id_not_subject_safe", app_id=app.id)
            return
        old = self._by_id.get(app.id)
        if old is not None and old.key != app.key:
            self._by_key.pop(old.key, None)
        self._by_key[app.key] = app
        self._by_id[app.id] = app
        self._unknown.pop(app.key, None)
        self._unknown.pop(app.id, None)

    def cached(self, app_id: str) -> App | None:
        return self._by_id.get(app_id)

    async def by_key(self, key: str) -> App | None:
        """The app with this public key, None if there is none; ``Unavailable`` if unsure."""
        app = self._by_key.get(key)
        if app is not None:
            return app
        return await self._lookup("key:" + key, key, self._fetch_by_key)

    async def by_id(self, app_id: str) -> App | None:
        app = self._by_id.get(app_id)
        if app is not None:
            return app
        return await self._lookup("id:" + app_id, app_id, self._fetch_by_id)

    async def _lookup(
        self, flight: str, value: str, fetch: Callable[[str], Awaitable[App | None]]
    ) -> App | None:
        refused = self._unknown.get(value)
        if refused is not None and time.monotonic() - refused < self.unknown_ttl:
            return None
        pending = self._inflight.get(flight)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[App | None] = asyncio.get_running_loop().create_future()
        self._inflight[flight] = future
        try:
            async with self._slots:  # random keys must not flood identity
                app = await fetch(value)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        else:
            if app is None:
                self._unknown[value] = time.monotonic()
                if len(self._unknown) > 10_000:
                    self._unknown.clear()
            else:
                self.add(app)
            future.set_result(app)
            return app
        finally:
            del self._inflight[flight]

    async def _fetch_by_key(self, key: str) -> App | None:
        try:
            creds = await self.client.call(GetAppCredentials(app_key=key))
        except NotFound:
            return None
        return App(creds.workspace_id, creds.app_key, creds.app_secret)

    async def _fetch_by_id(self, app_id: str) -> App | None:
        if not is_valid_id(app_id):
            return None
        try:
            creds = await self.client.call(GetAppCredentials(workspace_id=app_id))
        except NotFound:
            return None
        return App(creds.workspace_id, creds.app_key, creds.app_secret)

    async def _on_event(self, msg: Msg) -> None:
        headers = msg.headers or {}
        if headers.get(H_EVENT) != WorkspaceCreated.type:
            return
        try:
            envelope = open_envelope(headers, msg.data)
        except (UnknownEvent, msgspec.DecodeError, KeyError, ValueError) as exc:
            log.warning("workspace_event_unreadable", error=str(exc))
            return
        event = envelope.event
        assert isinstance(event, WorkspaceCreated)
        self.add(App(event.workspace_id, event.app_key, event.app_secret))


__all__ = ["App", "AppRegistry", "Unavailable", "numeric_app_id"]

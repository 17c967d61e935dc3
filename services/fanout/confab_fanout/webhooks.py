"""Pusher webhooks: channel_occupied/vacated, member_added/removed, client_event.

Where to send them is per workspace, in the NATS KV bucket ``webhooks`` (key:
workspace id; value: ``WebhookConfig`` as JSON), written by an admin endpoint
(``SetWebhooks``, answered by any fanout node: no other service writes the
bucket) and followed here with a watcher, so changes apply without a restart::

    {"webhooks": [{"url": "https://example.com/pusher", "event_types": ["member_added"]}]}

``event_types`` left out means every type. Deliveries are POSTs of
``{"time_ms": …, "events": […]}`` signed with ``X-Pusher-Key`` and
``X-Pusher-Signature`` (HMAC-SHA256 of the body with the app secret). Events
wait in a bounded queue (full: dropped and counted, never blocking the
fanout); failed posts are retried with backoff for ``retry_for`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import aiohttp
import msgspec
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from confab.contracts.fanout import WEBHOOK_EVENT_TYPES, WebhookConfig
from confab.logging import get_logger
from confab_fanout import auth
from confab_fanout.apps import AppRegistry
from confab_fanout.metrics import WEBHOOKS

log = get_logger("confab.fanout.webhooks")

EVENT_TYPES = WEBHOOK_EVENT_TYPES
BATCH = 50  # events per POST at most


class _Job(msgspec.Struct):
    app_id: str
    url: str
    events: list[dict[str, Any]]
    attempt: int = 0
    first: float = 0.0


_encode = msgspec.json.Encoder().encode
_config = msgspec.json.Decoder(WebhookConfig)


class Webhooks:
    def __init__(
        self,
        js: JetStreamContext,
        apps: AppRegistry,
        *,
        bucket: str,
        replicas: int = 1,
        queue_size: int = 10_000,
        workers: int = 4,
        timeout: float = 5.0,
        retry_for: float = 300.0,
    ) -> None:
        self.js = js
        self.apps = apps
        self.bucket = bucket
        self.replicas = replicas
        self.workers = workers
        self.timeout = timeout
        self.retry_for = retry_for
        self.limit = queue_size
        # app id -> event type -> urls
        self._targets: dict[str, dict[str, list[str]]] = {}
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(queue_size)
        self._retrying = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._kv: KeyValue | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, init_timeout: float = 15.0) -> None:
        kv = self._kv = await self._bucket()
        self._watcher = await kv.watchall()
        ready = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._follow(ready), name="webhooks-config"))
        await asyncio.wait_for(ready.wait(), init_timeout)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": "confab-fanout"},
        )
        self._tasks += [
            asyncio.create_task(self._work(), name=f"webhooks-{i}") for i in range(self.workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
        if self._session is not None:
            await self._session.close()
        if not self._queue.empty():
            log.warning("webhooks_dropped_at_shutdown", count=self._queue.qsize())

    async def _bucket(self) -> KeyValue:
        try:
            return await self.js.key_value(self.bucket)
        except (NotFoundError, BadRequestError):
            pass
        config = KeyValueConfig(
            bucket=self.bucket, history=1, storage=StorageType.FILE, replicas=self.replicas
        )
        try:
            return await self.js.create_key_value(config)
        except BadRequestError:
            return await self.js.key_value(self.bucket)

    async def _follow(self, ready: asyncio.Event) -> None:
        assert self._watcher is not None
        async for entry in self._watcher:
            if entry is None:
                ready.set()
                continue
            if entry.operation is not None or not entry.value:
                self._targets.pop(entry.key, None)
                continue
            try:
                config = _config.decode(entry.value)
            except msgspec.DecodeError as exc:
                log.warning("webhook_config_invalid", app_id=entry.key, error=str(exc))
                self._targets.pop(entry.key, None)
                continue
            self._targets[entry.key] = _by_type(config)

    # -- configuration (the admin API, through SetWebhooks / GetWebhooks) -------------

    async def set_config(self, app_id: str, config: WebhookConfig) -> WebhookConfig:
        """Store the app's webhooks (every node's watcher applies them; this one at once)."""
        assert self._kv is not None
        await self._kv.put(app_id, _encode(config))
        self._targets[app_id] = _by_type(config)
        return config

    async def get_config(self, app_id: str) -> WebhookConfig:
        assert self._kv is not None
        try:
            entry = await self._kv.get(app_id)
        except KeyNotFoundError:
            return WebhookConfig()
        if not entry.value:
            return WebhookConfig()
        try:
            return _config.decode(entry.value)
        except msgspec.DecodeError:
            return WebhookConfig()

    # -- emitting (never blocks) -----------------------------------------------------

    def wants(self, app_id: str, event_type: str) -> bool:
        targets = self._targets.get(app_id)
        return targets is not None and event_type in targets

    def emit(self, app_id: str, event: dict[str, Any]) -> None:
        targets = self._targets.get(app_id)
        if targets is None:
            return
        for url in targets.get(event["name"], ()):
            try:
                self._queue.put_nowait(_Job(app_id, url, [event], first=time.monotonic()))
            except asyncio.QueueFull:
                WEBHOOKS.labels("dropped").inc()

    # -- delivering --------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            jobs = [job]
            while len(jobs) < BATCH and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            for batch in _merge(jobs):
                await self._send(batch)

    async def _send(self, job: _Job) -> None:
        assert self._session is not None
        try:
            app = await self.apps.by_id(job.app_id)
            if app is None:
                WEBHOOKS.labels("dropped").inc()
                return
            body = _encode({"time_ms": int(time.time() * 1000), "events": job.events})
            headers = auth.webhook_headers(app.key, app.secret, body)
            async with self._session.post(job.url, data=body, headers=headers) as response:
                await response.read()
                if 200 <= response.status < 300:
                    WEBHOOKS.labels("sent").inc(len(job.events))
                    return
                error = f"status {response.status}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = str(exc) or type(exc).__name__
        self._retry_later(job, error)

    def _retry_later(self, job: _Job, error: str) -> None:
        job.attempt += 1
        elapsed = time.monotonic() - job.first
        if elapsed >= self.retry_for or self._retrying >= self.limit:
            WEBHOOKS.labels("dropped").inc(len(job.events))
            log.warning("webhook_dropped", app_id=job.app_id, url=job.url, error=error)
            return
        WEBHOOKS.labels("retried").inc(len(job.events))
        delay = min(2.0 ** (job.attempt - 1), 60.0, self.retry_for - elapsed)
        delay *= random.uniform(0.8, 1.2)
        self._retrying += 1
        asyncio.get_running_loop().call_later(delay, self._requeue, job)

    def _requeue(self, job: _Job) -> None:
        self._retrying -= 1
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            WEBHOOKS.labels("dropped").inc(len(job.events))


def _by_type(config: WebhookConfig) -> dict[str, list[str]]:
    targets: dict[str, list[str]] = {}
    for target in config.webhooks:
        for event_type in target.event_types or EVENT_TYPES:
            if event_type in EVENT_TYPES:
                targets.setdefault(event_type, []).append(target.url)
    return targets


def _merge(jobs: list[_Job]) -> list[_Job]:
    """First attempts to one URL of one app go out together (up to ``BATCH`` events)."""
    merged: dict[tuple[str, str], _Job] = {}
    out: list[_Job] = []
    for job in jobs:
        if job.attempt:
            out.append(job)
            continue
        key = (job.app_id, job.url)
        existing = merged.get(key)
        if existing is None:
            merged[key] = job
            out.append(job)
        else:
            existing.events.extend(job.events)
    return out

"""NATS connection handling and the JetStream layout of the architecture.

Declaring streams is idempotent: every service declares what it owns at every
start, and a changed configuration is applied with ``update_stream``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RePublish, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from confab.errors import Unavailable
from confab.logging import get_logger

log = get_logger("confab.bus")

DUPLICATE_WINDOW_SECONDS = 120.0


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]

    def config(self, replicas: int) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            allow_direct=True,
            max_msgs_per_subject=-1,
            discard=DiscardPolicy.OLD,
            # Re-publish what was stored to live.<subject>, so the fanout only
            # sees events that exist, each with its sequence headers.
            republish=RePublish(src=">", dest="live.>"),
        )


IDENTITY = StreamSpec("IDENTITY", ("identity.evt.>",))
CONVERSATIONS = StreamSpec("CONVERSATIONS", ("conv.evt.>",))
MEDIA = StreamSpec("MEDIA", ("media.evt.>",))
STREAMS = {s.name: s for s in (IDENTITY, CONVERSATIONS, MEDIA)}


async def connect(url: str, name: str, *, connect_timeout: float = 5.0) -> NATS:
    """Connect with endless reconnects; fail fast with ``Unavailable`` if the first try fails."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats_error", error=str(exc) or type(exc).__name__)

    client: list[NATS] = []

    async def on_disconnected() -> None:
        if client and not (client[0].is_closed or client[0].is_draining):
            log.warning("nats_disconnected")

    async def on_reconnected() -> None:
        log.info("nats_reconnected")

    try:
        # With endless reconnects nats-py also retries the *first* connection
        # forever; bound it so an unreachable server is reported.
        nc = await asyncio.wait_for(
            nats.connect(
                servers=[u.strip() for u in url.split(",")],
                name=name,
                connect_timeout=connect_timeout,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                pending_size=8 * 1024 * 1024,
            ),
            connect_timeout + 1,
        )
    except (OSError, TimeoutError, nats.errors.NoServersError) as exc:
        raise Unavailable(f"cannot connect to NATS at {url}: {exc or type(exc).__name__}") from None
    client.append(nc)
    return nc


async def ensure_streams(
    js: JetStreamContext, specs: Iterable[StreamSpec], replicas: int = 1
) -> None:
    for spec in specs:
        config = spec.config(replicas)
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("stream_created", stream=spec.name)
            continue
        if _differs(info.config, config):
            await js.update_stream(config)
            log.info("stream_updated", stream=spec.name)


def _differs(current: StreamConfig, wanted: StreamConfig) -> bool:
    keys = ("subjects", "duplicate_window", "allow_direct", "max_msgs_per_subject", "num_replicas")
    now: dict[str, Any] = current.as_dict()
    want: dict[str, Any] = wanted.as_dict()
    return any(now.get(k) != want.get(k) for k in keys)


async def close(nc: NATS, timeout: float = 5.0) -> None:
    """Drain (finish in-flight callbacks and flush), then close; never hang a shutdown."""
    if nc.is_closed:
        return
    try:
        await asyncio.wait_for(nc.drain(), timeout)
    except Exception:
        await nc.close()

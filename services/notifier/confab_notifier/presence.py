"""Who is looking: the users with a socket subscribed to a conversation, anywhere.

Every fanout node writes, in the KV bucket ``presence``, a key
``w.<app>.<channel>.<user>.<node>`` (channel and user base64url-encoded) while a user has
a socket on that node subscribed to ``private-conversation.<id>`` or
``presence-conversation.<id>``, and its heartbeat ``n.<node>`` (with a TTL). This module
watches the bucket and answers ``watching(user, conversation)``: some node whose
heartbeat lives has such a key. A node that died stops counting when its heartbeat
expires, before the fanout's leader purges its keys.

If the bucket is not there (no fanout has started yet), nobody is watching; the watcher
tries again in the background.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError

from confab.logging import get_logger

log = get_logger("confab.notifier.presence")

CHANNEL_PREFIXES = ("private-conversation.", "presence-conversation.")


def _dec(token: str) -> str:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


class Presence:
    def __init__(self, js: JetStreamContext, bucket: str = "presence") -> None:
        self.js = js
        self.bucket = bucket
        self.alive: set[str] = set()
        # (user, conversation) -> nodes
        self.watchers: dict[tuple[str, str], set[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def watching(self, user_id: str, conversation_id: str) -> bool:
        nodes = self.watchers.get((user_id, conversation_id))
        return bool(nodes and not nodes.isdisjoint(self.alive))

    def apply(self, key: str, present: bool) -> None:
        parts = key.split(".")
        if parts[0] == "n" and len(parts) == 2:
            (self.alive.add if present else self.alive.discard)(parts[1])
            return
        if parts[0] != "w" or len(parts) != 5:
            return
        try:
            channel, user = _dec(parts[2]), _dec(parts[3])
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return
        prefix = next((p for p in CHANNEL_PREFIXES if channel.startswith(p)), None)
        if prefix is None:
            return
        ref = (user, channel[len(prefix) :])
        nodes = self.watchers.setdefault(ref, set())
        if present:
            nodes.add(parts[4])
        else:
            nodes.discard(parts[4])
            if not nodes:
                del self.watchers[ref]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notifier-presence")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping:
            try:
                kv = await self.js.key_value(self.bucket)
                watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is None:
                        continue
                    self.apply(entry.key, entry.operation is None)
            except (BucketNotFoundError, NotFoundError):
                pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("presence_watch_failed", error=str(exc) or type(exc).__name__)
            self.alive.clear()
            self.watchers.clear()
            await asyncio.sleep(1.0)

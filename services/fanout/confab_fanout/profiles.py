"""Users' public profiles (name, avatar_url), for rendering messages and conversations.

A bounded LRU per node, kept current by identity's stored events
(``live.identity.evt.*.user.*``: ``user.upserted``, ``user.erased``) and filled on
a miss with identity's ``GetUser`` (workspace-scoped; one request per user at a
time however many events wait for it). A user identity does not know is shown
as erased ("Deleted user"): everyone who posted existed when they posted.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from confab.contracts.events.identity import UserErased, UserUpserted
from confab.contracts.identity import GetUser, User
from confab.errors import ConfabError, NotFound
from confab.events import H_EVENT, UnknownEvent, open_envelope
from confab.logging import get_logger
from confab.personal import KeyRing
from confab.realtime import ERASED, Profile
from confab.rpc import RpcClient

log = get_logger("confab.fanout.profiles")

LIVE_USERS = "live.identity.evt.*.user.*"
_WATCHED = {UserUpserted.type, UserErased.type}

Key = tuple[str, str]  # (workspace id, user id)


class ProfileCache:
    def __init__(
        self, nc: NATS, client: RpcClient, size: int = 50_000, *, keys: KeyRing | None = None
    ) -> None:
        self.nc = nc
        self.client = client
        self.keys = keys  # reveals sealed profiles in user events
        self.size = size
        self._cache: OrderedDict[Key, Profile] = OrderedDict()
        self._inflight: dict[Key, asyncio.Future[Profile | None]] = {}
        self._sub: Subscription | None = None
        self._slots = asyncio.Semaphore(32)  # a large new conversation must not flood identity

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(LIVE_USERS, cb=self._on_event)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def get(self, workspace_id: str, user_id: str) -> Profile | None:
        key = (workspace_id, user_id)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
        return found

    def put(self, workspace_id: str, user_id: str, profile: Profile) -> None:
        key = (workspace_id, user_id)
        self._cache[key] = profile
        self._cache.move_to_end(key)
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)

    def missing(self, workspace_id: str, user_ids: Iterable[str | None]) -> list[str]:
        return [
            u
            for u in dict.fromkeys(user_ids)
            if u is not None and (workspace_id, u) not in self._cache
        ]

    async def fetch(self, workspace_id: str, user_ids: Iterable[str]) -> dict[str, Profile]:
        """The profiles of ``user_ids`` (from identity when not cached); one that cannot be
        looked up now (identity unavailable) is left out, and shown as unknown."""
        wanted = list(dict.fromkeys(user_ids))
        found = await asyncio.gather(*(self._one(workspace_id, u) for u in wanted[:1000]))
        return {u: p for u, p in zip(wanted, found, strict=False) if p is not None}

    async def _one(self, workspace_id: str, user_id: str) -> Profile | None:
        cached = self.get(workspace_id, user_id)
        if cached is not None:
            return cached
        key = (workspace_id, user_id)
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Profile | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        profile: Profile | None = None
        try:
            async with self._slots:
                user: User = await self.client.call(
                    GetUser(workspace_id=workspace_id, user_id=user_id)
                )
            profile = Profile(user.name, user.avatar_url)
        except NotFound:
            profile = ERASED
        except ConfabError as exc:
            log.warning("profile_lookup_failed", user_id=user_id, error=exc.code)
        finally:
            del self._inflight[key]
            future.set_result(profile)
        if profile is not None and (workspace_id, user_id) not in self._cache:
            self.put(workspace_id, user_id, profile)
        return profile

    async def _on_event(self, msg: Msg) -> None:
        headers = msg.headers or {}
        if headers.get(H_EVENT) not in _WATCHED:
            return
        try:
            envelope = open_envelope(headers, msg.data)
        except (UnknownEvent, msgspec.DecodeError, KeyError, ValueError) as exc:
            log.warning("user_event_unreadable", error=str(exc))
            return
        event = envelope.event
        if self.keys is not None and isinstance(event, UserUpserted) and event.sealed:
            event = await self.keys.reveal(envelope.workspace, event)
        if isinstance(event, UserUpserted):
            self.put(event.workspace_id, event.user_id, Profile(event.name, event.avatar_url))
        elif isinstance(event, UserErased):
            self.put(event.workspace_id, event.user_id, ERASED)

"""Cluster-wide channel occupancy and presence members, kept in the NATS KV bucket ``presence``.

Keys (channel names and user ids base64url-encoded, since KV keys allow few
characters):

- ``n.<node>``: a node's heartbeat, written every ttl/3 with a per-message TTL
  of ``ttl``; when it expires the server leaves a delete marker every watcher sees;
- ``c.<app>.<channel>.<node>``: how many of the node's sockets are subscribed;
- ``m.<app>.<channel>.<user>.<node>``: the user's ``user_info``, while the user has
  at least one connection to the channel on that node (tabs deduplicated locally).
- ``w.<app>.<channel>.<user>.<node>``: the user has a socket on that node subscribed to
  the conversation channel (private or presence). Not part of the view: the notifier
  reads these to leave alone users who are looking at the conversation.

Every node watches the whole bucket and folds the updates, in the stream's one
order, into a ``ClusterView``. A node's ``c``/``m`` entries count only while its
heartbeat lives, so a dead node's members vanish everywhere within the TTL.
The view reports *changes*: a channel becoming occupied or vacated, a user's
first connection anywhere (``member_added``) or last (``member_removed``).
Each node turns a change into frames for its own sockets; exactly one node
(the one whose write caused it, or the leader when a node expired) sends the
webhook.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import random
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import APIError, BadRequestError, NotFoundError
from nats.js.kv import KeyValue

from confab.logging import get_logger

log = get_logger("confab.fanout.presence")

OCCUPIED = "channel_occupied"
VACATED = "channel_vacated"
MEMBER_ADDED = "member_added"
MEMBER_REMOVED = "member_removed"

WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
COUNT_FLUSH_DELAY = 0.05  # subscription counts are coalesced for this long


# -- keys --------------------------------------------------------------------------------


def _enc(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _dec(token: str) -> str:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


def node_key(node: str) -> str:
    return f"n.{node}"


def count_key(app_id: str, channel: str, node: str) -> str:
    return f"c.{app_id}.{_enc(channel)}.{node}"


def member_key(app_id: str, channel: str, user_id: str, node: str) -> str:
    return f"m.{app_id}.{_enc(channel)}.{_enc(user_id)}.{node}"


def watcher_key(app_id: str, channel: str, user_id: str, node: str) -> str:
    return f"w.{app_id}.{_enc(channel)}.{_enc(user_id)}.{node}"


# -- the view (pure) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # OCCUPIED, VACATED, MEMBER_ADDED or MEMBER_REMOVED
    app_id: str
    channel: str
    user_id: str = ""
    user_info: bytes = b"null"
    node: str = ""  # the node whose write caused it; "" when a node's state expired


class ClusterView:
    """What every node knows about every node: fold KV entries in, get changes out."""

    def __init__(self) -> None:
        self.alive: set[str] = set()
        # Entries as written, per node (alive or not).
        self._counts: dict[str, dict[tuple[str, str], int]] = {}
        self._members: dict[str, dict[tuple[str, str, str], bytes]] = {}
        # Effective state, from alive nodes only.
        self.occupancy: dict[str, dict[str, dict[str, int]]] = {}  # app -> channel -> node -> n
        self.presence: dict[str, dict[str, dict[str, dict[str, bytes]]]] = {}
        # app -> channel -> user -> node -> user_info

    # -- folding in ------------------------------------------------------------------

    def apply(self, key: str, value: bytes | None) -> list[Change]:
        """One KV entry (``value`` None for a delete, purge or expiry marker)."""
        parts = key.split(".")
        if not parts[-1].isdigit():  # every key ends with a node id
            log.warning("presence_key_ignored", key=key)
            return []
        try:
            if parts[0] == "n" and len(parts) == 2:
                return self.node_up(parts[1]) if value is not None else self.node_down(parts[1])
            if parts[0] == "c" and len(parts) == 4:
                _, app_id, channel, node = parts
                if value is None:
                    return self.remove_count(node, app_id, _dec(channel))
                return self.set_count(node, app_id, _dec(channel), int(value))
            if parts[0] == "m" and len(parts) == 5:
                _, app_id, channel, user, node = parts
                if value is None:
                    return self.remove_member(node, app_id, _dec(channel), _dec(user))
                return self.add_member(node, app_id, _dec(channel), _dec(user), value)
            if parts[0] == "w" and len(parts) == 5:
                return []  # a watcher: for the notifier, not the view
        except (ValueError, binascii.Error, UnicodeDecodeError):
            pass
        log.warning("presence_key_ignored", key=key)
        return []

    def node_up(self, node: str) -> list[Change]:
        if node in self.alive:
            return []
        self.alive.add(node)
        changes: list[Change] = []
        for (app_id, channel), n in self._counts.get(node, {}).items():
            changes += self._count_on(node, app_id, channel, n)
        for (app_id, channel, user), info in self._members.get(node, {}).items():
            changes += self._member_on(node, app_id, channel, user, info)
        return changes

    def node_down(self, node: str) -> list[Change]:
        """The node's heartbeat expired or was deleted: its entries stop counting."""
        counts = self._counts.pop(node, {})
        members = self._members.pop(node, {})
        if node not in self.alive:
            return []
        self.alive.discard(node)
        changes: list[Change] = []
        for app_id, channel, user in members:
            changes += self._member_off(node, app_id, channel, user, "")
        for app_id, channel in counts:
            changes += self._count_off(node, app_id, channel, "")
        return changes

    def forget(self, node: str) -> None:
        """Drop a dead node's entries (after they were purged from the bucket)."""
        if node not in self.alive:
            self._counts.pop(node, None)
            self._members.pop(node, None)

    def set_count(self, node: str, app_id: str, channel: str, n: int) -> list[Change]:
        if n <= 0:
            return self.remove_count(node, app_id, channel)
        self._counts.setdefault(node, {})[app_id, channel] = n
        return self._count_on(node, app_id, channel, n) if node in self.alive else []

    def remove_count(self, node: str, app_id: str, channel: str) -> list[Change]:
        if self._counts.get(node, {}).pop((app_id, channel), None) is None:
            return []
        return self._count_off(node, app_id, channel, node) if node in self.alive else []

    def add_member(
        self, node: str, app_id: str, channel: str, user: str, info: bytes
    ) -> list[Change]:
        self._members.setdefault(node, {})[app_id, channel, user] = info
        return self._member_on(node, app_id, channel, user, info) if node in self.alive else []

    def remove_member(self, node: str, app_id: str, channel: str, user: str) -> list[Change]:
        if self._members.get(node, {}).pop((app_id, channel, user), None) is None:
            return []
        return self._member_off(node, app_id, channel, user, node) if node in self.alive else []

    def _count_on(self, node: str, app_id: str, channel: str, n: int) -> list[Change]:
        channels = self.occupancy.setdefault(app_id, {})
        nodes = channels.get(channel)
        if nodes is None:
            channels[channel] = {node: n}
            return [Change(OCCUPIED, app_id, channel, node=node)]
        nodes[node] = n
        return []

    def _count_off(self, node: str, app_id: str, channel: str, cause: str) -> list[Change]:
        channels = self.occupancy.get(app_id, {})
        nodes = channels.get(channel)
        if nodes is None or nodes.pop(node, None) is None or nodes:
            return []
        del channels[channel]
        if not channels:
            del self.occupancy[app_id]
        return [Change(VACATED, app_id, channel, node=cause)]

    def _member_on(
        self, node: str, app_id: str, channel: str, user: str, info: bytes
    ) -> list[Change]:
        users = self.presence.setdefault(app_id, {}).setdefault(channel, {})
        nodes = users.get(user)
        if nodes is None:
            users[user] = {node: info}
            return [Change(MEMBER_ADDED, app_id, channel, user, info, node)]
        nodes[node] = info
        return []

    def _member_off(
        self, node: str, app_id: str, channel: str, user: str, cause: str
    ) -> list[Change]:
        channels = self.presence.get(app_id, {})
        users = channels.get(channel, {})
        nodes = users.get(user)
        if nodes is None or nodes.pop(node, None) is None or nodes:
            return []
        del users[user]
        if not users:
            del channels[channel]
            if not channels:
                del self.presence[app_id]
        return [Change(MEMBER_REMOVED, app_id, channel, user, node=cause)]

    # -- reading ---------------------------------------------------------------------

    def leader(self) -> str | None:
        """The alive node with the smallest id: it acts for nodes that died."""
        return min(self.alive, key=int) if self.alive else None

    def dead_nodes(self) -> set[str]:
        """Nodes with entries in the bucket but no heartbeat."""
        return (set(self._counts) | set(self._members)) - self.alive

    def channels(self, app_id: str) -> dict[str, dict[str, int]]:
        return self.occupancy.get(app_id, {})

    def subscription_count(self, app_id: str, channel: str) -> int:
        return sum(self.occupancy.get(app_id, {}).get(channel, {}).values())

    def members(self, app_id: str, channel: str) -> dict[str, dict[str, bytes]]:
        return self.presence.get(app_id, {}).get(channel, {})

    def user_count(self, app_id: str, channel: str) -> int:
        return len(self.members(app_id, channel))

    def has_user(self, app_id: str, channel: str, user: str) -> bool:
        return user in self.members(app_id, channel)

    def local_entries(self, node: str) -> tuple[int, int]:
        return len(self._counts.get(node, {})), len(self._members.get(node, {}))


def diff(old: ClusterView, new: ClusterView) -> list[Change]:
    """The changes that turn ``old``'s effective state into ``new``'s (after a reload)."""
    changes: list[Change] = []
    for app_id, channels in old.presence.items():
        for channel, users in channels.items():
            for user in users:
                if not new.has_user(app_id, channel, user):
                    changes.append(Change(MEMBER_REMOVED, app_id, channel, user))
    for app_id, channels in old.occupancy.items():
        for channel in channels:
            if channel not in new.channels(app_id):
                changes.append(Change(VACATED, app_id, channel))
    for app_id, channels in new.occupancy.items():
        for channel in channels:
            if channel not in old.channels(app_id):
                changes.append(Change(OCCUPIED, app_id, channel))
    for app_id, channels in new.presence.items():
        for channel, users in channels.items():
            for user, nodes in users.items():
                if not old.has_user(app_id, channel, user):
                    info = next(iter(nodes.values()))
                    changes.append(Change(MEMBER_ADDED, app_id, channel, user, info))
    return changes


# -- the store (NATS I/O) ----------------------------------------------------------------

Counts = Iterable[tuple[str, str, int]]  # app, channel, subscriptions
Members = Iterable[tuple[str, str, str, bytes]]  # app, channel, user, user_info
LocalState = Callable[[], tuple[Counts, Members]]


class PresenceStore:
    """Writes this node's entries, heartbeats, and keeps the ``ClusterView`` current."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        *,
        bucket: str,
        ttl: float,
        replicas: int,
        on_changes: Callable[[list[Change]], None],
        local_state: LocalState,
        local_watchers: Callable[[], list[tuple[str, str, str]]] = list,
    ) -> None:
        self.nc = nc
        self.js = js
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self.ttl = ttl
        self.replicas = replicas
        self.on_changes = on_changes
        self.local_state = local_state
        self.local_watchers = local_watchers
        self.view = ClusterView()
        self.node_id = ""
        self._kv: KeyValue | None = None
        self._prefix = f"$KV.{bucket}."
        self._heartbeat_rev = 0
        self._seen = 0  # the last bucket revision the view has folded in
        self._pending_counts: dict[tuple[str, str], int] = {}
        self._counts_due = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._watcher: KeyValue.KeyWatcher | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._reconnects = 0
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, init_timeout: float = 15.0) -> str:
        self._kv = await self._bucket()
        self.node_id = await self._claim_node_id()
        self._reconnects = self.nc.stats["reconnects"]
        self._watcher, self._watch_task = await self._watch(self.view, init_timeout)
        await self._collect_garbage()
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="presence-heartbeat"),
            asyncio.create_task(self._count_flush_loop(), name="presence-counts"),
        ]
        return self.node_id

    async def stop(self) -> None:
        """Flush what is pending and remove this node's heartbeat (its entries go with it)."""
        self._stopping = True
        await self._flush_counts()
        for task in self._tasks:
            task.cancel()
        if self._watch_task is not None:
            self._watch_task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
        with contextlib.suppress(Exception):
            await self._publish(node_key(self.node_id), b"", delete=True)

    async def _bucket(self) -> KeyValue:
        try:
            return await self.js.key_value(self.bucket)
        except (NotFoundError, BadRequestError):
            pass
        config = KeyValueConfig(
            bucket=self.bucket,
            history=1,
            storage=StorageType.MEMORY,
            replicas=self.replicas,
            limit_marker_ttl=max(self.ttl, 1.0),
        )
        try:
            return await self.js.create_key_value(config)
        except BadRequestError:  # another node created it meanwhile
            return await self.js.key_value(self.bucket)

    async def _claim_node_id(self) -> str:
        """A random id no live node holds (the heartbeat key is created, not overwritten)."""
        for _ in range(20):
            node = str(random.randrange(10**8, 10**10))
            try:
                ack = await self.js.publish(
                    self._prefix + node_key(node),
                    b"{}",
                    headers={"Nats-Expected-Last-Subject-Sequence": "0"},
                    msg_ttl=self._ttl_seconds,
                )
            except APIError as exc:
                if exc.err_code in WRONG_LAST_SEQUENCE:
                    continue
                raise
            self._heartbeat_rev = ack.seq
            return node
        raise RuntimeError("could not claim a node id")

    @property
    def _ttl_seconds(self) -> float:
        return float(max(1, round(self.ttl)))

    # -- this node's entries -----------------------------------------------------------

    async def member_joined(self, app_id: str, channel: str, user_id: str, info: bytes) -> None:
        await self._publish(member_key(app_id, channel, user_id, self.node_id), info)

    async def member_left(self, app_id: str, channel: str, user_id: str) -> None:
        await self._publish(member_key(app_id, channel, user_id, self.node_id), b"", delete=True)

    async def watching(self, app_id: str, channel: str, user_id: str, on: bool) -> None:
        """The user's first socket on the conversation channel here came (``on``) or
        their last one left."""
        key = watcher_key(app_id, channel, user_id, self.node_id)
        await self._publish(key, b"1" if on else b"", delete=not on)

    def count_changed(self, app_id: str, channel: str, count: int) -> None:
        """Coalesced: written within ``COUNT_FLUSH_DELAY``; 0 deletes the entry."""
        self._pending_counts[app_id, channel] = count
        self._counts_due.set()

    async def _publish(self, key: str, value: bytes, *, delete: bool = False) -> None:
        headers = {"KV-Operation": "DEL"} if delete else None
        try:
            await self.nc.publish(self._prefix + key, value, headers=headers)
        except Exception as exc:  # disconnected with a full buffer: the heartbeat re-asserts
            log.warning("presence_write_failed", error=str(exc) or type(exc).__name__)

    async def _count_flush_loop(self) -> None:
        while True:
            await self._counts_due.wait()
            await asyncio.sleep(COUNT_FLUSH_DELAY)
            await self._flush_counts()

    async def _flush_counts(self) -> None:
        self._counts_due.clear()
        pending, self._pending_counts = self._pending_counts, {}
        for (app_id, channel), count in pending.items():
            key = count_key(app_id, channel, self.node_id)
            if count > 0:
                await self._publish(key, str(count).encode())
            else:
                await self._publish(key, b"", delete=True)

    async def _reassert(self) -> None:
        """Write every entry of this node again (its heartbeat had expired or NATS lost it)."""
        ack = await self.js.publish(
            self._prefix + node_key(self.node_id), b"{}", msg_ttl=self._ttl_seconds
        )
        self._heartbeat_rev = ack.seq
        counts, members = self.local_state()
        for app_id, channel, user_id, info in members:
            await self.member_joined(app_id, channel, user_id, info)
        for app_id, channel, count in counts:
            self.count_changed(app_id, channel, count)
        for app_id, channel, user_id in self.local_watchers():
            await self.watching(app_id, channel, user_id, True)
        log.info("presence_reasserted", node=self.node_id)

    # -- heartbeat ---------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("presence_heartbeat_failed", error=str(exc) or type(exc).__name__)

    async def _heartbeat(self) -> None:
        if self.nc.stats["reconnects"] != self._reconnects:
            # The server may have restarted (a memory bucket is then gone, and the
            # watcher with it): make sure the bucket exists and read it afresh.
            self._reconnects = self.nc.stats["reconnects"]
            self._kv = await self._bucket()
            await self._reload()
        try:
            ack = await self.js.publish(
                self._prefix + node_key(self.node_id),
                b"{}",
                headers={"Nats-Expected-Last-Subject-Sequence": str(self._heartbeat_rev)},
                msg_ttl=self._ttl_seconds,
            )
            self._heartbeat_rev = ack.seq
        except APIError as exc:
            if exc.err_code not in WRONG_LAST_SEQUENCE:
                raise
            await self._reassert()  # our heartbeat expired or was lost: write it all again
        if self.view.leader() == self.node_id:
            await self._collect_garbage()

    # -- watching ----------------------------------------------------------------------

    async def _watch(
        self, view: ClusterView, init_timeout: float
    ) -> tuple[KeyValue.KeyWatcher, asyncio.Task[None]]:
        assert self._kv is not None
        watcher = await self._kv.watchall()
        ready = asyncio.Event()
        task = asyncio.create_task(self._follow(watcher, view, ready), name="presence-watch")
        try:
            await asyncio.wait_for(ready.wait(), init_timeout)
        except TimeoutError:
            task.cancel()
            raise RuntimeError(f"presence bucket {self.bucket!r} did not load in time") from None
        return watcher, task

    async def _follow(
        self, watcher: KeyValue.KeyWatcher, view: ClusterView, ready: asyncio.Event
    ) -> None:
        async for entry in watcher:
            if entry is None:
                ready.set()
                continue
            deleted = entry.operation is not None
            changes = view.apply(entry.key, None if deleted else entry.value or b"")
            if view is self.view:
                self._seen = max(self._seen, entry.revision or 0)
            # While loading, changes are history (nobody here needs telling); after
            # a reload the new view reports its difference to the old one instead.
            if not ready.is_set() or view is not self.view:
                continue
            if deleted and entry.key.startswith("n."):
                self._node_gone(entry.key[2:], entry.revision or 0)
            if changes:
                self.on_changes(changes)

    def _node_gone(self, node: str, revision: int) -> None:
        if node == self.node_id:
            if not self._stopping:
                log.warning("presence_heartbeat_lost", node=node)
                self._spawn(self._reassert_safely())
            return
        if self.view.leader() == self.node_id:
            self._spawn(self._purge(node, revision))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reassert_safely(self) -> None:
        try:
            await self._reassert()
        except Exception as exc:
            log.warning("presence_reassert_failed", error=str(exc) or type(exc).__name__)

    async def _collect_garbage(self) -> None:
        """The leader removes entries of nodes without heartbeat from the bucket."""
        if self.view.leader() != self.node_id:
            return
        for node in self.view.dead_nodes():
            await self._purge(node, self._seen)

    async def _purge(self, node: str, up_to: int) -> None:
        """Remove a dead node's entries up to revision ``up_to``.

        Never later ones: a node that was only late writes its heartbeat, then
        its entries, again, and those must stay.
        """
        try:
            for pattern in (
                node_key(node),
                f"c.*.*.{node}",
                f"m.*.*.*.{node}",
                f"w.*.*.*.{node}",
            ):
                await self.js.purge_stream(
                    self.stream, subject=self._prefix + pattern, seq=up_to + 1
                )
        except Exception as exc:
            log.warning("presence_purge_failed", node=node, error=str(exc) or type(exc).__name__)
            return
        self.view.forget(node)
        log.info("presence_node_purged", node=node)

    async def _reload(self) -> None:
        """After a NATS reconnect: rebuild the view from the bucket and report the difference."""
        fresh = ClusterView()
        watcher, task = await self._watch(fresh, 15.0)
        old_watcher, old_task = self._watcher, self._watch_task
        self._watcher, self._watch_task = watcher, task
        if old_task is not None:
            old_task.cancel()
        if old_watcher is not None:
            with contextlib.suppress(Exception):
                await old_watcher.stop()
        old, self.view = self.view, fresh
        changes = diff(old, fresh)
        if changes:
            self.on_changes(changes)
        log.info("presence_reloaded", node=self.node_id)

"""The fanout node: sockets, channels, presence, cluster delivery and webhooks together.

The domain feed (``feed.Feed``), ``confab:resume`` (``resume.Resumer``) and the
authority checks (``authority.Gatekeeper``) are wired to it in ``app.py``; they
see it only through the small protocols they declare (``Hub``, ``Sockets``).

Injecting events into channels (for the HTTP API now, the event log later):

- ``await fanout.publish(app_id, channels, event, data)`` from ONE node: this
  node's sockets get it at once and every other node gets it over NATS. Use it
  for anything that arrives at a single node (an HTTP trigger, a client event).
- ``fanout.deliver_local(app_id, channels, event, data)`` on EVERY node: only this
  node's sockets. Use it for sources every node consumes itself (each node
  follows ``live.conv.evt.>``), or they would be delivered twice.

``data`` is the event's data as a string (usually JSON text); it is sent as
Pusher's double-encoded string. ``exclude_socket_id`` leaves one socket out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol

import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from confab.addresses import TrustedProxies
from confab.logging import get_logger
from confab.rpc import RpcClient
from confab_fanout import protocol
from confab_fanout.apps import AppRegistry
from confab_fanout.channels import Channel, ChannelRegistry, Joined
from confab_fanout.cluster import Broadcast, Cluster, Terminate
from confab_fanout.connection import Connection
from confab_fanout.limits import ConnectionLimits
from confab_fanout.metrics import CHANNEL_EVENTS, CONNECTIONS, FRAMES
from confab_fanout.presence import MEMBER_ADDED, MEMBER_REMOVED, Change, PresenceStore
from confab_fanout.protocol import ClientFrame, Kind
from confab_fanout.settings import FanoutSettings
from confab_fanout.webhooks import Webhooks

log = get_logger("confab.fanout")

Extension = Callable[[Connection, ClientFrame], Awaitable[None]]


class Gate(Protocol):
    """The authority checks (``authority.Gatekeeper``)."""

    def refusal(self, app_id: str, user_id: str | None, session_id: str | None) -> str | None: ...

    async def may_join(
        self,
        app_id: str,
        channel: str,
        user_id: str | None,
        session_id: str | None,
        role: str | None = None,
    ) -> str | None: ...

    async def may_send(self, app_id: str, channel: str) -> str | None: ...


class Fanout:
    def __init__(
        self,
        settings: FanoutSettings,
        nc: NATS,
        js: JetStreamContext,
        client: RpcClient,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self.settings = settings
        self.proxies = proxies or TrustedProxies(settings.trusted_proxies)
        self.connection_limits = ConnectionLimits(settings)
        self.nc = nc
        self.apps = AppRegistry(nc, client, settings.unknown_app_ttl)
        self.channels = ChannelRegistry()
        self.connections: dict[str, Connection] = {}
        self.presence = PresenceStore(
            nc,
            js,
            bucket=settings.presence_bucket,
            ttl=settings.presence_ttl,
            replicas=settings.stream_replicas,
            on_changes=self._on_presence_changes,
            local_state=self._local_state,
            local_watchers=self._local_watchers,
        )
        self.webhooks = Webhooks(
            js,
            self.apps,
            bucket=settings.webhooks_bucket,
            replicas=settings.stream_replicas,
            queue_size=settings.webhook_queue,
            workers=settings.webhook_workers,
            timeout=settings.webhook_timeout,
            retry_for=settings.webhook_retry_for,
        )
        self.cluster: Cluster
        # Client events outside Pusher's (e.g. "confab:resume"), by event name.
        self.extensions: dict[str, Extension] = {}
        # Called (synchronously) when a socket joins a channel, before the reply.
        self.join_hooks: list[Callable[[Connection, Channel], None]] = []
        # Who may join and act, from the log (``authority.Gatekeeper``; app.py sets it).
        self.gate: Gate | None = None
        # Sockets by the principals their authorizations named: (app, user or session).
        self._by_principal: dict[tuple[str, str], set[Connection]] = {}
        self.closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def node_id(self) -> str:
        return self.presence.node_id

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.apps.start()
        node_id = await self.presence.start()
        self.cluster = Cluster(self.nc, node_id, self._on_broadcast, self._on_terminate)
        await self.cluster.start()
        await self.webhooks.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="fanout-sweep")
        log.info("fanout_node_started", node=node_id)

    async def close_sockets(self) -> None:
        """Shutdown, step 1 (after the listener closed): every socket gets 4200 and goes."""
        self.closing = True
        conns = list(self.connections.values())
        if conns:
            log.info("closing_sockets", count=len(conns))
            await asyncio.gather(
                *(c.close(protocol.RECONNECT, "Server is closing") for c in conns),
                return_exceptions=True,
            )

    async def stop(self) -> None:
        """Shutdown, step 2: leave the cluster (other nodes see our members go at once)."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        with contextlib.suppress(Exception):
            await self.cluster.stop()
        await self.presence.stop()
        await self.webhooks.stop()
        await self.apps.stop()
        for task in list(self._tasks):
            task.cancel()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, keeping a reference until it is done."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- publishing --------------------------------------------------------------------

    async def publish(
        self,
        app_id: str,
        channels: Iterable[str],
        event: str,
        data: str,
        exclude_socket_id: str | None = None,
        user_id: str | None = None,
    ) -> None:
        """Deliver to the channels' subscribers on every node, each exactly once."""
        channels = list(channels)
        self.deliver_local(app_id, channels, event, data, exclude_socket_id, user_id)
        await self.cluster.broadcast(app_id, channels, event, data, exclude_socket_id, user_id)

    def deliver_local(
        self,
        app_id: str,
        channels: Iterable[str],
        event: str,
        data: str,
        exclude_socket_id: str | None = None,
        user_id: str | None = None,
    ) -> int:
        """Deliver to this node's subscribers only; how many sockets were written to.

        One frame is encoded per channel and the same bytes go to every socket.
        """
        local = self.channels.apps.get(app_id)
        if local is None:
            return 0
        sent = events = 0
        for name in channels:
            channel = local.get(name)
            if channel is None:
                continue
            frame = protocol.ws_text(protocol.event_frame(event, name, data, user_id))
            sent += channel.send_all(frame, exclude_socket_id)
            events += 1
        if events:
            CHANNEL_EVENTS.inc(events)
            FRAMES.inc(sent)
        return sent

    def deliver_seq(self, app_id: str, name: str, event: str, data: str, seq: int) -> int:
        """``deliver_local`` of a numbered conversation event (its ``event_seq``) to one
        channel; sockets catching up on the channel (``confab:resume``) get it in turn."""
        channel = self.channels.get(app_id, name)
        if channel is None:
            return 0
        sent = channel.send_seq(protocol.ws_text(protocol.event_frame(event, name, data)), seq)
        CHANNEL_EVENTS.inc()
        FRAMES.inc(sent)
        return sent

    async def client_event(
        self, conn: Connection, channel: str, event: str, data: str, user_id: str | None
    ) -> None:
        app_id = conn.app.id
        await self.publish(app_id, (channel,), event, data, conn.socket_id, user_id)
        if self.webhooks.wants(app_id, "client_event"):
            hook: dict[str, Any] = {
                "name": "client_event",
                "channel": channel,
                "event": event,
                "data": data,
                "socket_id": conn.socket_id,
            }
            if user_id is not None:
                hook["user_id"] = user_id
            self.webhooks.emit(app_id, hook)

    async def terminate_user(self, app_id: str, user_id: str) -> None:
        """Close every connection of the user, signed in or in presence, on every node."""
        self._terminate_local(app_id, user_id)
        await self.cluster.terminate(app_id, user_id)

    def let_go(self, app_id: str, names: Iterable[str], user_id: str, message: str) -> None:
        """Unsubscribe this node's sockets of ``user_id`` from ``names`` (presence members,
        or private subscriptions whose authorization named the user), telling each with
        ``pusher:subscription_error`` (403)."""
        for name in names:
            channel = self.channels.get(app_id, name)
            if channel is None:
                continue
            for sock, uid in list(channel.sockets.items()):
                if uid == user_id and isinstance(sock, Connection):
                    sock.send_frame(protocol.subscription_error(name, "AuthError", message, 403))
                    announce = self.leave(sock, name)
                    if announce is not None:
                        self.spawn(announce)

    def send_away(self, app_id: str, names: Iterable[str], message: str) -> None:
        """Close the channels' sockets with 4200: they reconnect and resume by seq."""
        for name in names:
            channel = self.channels.get(app_id, name)
            for sock in list(channel.sockets) if channel is not None else ():
                self.spawn(sock.close(protocol.RECONNECT, message))

    # -- principals: who a socket acts for -------------------------------------------------

    def bind(self, conn: Connection, user_id: str | None, session_id: str | None) -> None:
        """Tie ``conn`` to the user and session an authorization named."""
        app_id = conn.app.id
        for owner in (user_id, session_id):
            if owner is not None:
                self._by_principal.setdefault((app_id, owner), set()).add(conn)
                if owner not in conn.principals:
                    conn.principals += (owner,)

    def sockets_of(
        self, app_id: str, user_id: str | None, session_id: str | None
    ) -> set[Connection]:
        """This node's sockets tied to the user or to the session."""
        found: set[Connection] = set()
        for owner in (user_id, session_id):
            if owner is not None:
                found |= self._by_principal.get((app_id, owner), set())
        return found

    def revoke(self, conns: Iterable[Connection], code: int, message: str) -> None:
        """Authority is gone: nothing more is written to or accepted from ``conns`` (at
        once), they leave every channel, and they are closed with ``code``."""
        for conn in list(conns):
            if conn.closed:
                continue
            conn.closing = True  # no more frames from any channel
            for name in list(conn.channels):
                announce = self.leave(conn, name)
                if announce is not None:
                    self.spawn(announce)
            self.spawn(conn.close(code, message))

    def _unbind(self, conn: Connection) -> None:
        app_id = conn.app.id
        for owner in conn.principals:
            found = self._by_principal.get((app_id, owner))
            if found is not None:
                found.discard(conn)
                if not found:
                    del self._by_principal[(app_id, owner)]
        conn.principals = ()

    def _on_broadcast(self, message: Broadcast) -> None:
        self.deliver_local(
            message.app_id,
            message.channels,
            message.event,
            message.data,
            message.exclude or None,
            message.user_id or None,
        )

    def _on_terminate(self, message: Terminate) -> None:
        self._terminate_local(message.app_id, message.user_id)

    def _terminate_local(self, app_id: str, user_id: str) -> None:
        targets: set[Connection] = set()
        for channel in self.channels.of_app(app_id).values():
            if channel.kind is Kind.USER:
                if channel.name == protocol.USER_CHANNEL_PREFIX + user_id:
                    targets.update(channel.sockets)  # type: ignore[arg-type]
            elif channel.kind is Kind.PRESENCE and user_id in channel.members:
                targets.update(s for s, uid in channel.sockets.items() if uid == user_id)  # type: ignore[misc]
        for conn in targets:
            self.spawn(conn.close(protocol.UNAUTHORIZED, "Connection terminated by the app"))

    # -- sockets and subscriptions -------------------------------------------------------

    def register(self, conn: Connection) -> None:
        self.connections[conn.socket_id] = conn
        CONNECTIONS.inc()

    async def unregister(self, conn: Connection) -> None:
        if self.connections.pop(conn.socket_id, None) is None:
            return
        CONNECTIONS.dec()
        self._unbind(conn)
        for name in list(conn.channels):
            await self.unsubscribe(conn, name)

    def join(
        self,
        conn: Connection,
        name: str,
        kind: Kind,
        user_id: str | None = None,
        user_info: bytes = b"null",
    ) -> Joined | None:
        """Add the socket to the channel now (then reply, then ``announce_join``)."""
        joined = self.channels.join(conn.app.id, name, kind, conn, user_id, user_info)
        if joined is not None:
            conn.channels[name] = joined.channel
            uid = joined.channel.sockets.get(conn)  # type: ignore[call-overload]
            sockets = joined.channel.sockets.values()
            if uid is not None and _watched(name) and sum(u == uid for u in sockets) == 1:
                self.spawn(self.presence.watching(conn.app.id, name, uid, True))
            for hook in self.join_hooks:
                hook(conn, joined.channel)
        return joined

    async def announce_join(self, joined: Joined, user_id: str | None, user_info: bytes) -> None:
        """Tell the cluster: the channel's subscription count, the user's first connection."""
        channel = joined.channel
        if channel.kind is Kind.USER:
            return
        self.presence.count_changed(channel.app_id, channel.name, len(channel.sockets))
        if joined.first_of_user and user_id is not None:
            await self.presence.member_joined(channel.app_id, channel.name, user_id, user_info)

    async def unsubscribe(self, conn: Connection, name: str) -> None:
        announce = self.leave(conn, name)
        if announce is not None:
            await announce

    def leave(self, conn: Connection, name: str) -> Coroutine[Any, Any, None] | None:
        """Take the socket off the channel now; what the cluster must hear of it (a
        presence member gone), to await."""
        left = self.channels.leave(conn.app.id, name, conn)
        if left is None:
            return None
        conn.channels.pop(name, None)
        channel = left.channel
        if channel.kind is Kind.USER:
            return None
        uid = left.user_id
        if uid is not None and _watched(name) and uid not in channel.sockets.values():
            self.spawn(self.presence.watching(channel.app_id, name, uid, False))
        self.presence.count_changed(channel.app_id, name, len(channel.sockets))
        if left.last_of_user and left.user_id is not None:
            return self.presence.member_left(channel.app_id, name, left.user_id)
        return None

    def presence_snapshot(self, app_id: str, channel: str, user_id: str, user_info: bytes) -> str:
        """``subscription_succeeded`` data: the cluster's members, and the subscriber itself."""
        members = {
            uid: msgspec.Raw(next(iter(nodes.values())))
            for uid, nodes in self.presence.view.members(app_id, channel).items()
        }
        members.setdefault(user_id, msgspec.Raw(user_info))
        return protocol.presence_data(members)

    # -- cluster-wide channel state (this node's own part is always current) ------------

    def subscription_count(self, app_id: str, name: str) -> int:
        nodes = self.presence.view.channels(app_id).get(name, {})
        others = sum(n for node, n in nodes.items() if node != self.node_id)
        local = self.channels.get(app_id, name)
        return others + (len(local.sockets) if local is not None else 0)

    def occupied_channels(self, app_id: str) -> set[str]:
        names = {
            name
            for name, nodes in self.presence.view.channels(app_id).items()
            if any(node != self.node_id for node in nodes)
        }
        names.update(
            name for name, ch in self.channels.of_app(app_id).items() if ch.kind is not Kind.USER
        )
        return names

    # -- cluster state changes -------------------------------------------------------------

    def _on_presence_changes(self, changes: list[Change]) -> None:
        leader = self.presence.view.leader() == self.node_id
        for change in changes:
            if change.kind == MEMBER_ADDED or change.kind == MEMBER_REMOVED:
                channel = self.channels.get(change.app_id, change.channel)
                if channel is not None:
                    if change.kind == MEMBER_ADDED:
                        payload = protocol.member_added(
                            change.channel, change.user_id, msgspec.Raw(change.user_info)
                        )
                    else:
                        payload = protocol.member_removed(change.channel, change.user_id)
                    channel.send_others(protocol.ws_text(payload), change.user_id)
            # One node sends each webhook: the one whose write caused the change, or
            # the leader when a node's state expired.
            mine = change.node == self.node_id or (not change.node and leader)
            if mine and self.webhooks.wants(change.app_id, change.kind):
                hook = {"name": change.kind, "channel": change.channel}
                if change.user_id:
                    hook["user_id"] = change.user_id
                self.webhooks.emit(change.app_id, hook)

    def _local_watchers(self) -> list[tuple[str, str, str]]:
        """(app, conversation channel, user) of every user with a socket on one here."""
        return [
            (channel.app_id, channel.name, uid)
            for channel in self.channels.all()
            if _watched(channel.name)
            for uid in {u for u in channel.sockets.values() if u is not None}
        ]

    def _local_state(
        self,
    ) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, str, bytes]]]:
        counts: list[tuple[str, str, int]] = []
        members: list[tuple[str, str, str, bytes]] = []
        for channel in self.channels.all():
            if channel.kind is Kind.USER:
                continue
            counts.append((channel.app_id, channel.name, len(channel.sockets)))
            for uid, (_, info) in channel.members.items():
                members.append((channel.app_id, channel.name, uid, info))
        return counts, members

    # -- idle sockets ------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        settings = self.settings
        interval = min(settings.ping_interval, settings.pong_timeout) / 4
        interval = max(0.2, min(interval, 5.0))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            self.sweep(loop.time())

    def sweep(self, now: float) -> None:
        """Ping sockets silent for ``ping_interval``; close with 4201 if still silent."""
        ping_interval = self.settings.ping_interval
        pong_timeout = self.settings.pong_timeout
        for conn in list(self.connections.values()):
            if conn.closing:
                continue
            if conn.ping_sent:
                if now - conn.ping_sent > pong_timeout:
                    self.spawn(
                        conn.close(protocol.PONG_NOT_RECEIVED, "Pong reply not received in time")
                    )
            elif now - conn.last_seen > ping_interval:
                conn.ping_sent = now
                conn.send(protocol.ws_ping() if conn.control_pings else protocol.PING)


def _watched(channel: str) -> bool:
    """A conversation's channel: who is on it is looking at the conversation (the
    notifier leaves them alone)."""
    return channel.startswith(("private-conversation.", "presence-conversation."))

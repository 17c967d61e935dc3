"""Cross-node delivery over core NATS.

A node that accepts a trigger (HTTP API) or a client event delivers it to its
own sockets at once and publishes it once on ``fanout.bcast.<app>``; every other
node delivers it to its own sockets. A node skips what it published itself, so
each socket gets a message exactly once, and the sender's ``socket_id`` is
excluded on every node. ``fanout.terminate.<app>`` closes a user's connections
wherever they are.

Socket ids are ``<node id>.<counter>``: the node id is unique among live nodes
(claimed in the presence bucket), so socket ids are unique in the cluster.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from confab.logging import get_logger

log = get_logger("confab.fanout.cluster")

BROADCAST = "fanout.bcast"
TERMINATE = "fanout.terminate"


class Broadcast(msgspec.Struct, array_like=True, frozen=True):
    origin: str
    app_id: str
    channels: list[str]
    event: str
    data: str
    exclude: str = ""  # socket id that must not get it
    user_id: str = ""  # presence client events carry the sender's user id


class Terminate(msgspec.Struct, array_like=True, frozen=True):
    origin: str
    app_id: str
    user_id: str


_encode = msgspec.msgpack.Encoder().encode
_broadcast = msgspec.msgpack.Decoder(Broadcast)
_terminate = msgspec.msgpack.Decoder(Terminate)


class Cluster:
    def __init__(
        self,
        nc: NATS,
        node_id: str,
        on_broadcast: Callable[[Broadcast], None],
        on_terminate: Callable[[Terminate], None],
    ) -> None:
        self.nc = nc
        self.node_id = node_id
        self.on_broadcast = on_broadcast
        self.on_terminate = on_terminate
        self._counter = itertools.count(random.randrange(1, 10**6))
        self._subs: list[Subscription] = []

    def new_socket_id(self) -> str:
        return f"{self.node_id}.{next(self._counter)}"

    async def start(self) -> None:
        self._subs = [
            await self.nc.subscribe(f"{BROADCAST}.*", cb=self._on_broadcast),
            await self.nc.subscribe(f"{TERMINATE}.*", cb=self._on_terminate),
        ]

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs = []

    async def broadcast(
        self,
        app_id: str,
        channels: list[str],
        event: str,
        data: str,
        exclude: str | None = None,
        user_id: str | None = None,
    ) -> None:
        message = Broadcast(
            self.node_id, app_id, channels, event, data, exclude or "", user_id or ""
        )
        await self.nc.publish(f"{BROADCAST}.{app_id}", _encode(message))

    async def terminate(self, app_id: str, user_id: str) -> None:
        message = Terminate(self.node_id, app_id, user_id)
        await self.nc.publish(f"{TERMINATE}.{app_id}", _encode(message))

    async def _on_broadcast(self, msg: Msg) -> None:
        try:
            message = _broadcast.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("broadcast_unreadable", subject=msg.subject)
            return
        if message.origin != self.node_id:
            self.on_broadcast(message)

    async def _on_terminate(self, msg: Msg) -> None:
        try:
            message = _terminate.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("terminate_unreadable", subject=msg.subject)
            return
        if message.origin != self.node_id:
            self.on_terminate(message)

"""This node's subscriptions: app → channel → sockets, and each presence channel's
local members (a user's tabs on this node counted once).

Delivery writes one pre-framed byte string to every socket of a channel;
``Socket.send`` never blocks and never changes the registry (a socket that
must go is closed later, by its own task), so iterating is safe.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from confab_fanout.protocol import Kind


class Socket(Protocol):
    socket_id: str

    def send(self, frame: bytes) -> None: ...


class Channel:
    __slots__ = ("app_id", "kind", "members", "name", "sockets")

    def __init__(self, app_id: str, name: str, kind: Kind) -> None:
        self.app_id = app_id
        self.name = name
        self.kind = kind
        # socket -> its presence user id (None on other kinds of channel)
        self.sockets: dict[Socket, str | None] = {}
        # presence only: user id -> [local connection count, user_info JSON]
        self.members: dict[str, list] = {}

    def send_all(self, frame: bytes, exclude: str | None = None) -> int:
        """Write ``frame`` to every socket but the one with id ``exclude``; how many got it."""
        sockets = self.sockets
        if exclude is None:
            for sock in sockets:
                sock.send(frame)
            return len(sockets)
        sent = 0
        for sock in sockets:
            if sock.socket_id != exclude:
                sock.send(frame)
                sent += 1
        return sent

    def send_others(self, frame: bytes, user_id: str) -> int:
        """Write ``frame`` to every socket whose presence user is not ``user_id``."""
        sent = 0
        for sock, uid in self.sockets.items():
            if uid != user_id:
                sock.send(frame)
                sent += 1
        return sent


@dataclass(frozen=True, slots=True)
class Joined:
    channel: Channel
    first_socket: bool  # the channel was not occupied on this node before
    first_of_user: bool  # presence: the user had no other connection here


@dataclass(frozen=True, slots=True)
class Left:
    channel: Channel
    last_socket: bool  # nobody on this node is subscribed any more
    last_of_user: bool  # presence: the user's last connection here left
    user_id: str | None


class ChannelRegistry:
    def __init__(self) -> None:
        self.apps: dict[str, dict[str, Channel]] = {}

    def get(self, app_id: str, name: str) -> Channel | None:
        channels = self.apps.get(app_id)
        return None if channels is None else channels.get(name)

    def of_app(self, app_id: str) -> dict[str, Channel]:
        return self.apps.get(app_id, {})

    def all(self) -> Iterator[Channel]:
        for channels in self.apps.values():
            yield from channels.values()

    def join(
        self,
        app_id: str,
        name: str,
        kind: Kind,
        sock: Socket,
        user_id: str | None = None,
        user_info: bytes = b"null",
    ) -> Joined | None:
        """Add ``sock``; None if it was subscribed already."""
        channels = self.apps.setdefault(app_id, {})
        channel = channels.get(name)
        if channel is None:
            channel = channels[name] = Channel(app_id, name, kind)
        elif sock in channel.sockets:
            return None
        first_socket = not channel.sockets
        channel.sockets[sock] = user_id
        first_of_user = False
        if user_id is not None:
            member = channel.members.get(user_id)
            if member is None:
                channel.members[user_id] = [1, user_info]
                first_of_user = True
            else:
                member[0] += 1
        return Joined(channel, first_socket, first_of_user)

    def leave(self, app_id: str, name: str, sock: Socket) -> Left | None:
        """Remove ``sock``; None if it was not subscribed."""
        channels = self.apps.get(app_id)
        channel = None if channels is None else channels.get(name)
        if channel is None or sock not in channel.sockets:
            return None
        user_id = channel.sockets.pop(sock)
        last_of_user = False
        if user_id is not None:
            member = channel.members[user_id]
            member[0] -= 1
            if member[0] == 0:
                del channel.members[user_id]
                last_of_user = True
        last_socket = not channel.sockets
        if last_socket:
            assert channels is not None
            del channels[name]
            if not channels:
                del self.apps[app_id]
        return Left(channel, last_socket, last_of_user, user_id)

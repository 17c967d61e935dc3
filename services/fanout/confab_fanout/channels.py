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

    def overflowed(self, channel: str) -> None:
        """What it held back on ``channel`` while catching up grew too large."""

    async def close(self, code: int, message: str) -> None:
        """``pusher:error`` with ``code``, then a close with the same code."""


class Hold:
    """One socket's live traffic on one channel, held back while it catches up (resume).

    While ``buffer`` is a list, frames are kept, with the ``seq`` they carry (0:
    none, such as typing or a client event). ``release(floor)`` writes what was
    kept in order, leaving out numbered frames at or below ``floor`` (the socket
    has them already), and from then on drops such frames as they come, until
    the channel's own sequence passes ``floor``: then the hold is gone.
    """

    __slots__ = ("buffer", "floor", "limit", "overflow", "size", "sock")

    def __init__(self, sock: Socket, limit: int) -> None:
        self.sock = sock
        self.buffer: list[tuple[int, bytes]] | None = []
        self.floor = 0
        self.size = 0
        self.limit = limit
        self.overflow = False

    def offer(self, seq: int, frame: bytes) -> None:
        buffer = self.buffer
        if buffer is not None:
            if self.overflow:
                return
            buffer.append((seq, frame))
            self.size += len(frame)
            if self.size > self.limit:
                self.overflow = True  # the caller closes the socket (it reconnects, resumes)
                buffer.clear()
        elif not seq or seq > self.floor:
            self.sock.send(frame)

    def release(self, floor: int) -> None:
        buffer, self.buffer = self.buffer or [], None
        for seq, frame in buffer:
            if not seq or seq > floor:
                self.sock.send(frame)
                floor = max(floor, seq)
        self.floor = floor


class Channel:
    __slots__ = ("app_id", "first_seq", "holds", "kind", "last_seq", "members", "name", "sockets")

    def __init__(self, app_id: str, name: str, kind: Kind) -> None:
        self.app_id = app_id
        self.name = name
        self.kind = kind
        # socket -> its user id: the presence member, or who a private channel's
        # authorization named in its channel_data (else None)
        self.sockets: dict[Socket, str | None] = {}
        # presence only: user id -> [local connection count, user_info JSON]
        self.members: dict[str, list] = {}
        # Numbered events (a conversation's seq) delivered here since the channel was made.
        self.first_seq = 0
        self.last_seq = 0
        self.holds: dict[Socket, Hold] | None = None

    def hold(self, sock: Socket, limit: int) -> Hold | None:
        """Start holding ``sock``'s traffic; None if it is held already."""
        holds = self.holds
        if holds is None:
            holds = self.holds = {}
        elif sock in holds:
            return None
        hold = holds[sock] = Hold(sock, limit)
        return hold

    def release(self, sock: Socket, floor: int) -> None:
        """Write what was held for ``sock``, then let its live traffic through (see ``Hold``)."""
        holds = self.holds
        hold = holds.get(sock) if holds else None
        if hold is None:
            return
        hold.release(floor)
        if self.last_seq >= hold.floor:
            self._drop_hold(sock)

    def _drop_hold(self, sock: Socket) -> None:
        holds = self.holds
        if holds is not None:
            holds.pop(sock, None)
            if not holds:
                self.holds = None

    def send_seq(self, frame: bytes, seq: int) -> int:
        """``send_all`` of a numbered event (a conversation's ``event_seq``)."""
        if seq > self.last_seq:
            self.last_seq = seq
        if not self.first_seq:
            self.first_seq = seq
        return self.send_all(frame, None, seq)

    def send_all(self, frame: bytes, exclude: str | None = None, seq: int = 0) -> int:
        """Write ``frame`` to every socket but the one with id ``exclude``; how many got it."""
        sockets = self.sockets
        if self.holds is not None:
            return self._send_holding(frame, exclude, seq)
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

    def _send_holding(self, frame: bytes, exclude: str | None, seq: int) -> int:
        holds = self.holds
        assert holds is not None
        sent = 0
        for sock in self.sockets:
            if sock.socket_id == exclude:
                continue
            hold = holds.get(sock)
            if hold is None:
                sock.send(frame)
            else:
                hold.offer(seq, frame)
                if hold.overflow:
                    sock.overflowed(self.name)
            sent += 1
        done = [s for s, h in holds.items() if h.buffer is None and self.last_seq >= h.floor]
        for sock in done:
            self._drop_hold(sock)
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
    user_id: str | None  # presence only


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
        if user_id is not None and kind is Kind.PRESENCE:
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
        if channel.holds is not None:
            channel._drop_hold(sock)
        last_of_user = False
        if user_id is not None and channel.kind is Kind.PRESENCE:
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

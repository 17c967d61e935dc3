"""One WebSocket's life: handshake, ping/pong, subscriptions, client events, sign-in, close.

A socket is a ``Connection``: the ``websocket.WebSocket`` protocol its transport calls,
with the Pusher session on top. The handshake goes through aiohttp's routing (``serve``),
which then lets go of the connection (``confab.httpserver.take_over``): no request,
reader or task is kept per socket. A client message is handled in a task made when one
arrives and gone when the socket's inbox is empty; messages of one socket are handled
in order, and reading pauses while ``INBOX_LIMIT`` of them wait.

Writes are pre-framed bytes (``Connection.send``): no per-socket encoding, no
awaiting a slow socket. While the transport has nothing queued, a frame goes
straight to the socket (one ``send``, none of the transport's per-write
bookkeeping: the fan-out writes one frame to thousands of sockets per event);
what the kernel does not take is queued in the transport behind it, so order
holds. A socket whose unsent bytes pass ``send_buffer_bytes`` is closed
with 4200 (clients reconnect at once and recover what they missed), and never
holds up anyone else.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from confab.errors import Unavailable
from confab.httpserver import Upgraded, take_over
from confab.logging import get_logger
from confab_fanout import auth, protocol, websocket
from confab_fanout.apps import App
from confab_fanout.limits import TokenBucket
from confab_fanout.metrics import CLIENT_EVENTS, REFUSALS, SLOW_CLOSES
from confab_fanout.protocol import ClientFrame, Kind, ProtocolError
from confab_fanout.websocket import WebSocket

if TYPE_CHECKING:
    from confab_fanout.channels import Channel
    from confab_fanout.fanout import Fanout

log = get_logger("confab.fanout.connection")

MAX_CLIENT_EVENT_DATA = 10 * 1024
INBOX_LIMIT = 32  # client messages waiting to be handled before reading pauses


class Connection(WebSocket):
    __slots__ = (
        "address",
        "app",
        "channels",
        "closed",
        "closing",
        "control_pings",
        "fanout",
        "gone",
        "inbox",
        "joined_seqs",
        "last_seen",
        "limit",
        "limiter",
        "ping_sent",
        "principals",
        "resumes",
        "sock",
        "socket_id",
        "subscribe_limiter",
        "user_id",
    )

    def __init__(
        self,
        fanout: Fanout,
        transport: asyncio.Transport,
        app: App,
        socket_id: str,
        now: float,
        sock: socket.socket | None = None,
        address: str | None = None,
    ) -> None:
        settings = fanout.settings
        super().__init__(transport, settings.max_message_bytes, settings.shutdown_grace)
        self.fanout = fanout
        self.address = address  # the client's, for the connection limits
        # The transport's own socket (see ``raw_socket``); None: write through the transport.
        self.sock = sock
        self.app = app
        self.socket_id = socket_id
        self.channels: dict[str, Channel] = {}
        self.user_id: str | None = None  # after pusher:signin
        self.last_seen = now
        self.ping_sent = 0.0
        self.control_pings = False  # the client uses WebSocket pings: answer in kind
        self.limiter: TokenBucket | None = None  # made on the first client event
        self.subscribe_limiter: TokenBucket | None = None  # made on the first subscribe
        self.limit = fanout.settings.send_buffer_bytes
        self.closing = False  # no more writes
        self.closed = False  # close started
        # Conversation channels: the channel's last seq when this socket joined it.
        self.joined_seqs: dict[str, int] | None = None
        # confab:resume asked for before subscribing: channel -> after_seq.
        self.resumes: dict[str, int] | None = None
        # The users and sessions its authorizations named (``Fanout.bind``).
        self.principals: tuple[str, ...] = ()  # a tuple: most sockets have none, or one or two
        self.inbox: collections.deque[str | bytes] | None = None  # while messages wait
        self.gone: asyncio.Future[None] | None = None  # made by ``close``

    # -- writing (never blocks) ----------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Write a pre-framed WebSocket frame; a socket too far behind is closed (4200)."""
        if self.closing:
            return
        transport = self.transport
        sock = self.sock
        # Nothing queued in the transport (by us or by aiohttp): straight to the socket.
        if sock is not None and not transport._buffer:  # type: ignore[attr-defined]
            try:
                sent = sock.send(frame)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:  # reset, or closed under us: the transport goes too
                self.closing = True
                transport.abort()
                return
            if sent == len(frame):
                return
            frame = frame[sent:]  # the rest waits in the transport until the socket drains
        elif transport.get_write_buffer_size() > self.limit:
            self.closing = True
            SLOW_CLOSES.inc()
            self.fanout.spawn(self.close(protocol.RECONNECT, "Too slow: send buffer full"))
            return
        if transport.is_closing():
            self.closing = True
            return
        transport.write(frame)

    def send_frame(self, payload: bytes) -> None:
        """Write one JSON frame (not yet WebSocket-framed)."""
        self.send(protocol.ws_text(payload))

    def overflowed(self, channel: str) -> None:
        """Too much live traffic held back while it caught up on ``channel``: like a full
        send buffer, the socket goes with 4200 (the client reconnects and resumes)."""
        if self.closing:
            return
        self.closing = True
        SLOW_CLOSES.inc()
        self.fanout.spawn(self.close(protocol.RECONNECT, "Too slow: catching up took too long"))

    async def close(self, code: int, message: str) -> None:
        """``pusher:error`` with ``code``, then a close with the same code; returns when the
        connection is gone (the client answered, or ``shutdown_grace`` passed)."""
        if not self.closed:
            self.closed = True
            self.closing = True
            self.gone = asyncio.get_running_loop().create_future()
            self.start_close(code, message, protocol.ws_text(protocol.error(code, message)))
        if self.gone is not None and self.state != websocket.CLOSED:
            await asyncio.shield(self.gone)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.closing = True
        self.inbox = None
        if self.gone is not None and not self.gone.done():
            self.gone.set_result(None)
        self.fanout.spawn(self._leave())

    async def _leave(self) -> None:
        fanout = self.fanout
        limits = fanout.connection_limits
        limits.disconnect(self.address, self.app.id)
        if self.user_id is not None:
            limits.sign_out(self.app.id, self.user_id)
        await fanout.unregister(self)

    # -- reading -----------------------------------------------------------------------

    def heard(self) -> None:
        self.last_seen = asyncio.get_running_loop().time()
        self.ping_sent = 0.0

    def on_ping(self, payload: bytes) -> None:
        self.control_pings = True
        self.send(protocol.ws_pong(payload))

    def on_text(self, text: str) -> None:
        self._take(text)

    def on_binary(self, payload: bytes) -> None:
        self._take(payload)

    def _take(self, message: str | bytes) -> None:
        """Queue a client message; the first one waiting starts the task that handles them."""
        if self.closing:
            return  # being closed (its authority revoked, say): nothing more is taken from it
        inbox = self.inbox
        if inbox is None:
            inbox = self.inbox = collections.deque()
            inbox.append(message)
            self.fanout.spawn(self._handle_inbox(inbox))
            return
        inbox.append(message)
        if len(inbox) >= INBOX_LIMIT:
            self.transport.pause_reading()

    async def _handle_inbox(self, inbox: collections.deque[str | bytes]) -> None:
        try:
            while inbox:
                message = inbox[0]
                if isinstance(message, bytes):
                    self.send_frame(
                        protocol.error(protocol.RECONNECT, "Binary frames not supported")
                    )
                else:
                    await self.handle_text(message)
                inbox.popleft()
                if len(inbox) == INBOX_LIMIT - 1 and self.state == websocket.OPEN:
                    self.transport.resume_reading()
        finally:
            if self.inbox is inbox:
                self.inbox = None

    async def handle_text(self, text: str) -> None:
        """One text message of the client (errors are answered, never raised)."""
        if self.closing:
            return  # being closed (its authority revoked, say): nothing more is taken from it
        try:
            await self._dispatch(text)
        except ProtocolError:
            self.send_frame(protocol.error(protocol.RECONNECT, "Invalid message format"))
        except Exception:
            log.exception("client_message_failed", socket_id=self.socket_id)
            self.send_frame(protocol.error(protocol.RECONNECT, "Internal error"))

    async def _dispatch(self, text: str) -> None:
        frame = protocol.decode_frame(text)
        event = frame.event
        if event == "pusher:ping":
            self.send(protocol.PONG)
        elif event == "pusher:pong":
            pass
        elif event == "pusher:subscribe":
            await self.subscribe(protocol.decode_data(frame.data, protocol.SubscribeData))
        elif event == "pusher:unsubscribe":
            channel = protocol.decode_data(frame.data, protocol.SubscribeData).channel
            await self.fanout.unsubscribe(self, channel)
        elif event == "pusher:signin":
            await self.signin(protocol.decode_data(frame.data, protocol.SigninData))
        elif event.startswith(protocol.CLIENT_EVENT_PREFIX):
            await self.client_event(frame)
        elif (extension := self.fanout.extensions.get(event)) is not None:
            await extension(self, frame)
        else:
            self.send_frame(protocol.error(None, f"Unsupported event {event[:100]}"))

    # -- subscriptions -----------------------------------------------------------------

    def _refuse(self, channel: str, error_type: str, message: str, status: int) -> None:
        self.send_frame(protocol.subscription_error(channel, error_type, message, status))

    async def subscribe(self, data: protocol.SubscribeData) -> None:
        name = data.channel
        if not protocol.valid_channel(name):
            self._refuse(name[:200], "InvalidChannel", "Invalid channel name.", 400)
            return
        if name not in self.channels and not self._may_join(name):
            return
        kind = protocol.channel_kind(name)
        app = self.app
        if kind.authorized and not auth.check_channel_auth(
            app.key, app.secret, self.socket_id, name, data.auth, data.channel_data
        ):
            self._refuse(name, "AuthError", "The connection is unauthorized.", 401)
            return
        user_id: str | None = None
        session_id: str | None = None
        role: str | None = None
        info = b"null"
        if kind is Kind.PRESENCE:
            member = self._presence_member(name, data.channel_data)
            if member is None:
                return
            user_id, session_id, info, role = member
        elif kind is Kind.USER and name != protocol.USER_CHANNEL_PREFIX + (self.user_id or ""):
            self._refuse(name, "AuthError", "Sign in as this user first.", 401)
            return
        elif kind is Kind.PRIVATE and data.channel_data:
            # Signed with the channel: who the app authorized (so that the socket can be
            # let go when that user loses access, e.g. leaves a conversation).
            try:
                named = msgspec.json.decode(data.channel_data, type=protocol.ChannelData)
                user_id = protocol.presence_user_id(named.user_id) or None
                session_id = named.session_id
                role = named.role
            except msgspec.DecodeError:
                user_id = None
        gate = self.fanout.gate
        if gate is not None and kind in (Kind.PRIVATE, Kind.PRESENCE, Kind.ENCRYPTED):
            refused = await gate.may_join(app.id, name, user_id, session_id, role)
            if refused is not None:
                self._refuse(name, "AuthError", refused, 403)
                return
            if self.closed or name in self.channels:
                return  # gone, or subscribed meanwhile, while the log was asked
        joined = self.fanout.join(self, name, kind, user_id, info)
        self.fanout.bind(self, user_id, session_id)
        reply = "{}"
        if kind is Kind.PRESENCE:
            assert user_id is not None
            reply = self.fanout.presence_snapshot(app.id, name, user_id, info)
        self.send_frame(protocol.subscription_succeeded(name, reply))
        if joined is not None:
            await self.fanout.announce_join(joined, user_id, info)

    def _may_join(self, name: str) -> bool:
        """Within the socket's channel limit and subscribe rate (refused with
        ``subscription_error`` 403 or 429 if not)."""
        settings = self.fanout.settings
        most = settings.max_subscriptions_per_socket
        if most and len(self.channels) >= most:
            REFUSALS.labels("subscriptions_per_socket").inc()
            self._refuse(
                name, "LimitReached", f"Too many channels: at most {most} per connection.", 403
            )
            return False
        if self.within_subscribe_rate():
            return True
        REFUSALS.labels("subscribe_rate").inc()
        rate = settings.subscribes_per_second
        self._refuse(
            name, "LimitReached", f"Too many subscriptions: at most {rate:g} per second.", 429
        )
        return False

    def within_subscribe_rate(self) -> bool:
        """Take a token of the socket's subscribe rate, which subscriptions and resumes
        share (each makes the node ask the log); False if there is none."""
        settings = self.fanout.settings
        rate = settings.subscribes_per_second
        if not rate:
            return True
        now = time.monotonic()
        limiter = self.subscribe_limiter
        if limiter is None:
            limiter = self.subscribe_limiter = TokenBucket(rate, now, settings.subscribe_burst)
        return limiter.take(now)

    def _presence_member(
        self, name: str, channel_data: str | None
    ) -> tuple[str, str | None, bytes, str | None] | None:
        settings = self.fanout.settings
        try:
            parsed = msgspec.json.decode(channel_data or "", type=protocol.ChannelData)
        except msgspec.DecodeError:
            self._refuse(name, "InvalidChannelData", "channel_data needs a user_id.", 400)
            return None
        user_id = protocol.presence_user_id(parsed.user_id)
        info = bytes(parsed.user_info)
        if not user_id or len(user_id) > 200:
            self._refuse(name, "InvalidChannelData", "Invalid user_id.", 400)
            return None
        if len(info) > settings.presence_max_member_bytes:
            self._refuse(name, "LimitReached", "user_info is too large.", 413)
            return None
        view = self.fanout.presence.view
        if view.user_count(
            self.app.id, name
        ) >= settings.presence_max_members and not view.has_user(self.app.id, name, user_id):
            self._refuse(name, "LimitReached", "The presence channel is full.", 403)
            return None
        return user_id, parsed.session_id, info, parsed.role

    async def signin(self, data: protocol.SigninData) -> None:
        app = self.app
        user_id = session_id = None
        if auth.check_user_auth(app.key, app.secret, self.socket_id, data.user_data, data.auth):
            try:
                signed = msgspec.json.decode(data.user_data, type=protocol.UserData)
                user_id, session_id = signed.id, signed.session_id
            except msgspec.DecodeError:
                user_id = None
        if not user_id:
            await self.close(protocol.UNAUTHORIZED, "Invalid signin: bad signature or user_data")
            return
        gate = self.fanout.gate
        refused = gate.refusal(app.id, user_id, session_id) if gate is not None else None
        if refused is not None:
            await self.close(protocol.UNAUTHORIZED, refused)
            return
        if self.user_id != user_id:
            limits = self.fanout.connection_limits
            refusal = limits.sign_in(app.id, user_id)
            if refusal is not None:
                await self.close(protocol.OVER_CAPACITY, refusal)
                return
            if self.user_id is not None:
                limits.sign_out(app.id, self.user_id)
                await self.fanout.unsubscribe(self, protocol.USER_CHANNEL_PREFIX + self.user_id)
        self.user_id = user_id
        self.fanout.bind(self, user_id, session_id)
        # Delivered to every socket signed in as the user, whether or not the
        # client subscribes to its #server-to-user channel (pusher-js does).
        name = protocol.USER_CHANNEL_PREFIX + user_id
        joined = self.fanout.join(self, name, Kind.USER)
        self.send_frame(protocol.signin_success(data.user_data))
        if joined is not None:
            await self.fanout.announce_join(joined, None, b"null")

    # -- client events -----------------------------------------------------------------

    async def client_event(self, frame: ClientFrame) -> None:
        name = frame.channel or ""
        channel = self.channels.get(name)
        if channel is None:
            self._reject_client_event(
                "not_subscribed",
                protocol.UNAUTHORIZED,
                "Client event rejected: not subscribed to the channel",
            )
            return
        if channel.kind not in (Kind.PRIVATE, Kind.PRESENCE, Kind.ENCRYPTED):
            self._reject_client_event(
                "public_channel",
                protocol.UNAUTHORIZED,
                "Client event rejected: only private and presence channels take them",
            )
            return
        limiter = self.limiter
        now = time.monotonic()
        if limiter is None:
            limiter = self.limiter = TokenBucket(self.fanout.settings.client_events_per_second, now)
        if not limiter.take(now):
            self._reject_client_event(
                "rate_limited", protocol.CLIENT_EVENT_REJECTED, "Client event rate limit exceeded"
            )
            return
        data = protocol.data_string(frame.data)
        if len(frame.event) > protocol.MAX_EVENT_NAME or len(data) > MAX_CLIENT_EVENT_DATA:
            self._reject_client_event(
                "too_large", protocol.CLIENT_EVENT_REJECTED, "Client event name or data too large"
            )
            return
        gate = self.fanout.gate
        signed = channel.sockets.get(self)  # the user the channel's authorization named
        refused = await gate.may_send(self.app.id, name, signed) if gate is not None else None
        if refused is not None:
            self._reject_client_event("refused", protocol.CLIENT_EVENT_REJECTED, refused)
            return
        CLIENT_EVENTS.labels("accepted").inc()
        user_id = signed if channel.kind is Kind.PRESENCE else None
        await self.fanout.client_event(self, name, frame.event, data, user_id)

    def _reject_client_event(self, outcome: str, code: int, message: str) -> None:
        CLIENT_EVENTS.labels(outcome).inc()
        self.send_frame(protocol.error(code, message))


async def serve(fanout: Fanout, request: web.Request) -> web.StreamResponse:
    """``GET /app/{key}?protocol=7``: the WebSocket. The handshake is answered here and
    the connection leaves aiohttp (``take_over``); a refused socket is told why in
    ``pusher:error`` and closed with the same code, as Pusher does."""
    settings = fanout.settings
    head = websocket.accept(request)
    app, refusal = await _admit(fanout, request)
    if app is None:
        code, message = refusal or (protocol.RECONNECT, "Connection lost")
        return _refuse(fanout, request, head, code, message)
    address = fanout.proxies.client(request)
    over = fanout.connection_limits.connect(address, app.id)
    if over is not None:
        return _refuse(fanout, request, head, protocol.OVER_CAPACITY, over)
    conn = Connection(
        fanout,
        request.transport,  # type: ignore[arg-type]  # the same one take_over hands over
        app,
        fanout.cluster.new_socket_id(),
        asyncio.get_running_loop().time(),
        address=address,
    )
    try:
        conn.release = take_over(request, conn, head)
    except ConnectionResetError:
        fanout.connection_limits.disconnect(address, app.id)
        return Upgraded()
    conn.sock = raw_socket(conn.transport)
    fanout.register(conn)
    conn.send_frame(protocol.connection_established(conn.socket_id, settings.activity_timeout))
    return Upgraded()


def _refuse(
    fanout: Fanout, request: web.Request, head: bytes, code: int, message: str
) -> web.StreamResponse:
    """A socket not taken: ``pusher:error`` with ``code``, then a close with the same code."""
    settings = fanout.settings
    refused = WebSocket(
        request.transport,  # type: ignore[arg-type]
        settings.max_message_bytes,
        settings.shutdown_grace,
    )
    try:
        refused.release = take_over(request, refused, head)
    except ConnectionResetError:
        return Upgraded()
    refused.start_close(code, message, protocol.ws_text(protocol.error(code, message)))
    return Upgraded()


def raw_socket(transport: asyncio.Transport) -> socket.socket | None:
    """The socket under a plain TCP transport of asyncio's selector loop, for
    ``Connection.send`` to write to while the transport has nothing queued; None
    (write through the transport) for TLS or any other kind of transport.

    This reads two private attributes of asyncio, checked here once: the
    ``TransportSocket``'s socket (it hides ``send``) and the transport's write
    queue ``_buffer`` (``get_write_buffer_size()`` per frame costs as much as the
    rest of the write in Python). Sending on the socket object, not on its file
    descriptor: once the transport has closed it, ``send`` fails instead of
    reaching whichever connection got the same descriptor number next.
    """
    if not isinstance(asyncio.get_running_loop(), asyncio.SelectorEventLoop):
        return None
    if transport.get_extra_info("sslcontext") is not None:
        return None
    if not isinstance(getattr(transport, "_buffer", None), (bytearray, collections.deque)):
        return None
    sock = getattr(transport.get_extra_info("socket"), "_sock", None)
    if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
        return None
    return sock


async def _admit(fanout: Fanout, request: web.Request) -> tuple[App | None, tuple[int, str] | None]:
    version = request.query.get("protocol")
    if version is None:
        return None, (protocol.NO_PROTOCOL, "No protocol version supplied")
    if version not in protocol.SUPPORTED_PROTOCOLS:
        return None, (protocol.UNSUPPORTED_PROTOCOL, f"Unsupported protocol version {version[:10]}")
    if fanout.closing:
        return None, (protocol.RECONNECT, "Server is closing")
    key = request.match_info["key"]
    try:
        app = await fanout.apps.by_key(key)
    except Unavailable:
        return None, (protocol.OVER_CAPACITY, "Apps cannot be looked up now; try again later")
    if app is None:
        return None, (protocol.APP_NOT_FOUND, "Application does not exist")
    return app, None

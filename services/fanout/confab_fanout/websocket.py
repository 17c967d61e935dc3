"""RFC 6455 on ``asyncio.Protocol``: the server side of a WebSocket after its handshake.

Why not aiohttp's ``WebSocketResponse``: for every open socket it keeps the upgrade
request, its parser, a reader, a writer and a task waiting in ``receive()`` (about
12 KB of Python objects, measured in session 7). Here a socket is its transport and
one object with ``__slots__`` (``Connection`` extends ``WebSocket``): the frame reader
is a few attributes of it, and nothing waits while the client is silent.

``accept`` checks the handshake and builds its answer; aiohttp routes the request as
usual, and ``confab.httpserver.take_over`` moves the connection here.

Reading takes frames straight from what each read brings; only a partial frame is
kept (``pending``), never more than the message limit allows, and it is parsed again
only once it can be whole (``need``): a client trickling a frame a byte at a time costs
an append per byte, not a copy of all it sent so far. What a server must
refuse closes the connection with the RFC's code: an unmasked client frame (§5.1), a
64-bit length with its top bit set (§5.2), a reserved bit with no extension agreed or a
reserved opcode, a control frame over 125
bytes or fragmented, a continuation with nothing to continue or a new message inside
a fragmented one (1002); text that is not UTF-8, checked once the message is whole,
or a close reason that is not (1007); a message over ``max_message`` bytes, known from
the first frame header that passes it (1009).

Closing: the side that starts sends its close frame. When it is us, we read on (data
frames are skipped, without keeping them) until the peer's close frame, then close
the TCP connection, or abort it after ``grace`` seconds. When it is the peer, we answer
1000 (§5.5.1 lets the answer echo the code or not) and close at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Callable

from aiohttp import web

from confab_fanout import protocol

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
NORMAL, PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1000, 1002, 1007, 1009
OPEN, CLOSING, CLOSED = 0, 1, 2

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HEAD = (
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Accept: {}\r\n\r\n"
)


def accept(request: web.BaseRequest) -> bytes:
    """The ``101 Switching Protocols`` answering ``request``'s handshake (RFC 6455 §4.2);
    ``web.HTTPBadRequest`` (or 426 for another protocol version) if it is not one."""
    headers = request.headers
    if "websocket" not in _tokens(headers.get("Upgrade", "")):
        raise web.HTTPBadRequest(text="This is a WebSocket endpoint: send Upgrade: websocket.")
    if "upgrade" not in _tokens(headers.get("Connection", "")):
        raise web.HTTPBadRequest(text="A WebSocket handshake needs Connection: Upgrade.")
    if headers.get("Sec-WebSocket-Version", "") != "13":
        raise web.HTTPUpgradeRequired(
            headers={"Sec-WebSocket-Version": "13"}, text="Only WebSocket version 13 is spoken."
        )
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise web.HTTPBadRequest(text="Sec-WebSocket-Key must be 16 bytes in base64.")
    digest = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
    return _HEAD.format(digest).encode()


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and as much of ``reason`` as fits in 123 bytes."""
    raw = reason.encode()[:123]
    return protocol.ws_frame(code.to_bytes(2, "big") + raw.decode(errors="ignore").encode(), CLOSE)


def valid_close_code(code: int) -> bool:
    """Codes a peer may send (RFC 6455 §7.4, IANA's 1012 to 1014): not 1004 to 1006, 1015."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def unmask(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``mask``, as one integer operation."""
    n = len(payload)
    if not n:
        return payload
    key = (mask * ((n + 3) // 4))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class WebSocket(asyncio.Protocol):
    """Frames in, messages out: ``on_text``, ``on_binary``, ``on_ping`` and ``heard`` are
    for subclasses (here they ignore everything: a socket refused at the handshake)."""

    __slots__ = (
        "fragment_opcode",
        "fragments",
        "fragments_size",
        "grace",
        "max_message",
        "need",
        "pending",
        "release",
        "skip",
        "state",
        "timer",
        "transport",
    )

    def __init__(self, transport: asyncio.Transport, max_message: int, grace: float) -> None:
        self.transport = transport
        self.max_message = max_message
        self.grace = grace
        self.state = OPEN
        self.pending: bytearray | None = None  # the start of a frame not yet whole
        self.need = 2  # how long ``pending`` must be for that frame to be whole
        self.skip = 0  # bytes of a skipped frame still to come (closing)
        self.fragments: list[bytes] | None = None  # a fragmented message so far
        self.fragment_opcode = TEXT
        self.fragments_size = 0
        self.timer: asyncio.TimerHandle | None = None
        # Given by ``take_over``: releases the listener's count of the connection.
        self.release: Callable[[], None] | None = None

    # -- for subclasses ------------------------------------------------------------------

    def heard(self) -> None:
        """Something arrived from the peer."""

    def on_text(self, text: str) -> None:
        """A whole text message."""

    def on_binary(self, payload: bytes) -> None:
        """A whole binary message."""

    def on_ping(self, payload: bytes) -> None:
        """A ping (answer it with ``protocol.ws_pong``)."""

    # -- closing -------------------------------------------------------------------------

    def start_close(self, code: int, reason: str = "", before: bytes = b"") -> None:
        """Send ``before`` (a last message) and our close frame; the connection goes when
        the peer answers, or after ``grace`` seconds."""
        if self.state != OPEN:
            return
        self.state = CLOSING
        self.fragments = None
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(before + close_frame(code, reason))
        self.timer = asyncio.get_running_loop().call_later(self.grace, transport.abort)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.state = CLOSED
        self.pending = self.fragments = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.release is not None:
            self.release()
            self.release = None

    # -- reading -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        self.heard()
        skip = self.skip
        if skip:
            if len(data) <= skip:
                self.skip = skip - len(data)
                return
            data = data[skip:]
            self.skip = 0
        pending = self.pending
        if pending is not None:
            pending += data
            if len(pending) < self.need:
                return  # a frame arriving in small pieces is not parsed again per piece
            data = bytes(pending)
            self.pending = None
        end = len(data)
        pos = 0
        need = 2  # bytes from ``pos`` that the frame there needs, if the loop stops short
        while end - pos >= 2:
            first = data[pos]
            second = data[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if end - pos < 4:
                    need = 4
                    break
                length = int.from_bytes(data[start : start + 2], "big")
                start += 2
            elif length == 127:
                if end - pos < 10:
                    need = 10
                    break
                length = int.from_bytes(data[start : start + 8], "big")
                start += 8
            masked = second & 0x80
            if masked:
                start += 4
            opcode = first & 0x0F
            if self.state == OPEN:
                refusal = self._refusal(first, opcode, length, masked)
                if refusal is not None:
                    self.start_close(*refusal)
            if self.state != OPEN:  # closing: only the peer's close frame matters
                if opcode == CLOSE:
                    self.transport.close()
                    self.state = CLOSED
                    return
                if end - start < length:
                    self.skip = length - (end - start)
                    return
                pos = start + length
                continue
            if end - start < length:
                need = start + length - pos
                break  # the rest of the frame is still to come (its size is allowed)
            payload = data[start : start + length]
            if masked:
                payload = unmask(payload, data[start - 4 : start])
            pos = start + length
            self._frame(first & 0x80, opcode, payload)
            if self.state == CLOSED:
                return
        if pos < end:
            self.pending = bytearray(data[pos:])
            self.need = need

    def _refusal(self, first: int, opcode: int, length: int, masked: int) -> tuple[int, str] | None:
        if length >> 63:
            return PROTOCOL_ERROR, "Frame length with its most significant bit set"
        if first & 0x70:
            return PROTOCOL_ERROR, "Reserved bits set: no extension was agreed"
        if not masked:
            return PROTOCOL_ERROR, "Client frames must be masked"
        if opcode & 0x8:
            if opcode > PONG:
                return PROTOCOL_ERROR, "Reserved opcode"
            if not first & 0x80 or length > 125:
                return PROTOCOL_ERROR, "Control frames must be whole and at most 125 bytes"
            return None
        if opcode > BINARY:
            return PROTOCOL_ERROR, "Reserved opcode"
        if opcode == CONT:
            if self.fragments is None:
                return PROTOCOL_ERROR, "Continuation frame with nothing to continue"
            length += self.fragments_size
        elif self.fragments is not None:
            return PROTOCOL_ERROR, "A new message inside a fragmented one"
        if length > self.max_message:
            return TOO_BIG, f"Message too big: at most {self.max_message} bytes"
        return None

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (TEXT, BINARY):
            if fin:
                self._message(opcode, payload)
            else:
                self.fragments = [payload]
                self.fragment_opcode = opcode
                self.fragments_size = len(payload)
        elif opcode == CONT:
            fragments = self.fragments
            assert fragments is not None  # checked by _refusal
            fragments.append(payload)
            self.fragments_size += len(payload)
            if fin:
                self.fragments = None
                self._message(self.fragment_opcode, b"".join(fragments))
        elif opcode == PING:
            self.on_ping(payload)
        elif opcode == CLOSE:
            self._peer_closed(payload)
        # PONG: nothing to do (``heard`` has seen it)

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == BINARY:
            self.on_binary(payload)
            return
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            self.start_close(INVALID_DATA, "Text message is not UTF-8")
            return
        self.on_text(text)

    def _peer_closed(self, payload: bytes) -> None:
        """The peer's close frame: answered (1000, or the code of what is wrong with it),
        and the connection closed, since the peer sends nothing more."""
        code = NORMAL
        if len(payload) == 1:
            code = PROTOCOL_ERROR
        elif payload:
            if not valid_close_code(int.from_bytes(payload[:2], "big")):
                code = PROTOCOL_ERROR
            else:
                try:
                    payload[2:].decode()
                except UnicodeDecodeError:
                    code = INVALID_DATA
        transport = self.transport
        if not transport.is_closing():
            transport.write(close_frame(code))
            transport.close()
        self.state = CLOSED

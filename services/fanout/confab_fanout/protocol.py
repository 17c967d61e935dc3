"""Pusher Channels protocol 7 on the wire: frames, channel names, close codes. Pure.

Server frames are built as bytes once and written, already framed as WebSocket
text frames, to every socket that should get them (``ws_text``). Server→client
``data`` is always a JSON-encoded string; client→server ``data`` may be an
object or a string holding JSON, and both are accepted. Client frames and their
``data`` are decoded under ``confab.inbound``'s rules (UTF-8, at most 32 levels of
nesting, integers within 64 bits): one that breaks them is a ``ProtocolError``,
answered like any malformed frame, never an internal error.
"""

from __future__ import annotations

import re
import struct
from enum import Enum
from typing import Any, TypeVar

import msgspec

from confab import inbound

T = TypeVar("T")

# -- close and error codes (4000-4099 do not reconnect, 4100-4199 back off,
#    4200-4299 reconnect at once, 4300-4399 other errors) ---------------------------------

APP_NOT_FOUND = 4001
UNAUTHORIZED = 4009
UNSUPPORTED_PROTOCOL = 4007
NO_PROTOCOL = 4008
OVER_CAPACITY = 4100
RECONNECT = 4200
PONG_NOT_RECEIVED = 4201
CLIENT_EVENT_REJECTED = 4301

SUPPORTED_PROTOCOLS = frozenset({"5", "6", "7"})

# -- channels --------------------------------------------------------------------------

CHANNEL_NAME = re.compile(r"^#?[-a-zA-Z0-9_=@,.;]+$")
MAX_CHANNEL_NAME = 200
MAX_EVENT_NAME = 200
USER_CHANNEL_PREFIX = "#server-to-user-"
SOCKET_ID = re.compile(r"^\d+\.\d+$")
CLIENT_EVENT_PREFIX = "client-"


class Kind(Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    ENCRYPTED = "encrypted"
    PRESENCE = "presence"
    USER = "user"

    @property
    def authorized(self) -> bool:
        """Subscribing needs a signature from the app's backend."""
        return self in (Kind.PRIVATE, Kind.ENCRYPTED, Kind.PRESENCE)


def channel_kind(name: str) -> Kind:
    """By prefix, in pusher-js's order; cache variants behave like their base type."""
    if name.startswith("private-encrypted-"):
        return Kind.ENCRYPTED
    if name.startswith("private-"):
        return Kind.PRIVATE
    if name.startswith("presence-"):
        return Kind.PRESENCE
    if name.startswith(USER_CHANNEL_PREFIX):
        return Kind.USER
    return Kind.PUBLIC


def valid_channel(name: Any) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_CHANNEL_NAME
        and CHANNEL_NAME.match(name) is not None
        and (not name.startswith("#") or name.startswith(USER_CHANNEL_PREFIX))
    )


def valid_socket_id(value: Any) -> bool:
    return isinstance(value, str) and SOCKET_ID.match(value) is not None


# -- encoding ----------------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode
_PACK_LEN1 = struct.Struct("!BB").pack
_PACK_LEN2 = struct.Struct("!BBH").pack
_PACK_LEN3 = struct.Struct("!BBQ").pack


def ws_frame(payload: bytes, opcode: int) -> bytes:
    """One unmasked, final WebSocket frame (RFC 6455 §5.2), as a server sends it."""
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        return _PACK_LEN1(first, length) + payload
    if length < 65536:
        return _PACK_LEN2(first, 126, length) + payload
    return _PACK_LEN3(first, 127, length) + payload


def ws_text(payload: bytes) -> bytes:
    return ws_frame(payload, 0x1)


def ws_ping() -> bytes:
    return ws_frame(b"", 0x9)


def ws_pong(payload: bytes) -> bytes:
    return ws_frame(payload, 0xA)


def event_frame(event: str, channel: str | None, data: str, user_id: str | None = None) -> bytes:
    """``{"event":…,"channel":…,"data":"<string>"[,"user_id":…]}`` as JSON bytes."""
    parts = [b'{"event":', _encode(event)]
    if channel is not None:
        parts += (b',"channel":', _encode(channel))
    parts += (b',"data":', _encode(data))
    if user_id is not None:
        parts += (b',"user_id":', _encode(user_id))
    parts.append(b"}")
    return b"".join(parts)


def json_text(value: Any) -> str:
    return _encode(value).decode()


def connection_established(socket_id: str, activity_timeout: int) -> bytes:
    data = json_text({"socket_id": socket_id, "activity_timeout": activity_timeout})
    return event_frame("pusher:connection_established", None, data)


def error(code: int | None, message: str) -> bytes:
    return event_frame("pusher:error", None, json_text({"code": code, "message": message}))


def subscription_succeeded(channel: str, data: str = "{}") -> bytes:
    return event_frame("pusher_internal:subscription_succeeded", channel, data)


def subscription_error(channel: str, error_type: str, message: str, status: int) -> bytes:
    data = json_text({"type": error_type, "error": message, "status": status})
    return event_frame("pusher:subscription_error", channel, data)


def presence_data(members: dict[str, msgspec.Raw]) -> str:
    """``{"presence":{"ids":[…],"hash":{id: user_info},"count":n}}`` from raw user_info JSON."""
    return json_text({"presence": {"ids": list(members), "hash": members, "count": len(members)}})


def member_added(channel: str, user_id: str, user_info: msgspec.Raw) -> bytes:
    data = json_text({"user_id": user_id, "user_info": user_info})
    return event_frame("pusher_internal:member_added", channel, data)


def member_removed(channel: str, user_id: str) -> bytes:
    return event_frame("pusher_internal:member_removed", channel, json_text({"user_id": user_id}))


def signin_success(user_data: str) -> bytes:
    return event_frame("pusher:signin_success", None, json_text({"user_data": user_data}))


PONG = ws_text(event_frame("pusher:pong", None, "{}"))
PING = ws_text(event_frame("pusher:ping", None, "{}"))

# -- decoding ----------------------------------------------------------------------------

_EMPTY = msgspec.Raw(b"{}")


class ProtocolError(Exception):
    """A client frame that cannot be understood."""


class ClientFrame(msgspec.Struct, frozen=True):
    event: str
    channel: str | None = None
    data: msgspec.Raw = _EMPTY


class SubscribeData(msgspec.Struct, frozen=True):
    channel: str
    auth: str = ""
    channel_data: str | None = None


class SigninData(msgspec.Struct, frozen=True):
    auth: str
    user_data: str


class ChannelData(msgspec.Struct, frozen=True):
    """The ``channel_data`` a backend signed: the presence member, or who a private
    channel is authorized for; Confab's gateway adds the session that asked."""

    user_id: str | int
    user_info: msgspec.Raw = msgspec.Raw(b"null")
    session_id: str | None = None
    role: str | None = None  # a workspace staff member's role (the inbox channel, issue 19)


class UserData(msgspec.Struct, frozen=True):
    """``pusher:signin``'s ``user_data``; Confab's gateway adds the session that asked."""

    id: str
    session_id: str | None = None


_frame = msgspec.json.Decoder(ClientFrame)
_string = msgspec.json.Decoder(str)
_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


def decode_frame(text: str | bytes) -> ClientFrame:
    """A client frame, under ``confab.inbound``'s rules (UTF-8, nesting, 64-bit numbers)."""
    try:
        return inbound.decode(text, _frame)
    except (inbound.Refused, msgspec.DecodeError) as exc:
        raise ProtocolError(str(exc)) from None


def unwrap(raw: msgspec.Raw) -> bytes:
    """The JSON of a frame's ``data``: a string holding JSON is decoded; ``""`` is ``{}``."""
    body = bytes(raw)
    if body[:1] == b'"':
        inner = _string.decode(body)
        if not inner.strip():
            return b"{}"
        return inner.encode()
    return body


def decode_data(raw: msgspec.Raw, type_: type[T]) -> T:
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    try:
        return inbound.decode(unwrap(raw), decoder)
    except (inbound.Refused, msgspec.DecodeError, UnicodeError) as exc:
        raise ProtocolError(str(exc)) from None


def data_string(raw: msgspec.Raw) -> str:
    """A client event's ``data`` as the string a server frame carries, forwarded unchanged.

    An object becomes its JSON text; a string is kept as it is (not re-encoded).
    """
    body = bytes(raw)
    if body[:1] == b'"':
        return _string.decode(body)
    return body.decode()


def presence_user_id(value: str | int) -> str:
    """Members are deduplicated by the string form of ``user_id`` (Laravel sends ints)."""
    return value if isinstance(value, str) else str(value)

"""Frames, channel names and client-frame decoding (pure)."""

from __future__ import annotations

import json

import msgspec
import pytest

from confab_fanout import protocol
from confab_fanout.protocol import Kind, ProtocolError


def test_server_data_is_a_json_encoded_string() -> None:
    frame = json.loads(protocol.connection_established("123.456", 30))
    assert frame["event"] == "pusher:connection_established"
    assert isinstance(frame["data"], str)
    assert json.loads(frame["data"]) == {"socket_id": "123.456", "activity_timeout": 30}
    assert "channel" not in frame


def test_event_frame_passes_names_and_data_through_verbatim() -> None:
    name = "App\\Events\\MessageCreated"
    data = '{"text":"héllo \\"x\\""}'
    frame = json.loads(protocol.event_frame(name, "private-chat.1;a=b@c", data))
    assert frame == {"event": name, "channel": "private-chat.1;a=b@c", "data": data}
    with_user = json.loads(protocol.event_frame("client-typing", "presence-a", "{}", "42"))
    assert with_user["user_id"] == "42"


def test_error_and_subscription_frames() -> None:
    error = json.loads(protocol.error(4001, "Application does not exist"))
    assert error["event"] == "pusher:error"
    assert json.loads(error["data"]) == {"code": 4001, "message": "Application does not exist"}
    failed = json.loads(protocol.subscription_error("private-x", "AuthError", "no", 401))
    assert failed["channel"] == "private-x"
    assert json.loads(failed["data"]) == {"type": "AuthError", "error": "no", "status": 401}
    ok = json.loads(protocol.subscription_succeeded("orders"))
    assert ok == {
        "event": "pusher_internal:subscription_succeeded",
        "channel": "orders",
        "data": "{}",
    }


def test_presence_frames_carry_string_data() -> None:
    members = {"1": msgspec.Raw(b'{"name":"A"}'), "2": msgspec.Raw(b"null")}
    data = json.loads(protocol.presence_data(members))
    assert data == {
        "presence": {"ids": ["1", "2"], "hash": {"1": {"name": "A"}, "2": None}, "count": 2}
    }
    added = json.loads(protocol.member_added("presence-r", "1", msgspec.Raw(b'{"name":"A"}')))
    assert json.loads(added["data"]) == {"user_id": "1", "user_info": {"name": "A"}}
    removed = json.loads(protocol.member_removed("presence-r", "1"))
    assert json.loads(removed["data"]) == {"user_id": "1"}


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 70000])
def test_websocket_text_frames(size: int) -> None:
    payload = b"x" * size
    frame = protocol.ws_text(payload)
    assert frame[0] == 0x81  # FIN + text, unmasked
    if size < 126:
        assert frame[1] == size and frame[2:] == payload
    elif size < 65536:
        assert frame[1] == 126 and int.from_bytes(frame[2:4], "big") == size
        assert frame[4:] == payload
    else:
        assert frame[1] == 127 and int.from_bytes(frame[2:10], "big") == size
        assert frame[10:] == payload
    assert protocol.ws_ping() == b"\x89\x00"
    assert protocol.ws_pong(b"ab") == b"\x8a\x02ab"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("orders", Kind.PUBLIC),
        ("cache-orders", Kind.PUBLIC),
        ("private-orders.1", Kind.PRIVATE),
        ("private-cache-x", Kind.PRIVATE),
        ("private-encrypted-x", Kind.ENCRYPTED),
        ("presence-room.1", Kind.PRESENCE),
        ("#server-to-user-42", Kind.USER),
    ],
)
def test_channel_kinds(name: str, kind: Kind) -> None:
    assert protocol.channel_kind(name) is kind
    assert protocol.valid_channel(name)


@pytest.mark.parametrize("name", ["", "a b", "a/b", "x" * 201, "#other", "é", None, 5])
def test_invalid_channel_names(name: object) -> None:
    assert not protocol.valid_channel(name)


def test_socket_ids() -> None:
    assert protocol.valid_socket_id("123.456")
    for bad in ("123", "a.b", "1.2.3", "", " 1.2", None):
        assert not protocol.valid_socket_id(bad)


def test_client_data_as_object_or_json_string() -> None:
    as_object = protocol.decode_frame(
        '{"event":"pusher:subscribe","data":{"auth":"","channel":"orders"}}'
    )
    as_string = protocol.decode_frame(
        '{"event":"pusher:subscribe","data":"{\\"auth\\":\\"\\",\\"channel\\":\\"orders\\"}"}'
    )
    for frame in (as_object, as_string):
        data = protocol.decode_data(frame.data, protocol.SubscribeData)
        assert data == protocol.SubscribeData(channel="orders", auth="")


def test_empty_or_missing_ping_data_is_an_object() -> None:
    for text in ('{"event":"pusher:ping","data":""}', '{"event":"pusher:ping"}'):
        frame = protocol.decode_frame(text)
        assert frame.event == "pusher:ping"
        assert protocol.unwrap(frame.data) == b"{}"


def test_unparseable_frames_raise_protocol_error() -> None:
    for text in ("nope", "{}", '{"event":1}', "[]"):
        with pytest.raises(ProtocolError):
            protocol.decode_frame(text)
    frame = protocol.decode_frame('{"event":"pusher:subscribe","data":{"auth":""}}')
    with pytest.raises(ProtocolError):
        protocol.decode_data(frame.data, protocol.SubscribeData)


def test_client_event_data_is_forwarded_unchanged() -> None:
    obj = protocol.decode_frame('{"event":"client-x","channel":"c","data":{"a": [1, 2]}}')
    assert protocol.data_string(obj.data) == '{"a": [1, 2]}'
    text = protocol.decode_frame('{"event":"client-x","channel":"c","data":"{\\"a\\":1}"}')
    assert protocol.data_string(text.data) == '{"a":1}'
    plain = protocol.decode_frame('{"event":"client-x","channel":"c","data":"hello"}')
    assert protocol.data_string(plain.data) == "hello"


def test_presence_user_ids_are_strings() -> None:
    laravel = msgspec.json.decode(
        b'{"user_id":10,"user_info":{"name":"Mr. Channels"}}', type=protocol.ChannelData
    )
    assert protocol.presence_user_id(laravel.user_id) == "10"
    assert protocol.presence_user_id("u-1") == "u-1"
    assert bytes(laravel.user_info) == b'{"name":"Mr. Channels"}'

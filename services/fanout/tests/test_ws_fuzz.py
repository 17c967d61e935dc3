"""Hostile input on the Pusher WebSocket, against the session's real fanout process.

Frames go over a plain TCP socket with our own RFC 6455 framing, so that frames no
client library would send (bad reserved bits, unmasked, fragmented control frames,
invalid UTF-8, lying lengths) can be sent. Each case checks the documented answer
(``pusher:error`` codes, WebSocket close codes) and, meanwhile, an observer socket
subscribed to a channel must keep receiving every event triggered on it, in order:
a hostile socket must never cost anyone else anything.

After a hostile frame, a ``pusher:ping`` is sent and every frame before its
``pusher:pong`` is the server's answer to the hostile one (a socket's frames are
handled and answered in order), so nothing here waits for something not to happen.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confab_fanout.testing import (
    FanoutNode,
    TestApp,
)

MAX_MESSAGE = 16 * 1024  # FanoutSettings.max_message_bytes (the node runs the default)
LARGEST = MAX_MESSAGE  # the setting is the largest message read
MAX_SUBSCRIPTIONS = 100  # FanoutSettings.max_subscriptions_per_socket
TIMEOUT = 15.0
PING = b'{"event":"pusher:ping","data":{}}'

# Opcodes (RFC 6455 §5.2).
CONT, TEXT, BINARY, CLOSE, PING_OP, PONG_OP = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# WebSocket close codes (RFC 6455 §7.4.1).
PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1002, 1007, 1009

SENT: Counter[str] = Counter()  # frames sent per case, reported at the end of the module


# -- a WebSocket client that sends whatever it is told to -------------------------------------


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def json(self) -> dict[str, Any]:
        assert self.opcode == TEXT, f"expected a text frame, got opcode {self.opcode:#x}"
        frame = json.loads(self.payload)
        if isinstance(frame.get("data"), str) and frame["data"][:1] in ("{", "["):
            frame["data"] = json.loads(frame["data"])
        return frame

    @property
    def close_code(self) -> int | None:
        assert self.opcode == CLOSE, f"expected a close frame, got {self.payload[:200]!r}"
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None


class Closed(Exception):
    """The server closed the WebSocket (``code``) where an answer was expected."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """One client frame, masked with a random key; ``length`` lies about the payload's
    length in the header."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if masked:
        key = os.urandom(4)
        head += key
        mask = (key * (len(payload) // 4 + 1))[: len(payload)]
        masked_int = int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")
        payload = masked_int.to_bytes(len(payload), "big")
    return head + payload


class RawSocket:
    """Blocking RFC 6455 client; ``send`` frames anything, counted under ``case``."""

    def __init__(
        self,
        node: FanoutNode,
        key: str,
        case: str,
        *,
        sock: socket.socket | None = None,
        then: bytes = b"",
    ) -> None:
        """``sock``: a connection already used for HTTP; ``then``: bytes sent in the same
        write as the handshake (frames that do not wait for its answer)."""
        self.case = case
        self.sock = sock or socket.create_connection((node.host, node.port), timeout=TIMEOUT)
        self.buffer = b""
        nonce = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /app/{key}?protocol=7&client=fuzz HTTP/1.1\r\n"
                f"Host: {node.host}:{node.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
            + then
        )
        head = self._read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        accept = base64.b64encode(
            hashlib.sha1((nonce + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        )
        assert b"\r\nsec-websocket-accept: " + accept.lower() in head.lower(), head
        established = self.recv().json
        assert established["event"] == "pusher:connection_established", established
        self.socket_id: str = established["data"]["socket_id"]

    def __enter__(self) -> RawSocket:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.sock.close()

    # -- writing ---------------------------------------------------------------------------

    def send(self, opcode: int, payload: bytes, **how: Any) -> None:
        """One frame, made by ``encode_frame`` (``how``: its ``fin``, ``rsv``, ``masked``,
        ``length``)."""
        frame = encode_frame(opcode, payload, **how)
        SENT[self.case] += 1
        # The server may close before reading all of a frame it refused.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(frame)

    def text(self, payload: bytes | str) -> None:
        self.send(TEXT, payload.encode() if isinstance(payload, str) else payload)

    def event(self, event: str, data: Any = None, channel: str | None = None) -> None:
        frame: dict[str, Any] = {"event": event}
        if data is not None:
            frame["data"] = data
        if channel is not None:
            frame["channel"] = channel
        self.text(json.dumps(frame))

    # -- reading ---------------------------------------------------------------------------

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the TCP connection")
        self.buffer += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def recv(self) -> Frame:
        first, second = self._take(2)
        assert not second & 0x80, "server frames must not be masked"
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._take(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._take(8))[0]
        return Frame(bool(first & 0x80), first & 0x0F, self._take(size))

    def answers(self) -> list[dict[str, Any]]:
        """Send the ping sentinel; the JSON frames the server sent before its pong."""
        self.text(PING)
        out = []
        while True:
            frame = self.recv()
            if frame.opcode in (PING_OP, PONG_OP):
                continue
            if frame.opcode == CLOSE:
                raise Closed(frame.close_code)
            message = frame.json
            if message["event"] == "pusher:pong":
                return out
            if message["event"] != "pusher:ping":  # the server's own keep-alive
                out.append(message)

    def closed_with(self) -> int | None:
        """The close code of the server's close frame (skipping what it sent before)."""
        while True:
            frame = self.recv()
            if frame.opcode == CLOSE:
                return frame.close_code

    def errors_then_close(self) -> tuple[list[int | None], int | None]:
        """``pusher:error`` codes the server sent, then its close code."""
        codes = []
        while True:
            frame = self.recv()
            if frame.opcode == CLOSE:
                return codes, frame.close_code
            if frame.opcode == TEXT and (message := frame.json)["event"] == "pusher:error":
                codes.append(message["data"]["code"])


def error_codes(answers: list[dict[str, Any]]) -> list[int | None]:
    assert all(a["event"] == "pusher:error" for a in answers), answers
    return [a["data"]["code"] for a in answers]


# -- the bystander -----------------------------------------------------------------------------


class Observer(threading.Thread):
    """A well-behaved client on channel ``fuzz-watch``: keeps every ``tick`` it receives."""

    CHANNEL = "fuzz-watch"

    def __init__(self, node: FanoutNode, app: TestApp) -> None:
        super().__init__(daemon=True)
        self.node, self.app = node, app
        self.ws = RawSocket(node, app.key, "observer")
        self.ws.event("pusher:subscribe", {"channel": self.CHANNEL})
        reply = self.ws.recv().json
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply
        self.ticks: list[int] = []
        self.failure: str | None = None
        self.changed = threading.Condition()
        self.sent = 0
        self.stopping = False

    def run(self) -> None:
        try:
            while not self.stopping:
                try:
                    frame = self.ws.recv()
                except TimeoutError:
                    continue
                if frame.opcode == CLOSE:
                    raise AssertionError(f"closed with {frame.close_code}")
                message = frame.json
                if message["event"] == "pusher:ping":  # answer the server's keep-alive
                    self.ws.event("pusher:pong", {})
                elif message["event"] == "tick":
                    with self.changed:
                        self.ticks.append(message["data"]["n"])
                        self.changed.notify_all()
                else:
                    raise AssertionError(f"unexpected frame {message}")
        except Exception as exc:
            if not self.stopping:
                with self.changed:
                    self.failure = f"{type(exc).__name__}: {exc}"
                    self.changed.notify_all()

    def tick(self) -> None:
        """Trigger the next tick through the HTTP API and wait until it arrived."""
        n = self.sent
        self.sent += 1
        self.app.client(self.node).trigger(self.CHANNEL, "tick", {"n": n})
        deadline = time.monotonic() + TIMEOUT
        with self.changed:
            while len(self.ticks) < self.sent and self.failure is None:
                left = deadline - time.monotonic()
                assert left > 0, f"tick {n} did not arrive; got {self.ticks[-5:]}"
                self.changed.wait(left)
            assert self.failure is None, f"the observer failed: {self.failure}"
            assert self.ticks == list(range(self.sent)), self.ticks

    def stop(self) -> None:
        self.stopping = True
        self.ws.sock.close()


@pytest.fixture(scope="module")
def observer(node: FanoutNode, module_app: TestApp) -> Iterator[Observer]:
    watcher = Observer(node, module_app)
    watcher.start()
    watcher.tick()
    yield watcher
    watcher.tick()
    watcher.stop()
    print(f"\nfuzz frames sent: {sum(SENT.values())} {dict(sorted(SENT.items()))}")


@pytest.fixture
def hostile(node: FanoutNode, module_app: TestApp, observer: Observer) -> Iterator[Any]:
    """Open hostile sockets for a case; afterwards the node is healthy and the observer
    still gets every event."""
    opened: list[RawSocket] = []

    def open_socket(case: str) -> RawSocket:
        ws = RawSocket(node, module_app.key, case)
        opened.append(ws)
        return ws

    yield open_socket
    for ws in opened:
        ws.sock.close()
    observer.tick()
    assert node.process is not None and node.process.poll() is None, node.logs()


def channel_auth(app: TestApp, socket_id: str, channel: str) -> str:
    digest = hmac.new(app.secret.encode(), f"{socket_id}:{channel}".encode(), hashlib.sha256)
    return f"{app.key}:{digest.hexdigest()}"


# -- B. hostile Pusher messages ---------------------------------------------------------------


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.text(max_size=300).filter(_not_json), min_size=1, max_size=8))
def test_malformed_json_gets_4200_and_the_socket_stays(hostile: Any, texts: list[str]) -> None:
    with hostile("malformed json") as ws:
        for text in texts:
            ws.text(text)
        assert error_codes(ws.answers()) == [4200] * len(texts)


# Any JSON value, for the fields a frame should have.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=10,
)
events = st.sampled_from(
    ["pusher:subscribe", "pusher:unsubscribe", "pusher:signin", "pusher:ping", "pusher:pong",
     "client-x", "confab:resume", "pusher:unknown", "", "App\\Event"]
)  # fmt: skip
data_fields = st.fixed_dictionaries(
    {},
    optional={
        "channel": json_values | st.sampled_from(["fuzz-a", "private-a", "presence-a", "#x"]),
        "auth": json_values,
        "channel_data": json_values,
        "user_data": json_values,
        "after_seq": json_values,
    },
)
frames = st.fixed_dictionaries(
    {},
    optional={
        "event": events | json_values,
        "data": data_fields | data_fields.map(json.dumps) | json_values,
        "channel": json_values,
    },
)

# What the server may answer to a frame that is wrong in shape, type or content.
ALLOWED_ANSWERS = {
    "pusher:error",
    "pusher:subscription_error",
    "pusher_internal:subscription_succeeded",
    "confab:resume_failed",
}
ALLOWED_ERRORS = {None, 4009, 4200, 4301}


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(frames, min_size=1, max_size=6))
def test_wrong_types_missing_fields_and_unknown_events(
    hostile: Any, messages: list[dict[str, Any]]
) -> None:
    """Every answer is a documented error or an ordinary reply; only a bad sign-in closes."""
    with hostile("wrong types, missing fields, unknown events") as ws:
        for message in messages:
            ws.text(json.dumps(message))
        try:
            answers = ws.answers()
        except Closed as closed:  # a sign-in with a bad signature: 4009, as Pusher does
            assert any(m.get("event") == "pusher:signin" for m in messages), closed
            assert closed.code == 4009
            return
    for answer in answers:
        assert answer["event"] in ALLOWED_ANSWERS, answer
        if answer["event"] == "pusher:error":
            assert answer["data"]["code"] in ALLOWED_ERRORS, answer


def test_each_kind_of_bad_frame_gets_its_documented_answer(hostile: Any) -> None:
    ws = hostile("documented answers")
    cases: list[tuple[Any, str, int | None]] = [
        ({}, "pusher:error", 4200),  # no event
        ({"event": 1}, "pusher:error", 4200),
        ({"event": "pusher:subscribe"}, "pusher:error", 4200),  # no channel
        ({"event": "pusher:subscribe", "data": {"channel": 5}}, "pusher:error", 4200),
        ({"event": "pusher:subscribe", "data": "not json"}, "pusher:error", 4200),
        ({"event": "pusher:subscribe", "data": []}, "pusher:error", 4200),
        ({"event": "pusher:subscribe", "data": {"channel": "a b"}}, "subscription_error", 400),
        ({"event": "pusher:subscribe", "data": {"channel": "x" * 201}}, "subscription_error", 400),
        ({"event": "pusher:subscribe", "data": {"channel": "private-a", "auth": "k:0"}},
         "subscription_error", 401),
        ({"event": "pusher:signin", "data": {}}, "pusher:error", 4200),
        ({"event": "pusher:nonsense"}, "pusher:error", None),
        ({"event": "App\\Event", "data": {}}, "pusher:error", None),
        ({"event": "client-x", "channel": "fuzz-a", "data": {}}, "pusher:error", 4009),
    ]  # fmt: skip
    for frame, event, code in cases:
        ws.text(json.dumps(frame))
        (answer,) = ws.answers()
        if event == "subscription_error":
            assert answer["event"] == "pusher:subscription_error", (frame, answer)
            assert answer["data"]["status"] == code, (frame, answer)
        else:
            assert answer["event"] == event and answer["data"]["code"] == code, (frame, answer)


def test_binary_frames_get_4200_and_the_socket_stays(hostile: Any) -> None:
    ws = hostile("binary frames")
    for size in (0, 1, 125, 126, 4096, LARGEST):
        ws.send(BINARY, os.urandom(size))
        assert error_codes(ws.answers()) == [4200]


def test_the_largest_message_is_read_and_a_bigger_one_closes_with_1009(hostile: Any) -> None:
    ws = hostile("message size")
    ws.text(PING[:-1] + b" " * (LARGEST - len(PING)) + b"}")
    assert ws.recv().json["event"] == "pusher:pong"
    ws.text(b" " * (LARGEST + 1))
    assert ws.closed_with() == TOO_BIG
    ws = hostile("message size")
    ws.send(BINARY, b"\0" * (4 * MAX_MESSAGE))
    assert ws.closed_with() == TOO_BIG


def test_a_frame_claiming_a_huge_length_is_refused_without_reading_it(hostile: Any) -> None:
    ws = hostile("huge length")
    ws.send(TEXT, b"x" * 100, length=2**62)
    assert ws.closed_with() == TOO_BIG


def test_a_64_bit_length_with_its_top_bit_set_closes_with_1002(hostile: Any) -> None:
    """RFC 6455 §5.2: the most significant bit of a 64-bit length must be 0."""
    ws = hostile("huge length")
    ws.send(TEXT, b"x" * 100, length=2**63 + 5)
    assert ws.closed_with() == PROTOCOL_ERROR


def test_a_subscribe_flood_is_cut_at_the_per_socket_limit_and_cleaned_up(
    hostile: Any, node: FanoutNode, module_app: TestApp
) -> None:
    """1000 subscribes on one socket: the first 100 (the default of
    ``CONFAB_FANOUT_MAX_SUBSCRIPTIONS_PER_SOCKET``) succeed, the rest get
    ``subscription_error`` 403, subscribing again to a channel the socket is in still
    succeeds, and all are gone once the socket is."""
    ws = hostile("subscribe flood")
    names = [f"fuzz-flood-{i}" for i in range(1000)]
    for name in names:
        ws.event("pusher:subscribe", {"channel": name})
    for name in names[:MAX_SUBSCRIPTIONS]:  # again: idempotent
        ws.event("pusher:subscribe", {"channel": name})
    answers = ws.answers()
    succeeded = "pusher_internal:subscription_succeeded"
    assert [a["event"] for a in answers] == (
        [succeeded] * MAX_SUBSCRIPTIONS
        + ["pusher:subscription_error"] * (1000 - MAX_SUBSCRIPTIONS)
        + [succeeded] * MAX_SUBSCRIPTIONS
    )
    assert [a["channel"] for a in answers] == names + names[:MAX_SUBSCRIPTIONS]
    refused = answers[MAX_SUBSCRIPTIONS:1000]
    assert {(a["data"]["type"], a["data"]["status"]) for a in refused} == {("LimitReached", 403)}
    names = names[:MAX_SUBSCRIPTIONS]
    sdk = module_app.client(node)
    occupied = sdk.channels_info(prefix_filter="fuzz-flood-")["channels"]
    assert set(occupied) == set(names)
    ws.sock.close()
    deadline = time.monotonic() + TIMEOUT
    while sdk.channels_info(prefix_filter="fuzz-flood-")["channels"]:
        assert time.monotonic() < deadline, "the closed socket's channels are still occupied"
        time.sleep(0.1)


def test_a_client_event_flood_is_rate_limited_with_4301_and_nothing_is_lost(
    hostile: Any, module_app: TestApp
) -> None:
    """Every client event is either delivered to the other member or refused with 4301."""
    channel = "private-fuzz-whisper"
    flooder, peer = hostile("client-event flood"), hostile("client-event flood")
    for ws in (flooder, peer):
        auth = channel_auth(module_app, ws.socket_id, channel)
        ws.event("pusher:subscribe", {"channel": channel, "auth": auth})
        assert [a["event"] for a in ws.answers()] == ["pusher_internal:subscription_succeeded"]
    sent = 500
    for i in range(sent):
        flooder.event("client-typing", {"i": i}, channel)
    refused = error_codes(flooder.answers())
    assert set(refused) <= {4301} and len(refused) < sent
    delivered = [a["data"]["i"] for a in peer.answers() if a["event"] == "client-typing"]
    assert len(delivered) + len(refused) == sent
    assert delivered == sorted(delivered) and delivered[:10] == list(range(10))  # the burst


def test_a_connection_flood_from_one_address_is_served(hostile: Any) -> None:
    """300 sockets at once from one address are within the per-address limit (25,000)."""
    sockets = [hostile("connection flood") for _ in range(300)]
    assert len({ws.socket_id for ws in sockets}) == 300
    for ws in sockets[::30]:
        assert ws.answers() == []


# -- C. WebSocket framing (what Autobahn's fuzzing client would check) ---------------------------


def test_fragmented_messages_and_control_frames_between_fragments(hostile: Any) -> None:
    ws = hostile("framing")
    ws.send(TEXT, PING[:10], fin=False)
    ws.send(CONT, PING[10:20], fin=False)
    ws.send(PING_OP, b"between")  # a control frame may come between fragments
    ws.send(CONT, PING[20:], fin=True)
    pong = ws.recv()
    assert (pong.opcode, pong.payload) == (PONG_OP, b"between")
    assert ws.recv().json["event"] == "pusher:pong"
    ws.send(TEXT, b"", fin=False)  # empty fragments
    ws.send(CONT, b"", fin=False)
    ws.send(CONT, PING, fin=True)
    assert ws.recv().json["event"] == "pusher:pong"
    ws.send(PING_OP, b"x" * 125)  # the largest control payload
    assert ws.recv() == Frame(True, PONG_OP, b"x" * 125)
    ws.send(PONG_OP, b"unsolicited")  # ignored
    assert ws.answers() == []


def test_fragments_adding_up_past_the_limit_close_with_1009(hostile: Any) -> None:
    ws = hostile("framing")
    ws.send(TEXT, b" " * 8000, fin=False)
    ws.send(CONT, b" " * 8000, fin=False)
    ws.send(CONT, b" " * 8000, fin=True)
    assert ws.closed_with() == TOO_BIG


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([(CONT, b"{}", True, 0)], PROTOCOL_ERROR),  # continuation with nothing to continue
        ([(TEXT, b"{", False, 0), (TEXT, b"}", True, 0)], PROTOCOL_ERROR),  # new message
        ([(PING_OP, b"", False, 0)], PROTOCOL_ERROR),  # fragmented control frame
        ([(PING_OP, b"x" * 126, True, 0)], PROTOCOL_ERROR),  # control payload > 125
        ([(TEXT, PING, True, 1)], PROTOCOL_ERROR),  # RSV3, no extension agreed
        ([(TEXT, PING, True, 2)], PROTOCOL_ERROR),  # RSV2
        ([(TEXT, PING, True, 4)], PROTOCOL_ERROR),  # RSV1 (no permessage-deflate agreed)
        ([(0x3, b"", True, 0)], PROTOCOL_ERROR),  # reserved data opcode
        ([(0x7, b"", True, 0)], PROTOCOL_ERROR),
        ([(0xB, b"", True, 0)], PROTOCOL_ERROR),  # reserved control opcode
        ([(0xF, b"", True, 0)], PROTOCOL_ERROR),
        ([(TEXT, b'{"event":"\xff"}', True, 0)], INVALID_DATA),  # invalid UTF-8
        ([(TEXT, b"\xed\xa0\x80", True, 0)], INVALID_DATA),  # a UTF-16 surrogate
        ([(TEXT, b"\xce", False, 0), (CONT, b"\xba\xe1", True, 0)], INVALID_DATA),
        ([(CLOSE, b"\x03", True, 0)], PROTOCOL_ERROR),  # close payload of one byte
        ([(CLOSE, struct.pack("!H", 999), True, 0)], PROTOCOL_ERROR),  # invalid close code
        ([(CLOSE, struct.pack("!H", 1005), True, 0)], PROTOCOL_ERROR),  # never on the wire
        ([(CLOSE, struct.pack("!H", 1000) + b"\xff", True, 0)], INVALID_DATA),  # bad reason
    ],
    ids=[
        "lone continuation", "text inside fragments", "fragmented ping", "long ping",
        "rsv3", "rsv2", "rsv1", "opcode 3", "opcode 7", "opcode 11", "opcode 15",
        "invalid utf-8", "surrogate", "utf-8 split badly", "close 1 byte", "close 999",
        "close 1005", "close reason utf-8",
    ],
)  # fmt: skip
def test_protocol_violations_close_with_the_rfc_code(
    hostile: Any, frames: list[tuple[int, bytes, bool, int]], code: int
) -> None:
    ws = hostile("framing")
    for opcode, payload, fin, rsv in frames:
        ws.send(opcode, payload, fin=fin, rsv=rsv)
    assert ws.closed_with() == code


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
def test_a_valid_close_is_answered_with_a_normal_close(hostile: Any, code: int) -> None:
    """RFC 6455 §5.5.1 lets the answer echo the code or not; the fanout answers 1000."""
    ws = hostile("framing")
    ws.send(CLOSE, struct.pack("!H", code) + "bye ✓".encode())
    assert ws.closed_with() == 1000


def test_an_unmasked_client_frame_closes_with_1002(hostile: Any) -> None:
    """RFC 6455 §5.1: a server must close the connection on an unmasked client frame."""
    ws = hostile("framing")
    ws.send(TEXT, PING, masked=False)
    assert ws.closed_with() == PROTOCOL_ERROR


# -- D. The handshake, and the connection leaving aiohttp after it -----------------------------


def answer_head(sock: socket.socket) -> tuple[int, str, bytes]:
    """Status, head (lower case) and body (by Content-Length) of one HTTP answer."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(4096)
        assert chunk, raw
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    text = head.decode("latin-1").lower()
    length = next(
        (
            int(line.split(":", 1)[1])
            for line in text.split("\r\n")
            if line.startswith("content-length:")
        ),
        0,
    )
    while len(body) < length:
        body += sock.recv(4096)
    return int(text.split()[1]), text, body


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Upgrade": None}, 400),
        ({"Connection": "keep-alive"}, 400),
        ({"Sec-WebSocket-Key": None}, 400),
        ({"Sec-WebSocket-Key": "c2hvcnQ="}, 400),  # 5 bytes, not 16
        ({"Sec-WebSocket-Key": "not base64 at all!!!!!!="}, 400),
        ({"Sec-WebSocket-Version": "8"}, 426),
    ],
    ids=["no upgrade", "no connection upgrade", "no key", "short key", "bad key", "version 8"],
)  # fmt: skip
def test_a_request_that_is_not_a_websocket_handshake_is_refused(
    node: FanoutNode, module_app: TestApp, headers: dict[str, str | None], status: int
) -> None:
    fields: dict[str, str | None] = {
        "Host": "t",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        **headers,
    }
    lines = [f"GET /app/{module_app.key}?protocol=7 HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in fields.items() if value is not None]
    with socket.create_connection((node.host, node.port), timeout=TIMEOUT) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        got, head, _ = answer_head(sock)
    assert got == status, head
    if status == 426:
        assert "\r\nsec-websocket-version: 13" in head


def test_an_upgrade_after_a_request_on_the_same_connection_is_served(
    node: FanoutNode, module_app: TestApp
) -> None:
    """A kept-alive connection (a proxy's, say) may carry a request before its upgrade."""
    sock = socket.create_connection((node.host, node.port), timeout=TIMEOUT)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    status, _, _ = answer_head(sock)
    assert status == 200
    with RawSocket(node, module_app.key, "hand-over", sock=sock) as ws:
        ws.text(PING)
        assert ws.recv().json["event"] == "pusher:pong"


def test_frames_sent_with_the_handshake_are_read_in_order(
    node: FanoutNode, module_app: TestApp
) -> None:
    """Frames in the same write as the handshake reach the socket after aiohttp lets go,
    in order, after the greeting."""
    then = encode_frame(TEXT, PING) + encode_frame(PING_OP, b"early")
    with RawSocket(node, module_app.key, "hand-over", then=then) as ws:
        pong = ws.recv()
        assert (pong.opcode, pong.payload) == (PONG_OP, b"early")
        assert ws.recv().json["event"] == "pusher:pong"


def test_a_burst_of_messages_in_one_write_is_answered_whole_and_in_order(
    node: FanoutNode, module_app: TestApp
) -> None:
    """200 messages in one write: more than the socket's inbox holds (32), so the fanout
    pauses reading it and resumes as it catches up; every one is answered, in order."""
    with RawSocket(node, module_app.key, "burst") as ws:
        burst = [
            encode_frame(
                TEXT, f'{{"event":"pusher:subscribe","data":{{"channel":"b-{i}"}}}}'.encode()
            )
            for i in range(200)
        ]
        ws.sock.sendall(b"".join(burst))
        SENT["burst"] += len(burst)
        answered = [ws.recv().json for _ in range(200)]
        assert [a["event"] for a in answered] == [
            "pusher_internal:subscription_succeeded"
        ] * 100 + [
            "pusher:subscription_error"
        ] * 100  # the per-socket limit (100), as in the subscribe flood
        assert [a["channel"] for a in answered] == [f"b-{i}" for i in range(200)]
        assert ws.answers() == []


async def test_fuzzing_left_the_node_healthy(node: FanoutNode, observer: Observer) -> None:
    """Last (module order): the node still passes its health check after everything."""
    await node.wait_ready(timeout=TIMEOUT)
    assert observer.failure is None

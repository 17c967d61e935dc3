"""Domain events into channels and catching up (pure, with stand-ins for NATS and messaging).

The end-to-end tests (``tests/test_realtime.py``) run the same code against a real
stack; these cover what a stack rarely shows: a message this node has not seen,
a lookup in flight while later events arrive, events this node missed, and what
a socket catching up holds back.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from confab import realtime
from confab.contracts.identity import GetUser, User
from confab.contracts.media import AttachmentList, GetAttachments, StoredAttachment
from confab.contracts.messaging import (
    Attachment,
    EventList,
    GetMessage,
    HistoryEvent,
    ListEvents,
    Message,
    MessageDeleted,
    MessageEdited,
    MessageModerated,
    MessagePosted,
    MessageRecord,
    ReactionAdded,
    ReadMarked,
    Sender,
)
from confab.errors import NotFound, Unavailable
from confab_fanout import feed as feed_module
from confab_fanout import protocol
from confab_fanout.channels import ChannelRegistry
from confab_fanout.feed import Feed
from confab_fanout.protocol import Kind
from confab_fanout.resume import Resumer

WS, CONV = "ws_1", "conv_1"
CHANNEL = realtime.conversation_channel(CONV)
AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


class Sock:
    def __init__(self, socket_id: str = "1.1") -> None:
        self.socket_id = socket_id
        self.frames: list[bytes] = []
        self.closing = False
        self.app = SimpleNamespace(id=WS)
        self.channels: dict[str, Any] = {}
        self.joined_seqs: dict[str, int] | None = None
        self.resumes: dict[str, int] | None = None

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def send_frame(self, payload: bytes) -> None:
        self.send(protocol.ws_text(payload))

    def overflowed(self, channel: str) -> None:
        self.closing = True

    async def close(self, code: int, message: str) -> None:
        self.closing = True
        self.closed_with = code

    def events(self) -> list[tuple[str, Any]]:
        """(event, data) of every frame written, WebSocket framing stripped."""
        out = []
        for frame in self.frames:
            body = frame[2:] if frame[1] < 126 else frame[4:]
            decoded = msgspec.json.decode(body)
            out.append((decoded["event"], msgspec.json.decode(decoded["data"])))
        return out


class Rpc:
    """Answers by request type; a request type with an Event waits until it is set."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.answers: dict[type, Any] = {}
        self.gates: dict[type, asyncio.Event] = {}

    async def call(self, request: Any, **_: Any) -> Any:
        self.calls.append(request)
        gate = self.gates.get(type(request))
        if gate is not None:
            await gate.wait()
        answer = self.answers[type(request)]
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer


class Node:
    """What the feed and the resumer need of a ``Fanout``."""

    def __init__(self) -> None:
        self.channels = ChannelRegistry()
        self.nc = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.settings = SimpleNamespace(fanout_send_buffer_bytes=1 << 20)
        self.extensions: dict[str, Any] = {}
        self.join_hooks: list[Any] = []

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks))

    def deliver_seq(self, app_id: str, name: str, event: str, data: str, seq: int) -> int:
        channel = self.channels.get(app_id, name)
        if channel is None:
            return 0
        return channel.send_seq(protocol.ws_text(protocol.event_frame(event, name, data)), seq)

    def deliver_local(self, app_id: str, channels: Any, event: str, data: str) -> int:
        sent = 0
        for name in channels:
            channel = self.channels.get(app_id, name)
            if channel is not None:
                sent += channel.send_all(protocol.ws_text(protocol.event_frame(event, name, data)))
        return sent

    def join(self, sock: Sock, name: str = CHANNEL) -> Any:
        joined = self.channels.join(WS, name, Kind.PRIVATE, sock)
        assert joined is not None
        sock.channels[name] = joined.channel
        for hook in self.join_hooks:
            hook(sock, joined.channel)
        return joined.channel


def posted(seq: int, message_id: str = "msg_1", content: str = "hi") -> MessagePosted:
    return MessagePosted(
        conversation_id=CONV,
        seq=seq,
        at=AT,
        message_id=message_id,
        sender_id="usr_a",
        content=content,
    )


def record(message_id: str = "msg_1", content: str = "old", seq: int = 2) -> MessageRecord:
    message = Message(
        id=message_id,
        conversation_id=CONV,
        seq=seq,
        sender=Sender(id="usr_a", name="Ann"),
        content=content,
        created_at=AT,
    )
    return MessageRecord(message=message, reactions=[("👍", "usr_b")])


@pytest.fixture
def setup() -> tuple[Node, Rpc, Feed, Sock]:
    node, rpc = Node(), Rpc()
    feed = Feed(node, rpc)  # type: ignore[arg-type]
    feed.profiles.put(WS, "usr_a", realtime.Profile("Ann", "https://a/1.png"))
    sock = Sock()
    node.join(sock)
    return node, rpc, feed, sock


async def test_events_render_from_themselves_and_the_nodes_copy(
    setup: tuple[Node, Rpc, Feed, Sock],
) -> None:
    node, rpc, feed, sock = setup
    feed.take(WS, CONV, posted(2), 10, 0)
    feed.take(
        WS,
        CONV,
        ReactionAdded(
            conversation_id=CONV, seq=3, at=AT, message_id="msg_1", emoji="👍", user_id="usr_b"
        ),
        11,
        10,
    )
    feed.take(
        WS,
        CONV,
        MessageEdited(
            conversation_id=CONV, seq=4, at=AT, message_id="msg_1", content="hey", by="usr_a"
        ),
        12,
        11,
    )
    feed.take(
        WS,
        CONV,
        MessageModerated(
            conversation_id=CONV, seq=5, at=AT, message_id="msg_1", action="hide", by="key_1"
        ),
        13,
        12,
    )
    feed.take(
        WS,
        CONV,
        MessageModerated(
            conversation_id=CONV, seq=6, at=AT, message_id="msg_1", action="restore", by="key_1"
        ),
        14,
        13,
    )
    feed.take(
        WS, CONV, ReadMarked(conversation_id=CONV, seq=7, at=AT, user_id="usr_b", up_to=2), 15, 14
    )
    feed.take(
        WS, CONV, MessageDeleted(conversation_id=CONV, seq=8, at=AT, message_id="msg_1"), 16, 15
    )
    assert rpc.calls == [] and not node.tasks  # all from the events and the node's copy
    events = sock.events()
    assert [e for e, _ in events] == [
        "message.created",
        "reaction.added",
        "message.updated",
        "message.updated",
        "message.updated",
        "message.read",
        "message.deleted",
    ]
    created = events[0][1]
    assert created["sender"] == {"id": "usr_a", "name": "Ann", "avatar_url": "https://a/1.png"}
    assert (created["content"], created["seq"], created["event_seq"]) == ("hi", 2, 2)
    assert created["created_at"] == "2025-01-02T03:04:05Z" and created["edited_at"] is None
    assert events[2][1]["content"] == "hey" and events[2][1]["reactions"] == {
        "👍": {"count": 1, "me": False}
    }
    assert (events[3][1]["content"], events[3][1]["deleted"]) == ("", True)  # hidden
    assert (events[4][1]["content"], events[4][1]["deleted"]) == ("hey", False)  # restored
    assert events[5][1] == {
        "user_id": "usr_b",
        "seq": 2,
        "read_at": "2025-01-02T03:04:05Z",
        "event_seq": 7,
    }
    assert events[6][1] == {"id": "msg_1", "seq": 2, "event_seq": 8}


async def test_an_unseen_message_is_asked_for_and_later_events_wait_behind_it(
    setup: tuple[Node, Rpc, Feed, Sock],
) -> None:
    node, rpc, feed, sock = setup
    rpc.answers[GetMessage] = record(content="edited")
    rpc.gates[GetMessage] = gate = asyncio.Event()
    edit = MessageEdited(
        conversation_id=CONV, seq=5, at=AT, message_id="msg_1", content="edited", by="usr_a"
    )
    feed.take(WS, CONV, edit, 20, 19)
    feed.take(
        WS, CONV, ReadMarked(conversation_id=CONV, seq=6, at=AT, user_id="usr_b", up_to=2), 21, 20
    )
    await asyncio.sleep(0)
    assert sock.frames == []  # the read receipt waits behind the lookup
    gate.set()
    await node.settle()
    (query,) = rpc.calls
    assert isinstance(query, GetMessage) and query.min_seq == 20  # the read model has the edit
    assert query.actor.key_id == "fanout" and query.actor.workspace_id == WS
    events = sock.events()
    assert [(e, d["event_seq"]) for e, d in events] == [("message.updated", 5), ("message.read", 6)]
    assert events[0][1]["content"] == "edited"  # from the reply, not edited twice
    assert events[0][1]["reactions"] == {"👍": {"count": 1, "me": False}}


async def test_missed_events_are_fetched_and_delivered_first(
    setup: tuple[Node, Rpc, Feed, Sock],
) -> None:
    node, rpc, feed, sock = setup
    feed.take(WS, CONV, posted(2), 10, 0)
    missed = [
        HistoryEvent(
            seq=3, event="message.read", data={"user_id": "usr_b", "seq": 2, "event_seq": 3}, at=AT
        ),
        HistoryEvent(
            seq=4, event="reaction.added", data={"message_id": "msg_1", "event_seq": 4}, at=AT
        ),
    ]
    rpc.answers[ListEvents] = EventList(data=missed, has_more=False)
    # Stream sequence 13 says the previous one on the subject was 12; this node saw 10.
    feed.take(WS, CONV, posted(5, "msg_2"), 13, 12)
    await node.settle()
    (query,) = rpc.calls
    assert isinstance(query, ListEvents) and query.after == 2
    assert [d["event_seq"] for _, d in sock.events()] == [2, 3, 4, 5]
    feed.take(WS, CONV, posted(5, "msg_2"), 13, 12)  # seen already
    assert len(sock.frames) == 4


async def test_missed_events_are_asked_for_again_while_messaging_is_unavailable(
    setup: tuple[Node, Rpc, Feed, Sock], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, rpc, feed, sock = setup
    monkeypatch.setattr(feed_module, "GAP_RETRY_DELAYS", (0, 0, 0))
    feed.take(WS, CONV, posted(2), 10, 0)
    answers = [Unavailable("catching up"), Unavailable("catching up")]
    missed = HistoryEvent(
        seq=3, event="message.read", data={"user_id": "usr_b", "seq": 2, "event_seq": 3}, at=AT
    )

    def answer(_request: Any) -> Any:
        if answers:
            raise answers.pop()
        return EventList(data=[missed], has_more=False)

    rpc.answers[ListEvents] = answer
    feed.take(WS, CONV, posted(4, "msg_2"), 13, 12)
    await node.settle()
    assert len(rpc.calls) == 3
    assert [d["event_seq"] for _, d in sock.events()] == [2, 3, 4]
    assert not sock.closing


async def test_a_socket_that_would_miss_events_is_sent_to_resume_elsewhere(
    setup: tuple[Node, Rpc, Feed, Sock], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, rpc, feed, sock = setup
    monkeypatch.setattr(feed_module, "GAP_RETRY_DELAYS", (0, 0))
    feed.take(WS, CONV, posted(2), 10, 0)
    rpc.answers[ListEvents] = Unavailable("catching up")
    feed.take(WS, CONV, posted(4, "msg_2"), 13, 12)
    await node.settle()
    assert len(rpc.calls) == 3
    # Never a silent gap: the client is told to reconnect and resume from its last seq.
    assert sock.closing and sock.closed_with == protocol.RECONNECT
    assert 3 not in [d["event_seq"] for _, d in sock.events()]


async def test_nobody_subscribed_nothing_rendered_and_unknown_users_erased(
    setup: tuple[Node, Rpc, Feed, Sock],
) -> None:
    node, rpc, feed, sock = setup
    feed.take(WS, "conv_2", posted(2, "msg_9"), 30, 0)
    assert rpc.calls == [] and "msg_9" not in feed.messages
    rpc.answers[GetUser] = NotFound("User not found.")
    event = MessagePosted(
        conversation_id=CONV, seq=3, at=AT, message_id="msg_3", sender_id="usr_gone", content="x"
    )
    feed.take(WS, CONV, event, 31, 0)
    await node.settle()
    ((_, data),) = sock.events()
    assert data["sender"] == {"id": "usr_gone", "name": "Deleted user", "avatar_url": None}
    rpc.answers[GetUser] = User(
        id="usr_new", external_id="n", name="Neo", created_at=AT, updated_at=AT
    )
    assert (await feed.profiles.fetch(WS, ["usr_new"]))["usr_new"].name == "Neo"


# -- catching up -------------------------------------------------------------------------------


def history(*seqs: int) -> EventList:
    return EventList(
        data=[
            HistoryEvent(seq=s, event="message.read", data={"event_seq": s}, at=AT) for s in seqs
        ],
        has_more=False,
    )


def read(seq: int) -> ReadMarked:
    return ReadMarked(conversation_id=CONV, seq=seq, at=AT, user_id="usr_b", up_to=1)


async def test_resume_holds_live_events_and_sends_each_once_in_order() -> None:
    node, rpc = Node(), Rpc()
    feed = Feed(node, rpc)  # type: ignore[arg-type]
    resumer = Resumer(node, rpc, max_events=50)  # type: ignore[arg-type]
    resumer.install()
    rpc.answers[ListEvents] = history(4, 5, 6)
    rpc.gates[ListEvents] = gate = asyncio.Event()
    early = Sock("1.1")
    data = msgspec.json.encode({"channel": CHANNEL, "after_seq": 3})
    frame = protocol.ClientFrame("confab:resume", None, msgspec.Raw(data))
    await node.extensions["confab:resume"](early, frame)  # before subscribing
    node.join(early)
    await asyncio.sleep(0)
    # Live events while the backlog is fetched: 6 is in both, 7 only live.
    feed.take(WS, CONV, read(6), 106, 0)
    feed.take(WS, CONV, read(7), 107, 106)
    node.deliver_local(WS, [CHANNEL], "client-typing", "{}")  # no seq: kept in its place
    assert early.frames == []
    gate.set()
    await node.settle()
    feed.take(WS, CONV, read(8), 108, 107)
    got = [(e, d.get("event_seq")) for e, d in early.events()]
    assert got == [
        ("message.read", 4),
        ("message.read", 5),
        ("message.read", 6),
        ("confab:resumed", None),
        ("message.read", 7),
        ("client-typing", None),
        ("message.read", 8),
    ]
    assert early.events()[3][1] == {"after_seq": 3, "last_seq": 6, "count": 3}
    assert node.channels.get(WS, CHANNEL).holds is None  # type: ignore[union-attr]

    # Resumed after subscribing: what it had live since joining is not sent again.
    late = Sock("1.2")
    node.join(late)
    feed.take(WS, CONV, read(9), 109, 108)
    rpc.answers[ListEvents] = history(8, 9)
    await node.extensions["confab:resume"](
        late,
        protocol.ClientFrame(
            "confab:resume",
            None,
            msgspec.Raw(msgspec.json.encode({"channel": CHANNEL, "after_seq": 7})),
        ),
    )
    await node.settle()
    assert [d.get("event_seq") for _, d in late.events()] == [9, 8, None]

    # Too far behind: resync over REST, and live traffic goes on.
    rpc.answers[ListEvents] = history(*range(10, 70))
    await node.extensions["confab:resume"](
        late,
        protocol.ClientFrame(
            "confab:resume",
            None,
            msgspec.Raw(msgspec.json.encode({"channel": CHANNEL, "after_seq": 9})),
        ),
    )
    await node.settle()
    name, failed = late.events()[-1]
    assert name == "confab:resume_failed" and failed["resync"].endswith(f"{CONV}/events?after=9")


async def test_a_hidden_message_seen_first_comes_back_whole_on_restore(
    setup: tuple[Node, Rpc, Feed, Sock],
) -> None:
    node, rpc, feed, sock = setup
    hidden = record(content="")
    rpc.answers[GetMessage] = MessageRecord(
        message=msgspec.structs.replace(hidden.message, deleted=True),
        hidden=True,
        hidden_content="secret plan",
        attachment_ids=["att_1"],
    )
    stored = StoredAttachment(
        attachment=Attachment(id="att_1", filename="a.png", content_type="image/png", size=3),
        conversation_id=CONV,
        uploader_id="usr_a",
        expires_at=datetime(2999, 1, 1, tzinfo=UTC),
    )
    rpc.answers[GetAttachments] = AttachmentList(data=[stored])
    edit = MessageEdited(
        conversation_id=CONV, seq=5, at=AT, message_id="msg_1", content="secret plan", by="usr_a"
    )
    feed.take(WS, CONV, edit, 40, 39)
    await node.settle()
    restore = MessageModerated(
        conversation_id=CONV, seq=6, at=AT, message_id="msg_1", action="restore", by="key_1"
    )
    feed.take(WS, CONV, restore, 41, 40)
    await node.settle()
    (_, while_hidden), (_, restored) = sock.events()
    assert (while_hidden["content"], while_hidden["attachments"]) == ("", [])
    assert restored["content"] == "secret plan" and not restored["deleted"]
    assert [a["id"] for a in restored["attachments"]] == ["att_1"]
    assert [type(c).__name__ for c in rpc.calls] == ["GetMessage", "GetAttachments"]

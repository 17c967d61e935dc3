"""The node's conversations from the log, resuming, and authority (pure, an in-memory log).

The end-to-end tests (``tests/test_realtime.py``, ``tests/test_authority.py``)
run the same code against a real stack; these cover what a stack rarely shows:
events this node missed (in the middle and at the end), a log that cannot be
read, a profile lookup in flight while later events arrive, and what a socket
catching up holds back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from confab import realtime
from confab.authority import SESSION_REVOKED, USER_BANNED, USER_ERASED, Change
from confab.contracts.events.messaging import (
    Attachment,
    ConversationCreated,
    ConversationEvent,
    MessageDeleted,
    MessageEdited,
    MessageModerated,
    MessagePosted,
    ParticipantRemoved,
    ReactionAdded,
    ReadMarked,
)
from confab.contracts.events.moderation import ParticipantMuted, ParticipantUnmuted
from confab.contracts.identity import GetUser, User
from confab.errors import NotFound, Unavailable
from confab_fanout import feed as feed_module
from confab_fanout import protocol
from confab_fanout.authority import Gatekeeper
from confab_fanout.channels import ChannelRegistry
from confab_fanout.feed import Feed
from confab_fanout.profiles import ProfileCache
from confab_fanout.protocol import Kind
from confab_fanout.resume import Resumer

WS, CONV = "ws_1", "conv_1"
CHANNEL = realtime.conversation_channel(CONV)
AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


class Log:
    """An in-memory ``CONVERSATIONS``: one stream sequence across conversations."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int, ConversationEvent]] = []
        self.broken = False
        self.reads = 0

    def append(self, event: ConversationEvent, conv: str = CONV) -> tuple[int, int]:
        """Store ``event``; its stream sequence and the previous one on its subject."""
        previous = max((s for _, c, s, _ in self.events if c == conv), default=0)
        seq = len(self.events) + 1
        self.events.append((WS, conv, seq, event))
        return seq, previous

    async def read(
        self, ws: str, conv: str, after: int
    ) -> AsyncIterator[tuple[int, ConversationEvent]]:
        self.reads += 1
        if self.broken:
            raise Unavailable("The log is away.")
        for w, c, seq, event in list(self.events):
            if (w, c) == (ws, conv) and seq > after:
                yield seq, event

    async def last(self, ws: str, conv: str) -> int:
        if self.broken:
            raise Unavailable("The log is away.")
        return max((s for w, c, s, _ in self.events if (w, c) == (ws, conv)), default=0)

    async def lasts(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        return {k: n for k in keys if (n := await self.last(*k))}


class Sock:
    def __init__(self, socket_id: str = "1.1") -> None:
        self.socket_id = socket_id
        self.frames: list[bytes] = []
        self.closing = False
        self.closed = False
        self.closed_with: int | None = None
        self.app = SimpleNamespace(id=WS)
        self.channels: dict[str, Any] = {}
        self.joined_seqs: dict[str, int] | None = None
        self.resumes: dict[str, int] | None = None

    def send(self, frame: bytes) -> None:
        if not self.closing:
            self.frames.append(frame)

    def within_subscribe_rate(self) -> bool:
        return True

    def send_frame(self, payload: bytes) -> None:
        self.send(protocol.ws_text(payload))

    def overflowed(self, channel: str) -> None:
        self.closing = True

    async def close(self, code: int, message: str) -> None:
        self.closing = self.closed = True
        self.closed_with = code

    def events(self) -> list[tuple[str, Any]]:
        """(event, data) of every frame written, WebSocket framing stripped."""
        out = []
        for frame in self.frames:
            body = frame[2:] if frame[1] < 126 else frame[4:]
            decoded = msgspec.json.decode(body)
            out.append((decoded["event"], msgspec.json.decode(decoded["data"])))
        return out


class Node:
    """What the feed, the resumer and the gatekeeper need of a ``Fanout``."""

    def __init__(self) -> None:
        self.channels = ChannelRegistry()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.extensions: dict[str, Any] = {}
        self.join_hooks: list[Any] = []
        self.let_go_calls: list[tuple[str, str]] = []
        self.sockets: dict[str, set[Sock]] = {}

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

    def deliver_local(self, app_id: str, channels: Iterable[str], event: str, data: str) -> int:
        sent = 0
        for name in channels:
            channel = self.channels.get(app_id, name)
            if channel is not None:
                sent += channel.send_all(protocol.ws_text(protocol.event_frame(event, name, data)))
        return sent

    def let_go(self, app_id: str, names: Iterable[str], user_id: str, message: str) -> None:
        for name in names:
            channel = self.channels.get(app_id, name)
            for sock, uid in list(channel.sockets.items()) if channel else ():
                if uid == user_id:
                    self.let_go_calls.append((name, user_id))
                    sock.send(
                        protocol.ws_text(
                            protocol.subscription_error(name, "AuthError", message, 403)
                        )
                    )
                    self.channels.leave(app_id, name, sock)
                    sock.channels.pop(name, None)

    def send_away(self, app_id: str, names: Iterable[str], message: str) -> None:
        for name in names:
            channel = self.channels.get(app_id, name)
            for sock in list(channel.sockets) if channel else ():
                self.spawn(sock.close(protocol.RECONNECT, message))

    def sockets_of(self, app_id: str, user_id: str | None, session_id: str | None) -> set[Sock]:
        return self.sockets.get(user_id or "", set()) | self.sockets.get(session_id or "", set())

    def revoke(self, conns: Iterable[Sock], code: int, message: str) -> None:
        for conn in list(conns):
            conn.closing = True
            for name in list(conn.channels):
                self.channels.leave(WS, name, conn)
            self.spawn(conn.close(code, message))

    def join(self, sock: Sock, user_id: str, session_id: str, name: str = CHANNEL) -> Any:
        joined = self.channels.join(WS, name, Kind.PRIVATE, sock, user_id)
        assert joined is not None
        sock.channels[name] = joined.channel
        for owner in (user_id, session_id):
            self.sockets.setdefault(owner, set()).add(sock)
        for hook in self.join_hooks:
            hook(sock, joined.channel)
        return joined.channel


class Identity:
    """``GetUser`` answers; a gate holds them back until set."""

    def __init__(self) -> None:
        self.users = {"usr_a": "Ann", "usr_b": "Bob"}
        self.gate: asyncio.Event | None = None
        self.calls: list[str] = []

    async def call(self, request: Any, **_: Any) -> Any:
        assert isinstance(request, GetUser)
        self.calls.append(request.user_id)
        if self.gate is not None:
            await self.gate.wait()
        name = self.users.get(request.user_id)
        if name is None:
            raise NotFound("User not found.")
        return User(
            id=request.user_id, external_id=request.user_id, name=name, created_at=AT, updated_at=AT
        )


def created() -> ConversationCreated:
    return ConversationCreated(
        conversation_id=CONV, seq=1, at=AT, kind="direct", participant_ids=["usr_a", "usr_b"]
    )


def posted(seq: int, message_id: str = "msg_1", content: str = "hi", **kw: Any) -> MessagePosted:
    return MessagePosted(
        conversation_id=CONV,
        seq=seq,
        at=AT,
        message_id=message_id,
        sender_id=kw.pop("sender_id", "usr_a"),
        content=content,
        **kw,
    )


def read(seq: int) -> ReadMarked:
    return ReadMarked(conversation_id=CONV, seq=seq, at=AT, user_id="usr_b", up_to=1)


class World:
    def __init__(self) -> None:
        self.node = Node()
        self.log = Log()
        self.identity = Identity()
        profiles = ProfileCache(None, self.identity)  # type: ignore[arg-type]
        self.feed = Feed(None, self.node, self.log, profiles, keep=50)  # type: ignore[arg-type]
        self.gate = Gatekeeper(self.node, self.feed)  # type: ignore[arg-type]
        self.resumer = Resumer(self.node, self.feed, max_events=50)  # type: ignore[arg-type]
        self.resumer.install()

    def store(self, event: ConversationEvent) -> tuple[int, int]:
        """Stored, and not (yet) seen live by the node."""
        return self.log.append(event)

    def live(self, event: ConversationEvent) -> None:
        """Stored, and re-published to the node."""
        seq, previous = self.log.append(event)
        self.feed.take(WS, CONV, event, seq, previous)

    async def subscribe(self, sock: Sock, user_id: str = "usr_b") -> str | None:
        refused = await self.gate.may_join(WS, CHANNEL, user_id, f"ses_{user_id}")
        if refused is None:
            self.node.join(sock, user_id, f"ses_{user_id}")
        return refused

    async def resume(self, sock: Sock, after: int) -> None:
        data = msgspec.Raw(msgspec.json.encode({"channel": CHANNEL, "after_seq": after}))
        await self.node.extensions["confab:resume"](
            sock, protocol.ClientFrame("confab:resume", None, data)
        )
        await self.node.settle()


@pytest.fixture
def world() -> World:
    w = World()
    w.store(created())
    return w


async def test_a_subscription_loads_the_conversation_from_the_log_and_events_render_from_it(
    world: World,
) -> None:
    world.store(posted(2))
    sock = Sock()
    assert await world.subscribe(sock) is None
    assert world.log.reads == 1 and sock.frames == []  # loaded, nothing old sent
    world.live(
        ReactionAdded(
            conversation_id=CONV, seq=3, at=AT, message_id="msg_1", emoji="👍", user_id="usr_b"
        )
    )
    world.live(
        MessageEdited(
            conversation_id=CONV, seq=4, at=AT, message_id="msg_1", content="hey", by="usr_a"
        )
    )
    world.live(
        MessageModerated(
            conversation_id=CONV, seq=5, at=AT, message_id="msg_1", action="hide", by="key_1"
        )
    )
    world.live(
        MessageModerated(
            conversation_id=CONV, seq=6, at=AT, message_id="msg_1", action="restore", by="key_1"
        )
    )
    world.live(read(7))
    world.live(MessageDeleted(conversation_id=CONV, seq=8, at=AT, message_id="msg_1"))
    await world.node.settle()  # Ann's profile, from identity, before the first message frame
    events = sock.events()
    assert [e for e, _ in events] == [
        "reaction.added",
        "message.updated",
        "message.updated",
        "message.updated",
        "message.read",
        "message.deleted",
    ]
    updated = events[1][1]
    assert updated["sender"] == {"id": "usr_a", "name": "Ann", "avatar_url": None}
    assert (updated["content"], updated["seq"], updated["event_seq"]) == ("hey", 2, 4)
    assert updated["reactions"] == {"👍": {"count": 1, "me": False}}
    assert (events[2][1]["content"], events[2][1]["deleted"]) == ("", True)  # hidden
    assert (events[3][1]["content"], events[3][1]["deleted"]) == ("hey", False)  # restored
    assert events[4][1] == {
        "user_id": "usr_b",
        "seq": 1,
        "read_at": "2025-01-02T03:04:05Z",
        "event_seq": 7,
    }
    assert events[5][1] == {"id": "msg_1", "seq": 2, "event_seq": 8}
    assert world.log.reads == 1  # everything else from the live events


async def test_attachments_come_from_the_event_without_urls_and_go_with_a_tombstone(
    world: World,
) -> None:
    sock = Sock()
    await world.subscribe(sock)
    photo = Attachment(
        id="att_1", filename="a.png", content_type="image/png", size=3, width=2, height=1
    )
    world.live(posted(2, attachment_ids=["att_1"], attachments=[photo]))
    world.live(
        MessageModerated(
            conversation_id=CONV, seq=3, at=AT, message_id="msg_1", action="hide", by="k"
        )
    )
    await world.node.settle()
    (_, shown), (_, hidden) = sock.events()
    assert shown["attachments"] == [
        {
            "id": "att_1",
            "filename": "a.png",
            "content_type": "image/png",
            "size": 3,
            "width": 2,
            "height": 1,
            "url": None,
            "thumbnail_url": None,
        }
    ]
    assert hidden["attachments"] == [] and hidden["content"] == ""


async def test_later_events_wait_behind_a_profile_lookup_in_order(world: World) -> None:
    sock = Sock()
    await world.subscribe(sock)
    world.identity.gate = gate = asyncio.Event()
    world.live(posted(2))
    world.live(read(3))
    await asyncio.sleep(0)
    assert sock.frames == []  # the read receipt waits behind Ann's profile
    gate.set()
    await world.node.settle()
    assert [(e, d["event_seq"]) for e, d in sock.events()] == [
        ("message.created", 2),
        ("message.read", 3),
    ]
    assert world.identity.calls == ["usr_a"]


async def test_missed_events_are_read_from_the_log_and_delivered_first(world: World) -> None:
    sock = Sock()
    await world.subscribe(sock)
    world.live(posted(2))
    await world.node.settle()
    world.store(read(3))  # this node never saw these two
    world.store(posted(4, "msg_2"))
    world.live(read(5))
    await world.node.settle()
    assert [d["event_seq"] for _, d in sock.events()] == [2, 3, 4, 5]
    world.feed.take(WS, CONV, read(5), 6, 5)  # seen already
    assert len(sock.frames) == 4


async def test_a_missed_last_event_is_found_by_the_recheck(world: World) -> None:
    sock = Sock()
    await world.subscribe(sock)
    world.live(posted(2))
    await world.node.settle()
    world.store(posted(3, "msg_2", "the last word"))  # no later event will reveal the gap
    assert await world.feed.recheck_now() == 1
    await world.node.settle()
    (_, first), (_, last) = sock.events()
    assert first["event_seq"] == 2
    assert (last["content"], last["event_seq"]) == ("the last word", 3)
    assert await world.feed.recheck_now() == 0


async def test_a_log_that_cannot_be_read_sends_the_sockets_to_resume_elsewhere(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "READ_RETRY_DELAYS", (0, 0))
    sock = Sock()
    await world.subscribe(sock)
    world.store(read(2))
    world.log.broken = True
    world.live(read(3))
    await world.node.settle()
    assert world.log.reads == 4  # the load, then three tries
    # Never a silent gap: the client is told to reconnect and resume from its last seq.
    assert sock.closed_with == protocol.RECONNECT and sock.frames == []
    assert world.feed.following(WS, CONV) is None
    world.log.broken = False
    assert await world.subscribe(Sock("1.2")) is None  # loaded again


async def test_a_removed_participant_is_let_go_and_refused_with_an_old_signature(
    world: World,
) -> None:
    sock = Sock()
    await world.subscribe(sock)
    world.live(ParticipantRemoved(conversation_id=CONV, seq=2, at=AT, user_id="usr_b"))
    world.live(posted(3, content="after the removal"))
    await world.node.settle()
    events = sock.events()
    assert [e for e, _ in events] == ["participant.removed", "pusher:subscription_error"]
    assert "after the removal" not in str(events)
    # Its signature was valid; the log says it is no longer a participant.
    assert await world.subscribe(Sock("1.2")) == "Only the conversation's participants may join it."
    # A removal this node has not seen yet: the check asks the log first.
    world.store(ParticipantRemoved(conversation_id=CONV, seq=4, at=AT, user_id="usr_a"))
    assert await world.subscribe(Sock("1.3"), "usr_a") is not None


async def test_replay_renders_every_event_as_the_message_is_now(world: World) -> None:
    world.store(posted(2, content="first draft"))
    world.store(posted(3, "msg_2", "regrettable", sender_id="usr_b"))
    world.store(
        MessageEdited(
            conversation_id=CONV, seq=4, at=AT, message_id="msg_1", content="final", by="usr_a"
        )
    )
    world.store(MessageDeleted(conversation_id=CONV, seq=5, at=AT, message_id="msg_2"))
    sock = Sock()
    await world.subscribe(sock)
    await world.resume(sock, 1)
    events = sock.events()
    assert [(e, d.get("event_seq")) for e, d in events] == [
        ("message.created", 2),
        ("message.created", 3),
        ("message.updated", 4),
        ("message.deleted", 5),
        ("confab:resumed", None),
    ]
    assert events[0][1]["content"] == "final" and events[0][1]["edited_at"] is not None
    assert (events[1][1]["content"], events[1][1]["deleted"]) == ("", True)
    assert "first draft" not in str(events) and "regrettable" not in str(events)


async def test_erasure_blanks_every_view_and_what_is_still_queued(world: World) -> None:
    world.store(posted(2, content="my address is 1 Main St"))
    sock = Sock()
    await world.subscribe(sock)
    world.identity.gate = gate = asyncio.Event()
    world.live(posted(3, "msg_2", "and my phone is 555"))  # waits for Ann's profile
    world.gate.handle(Change(USER_ERASED, WS, "user", "usr_a", 99))
    world.identity.users.pop("usr_a")
    gate.set()
    await world.node.settle()
    world.live(
        MessageModerated(
            conversation_id=CONV, seq=4, at=AT, message_id="msg_1", action="hide", by="k"
        )
    )
    world.live(
        MessageModerated(
            conversation_id=CONV, seq=5, at=AT, message_id="msg_1", action="restore", by="k"
        )
    )
    await world.resume(sock, 1)
    text = str(sock.events())
    assert "1 Main St" not in text and "555" not in text
    restored = [d for e, d in sock.events() if e == "message.updated"][-1]
    assert restored["content"] == "" and restored["sender"]["name"] == "Deleted user"


async def test_bans_erasures_and_revoked_sessions_close_sockets_and_refuse_them(
    world: World,
) -> None:
    bob, other = Sock("1.1"), Sock("1.2")
    await world.subscribe(bob)
    await world.subscribe(other, "usr_a")
    world.gate.handle(Change(USER_BANNED, WS, "user", "usr_b", 10))
    await world.node.settle()
    assert bob.closed_with == protocol.UNAUTHORIZED and other.closed_with is None
    world.live(posted(2))
    await world.node.settle()
    assert bob.frames == [] and len(other.frames) == 1  # nothing after the ban
    assert await world.subscribe(Sock("1.3")) == "This user is banned from the workspace."
    world.gate.handle(Change(SESSION_REVOKED, WS, "session", "ses_usr_a", 11))
    await world.node.settle()
    assert other.closed_with == protocol.UNAUTHORIZED
    assert world.gate.refusal(WS, "usr_a", "ses_usr_a") is not None
    assert world.gate.refusal(WS, "usr_a", "ses_other") is None  # another session of hers


async def test_resume_holds_live_events_and_sends_each_once_in_order(world: World) -> None:
    for seq in (2, 3, 4, 5):
        world.store(read(seq))
    world.identity.gate = gate = asyncio.Event()
    world.store(posted(6))  # Ann's profile is needed to render it: the resume waits for it
    early = Sock("1.1")
    data = msgspec.Raw(msgspec.json.encode({"channel": CHANNEL, "after_seq": 3}))
    await world.node.extensions["confab:resume"](
        early, protocol.ClientFrame("confab:resume", None, data)
    )
    await world.subscribe(early)  # the resume starts with the subscription
    await asyncio.sleep(0)
    world.live(read(7))  # live while the backlog waits
    world.node.deliver_local(WS, [CHANNEL], "client-typing", "{}")  # no seq: kept in its place
    assert early.frames == []
    gate.set()
    await world.node.settle()
    world.live(read(8))
    got = [(e, d.get("event_seq")) for e, d in early.events()]
    assert got == [
        ("message.read", 4),
        ("message.read", 5),
        ("message.created", 6),
        ("message.read", 7),
        ("confab:resumed", None),
        ("client-typing", None),
        ("message.read", 8),
    ]
    assert early.events()[4][1] == {"after_seq": 3, "last_seq": 7, "count": 4}
    assert world.node.channels.get(WS, CHANNEL).holds is None  # type: ignore[union-attr]

    # Resumed after subscribing: what it had live since joining is not sent again.
    late = Sock("1.2")
    await world.subscribe(late)
    world.live(read(9))
    await world.resume(late, 7)
    assert [d.get("event_seq") for _, d in late.events()] == [9, 8, None]

    # Too far behind (more than kept): resync over REST, and live traffic goes on.
    for seq in range(10, 70):
        world.live(read(seq))
    await world.resume(late, 9)
    name, failed = late.events()[-1]
    assert name == "confab:resume_failed" and failed["resync"].endswith(f"{CONV}/events?after=9")


async def test_a_removed_users_resume_returns_nothing_after_the_removal(world: World) -> None:
    sock = Sock()
    await world.subscribe(sock)
    world.store(ParticipantRemoved(conversation_id=CONV, seq=2, at=AT, user_id="usr_b"))
    world.store(posted(3, content="not for Bob"))
    await world.resume(sock, 1)
    assert "not for Bob" not in str(sock.events())
    assert [e for e, _ in sock.events()][-1] in (
        "confab:resume_failed",
        "pusher:subscription_error",
    )
    assert CHANNEL not in sock.channels


async def test_resumes_share_the_sockets_subscribe_rate(world: World) -> None:
    sock = Sock()
    await world.subscribe(sock)
    sock.within_subscribe_rate = lambda: False  # type: ignore[method-assign]
    await world.resume(sock, 0)
    name, failed = sock.events()[-1]
    assert (name, failed["reason"]) == ("confab:resume_failed", "Too many resumes; slow down.")
    assert world.log.reads == 1  # the log was not asked again


async def test_mutes_follow_the_log_and_a_seq_0_event_last_stalls_nobody(world: World) -> None:
    sock = Sock()
    assert await world.subscribe(sock, "usr_a") is None
    assert await world.gate.may_send(WS, CHANNEL, "usr_a") is None
    # Stored, not seen live: the next client event asks the log, and the mute holds.
    world.store(ParticipantMuted(conversation_id=CONV, seq=0, at=AT, user_id="usr_a"))
    refused = await asyncio.wait_for(world.gate.may_send(WS, CHANNEL, "usr_a"), 1.0)
    assert refused is not None and "muted" in refused
    assert await world.gate.may_send(WS, CHANNEL, "usr_b") is None
    # A seq-0 event last on the subject is applied: a new subscriber waits for nothing.
    assert await asyncio.wait_for(world.subscribe(Sock("1.2"), "usr_b"), 1.0) is None
    world.live(ParticipantUnmuted(conversation_id=CONV, seq=0, at=AT, user_id="usr_a"))
    assert await world.gate.may_send(WS, CHANNEL, "usr_a") is None
    # A timed one lifts itself.
    past, future = datetime(2000, 1, 1, tzinfo=UTC), datetime(2999, 1, 1, tzinfo=UTC)
    world.live(ParticipantMuted(conversation_id=CONV, seq=0, at=AT, user_id="usr_a", until=past))
    assert await world.gate.may_send(WS, CHANNEL, "usr_a") is None
    world.live(ParticipantMuted(conversation_id=CONV, seq=0, at=AT, user_id="usr_a", until=future))
    assert await world.gate.may_send(WS, CHANNEL, "usr_a") is not None
    # The next timeline event follows on without a gap read.
    reads = world.log.reads
    world.live(posted(2))
    await world.node.settle()
    assert world.log.reads == reads

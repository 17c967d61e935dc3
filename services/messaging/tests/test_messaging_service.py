"""The messaging service over NATS RPC against real backends (no gateway, no identity service).

Users come from ``IDENTITY`` events published here directly. All tests share
one NATS server and its streams: each works in workspaces of its own and never
assumes a stream is empty. Nothing sleeps to synchronise: reads pass the
stream sequence of the write they must see (``min_seq``), or wait for a
projection's checkpoint, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from nats.js.errors import NotFoundError

from confab.bus import CONVERSATIONS, IDENTITY, ensure_streams
from confab.contracts.base import Request
from confab.contracts.events import Event, identity
from confab.contracts.events.messaging import MessagePosted, subject
from confab.contracts.messaging import (
    Actor,
    AddParticipant,
    Conversation,
    ConversationInput,
    ConversationList,
    ConversationSaved,
    ConversationWithMessages,
    CreateConversation,
    DeleteMessage,
    EditMessage,
    EventList,
    GetConversation,
    ListConversations,
    ListEvents,
    ListMessages,
    ListReports,
    MarkRead,
    Message,
    MessageInput,
    MessageList,
    MessageSaved,
    ModerateMessage,
    PostMessage,
    React,
    RemoveParticipant,
    ReportList,
    ReportMessage,
    SetTyping,
)
from confab.db import create_engine
from confab.errors import ConfabError, Forbidden, InvalidRequest, NotFound, Unavailable
from confab.eventlog import append, read_subject
from confab.ids import new_id
from confab.projection import ProjectionRunner, consumer_name
from confab.rpc import RpcClient
from confab.service import Service
from confab_infra.testing import TestBackends, fresh_database
from confab_messaging import app, domain
from confab_messaging.projections import ConversationsProjection, UsersProjection
from confab_messaging.search import SEARCH_TABLES, SearchProjection
from confab_messaging.settings import MessagingSettings
from confab_messaging.store import TABLES, USER_TABLES

Call = Callable[[Request], Awaitable[Any]]
WAIT = 20.0


async def caught_up(service: Service) -> None:
    """Wait until both projections have what the streams held (a fresh database replays
    everything earlier tests wrote)."""
    try:
        users_last = (
            await service.js.get_last_msg(IDENTITY.name, "identity.evt.*.user.*", direct=False)
        ).seq or 0
    except NotFoundError:
        users_last = 0
    conversations_last = (await service.js.stream_info(CONVERSATIONS.name)).state.last_seq
    users, conversations = (
        service.runners["messaging.users"],
        service.runners["messaging.conversations"],
    )
    assert await users.wait_for(users_last, 120), users.last_error
    assert await conversations.wait_for(conversations_last, 120), conversations.last_error


@asynccontextmanager
async def running_messaging(nats_url: str, database_url: str) -> AsyncIterator[Service]:
    settings = MessagingSettings(
        nats_url=nats_url,
        database_url=database_url,
        instance=f"test-{uuid.uuid4().hex[:6]}",
        read_wait_seconds=10.0,  # generous on a busy test machine; 2 s by default
    )
    service = Service("messaging", settings)
    await service.start()
    try:
        # Identity owns IDENTITY; without its service here, make sure the stream exists.
        await ensure_streams(service.js, [IDENTITY])
        await app.setup(service)
        await caught_up(service)
        yield service
    finally:
        await service.stop()


@pytest.fixture
async def messaging(backends: TestBackends, fresh_database_url: str) -> AsyncIterator[Service]:
    async with running_messaging(backends.nats_url, fresh_database_url) as service:
        yield service


@pytest.fixture
def call(messaging: Service) -> Call:
    return RpcClient(messaging.nc, timeout=15.0).call


class World:
    """A fresh workspace with helpers to make users and act as them."""

    def __init__(self, service: Service, call: Call) -> None:
        self.service = service
        self.call = call
        self.ws = new_id("ws")
        self.tenant = Actor(workspace_id=self.ws, key_id="key_test")
        self.identity_seqs: list[int] = []

    async def _identity(self, user_id: str, event: Event) -> int:
        stored = await append(
            self.service.js,
            IDENTITY.name,
            identity.subject(self.ws, "user", user_id),
            event,
            msg_id=new_id("evt"),
            workspace=self.ws,
        )
        self.identity_seqs.append(stored.seq)
        return stored.seq

    async def user(self, name: str) -> str:
        user_id = new_id("usr")
        await self._identity(
            user_id,
            identity.UserUpserted(
                workspace_id=self.ws,
                user_id=user_id,
                external_id=user_id,
                name=name,
                avatar_url=f"https://img.test/{name}.png",
                created=True,
                at=datetime.now(UTC),
            ),
        )
        return user_id

    async def users_event(self, event: Event, user_id: str) -> None:
        """Publish an identity event and wait until messaging's users read model has it.

        An erasure purges the user's key first, as identity does."""
        if isinstance(event, identity.UserErased):
            await (await self.service.key_ring()).erase(self.ws, user_id)
        seq = await self._identity(user_id, event)
        assert await self.service.runners["messaging.users"].wait_for(seq, WAIT)

    def as_user(self, user_id: str) -> Actor:
        return Actor(workspace_id=self.ws, user_id=user_id)

    async def create(self, kind: str, *members: str, **kw: Any) -> ConversationSaved:
        return await self.call(
            CreateConversation(
                actor=self.tenant,
                input=ConversationInput(participant_ids=list(members), type=kind, **kw),  # type: ignore[arg-type]
            )
        )

    async def conversation(self, kind: str, *members: str, **kw: Any) -> Conversation:
        return (await self.create(kind, *members, **kw)).conversation

    async def post(
        self, user_id: str | None, conversation_id: str, content: str, **kw: Any
    ) -> MessageSaved:
        actor = self.as_user(user_id) if user_id is not None else self.tenant
        return await self.call(
            PostMessage(
                actor=actor,
                conversation_id=conversation_id,
                sender_id=user_id,
                input=MessageInput(content=content, **kw),
            )
        )

    async def unread(self, user_id: str, conversation_id: str, min_seq: int) -> int:
        got = await self.call(
            GetConversation(
                actor=self.as_user(user_id), conversation_id=conversation_id, min_seq=min_seq
            )
        )
        assert isinstance(got, ConversationWithMessages)
        listed = await self.call(ListConversations(actor=self.as_user(user_id), min_seq=min_seq))
        (mine,) = [c for c in listed.data if c.id == conversation_id]
        assert mine.unread_count == got.conversation.unread_count
        return got.conversation.unread_count


@pytest.fixture
def world(messaging: Service, call: Call) -> World:
    return World(messaging, call)


async def fails(call: Call, request: Request, error: type[ConfabError]) -> ConfabError:
    with pytest.raises(error) as caught:
        await call(request)
    return caught.value


async def all_messages(
    call: Call, actor: Actor, conversation_id: str, min_seq: int = 0
) -> list[Message]:
    page = await call(
        ListMessages(
            actor=actor, conversation_id=conversation_id, after=0, limit=100, min_seq=min_seq
        )
    )
    assert isinstance(page, MessageList) and not page.has_more
    return page.data


# -- the two-user flow ---------------------------------------------------------------------


async def test_two_users_send_edit_delete_react_and_read_with_exact_unread_counts(
    world: World, call: Call
) -> None:
    ann, bob = await world.user("Ann"), await world.user("Bob")
    saved = await world.create("direct", ann, bob, metadata={"type": "inquiry", "a": 1})
    conv = saved.conversation
    assert saved.created and saved.stream_seq > 0 and conv.last_seq == 1
    assert conv.id == domain.direct_conversation_id(world.ws, ann, bob)
    assert [(p.id, p.name) for p in conv.participants] == [(ann, "Ann"), (bob, "Bob")]
    saved_again = await world.create("direct", bob, ann)
    again = saved_again.conversation
    assert (again.id, saved_again.created, again.metadata) == (
        conv.id,
        False,
        {"type": "inquiry", "a": 1},
    )
    cid = conv.id

    async def counts(min_seq: int) -> tuple[int, int]:
        return await world.unread(ann, cid, min_seq), await world.unread(bob, cid, min_seq)

    assert await counts(saved.stream_seq) == (0, 0)

    m1 = await world.post(ann, cid, "Hello Bob", client_msg_id="c1", metadata={"k": "v"})
    assert m1.created and m1.message.seq == 2 and m1.message.content == "Hello Bob"
    assert m1.message.sender is not None and m1.message.sender.name == "Ann"
    assert m1.message.client_msg_id == "c1" and m1.message.metadata == {"k": "v"}
    assert await counts(m1.stream_seq) == (0, 1)
    m2 = await world.post(ann, cid, "Are you there?")
    assert m2.message.seq == 3
    assert await counts(m2.stream_seq) == (0, 2)
    m3 = await world.post(bob, cid, "Yes!", reply_to=m1.message.id)
    assert m3.message.reply_to == m1.message.id
    assert await counts(m3.stream_seq) == (1, 2)

    edited = await call(
        EditMessage(
            actor=world.as_user(ann),
            conversation_id=cid,
            message_id=m1.message.id,
            content="Hello, Bob",
        )
    )
    assert isinstance(edited, MessageSaved) and edited.message.content == "Hello, Bob"
    assert edited.message.edited_at is not None and edited.message.seq == m1.message.seq
    assert await counts(edited.stream_seq) == (1, 2)

    deleted = await call(
        DeleteMessage(actor=world.as_user(ann), conversation_id=cid, message_id=m2.message.id)
    )
    assert await counts(deleted.seq) == (1, 1)
    twice = await call(
        DeleteMessage(actor=world.as_user(ann), conversation_id=cid, message_id=m2.message.id)
    )
    assert twice.seq == deleted.seq  # a no-op: nothing appended

    reacted = await call(
        React(
            actor=world.as_user(bob),
            conversation_id=cid,
            message_id=m1.message.id,
            emoji="👍",
            add=True,
        )
    )
    assert await counts(reacted.seq) == (1, 1)
    again_reacted = await call(
        React(
            actor=world.as_user(bob),
            conversation_id=cid,
            message_id=m1.message.id,
            emoji="👍",
            add=True,
        )
    )
    assert again_reacted.seq == reacted.seq

    as_bob = await all_messages(call, world.as_user(bob), cid, reacted.seq)
    as_ann = await all_messages(call, world.as_user(ann), cid)
    assert [m.seq for m in as_bob] == [2, 3, 4]
    assert as_bob[0].reactions["👍"].count == 1 and as_bob[0].reactions["👍"].me
    assert not as_ann[0].reactions["👍"].me
    assert (as_bob[1].deleted, as_bob[1].content) == (True, "")
    assert as_bob[0].content == "Hello, Bob" and as_bob[0].edited_at is not None

    read = await call(MarkRead(actor=world.as_user(bob), conversation_id=cid))
    assert await counts(read.seq) == (1, 0)
    ann_partial = await call(
        MarkRead(actor=world.as_user(ann), conversation_id=cid, seq=m1.message.seq)
    )
    assert await counts(ann_partial.seq) == (1, 0)
    ann_read = await call(MarkRead(actor=world.as_user(ann), conversation_id=cid))
    assert await counts(ann_read.seq) == (0, 0)
    backwards = await call(MarkRead(actor=world.as_user(ann), conversation_id=cid, seq=1))
    assert backwards.seq == ann_read.seq

    m4 = await world.post(bob, cid, "One more")
    assert await counts(m4.stream_seq) == (1, 0)
    unreacted = await call(
        React(
            actor=world.as_user(bob),
            conversation_id=cid,
            message_id=m1.message.id,
            emoji="👍",
            add=False,
        )
    )
    got = await call(
        GetConversation(actor=world.as_user(ann), conversation_id=cid, min_seq=unreacted.seq)
    )
    assert got.conversation.last_message.id == m4.message.id
    assert [p.last_read_seq for p in got.conversation.participants] == [
        m3.message.seq,
        m3.message.seq,
    ]
    assert [m.id for m in got.messages] == [m.message.id for m in (m1, m2, m3, m4)]
    assert got.messages[0].reactions == {}

    events = await call(ListEvents(actor=world.as_user(bob), conversation_id=cid))
    assert isinstance(events, EventList) and not events.has_more
    assert [e.seq for e in events.data] == list(range(1, len(events.data) + 1))
    assert all(e.data["event_seq"] == e.seq for e in events.data)
    assert [e.event for e in events.data] == [
        "conversation.created",
        "message.created",
        "message.created",
        "message.created",
        "message.updated",
        "message.deleted",
        "reaction.added",
        "message.read",
        "message.read",
        "message.read",
        "message.created",
        "reaction.removed",
    ]
    created = events.data[0].data
    assert created["id"] == cid and created["type"] == "direct"
    assert [p["name"] for p in created["participants"]] == ["Ann", "Bob"]
    # Replayed as it is now: the first message with its edit, the deleted one a tombstone.
    first = events.data[1].data
    assert first["sender"] == {"id": ann, "name": "Ann", "avatar_url": "https://img.test/Ann.png"}
    assert first["content"] == "Hello, Bob" and first["edited_at"] is not None
    assert first["reactions"] == {}
    assert events.data[4].data == {**first, "event_seq": 5}
    deleted = events.data[2].data
    assert (deleted["id"], deleted["content"], deleted["deleted"]) == (m2.message.id, "", True)
    assert events.data[5].data == {"id": m2.message.id, "seq": 3, "event_seq": 6}
    assert events.data[6].data == {
        "message_id": m1.message.id,
        "emoji": "👍",
        "user_id": bob,
        "event_seq": 7,
    }
    assert events.data[7].data["user_id"] == bob and events.data[7].data["seq"] == 4


async def test_a_resend_returns_the_original_message(world: World, call: Call) -> None:
    ann, bob = await world.user("Ann"), await world.user("Bob")
    cid = (await world.conversation("direct", ann, bob)).id
    first = await world.post(ann, cid, "once", client_msg_id="k-1")
    second = await world.post(ann, cid, "once", client_msg_id="k-1")
    assert (second.created, second.message.id, second.stream_seq) == (
        False,
        first.message.id,
        first.stream_seq,
    )
    assert second.message.content == "once" and second.message.seq == first.message.seq


async def test_a_resend_is_recognised_beyond_the_log_dedupe_window(
    world: World, call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conversation's state, not JetStream's 2-minute window, makes a resend harmless."""
    ann, bob = await world.user("Ann"), await world.user("Bob")
    cid = (await world.conversation("direct", ann, bob)).id
    first = await world.post(ann, cid, "hello", client_msg_id="late")
    # A message id JetStream has never seen, as if the window had long passed.
    monkeypatch.setattr(domain, "client_msg_key", lambda *_: new_id("evt"))
    late = await world.post(ann, cid, "hello", client_msg_id="late")
    assert (late.created, late.message.id) == (False, first.message.id)
    assert len(await all_messages(call, world.as_user(ann), cid, late.stream_seq)) == 1


async def test_fifty_concurrent_resends_make_one_message(
    world: World, call: Call, messaging: Service
) -> None:
    ann, bob = await world.user("Ann"), await world.user("Bob")
    cid = (await world.conversation("group", ann, bob)).id
    await world.post(bob, cid, "warm up the cache")
    replies = await asyncio.gather(
        *(world.post(ann, cid, "only once", client_msg_id="same") for _ in range(50))
    )
    assert sum(r.created for r in replies) == 1
    assert len({r.message.id for r in replies}) == 1
    assert len({r.stream_seq for r in replies}) == 1
    keys = await messaging.key_ring()
    raw = [
        e.event
        async for e in read_subject(messaging.nc, CONVERSATIONS.name, subject(world.ws, cid))
        if isinstance(e.event, MessagePosted)
    ]
    assert all(e.sealed and e.content == "" for e in raw)  # the log holds no text
    stored = [await keys.reveal(world.ws, e) for e in raw]
    assert [e.content for e in stored] == ["warm up the cache", "only once"]
    messages = await all_messages(call, world.as_user(ann), cid, replies[0].stream_seq)
    assert [m.content for m in messages] == ["warm up the cache", "only once"]


# -- pagination and recovery ---------------------------------------------------------------


async def test_history_pages_both_ways_without_gap_or_duplicate(world: World, call: Call) -> None:
    ann, bob = await world.user("Ann"), await world.user("Bob")
    cid = (await world.conversation("direct", ann, bob)).id
    saved = [await world.post(ann if i % 2 else bob, cid, f"m{i}") for i in range(23)]
    # Reactions and reads take seqs too: message seqs are not contiguous, pages still are.
    await call(
        React(
            actor=world.as_user(ann),
            conversation_id=cid,
            message_id=saved[5].message.id,
            emoji="x",
            add=True,
        )
    )
    deleted = await call(
        DeleteMessage(
            actor=world.as_user(bob), conversation_id=cid, message_id=saved[10].message.id
        )
    )
    expected = [s.message.id for s in saved]
    actor = world.as_user(ann)

    backwards: list[Message] = []
    before: int | None = None
    while True:
        page = await call(
            ListMessages(
                actor=actor, conversation_id=cid, before=before, limit=5, min_seq=deleted.seq
            )
        )
        assert [m.seq for m in page.data] == sorted(m.seq for m in page.data)
        backwards = page.data + backwards
        if not page.has_more:
            assert page.next_cursor is None
            break
        assert page.next_cursor == str(page.data[0].seq)
        before = int(page.next_cursor)
    assert [m.id for m in backwards] == expected

    forwards: list[Message] = []
    after = 0
    while True:
        page = await call(ListMessages(actor=actor, conversation_id=cid, after=after, limit=7))
        forwards += page.data
        if not page.has_more:
            break
        assert page.next_cursor == str(page.data[-1].seq)
        after = int(page.next_cursor)
    assert [m.id for m in forwards] == expected
    assert forwards == backwards
    assert forwards[10].deleted and forwards[10].content == ""

    window = await call(
        ListMessages(
            actor=actor,
            conversation_id=cid,
            after=saved[2].message.seq,
            before=saved[6].message.seq,
        )
    )
    assert [m.id for m in window.data] == expected[3:6]
    latest = await call(GetConversation(actor=actor, conversation_id=cid, limit=4))
    assert [m.id for m in latest.messages] == expected[-4:] and latest.has_more
    await fails(call, ListMessages(actor=actor, conversation_id=cid, limit=101), InvalidRequest)


async def test_list_events_returns_exactly_what_happened_after_a_seq(
    world: World, call: Call
) -> None:
    ann, bob, cat = await world.user("Ann"), await world.user("Bob"), await world.user("Cat")
    cid = (await world.conversation("group", ann, bob, title="Team")).id
    first = await world.post(ann, cid, "before")
    mark = (await call(ListEvents(actor=world.as_user(bob), conversation_id=cid))).data[-1].seq
    assert mark == first.message.seq

    added = await call(AddParticipant(actor=world.tenant, conversation_id=cid, user_id=cat))
    second = await world.post(cat, cid, "hi all")
    await call(
        React(
            actor=world.as_user(bob),
            conversation_id=cid,
            message_id=second.message.id,
            emoji="🎉",
            add=True,
        )
    )
    await call(MarkRead(actor=world.as_user(bob), conversation_id=cid))
    await call(
        EditMessage(
            actor=world.as_user(cat),
            conversation_id=cid,
            message_id=second.message.id,
            content="hi everyone",
        )
    )
    await call(RemoveParticipant(actor=world.tenant, conversation_id=cid, user_id=cat))
    assert added.seq > 0

    # No min_seq: ListEvents itself catches up with the conversation's last event.
    after = await call(ListEvents(actor=world.as_user(bob), conversation_id=cid, after=mark))
    assert [(e.seq, e.event) for e in after.data] == [
        (mark + 1, "participant.added"),
        (mark + 2, "message.created"),
        (mark + 3, "reaction.added"),
        (mark + 4, "message.read"),
        (mark + 5, "message.updated"),
        (mark + 6, "participant.removed"),
    ]
    assert after.data[0].data == {"user_id": cat, "event_seq": mark + 1}
    updated = after.data[4].data
    assert updated["content"] == "hi everyone" and updated["reactions"] == {
        "🎉": {"count": 1, "me": False}
    }
    assert updated["sender"]["name"] == "Cat" and updated["event_seq"] == mark + 5
    paged = await call(
        ListEvents(actor=world.as_user(bob), conversation_id=cid, after=mark, limit=4)
    )
    assert paged.has_more and paged.next_cursor == str(mark + 4)
    rest = await call(
        ListEvents(actor=world.as_user(bob), conversation_id=cid, after=int(paged.next_cursor))
    )
    assert paged.data + rest.data == after.data
    # Cat left: the conversation is gone for them.
    await fails(call, ListEvents(actor=world.as_user(cat), conversation_id=cid), NotFound)


# -- concurrency ---------------------------------------------------------------------------


async def test_twenty_concurrent_senders_through_two_instances(
    backends: TestBackends, fresh_database_url: str, world: World, call: Call, messaging: Service
) -> None:
    async with running_messaging(backends.nats_url, fresh_database_url) as second:
        senders = [await world.user(f"U{i}") for i in range(20)]
        cid = (await world.conversation("group", *senders)).id
        other = RpcClient(second.nc, timeout=15.0).call

        async def send(i: int, user_id: str) -> list[MessageSaved]:
            caller = call if i % 2 else other
            out = []
            for n in range(5):
                out.append(
                    await caller(
                        PostMessage(
                            actor=world.as_user(user_id),
                            conversation_id=cid,
                            sender_id=user_id,
                            input=MessageInput(content=f"{i}-{n}"),
                        )
                    )
                )
            return out

        results = [
            s
            for batch in await asyncio.gather(*(send(i, u) for i, u in enumerate(senders)))
            for s in batch
        ]
    assert len(results) == 100 and all(r.created for r in results)
    assert len({r.message.id for r in results}) == 100
    assert len({r.message.seq for r in results}) == 100
    assert len({r.stream_seq for r in results}) == 100

    keys = await messaging.key_ring()
    stored = [
        await keys.reveal(world.ws, e.event)
        async for e in read_subject(messaging.nc, CONVERSATIONS.name, subject(world.ws, cid))
    ]
    assert [e.seq for e in stored] == list(range(1, 102))  # created + 100 messages, no gap
    assert sorted(e.content for e in stored if isinstance(e, MessagePosted)) == sorted(
        r.message.content for r in results
    )
    last = max(r.stream_seq for r in results)
    listed = await all_messages(call, world.as_user(senders[0]), cid, last)
    assert len(listed) == 100 and len({m.id for m in listed}) == 100
    events = await call(ListEvents(actor=world.tenant, conversation_id=cid))
    assert [e.seq for e in events.data] == list(range(1, 101))
    assert events.has_more
    tail = await call(ListEvents(actor=world.tenant, conversation_id=cid, after=100))
    assert [e.seq for e in tail.data] == [101] and not tail.has_more
    # Every sender sees the 95 messages of the others as unread.
    assert await world.unread(senders[3], cid, last) == 95


# -- who may do what -----------------------------------------------------------------------


async def test_strangers_and_other_workspaces_get_not_found(
    world: World, call: Call, messaging: Service
) -> None:
    ann, bob, eve = await world.user("Ann"), await world.user("Bob"), await world.user("Eve")
    cid = (await world.conversation("direct", ann, bob)).id
    msg = (await world.post(ann, cid, "private")).message.id
    elsewhere = World(messaging, call)
    other_tenant = elsewhere.tenant
    other_user = Actor(workspace_id=elsewhere.ws, user_id=ann)
    for actor in (world.as_user(eve), other_tenant, other_user):
        for request in (
            GetConversation(actor=actor, conversation_id=cid),
            ListMessages(actor=actor, conversation_id=cid),
            ListEvents(actor=actor, conversation_id=cid),
            PostMessage(
                actor=actor,
                conversation_id=cid,
                sender_id=actor.user_id,
                input=MessageInput(content="x"),
            ),
            EditMessage(actor=actor, conversation_id=cid, message_id=msg, content="x"),
            DeleteMessage(actor=actor, conversation_id=cid, message_id=msg),
            React(actor=actor, conversation_id=cid, message_id=msg, emoji="x", add=True),
            MarkRead(actor=actor, conversation_id=cid),
            SetTyping(actor=actor, conversation_id=cid, is_typing=True),
            ReportMessage(actor=actor, message_id=msg, reason="x"),
            ModerateMessage(actor=actor, message_id=msg, action="hide"),
            AddParticipant(actor=actor, conversation_id=cid, user_id=eve),
        ):
            await fails(call, request, NotFound)
    await fails(
        call, GetConversation(actor=world.as_user(ann), conversation_id="bad.id>"), NotFound
    )
    listed = await call(ListConversations(actor=world.as_user(eve)))
    assert listed.data == []
    # A user of another workspace is unknown here.
    err = await fails(
        call,
        CreateConversation(
            actor=world.tenant,
            input=ConversationInput(participant_ids=[ann, "usr_nobody"], type="group"),
        ),
        NotFound,
    )
    assert err.details == {"participant_ids": "unknown user: usr_nobody"}


async def test_banned_users_cannot_post_and_authors_alone_edit(world: World, call: Call) -> None:
    ann, bob = await world.user("Ann"), await world.user("Bob")
    cid = (await world.conversation("direct", ann, bob)).id
    msg = await world.post(ann, cid, "mine")
    await world.users_event(
        identity.UserBanned(workspace_id=world.ws, user_id=bob, at=datetime.now(UTC)), bob
    )
    err = await fails(
        call,
        PostMessage(
            actor=world.as_user(bob),
            conversation_id=cid,
            sender_id=bob,
            input=MessageInput(content="hi"),
        ),
        Forbidden,
    )
    assert err.code == "banned" and err.message == "You are banned from this workspace."
    await fails(
        call,
        PostMessage(
            actor=world.tenant, conversation_id=cid, sender_id=bob, input=MessageInput(content="hi")
        ),
        Forbidden,
    )
    await world.users_event(
        identity.UserUnbanned(workspace_id=world.ws, user_id=bob, at=datetime.now(UTC)), bob
    )
    assert (await world.post(bob, cid, "back")).created

    await fails(
        call,
        EditMessage(
            actor=world.as_user(bob), conversation_id=cid, message_id=msg.message.id, content="x"
        ),
        Forbidden,
    )
    await fails(
        call,
        DeleteMessage(actor=world.as_user(bob), conversation_id=cid, message_id=msg.message.id),
        Forbidden,
    )
    await fails(
        call,
        EditMessage(
            actor=world.as_user(ann), conversation_id=cid, message_id="msg_nope", content="x"
        ),
        NotFound,
    )
    # Attachments are checked with media, which is not running here: a retryable 503
    # (the end-to-end tests check them against a real media service).
    await fails(
        call,
        PostMessage(
            actor=world.as_user(ann),
            conversation_id=cid,
            sender_id=ann,
            input=MessageInput(content="x", attachment_ids=["att_1"]),
        ),
        Unavailable,
    )
    # The tenant posts system messages and as participants.
    system = await world.post(None, cid, "Booking confirmed")
    assert system.message.sender is None
    as_bob = await call(
        PostMessage(
            actor=world.tenant,
            conversation_id=cid,
            sender_id=bob,
            input=MessageInput(content="via backend"),
        )
    )
    assert as_bob.message.sender.id == bob


async def test_erased_users_are_shown_as_deleted_users(world: World, call: Call) -> None:
    ann, bob = await world.user("Ann"), await world.user("Bob")
    cid = (await world.conversation("direct", ann, bob)).id
    saved = await world.post(ann, cid, "bye")
    await world.users_event(
        identity.UserErased(workspace_id=world.ws, user_id=ann, at=datetime.now(UTC)), ann
    )
    (message,) = await all_messages(call, world.as_user(bob), cid, saved.stream_seq)
    assert message.sender is not None and (message.sender.name, message.sender.avatar_url) == (
        "Deleted user",
        None,
    )
    events = await call(ListEvents(actor=world.as_user(bob), conversation_id=cid))
    assert events.data[1].data["sender"]["name"] == "Deleted user"
    await fails(
        call,
        CreateConversation(
            actor=world.tenant, input=ConversationInput(participant_ids=[ann, bob], type="group")
        ),
        NotFound,
    )


async def test_typing_is_published_not_stored(world: World, call: Call, messaging: Service) -> None:
    ann, bob = await world.user("Ann"), await world.user("Bob")
    conv = await world.conversation("direct", ann, bob)
    sub = await messaging.nc.subscribe(f"ephemeral.{world.ws}.{conv.id}.typing")
    try:
        reply = await call(
            SetTyping(actor=world.as_user(bob), conversation_id=conv.id, is_typing=True)
        )
        assert reply.seq == 0
        msg = await sub.next_msg(timeout=WAIT)
    finally:
        await sub.unsubscribe()
    body = json.loads(msg.data)
    assert (body["user_id"], body["name"], body["is_typing"]) == (bob, "Bob", True)
    assert body["at"].endswith("Z")
    await fails(
        call, SetTyping(actor=world.tenant, conversation_id=conv.id, is_typing=True), Forbidden
    )
    stored = [
        e async for e in read_subject(messaging.nc, CONVERSATIONS.name, subject(world.ws, conv.id))
    ]
    assert len(stored) == 1


async def test_reports_and_moderation(world: World, call: Call) -> None:
    ann, bob = await world.user("Ann"), await world.user("Bob")
    cid = (await world.conversation("direct", ann, bob)).id
    bad = await world.post(ann, cid, "something rude")
    reported = await call(
        ReportMessage(actor=world.as_user(bob), message_id=bad.message.id, reason="rude")
    )
    await fails(call, ListReports(actor=world.as_user(bob)), Forbidden)
    await fails(
        call,
        ModerateMessage(actor=world.as_user(bob), message_id=bad.message.id, action="hide"),
        Forbidden,
    )
    assert await world.unread(bob, cid, reported.seq) == 1

    queue = await call(ListReports(actor=world.tenant))
    assert isinstance(queue, ReportList)
    (report,) = queue.data
    assert (report.reporter_id, report.reason, report.status) == (bob, "rude", "open")
    assert report.message.content == "something rude" and report.conversation_id == cid

    hidden = await call(
        ModerateMessage(actor=world.tenant, message_id=bad.message.id, action="hide")
    )
    assert await world.unread(bob, cid, hidden.seq) == 0
    (message,) = await all_messages(call, world.as_user(bob), cid)
    assert (message.deleted, message.content) == (True, "")
    assert (await call(ListReports(actor=world.tenant))).data == []
    (report,) = (await call(ListReports(actor=world.tenant, status="all"))).data
    assert report.status == "hidden"

    restored = await call(
        ModerateMessage(actor=world.tenant, message_id=bad.message.id, action="restore")
    )
    (message,) = await all_messages(call, world.as_user(bob), cid, restored.seq)
    assert (message.deleted, message.content) == (False, "something rude")
    assert await world.unread(bob, cid, restored.seq) == 1
    removed = await call(
        ModerateMessage(actor=world.tenant, message_id=bad.message.id, action="delete")
    )
    (report,) = (await call(ListReports(actor=world.tenant, status="all"))).data
    assert report.status == "deleted"

    events = await call(
        ListEvents(actor=world.as_user(bob), conversation_id=cid, after=bad.message.seq)
    )
    assert [e.event for e in events.data] == [
        "message.updated",
        "message.updated",
        "message.deleted",
    ]
    # Each replayed as the message is now: deleted, whatever it showed when it happened.
    for event in events.data[:2]:
        assert (event.data["deleted"], event.data["content"]) == (True, "")
    assert events.data[2].data == {
        "id": bad.message.id,
        "seq": bad.message.seq,
        "event_seq": events.data[2].seq,
    }
    assert removed.seq > restored.seq


async def test_conversations_are_listed_newest_activity_first(world: World, call: Call) -> None:
    ann = await world.user("Ann")
    others = [await world.user(f"P{i}") for i in range(5)]
    convs = [(await world.conversation("direct", ann, o)).id for o in others]
    last = await world.post(ann, convs[1], "bump")
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await call(
            ListConversations(
                actor=world.as_user(ann), cursor=cursor, limit=2, min_seq=last.stream_seq
            )
        )
        assert isinstance(page, ConversationList)
        seen += [c.id for c in page.data]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert seen == [convs[1], convs[4], convs[3], convs[2], convs[0]]
    tenant_view = await call(ListConversations(actor=world.tenant, user_id=others[0]))
    assert [c.id for c in tenant_view.data] == [convs[0]]
    everything = await call(ListConversations(actor=world.tenant, limit=100))
    assert sorted(c.id for c in everything.data) == sorted(convs)
    await fails(call, ListConversations(actor=world.as_user(ann), user_id=others[0]), Forbidden)
    await fails(
        call, ListConversations(actor=world.as_user(ann), cursor="nonsense"), InvalidRequest
    )


# -- replay --------------------------------------------------------------------------------


async def snapshot(engine: Any, workspace_id: str) -> dict[str, list[dict[str, Any]]]:
    t, users = TABLES, USER_TABLES.users
    out: dict[str, list[dict[str, Any]]] = {}
    async with engine.connect() as conn:
        convs = [
            r.id
            for r in await conn.execute(
                sa.select(t.conversations.c.id).where(
                    t.conversations.c.workspace_id == workspace_id
                )
            )
        ]
        msgs = [
            r.id
            for r in await conn.execute(
                sa.select(t.messages.c.id).where(t.messages.c.conversation_id.in_(convs))
            )
        ]
        queries = {
            "users": sa.select(users)
            .where(users.c.workspace_id == workspace_id)
            .order_by(users.c.id),
            "conversations": sa.select(t.conversations)
            .where(t.conversations.c.id.in_(convs))
            .order_by(t.conversations.c.id),
            "participants": sa.select(t.participants)
            .where(t.participants.c.conversation_id.in_(convs))
            .order_by(t.participants.c.conversation_id, t.participants.c.user_id),
            "messages": sa.select(t.messages)
            .where(t.messages.c.id.in_(msgs))
            .order_by(t.messages.c.id),
            "search": sa.select(
                *[c for c in SEARCH_TABLES.messages.c if c.name != "tsv"],
                sa.cast(SEARCH_TABLES.messages.c.tsv, sa.Text).label("tsv"),
            )
            .where(SEARCH_TABLES.messages.c.workspace_id == workspace_id)
            .order_by(SEARCH_TABLES.messages.c.message_id),
            "reactions": sa.select(t.reactions)
            .where(t.reactions.c.message_id.in_(msgs))
            .order_by(t.reactions.c.message_id, t.reactions.c.emoji, t.reactions.c.user_id),
            "reports": sa.select(t.reports)
            .where(t.reports.c.workspace_id == workspace_id)
            .order_by(t.reports.c.id),
            "events": sa.select(t.events)
            .where(t.events.c.conversation_id.in_(convs))
            .order_by(t.events.c.conversation_id, t.events.c.seq),
        }
        for name, query in queries.items():
            out[name] = [dict(r._mapping) for r in await conn.execute(query)]
    return out


async def test_replaying_both_streams_into_an_empty_database_reproduces_the_read_model(
    backends: TestBackends, world: World, call: Call, messaging: Service
) -> None:
    ann, bob, cat = await world.user("Ann"), await world.user("Bob"), await world.user("Cat")
    direct = (await world.conversation("direct", ann, bob)).id
    group = (
        await world.conversation("group", ann, bob, cat, title="G", metadata={"z": 1, "a": 2})
    ).id
    saved = [
        await world.post(u, c, f"{u}:{i}")
        for i, (u, c) in enumerate(
            [(ann, direct), (bob, direct), (ann, group), (cat, group), (bob, group), (ann, direct)]
        )
    ]
    ids = [s.message.id for s in saved]
    await call(
        EditMessage(
            actor=world.as_user(ann), conversation_id=direct, message_id=ids[0], content="edited"
        )
    )
    await call(
        React(
            actor=world.as_user(bob),
            conversation_id=direct,
            message_id=ids[0],
            emoji="👍",
            add=True,
        )
    )
    await call(
        React(
            actor=world.as_user(ann),
            conversation_id=direct,
            message_id=ids[0],
            emoji="👍",
            add=True,
        )
    )
    await call(
        React(
            actor=world.as_user(bob),
            conversation_id=direct,
            message_id=ids[0],
            emoji="👍",
            add=False,
        )
    )
    await call(DeleteMessage(actor=world.as_user(bob), conversation_id=direct, message_id=ids[1]))
    await call(MarkRead(actor=world.as_user(bob), conversation_id=direct, seq=saved[0].message.seq))
    await call(MarkRead(actor=world.as_user(cat), conversation_id=group))
    await call(ReportMessage(actor=world.as_user(ann), message_id=ids[3], reason="spam"))
    await call(ModerateMessage(actor=world.tenant, message_id=ids[3], action="hide"))
    await call(RemoveParticipant(actor=world.tenant, conversation_id=group, user_id=cat))
    await call(AddParticipant(actor=world.tenant, conversation_id=group, user_id=cat))
    await world.post(None, group, "system note")
    await world.users_event(
        identity.UserErased(workspace_id=world.ws, user_id=cat, at=datetime.now(UTC)), cat
    )

    conversations_last = (await messaging.js.stream_info(CONVERSATIONS.name)).state.last_seq
    users_last = max(world.identity_seqs)
    assert await messaging.runners["messaging.conversations"].wait_for(conversations_last, WAIT)
    assert await messaging.runners["messaging.users"].wait_for(users_last, WAIT)
    assert await messaging.runners["messaging.search"].wait_for(conversations_last, WAIT)
    assert messaging.engine is not None
    live = await snapshot(messaging.engine, world.ws)
    unread = {(p["conversation_id"], p["user_id"]): p["unread_count"] for p in live["participants"]}
    assert unread == {
        (direct, ann): 0,
        (direct, bob): 1,
        (group, ann): 2,
        (group, bob): 2,
        (group, cat): 1,
    }
    assert [
        len(live[k]) for k in ("users", "conversations", "messages", "reactions", "reports")
    ] == [3, 2, 7, 1, 1]
    # Searchable: every post but the deleted one and the erased user's (whose one was also
    # hidden), the edit by its new text.
    assert {r["content"] for r in live["search"]} == {
        "edited",
        f"{ann}:2",
        f"{bob}:4",
        f"{ann}:5",
        "system note",
    }

    token = uuid.uuid4().hex[:8]
    keys = await messaging.key_ring()
    projections = [
        UsersProjection(f"messaging_users_replay_{token}", keys=keys),
        ConversationsProjection(f"messaging_conv_replay_{token}", keys=keys),
        # The search index is part of the read model (users' erasures remove its rows).
        SearchProjection(f"messaging_search_replay_{token}", keys=keys),
    ]
    with fresh_database(backends.database_url) as replay_url:
        engine = create_engine(replay_url, pool_size=2)
        # Small batches: the stream is cut differently than live, the rows must not differ.
        runners = [
            ProjectionRunner(messaging.js, engine, replay_url, p, batch_size=7) for p in projections
        ]
        try:
            for runner in reversed(runners):  # the search index's tables first
                await runner.start()
            assert await runners[0].wait_for(users_last, 60), runners[0].last_error
            assert await runners[1].wait_for(conversations_last, 60), runners[1].last_error
            assert await runners[2].wait_for(conversations_last, 60), runners[2].last_error
            replayed = await snapshot(engine, world.ws)
        finally:
            for runner, projection in zip(runners, projections, strict=True):
                await runner.stop()
                with suppress(NotFoundError):
                    await messaging.js.delete_consumer(
                        projection.stream, consumer_name(projection.name)
                    )
            await engine.dispose()
    assert replayed == live

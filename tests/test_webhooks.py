"""Webhooks end to end: the tenant API, a real receiver on loopback verifying every
signature with ``standardwebhooks``, and the webhooks service of the session's
``confab up`` (retries a second apart: ``tests/stack.py``).

Every wait is on a condition with a deadline; the one pause that is the scenario itself
is the receiver being down for 30 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from confab import bus
from confab.bench.webhooks import Received, Receiver
from confab.db import plain_url
from tests.client import Api
from tests.ops import Chat
from tests.stack import RunningStack
from tests.test_media_api import png_bytes, upload
from tests.waiting import until

WAIT = 30.0


@pytest.fixture
def admin(stack: RunningStack, http: aiohttp.ClientSession) -> Api:
    return Api(http, stack.gateway, stack.admin_headers)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = await Receiver().start()
    yield found
    await found.close()


async def hook(chat: Chat, receiver: Receiver, path: str, types: list[str]) -> dict[str, Any]:
    status, created = await chat.tenant.post(
        "/api/v1/webhooks", {"url": receiver.url(path), "event_types": types}
    )
    assert status == 201, created
    assert created["secret"].startswith("whsec_")
    receiver.secrets[path] = [created["secret"]]
    return dict(created)


def by_type(items: list[Received]) -> dict[str, list[Received]]:
    out: dict[str, list[Received]] = {}
    for item in items:
        out.setdefault(item.body["type"], []).append(item)
    return out


async def test_every_event_type_arrives_once_signed_with_its_documented_payload(
    admin: Api, receiver: Receiver
) -> None:
    chat = await Chat.create(admin, "Hooks")
    endpoint = await hook(chat, receiver, "all", ["*", "message.read"])
    only_users = await hook(chat, receiver, "users", ["user.*"])
    alice, bob, carol = await chat.user("Alice"), await chat.user("Bob"), await chat.user("Carol")
    status, _ = await chat.tenant.patch(f"/api/v1/users/{alice['id']}", {"name": "Alice B."})
    assert status == 200
    cid = await chat.conversation(alice, bob, title="Deal")
    widget = chat.widgets[alice["id"]]
    status, stored = await upload(widget, cid, png_bytes((32, 32)), "p.png")
    assert status == 201, stored
    status, first = await widget.post(
        f"/api/widget/conversations/{cid}/messages",
        {
            "content": "hello @Bob",
            "attachment_ids": [stored["id"]],
            "mentions": [{"user_id": bob["id"], "start": 6, "end": 10}],
        },
    )
    assert status == 201, first
    status, _ = await widget.patch(
        f"/api/widget/conversations/{cid}/messages/{first['id']}", {"content": "hello again @Bob"}
    )
    assert status == 200
    second = await chat.send(bob, cid, "to be deleted")
    status, _ = await chat.widgets[bob["id"]].post(
        f"/api/widget/messages/{first['id']}/report", {"reason": "spam"}
    )
    assert status in (200, 201, 204)
    status, _ = await chat.widgets[bob["id"]].delete(
        f"/api/widget/conversations/{cid}/messages/{second['id']}"
    )
    assert status == 204
    status, _ = await chat.widgets[bob["id"]].post(f"/api/widget/conversations/{cid}/read", {})
    assert status in (200, 204)
    status, _ = await chat.tenant.post(
        f"/api/v1/conversations/{cid}/participants", {"user_id": carol["id"]}
    )
    assert status in (200, 201, 204)
    status, _ = await chat.tenant.delete(f"/api/v1/conversations/{cid}/participants/{carol['id']}")
    assert status in (200, 204)
    status, _ = await chat.tenant.post(f"/api/v1/users/{carol['id']}/ban")
    assert status == 200
    status, _ = await chat.tenant.delete(f"/api/v1/users/{carol['id']}")
    assert status == 204

    wanted = {
        "user.created": 3,
        "user.updated": 1,
        "conversation.created": 1,
        "attachment.stored": 1,
        "message.created": 2,
        "message.updated": 1,
        "message.reported": 1,
        "message.deleted": 1,
        "message.read": 1,
        "participant.added": 1,
        "participant.removed": 1,
        "user.banned": 1,
        "user.erased": 1,
    }

    def complete() -> bool:
        got = by_type(receiver.of("all"))
        return all(len(got.get(t, ())) >= n for t, n in wanted.items())

    await until(complete, "every event type")
    everything = receiver.of("all")
    assert all(r.verified for r in everything)
    ids = [r.message_id for r in everything]
    assert len(ids) == len(set(ids)), "an event arrived twice"
    got = by_type(everything)
    assert {t: len(v) for t, v in got.items()} == wanted
    for item in everything:
        body = item.body
        assert body["version"] == 1 and body["workspace_id"] == chat.id
        assert (
            body["id"]
            == item.message_id
            == f"msg_{body['log']['stream'].lower()}_" + str(body["log"]["seq"])
        )
        assert item.headers["webhook-timestamp"].isdigit()
    # Conversation events carry the conversation and its event_seq, in order.
    conv_events = [r.body for r in everything if r.body.get("conversation_id") == cid]
    assert [b["event_seq"] for b in conv_events if b["event_seq"]] == sorted(
        b["event_seq"] for b in conv_events if b["event_seq"]
    )
    created = got["message.created"][0].body["data"]
    assert created["id"] == first["id"] and created["sender"]["id"] == alice["id"]
    assert [a["id"] for a in created["attachments"]] == [stored["id"]]
    updated = got["message.updated"][0].body["data"]
    assert updated["content"] == "hello again @Bob"
    # Mentions (issue 23) ride along, as entities over the text each payload shows.
    for data in (created, updated):
        spans = [(m["user_id"], data["content"][m["start"] : m["end"]]) for m in data["mentions"]]
        assert spans == [(bob["id"], "@Bob")], data
    deleted = got["message.deleted"][0].body["data"]
    assert deleted["id"] == second["id"] and deleted["seq"] == second["seq"]
    reported = got["message.reported"][0].body["data"]
    assert reported["message_id"] == first["id"] and reported["reason"] == "spam"
    assert got["conversation.created"][0].body["data"]["title"] == "Deal"
    read = got["message.read"][0].body["data"]
    assert read["user_id"] == bob["id"] and read["seq"] >= second["seq"]
    assert got["participant.added"][0].body["data"]["user_id"] == carol["id"]
    assert got["attachment.stored"][0].body["data"]["content_type"] == "image/png"
    assert got["user.updated"][0].body["data"]["name"] == "Alice B."
    # Rendered at delivery: Carol's created/banned events sent after her erasure are blank.
    erased = got["user.erased"][0].body["data"]
    assert erased["id"] == carol["id"] and erased["erased"] is True and erased["email"] is None
    # The other endpoint got the user events only.
    assert {r.body["type"] for r in receiver.of("users")} == {
        "user.created",
        "user.updated",
        "user.banned",
        "user.erased",
    }
    # Outcomes are recorded in batches: every one reads delivered shortly after.
    deadline = time.monotonic() + WAIT
    while True:
        status, listed = await chat.tenant.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries")
        assert status == 200 and set(listed) == {"data", "has_more", "next_cursor"}
        if {d["status"] for d in listed["data"]} == {"delivered"}:
            break
        assert time.monotonic() < deadline, listed
        await asyncio.sleep(0.1)
    assert len(listed["data"]) == len(everything) and all(
        d["attempts"] == 1 for d in listed["data"]
    )
    assert only_users["id"] != endpoint["id"]


async def test_the_api_scopes_validates_and_never_shows_a_secret_again(admin: Api) -> None:
    chat, other = await Chat.create(admin, "A"), await Chat.create(admin, "B")
    status, created = await chat.tenant.post(
        "/api/v1/webhooks", {"url": "http://127.0.0.1:9/x", "event_types": ["message.*"]}
    )
    assert status == 201
    wid = created["id"]
    status, shown = await chat.tenant.get(f"/api/v1/webhooks/{wid}")
    assert status == 200 and "secret" not in shown
    status, listed = await chat.tenant.get("/api/v1/webhooks")
    assert status == 200 and [w["id"] for w in listed["data"]] == [wid]
    assert listed["has_more"] is False and "secret" not in listed["data"][0]
    for path in (f"/api/v1/webhooks/{wid}", f"/api/v1/webhooks/{wid}/deliveries"):
        status, body = await other.tenant.get(path)
        assert status == 404 and body["error"]["code"] == "not_found"
    status, _ = await other.tenant.delete(f"/api/v1/webhooks/{wid}")
    assert status == 404
    status, _ = await other.tenant.post(f"/api/v1/webhooks/{wid}/test")
    assert status == 404
    bad = [
        {"url": "ftp://x.example/y", "event_types": ["*"]},
        {"url": "https://user:pw@x.example/y", "event_types": ["*"]},
        {"url": "https://x.example/y", "event_types": ["mesage.*"]},
        {"url": "https://x.example/y", "event_types": []},
        {"url": "https://x.example/y", "event_types": ["*"], "secret": "mine"},
    ]
    for body in bad:
        status, answer = await chat.tenant.post("/api/v1/webhooks", body)
        assert status in (400, 422), (body, answer)
    status, patched = await chat.tenant.patch(
        f"/api/v1/webhooks/{wid}", {"enabled": False, "event_types": ["user.*"]}
    )
    assert status == 200 and patched["enabled"] is False and patched["event_types"] == ["user.*"]
    status, _ = await chat.tenant.post(f"/api/v1/webhooks/{wid}/deliveries/999999/retry")
    assert status == 404
    status, _ = await chat.tenant.delete(f"/api/v1/webhooks/{wid}")
    assert status == 204
    status, _ = await chat.tenant.get(f"/api/v1/webhooks/{wid}")
    assert status == 404


async def test_ping_rotation_with_overlap_and_redelivery(admin: Api, receiver: Receiver) -> None:
    chat = await Chat.create(admin, "Rotate")
    endpoint = await hook(chat, receiver, "r", ["user.*"])
    wid, old = endpoint["id"], endpoint["secret"]
    status, ping = await chat.tenant.post(f"/api/v1/webhooks/{wid}/test")
    assert status == 200 and ping["delivered"] is True and ping["status"] == 200
    assert receiver.of("r")[-1].body["type"] == "webhook.ping" and receiver.of("r")[-1].verified
    status, rotated = await chat.tenant.post(
        f"/api/v1/webhooks/{wid}/rotate-secret", {"overlap_seconds": 3600}
    )
    assert status == 200 and rotated["secret"] != old
    assert rotated["previous_secret_expires_at"] is not None
    new = rotated["secret"]
    await chat.user("Dora")
    found = await until(
        lambda: [r for r in receiver.of("r") if r.body["type"] == "user.created"],
        "a delivery after the rotation",
    )
    item = found[0]
    for secret in (old, new):  # during the overlap both verify
        Webhook(secret).verify(item.raw, item.headers)
    assert len(item.headers["webhook-signature"].split(" ")) == 2
    # An overlap of 0: the old secret stops at once.
    status, again = await chat.tenant.post(
        f"/api/v1/webhooks/{wid}/rotate-secret", {"overlap_seconds": 0}
    )
    assert status == 200
    receiver.secrets["r"] = [new]
    status, _ = await chat.tenant.post(f"/api/v1/webhooks/{wid}/test")
    assert status == 200 and receiver.of("r")[-1].verified is False
    receiver.secrets["r"] = [again["secret"]]
    status, _ = await chat.tenant.post(f"/api/v1/webhooks/{wid}/test")
    assert receiver.of("r")[-1].verified is True
    assert len(receiver.of("r")[-1].headers["webhook-signature"].split(" ")) == 1
    # Redelivery of one delivery, and of everything delivered in a time range.
    status, listed = await chat.tenant.get(f"/api/v1/webhooks/{wid}/deliveries")
    (delivery,) = [d for d in listed["data"] if d["event_type"] == "user.created"]
    before = len([r for r in receiver.of("r") if r.message_id == delivery["message_id"]])
    status, retried = await chat.tenant.post(
        f"/api/v1/webhooks/{wid}/deliveries/{delivery['id']}/retry"
    )
    assert status == 202 and retried["status"] == "pending" and retried["attempts"] == 0

    def copies() -> int:
        return len([r for r in receiver.of("r") if r.message_id == delivery["message_id"]])

    await until(lambda: copies() == before + 1, "the redelivery")
    deadline = time.monotonic() + WAIT
    while True:  # its outcome is recorded a moment after it arrived
        status, listed = await chat.tenant.get(
            f"/api/v1/webhooks/{wid}/deliveries", params={"status": "delivered"}
        )
        if any(d["id"] == delivery["id"] for d in listed["data"]):
            break
        assert time.monotonic() < deadline, listed
        await asyncio.sleep(0.1)
    status, counted = await chat.tenant.post(
        f"/api/v1/webhooks/{wid}/deliveries/retry",
        {"since": "2000-01-01T00:00:00Z", "status": "delivered"},
    )
    assert status == 202 and counted["count"] >= 1
    await until(lambda: copies() == before + 2, "the redelivery by time range")
    assert all(r.verified for r in receiver.of("r")[-1:])


async def test_a_receiver_down_then_failing_then_throttling_loses_nothing_in_order(
    admin: Api, receiver: Receiver
) -> None:
    chat = await Chat.create(admin, "Down")
    await hook(chat, receiver, "d", ["message.*"])
    alice, bob = await chat.user("Alice"), await chat.user("Bob")
    rooms = [await chat.conversation(alice, bob, title=f"R{i}") for i in range(3)]
    await receiver.stop()
    sent: dict[str, list[int]] = {c: [] for c in rooms}
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 30.0:  # the receiver is down for 30 s; sends go on
        room = rooms[n % 3]
        message = await chat.send(alice if n % 2 else bob, room, f"m{n}")
        sent[room].append(message["seq"])
        n += 1
        await asyncio.sleep(0.25)
    answers = iter([(500, {})] * 3 + [(429, {"Retry-After": "2"})])
    throttled: list[float] = []

    def answer(_request: web.Request) -> tuple[int, dict[str, str]]:
        status, headers = next(answers, (200, {}))
        if status == 429:
            throttled.append(time.monotonic())
        return status, headers

    receiver.answer = answer
    await receiver.start()
    total = sum(len(v) for v in sent.values())

    def delivered() -> set[str]:
        return {r.message_id for r in receiver.of("d")}

    await until(lambda: len(delivered()) >= total and throttled, "every message", timeout=90)
    assert len(delivered()) == total
    arrivals = receiver.of("d")
    assert all(r.verified for r in arrivals)
    # Retry-After: 2 s. Requests already in flight arrive at once; then nothing until then.
    quiet = [r.at - throttled[0] for r in arrivals if 0.2 < r.at - throttled[0] < 1.9]
    assert quiet == [], quiet
    # Per conversation, the first arrival of each event is in log order.
    for room in rooms:
        seen: list[int] = []
        for r in arrivals:
            if r.body.get("conversation_id") == room and r.body["event_seq"] not in seen:
                seen.append(r.body["event_seq"])
        assert seen == sorted(seen) and seen == sent[room], (room, seen, sent[room])


async def test_payloads_are_rendered_when_sent_so_deletions_and_erasures_hold(
    admin: Api, receiver: Receiver
) -> None:
    chat = await Chat.create(admin, "Later")
    await hook(chat, receiver, "l", ["message.created"])
    alice, bob = await chat.user("Alice"), await chat.user("Bob")
    cid = await chat.conversation(alice, bob)
    await receiver.stop()  # nothing can be delivered before the changes below
    gone = await chat.send(alice, cid, "deleted words 8812")
    hers = await chat.send(alice, cid, "erased words 5521")
    kept = await chat.send(bob, cid, "bob keeps 3301")
    status, _ = await chat.widgets[alice["id"]].delete(
        f"/api/widget/conversations/{cid}/messages/{gone['id']}"
    )
    assert status == 204
    status, _ = await chat.tenant.delete(f"/api/v1/users/{alice['id']}")
    assert status == 204
    await receiver.start()
    shown = await until(
        lambda: (
            (d := {r.body["data"]["id"]: r.body["data"] for r in receiver.of("l")})
            and len(d) == 3
            and d
        ),
        "the three messages",
    )
    assert shown[gone["id"]]["deleted"] is True and shown[gone["id"]]["content"] == ""
    assert shown[hers["id"]]["content"] == "" and shown[hers["id"]]["sender"]["name"] == (
        "Deleted user"
    )
    assert shown[kept["id"]]["content"] == "bob keeps 3301"
    raw = b"".join(r.raw for r in receiver.of("l"))
    # The whole phrases: their digits alone can turn up in a timestamp (135521Z).
    assert b"deleted words 8812" not in raw and b"erased words 5521" not in raw


async def test_an_endpoint_answering_410_is_disabled_with_the_reason(
    admin: Api, receiver: Receiver
) -> None:
    chat = await Chat.create(admin, "Gone")
    endpoint = await hook(chat, receiver, "g", ["user.*"])
    receiver.answer = lambda _r: (410, {})
    await chat.user("Eve")

    async def disabled() -> dict[str, Any] | None:
        status, shown = await chat.tenant.get(f"/api/v1/webhooks/{endpoint['id']}")
        assert status == 200
        return shown if not shown["enabled"] else None

    deadline = time.monotonic() + WAIT
    while (shown := await disabled()) is None:
        assert time.monotonic() < deadline, "the endpoint was not disabled"
        await asyncio.sleep(0.1)
    assert "410" in shown["disabled_reason"]
    status, enabled = await chat.tenant.patch(
        f"/api/v1/webhooks/{endpoint['id']}", {"enabled": True}
    )
    assert status == 200 and enabled["disabled_reason"] is None


@pytest.mark.faults
async def test_a_kill_9_of_the_webhooks_process_mid_burst_loses_nothing(
    admin: Api, receiver: Receiver, stack: RunningStack
) -> None:
    chat = await Chat.create(admin, "Kill")
    await hook(chat, receiver, "k", ["message.created"])
    alice, bob = await chat.user("Alice"), await chat.user("Bob")
    rooms = [await chat.conversation(alice, bob, title=f"K{i}") for i in range(4)]
    expected: set[str] = set()

    async def burst(count: int) -> None:
        for i in range(count):
            message = await chat.send(alice, rooms[i % 4], f"k{i}")
            expected.add(message["id"])

    sending = asyncio.create_task(burst(200))
    await until(lambda: len(receiver.of("k")) >= 20, "the first deliveries")
    pid = stack.pids()["webhooks"]
    os.kill(pid, signal.SIGKILL)
    await sending
    await until(lambda: stack.pids()["webhooks"] != pid, "the webhooks process restarted")

    def ids() -> set[str]:
        return {r.body["data"]["id"] for r in receiver.of("k")}

    await until(lambda: ids() >= expected, "every message after the kill", timeout=90)
    assert ids() == expected
    for room in rooms:
        seqs: list[int] = []
        for r in receiver.of("k"):
            if r.body["conversation_id"] == room and r.body["event_seq"] not in seqs:
                seqs.append(r.body["event_seq"])
        assert seqs == sorted(seqs)


async def test_a_delivery_that_succeeds_at_once_is_written_once_with_its_outcome(
    admin: Api, receiver: Receiver, stack: RunningStack
) -> None:
    """Its row is written in the intake's transaction after its first attempt, already
    delivered, and never updated (``delivery``'s note): a trigger on the table counts
    every update of this endpoint's rows while messages go out. A receiver that fails
    the first attempt gets its row written with that outcome, then updated once."""
    chat = await Chat.create(admin, "Once")
    endpoint = await hook(chat, receiver, "once", ["message.created"])
    alice, bob = await chat.user("Alice"), await chat.user("Bob")
    rooms = [await chat.conversation(alice, bob, title=f"O{i}") for i in range(3)]

    async def listed() -> list[dict[str, Any]]:
        status, page = await chat.tenant.get(
            f"/api/v1/webhooks/{endpoint['id']}/deliveries", params={"limit": "100"}
        )
        assert status == 200, page
        return list(page["data"])

    async def all_delivered(count: int) -> list[dict[str, Any]]:
        async def delivered() -> list[dict[str, Any]] | None:
            rows = await listed()
            ok = len(rows) >= count and {r["status"] for r in rows} == {"delivered"}
            return rows if ok else None

        return list(await until(delivered, f"{count} deliveries listed as delivered"))

    # One message first, recorded before the trigger exists: the sender has read the new
    # endpoint by then (an endpoint it does not know yet takes the usual way).
    await chat.send(alice, rooms[0], "warm up")
    await all_delivered(1)
    conn = await asyncpg.connect(plain_url(stack.info["database_url"]))
    counted = f"updates_{endpoint['id'].replace('-', '_')}"
    try:
        await conn.execute(
            f"""
            CREATE TABLE public.{counted} (id bigint, status text);
            CREATE FUNCTION public.{counted}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO public.{counted} VALUES (OLD.id, NEW.status); RETURN NEW; END $$;
            CREATE TRIGGER {counted} AFTER UPDATE ON webhooks.deliveries FOR EACH ROW
              WHEN (OLD.endpoint_id = '{endpoint["id"]}') EXECUTE FUNCTION public.{counted}();
            """
        )
        for i in range(12):
            await chat.send(alice, rooms[i % 3], f"once {i}")
        rows = await all_delivered(13)
        assert all(r["attempts"] == 1 and r["last_status"] == 200 for r in rows), rows
        assert await conn.fetch(f"SELECT * FROM public.{counted}") == []

        # Failing first: written pending with the failed attempt, updated once delivered.
        receiver.answer = lambda _request: (500, {})
        late = await chat.send(bob, rooms[0], "once more")

        def attempts() -> int:
            return sum(r.body["data"]["id"] == late["id"] for r in receiver.of("once"))

        await until(lambda: attempts() == 1, "the failed first attempt")
        receiver.answer = None
        await until(lambda: attempts() == 2, "the retry")
        updates = await until(
            lambda: conn.fetch(f"SELECT status FROM public.{counted}"),
            "the delivered retry recorded",
        )
        assert [u["status"] for u in updates] == ["delivered"]
        newest = (await listed())[0]
        assert newest["status"] == "delivered" and newest["attempts"] == 2
    finally:
        await conn.execute(
            f"DROP TRIGGER IF EXISTS {counted} ON webhooks.deliveries;"
            f"DROP FUNCTION IF EXISTS public.{counted}(); DROP TABLE IF EXISTS public.{counted};"
        )
        await conn.close()


async def test_an_endpoint_deleted_while_a_first_attempt_is_out_keeps_no_pending_delivery(
    admin: Api, receiver: Receiver, stack: RunningStack
) -> None:
    """The intake writes a batch's rows after its first attempts: an endpoint deleted in
    between (its pending rows cancelled before these existed) gets none, or they would
    wait for ever, sent by nobody."""
    chat = await Chat.create(admin, "Gone")
    endpoint = await hook(chat, receiver, "gone", ["message.created"])
    alice, bob = await chat.user("Alice"), await chat.user("Bob")
    cid = await chat.conversation(alice, bob, title="Gone")
    await chat.send(alice, cid, "warm up")  # the sender knows the endpoint after this one
    await until(lambda: len(receiver.of("gone")) == 1, "the first delivery")
    release = asyncio.Event()
    receiver.hold, receiver.answer = release, lambda _request: (500, {})
    try:
        await chat.send(alice, cid, "held")
        await until(lambda: len(receiver.of("gone")) == 2, "the held first attempt")
        status, _ = await chat.tenant.delete(f"/api/v1/webhooks/{endpoint['id']}")
        assert status == 204
    finally:
        release.set()  # answered 500 now, after the deletion
    nc = await bus.connect(stack.info["nats_url"], "test-webhooks")
    try:
        last = (await nc.jetstream().stream_info(bus.CONVERSATIONS.name)).state.last_seq
    finally:
        await nc.close()
    conn = await asyncpg.connect(plain_url(stack.info["database_url"]))
    try:
        reached = "SELECT last_seq FROM webhooks.projection_checkpoints WHERE name = $1"

        async def taken() -> bool:
            return (await conn.fetchval(reached, "webhooks.conversations") or 0) >= last

        await until(taken, "the intake to take the held message")
        pending = await conn.fetch(
            "SELECT id FROM webhooks.deliveries WHERE endpoint_id = $1 AND status = 'pending'",
            endpoint["id"],
        )
        assert pending == []
    finally:
        await conn.close()

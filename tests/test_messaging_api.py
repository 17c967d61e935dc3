"""Conversations and messages through the gateway, widget and tenant side, against the stack."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from confab import bus
from confab.contracts import messaging
from confab.contracts.system import HealthQuery
from confab.eventlog import read_subject
from confab.rpc import RpcClient
from tests.client import Api, new_workspace
from tests.stack import RunningStack


class World:
    """A workspace with a tenant client and helpers to make users with widget sessions."""

    def __init__(self, admin: Api, workspace: dict[str, Any]) -> None:
        self.workspace = workspace
        self.tenant = admin.as_(**{"X-API-Key": workspace["api_key"]})

    async def user(self, name: str) -> tuple[dict[str, Any], Api]:
        status, user = await self.tenant.post(
            "/api/v1/users", {"external_id": f"{name}-{uuid.uuid4().hex[:6]}", "name": name}
        )
        assert status == 201, user
        status, session = await self.tenant.post("/api/v1/sessions", {"user_id": user["id"]})
        assert status == 201, session
        return user, self.tenant.as_(Authorization=f"Bearer {session['token']}")

    async def conversation(self, *users: dict[str, Any], kind: str = "direct") -> str:
        status, conv = await self.tenant.post(
            "/api/v1/conversations",
            {"participant_ids": [u["id"] for u in users], "type": kind},
        )
        assert status == 201, conv
        return str(conv["id"])


@pytest.fixture
async def world(stack: RunningStack, http: aiohttp.ClientSession) -> World:
    admin = Api(http, stack.gateway, stack.admin_headers)
    return World(admin, await new_workspace(admin))


async def unread(widget: Api, conversation_id: str) -> int:
    status, page = await widget.get("/api/widget/conversations")
    assert status == 200, page
    return next(c["unread_count"] for c in page["data"] if c["id"] == conversation_id)


async def send(widget: Api, conversation_id: str, content: str, **extra: Any) -> dict[str, Any]:
    status, message = await widget.post(
        f"/api/widget/conversations/{conversation_id}/messages", {"content": content, **extra}
    )
    assert status == 201, message
    return dict(message)


async def test_a_two_user_conversation_with_exact_unread_counts(world: World) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    # The same direct pair again: the same conversation.
    status, again = await world.tenant.post(
        "/api/v1/conversations", {"participant_ids": [bob["id"], ann["id"]], "type": "direct"}
    )
    assert (status, again["id"]) == (200, cid)
    base = f"/api/widget/conversations/{cid}"

    hello = await send(ann_w, cid, "Hello!")
    assert hello["sender"]["name"] == "Ann" and hello["content"] == "Hello!"
    assert (await unread(ann_w, cid), await unread(bob_w, cid)) == (0, 1)
    second = await send(ann_w, cid, "Are you there?")
    assert second["seq"] > hello["seq"]
    assert await unread(bob_w, cid) == 2

    assert (await bob_w.post(f"{base}/read", {"seq": hello["seq"]}))[0] == 204
    assert await unread(bob_w, cid) == 1
    reply = await send(bob_w, cid, "Yes!")
    assert (await unread(ann_w, cid), await unread(bob_w, cid)) == (1, 1)
    assert (await bob_w.post(f"{base}/read", {}))[0] == 204
    assert await unread(bob_w, cid) == 0

    status, edited = await ann_w.patch(
        f"{base}/messages/{second['id']}", {"content": "Still there?"}
    )
    assert (status, edited["content"]) == (200, "Still there?") and edited["edited_at"]
    status, body = await bob_w.patch(f"{base}/messages/{second['id']}", {"content": "Hijack"})
    assert (status, body["error"]["code"]) == (403, "forbidden")

    assert (await bob_w.post(f"{base}/messages/{hello['id']}/reactions", {"emoji": "👍"}))[0] == 204
    assert (await ann_w.post(f"{base}/messages/{hello['id']}/reactions", {"emoji": "👍"}))[0] == 204
    assert (await ann_w.post(f"{base}/messages/{hello['id']}/reactions", {"emoji": "👍"}))[0] == 204
    _, page = await ann_w.get(f"{base}/messages")
    by_id = {m["id"]: m for m in page["data"]}
    assert by_id[hello["id"]]["reactions"] == {"👍": {"count": 2, "me": True}}
    assert (await bob_w.delete(f"{base}/messages/{hello['id']}/reactions/👍"))[0] == 204
    _, page = await bob_w.get(f"{base}/messages")
    assert {m["id"]: m for m in page["data"]}[hello["id"]]["reactions"] == {
        "👍": {"count": 1, "me": False}
    }

    # Ann's unread count: Bob's "Yes!" only. Deleting it makes it zero.
    assert await unread(ann_w, cid) == 1
    assert (await bob_w.delete(f"{base}/messages/{reply['id']}"))[0] == 204
    assert await unread(ann_w, cid) == 0
    _, page = await ann_w.get(f"{base}/messages")
    tomb = {m["id"]: m for m in page["data"]}[reply["id"]]
    assert tomb["deleted"] is True and tomb["content"] == ""

    _, listing = await ann_w.get("/api/widget/conversations")
    conv = next(c for c in listing["data"] if c["id"] == cid)
    assert {p["id"] for p in conv["participants"]} == {ann["id"], bob["id"]}
    status, one = await ann_w.get(base)
    assert status == 200 and one["conversation"]["id"] == cid and one["messages"]


async def test_history_pages_both_ways_without_gap_or_duplicate(world: World) -> None:
    ann, ann_w = await world.user("Ann")
    bob, _ = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    sent = [await send(ann_w, cid, f"m{i}") for i in range(23)]
    base = f"/api/widget/conversations/{cid}/messages"

    older: list[dict[str, Any]] = []
    before = None
    while True:
        _, page = await ann_w.get(
            base, params={"limit": 5, **({"before": before} if before else {})}
        )
        older = page["data"] + older
        if not page["has_more"]:
            break
        before = page["data"][0]["seq"]
    assert [m["id"] for m in older] == [m["id"] for m in sent]

    newer: list[dict[str, Any]] = []
    after = 0
    while True:
        _, page = await ann_w.get(base, params={"limit": 7, "after": after})
        newer += page["data"]
        if not page["has_more"]:
            break
        after = page["data"][-1]["seq"]
    assert [m["id"] for m in newer] == [m["id"] for m in sent]
    seqs = [m["seq"] for m in newer]
    assert seqs == sorted(set(seqs))


async def test_events_after_a_seq_are_exactly_what_happened_since(world: World) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    first = await send(ann_w, cid, "one")
    base = f"/api/widget/conversations/{cid}"
    second = await send(bob_w, cid, "two")
    await ann_w.post(f"{base}/messages/{second['id']}/reactions", {"emoji": "🎉"})
    await bob_w.patch(f"{base}/messages/{second['id']}", {"content": "two!"})
    await bob_w.post(f"{base}/read", {})

    status, events = await bob_w.get(f"{base}/events", params={"after": first["seq"]})
    assert status == 200
    names = [e["event"] for e in events["data"]]
    assert names == ["message.created", "reaction.added", "message.updated", "message.read"]
    seqs = [e["seq"] for e in events["data"]]
    assert seqs == list(range(first["seq"] + 1, first["seq"] + 5))  # gap-free
    assert events["data"][0]["data"]["id"] == second["id"]
    assert events["data"][1]["data"] == {
        "message_id": second["id"],
        "emoji": "🎉",
        "user_id": ann["id"],
        "event_seq": seqs[1],
    }
    assert events["data"][2]["data"]["content"] == "two!"
    _, none = await bob_w.get(f"{base}/events", params={"after": seqs[-1]})
    assert none["data"] == []


async def test_resending_a_client_msg_id_returns_the_original(world: World) -> None:
    ann, ann_w = await world.user("Ann")
    bob, _ = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    url = f"/api/widget/conversations/{cid}/messages"
    body = {"content": "once", "client_msg_id": "c-42"}
    results = await asyncio.gather(*(ann_w.post(url, body) for _ in range(50)))
    assert sorted(s for s, _ in results) == [200] * 49 + [201]
    assert len({m["id"] for _, m in results}) == 1
    _, page = await ann_w.get(url)
    assert [m["content"] for m in page["data"]] == ["once"]


async def test_who_may_do_what(
    world: World, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    _, eve_w = await world.user("Eve")
    cid = await world.conversation(ann, bob)
    message = await send(ann_w, cid, "private")
    base = f"/api/widget/conversations/{cid}"
    for call in (
        eve_w.get(base),
        eve_w.get(f"{base}/messages"),
        eve_w.post(f"{base}/messages", {"content": "let me in"}),
        eve_w.post(f"{base}/read", {}),
        eve_w.post(f"{base}/typing", {"is_typing": True}),
        eve_w.get(f"{base}/events"),
        eve_w.post(f"{base}/messages/{message['id']}/reactions", {"emoji": "x"}),
        eve_w.post(f"/api/widget/messages/{message['id']}/report", {"reason": "spam"}),
    ):
        status, body = await call
        assert (status, body["error"]["code"]) == (404, "not_found"), body

    other = World(
        Api(http, stack.gateway, stack.admin_headers),
        await new_workspace(Api(http, stack.gateway, stack.admin_headers), "Other"),
    )
    _, mallory_w = await other.user("Mallory")
    assert (await mallory_w.get(base))[0] == 404
    assert (await other.tenant.post(f"/api/v1/conversations/{cid}/messages", {"content": "x"}))[
        0
    ] == 404

    assert (await world.tenant.post(f"/api/v1/users/{bob['id']}/ban"))[0] == 200
    status, body = await bob_w.post(f"{base}/messages", {"content": "banned?"})
    assert (status, body["error"]["code"]) == (403, "banned")
    assert (await bob_w.get(f"{base}/messages"))[0] == 200  # still reads
    assert (await world.tenant.delete(f"/api/v1/users/{bob['id']}/ban"))[0] == 200
    await send(bob_w, cid, "back")

    status, body = await ann_w.post(
        f"{base}/messages", {"content": "x", "attachment_ids": ["att_nope"]}
    )
    assert (status, body["error"]["code"]) == (422, "invalid_request")
    assert "attachment_ids" in body["error"]["details"]


async def test_system_messages_membership_and_moderation(world: World) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    cat, cat_w = await world.user("Cat")
    cid = await world.conversation(ann, bob, kind="group")
    status, system = await world.tenant.post(
        f"/api/v1/conversations/{cid}/messages", {"content": "Booking confirmed"}
    )
    assert (status, system["sender"]) == (201, None)
    status, as_bob = await world.tenant.post(
        f"/api/v1/conversations/{cid}/messages", {"content": "via backend", "sender_id": bob["id"]}
    )
    assert (status, as_bob["sender"]["id"]) == (201, bob["id"])

    assert (await cat_w.get(f"/api/widget/conversations/{cid}"))[0] == 404
    assert (
        await world.tenant.post(f"/api/v1/conversations/{cid}/participants", {"user_id": cat["id"]})
    )[0] == 204
    assert (await cat_w.get(f"/api/widget/conversations/{cid}"))[0] == 200
    assert (await world.tenant.delete(f"/api/v1/conversations/{cid}/participants/{cat['id']}"))[
        0
    ] == 204
    assert (await cat_w.get(f"/api/widget/conversations/{cid}"))[0] == 404

    rude = await send(ann_w, cid, "rude words")
    status, body = await bob_w.post(f"/api/widget/messages/{rude['id']}/report", {"reason": "rude"})
    assert status == 204, body
    _, reports = await world.tenant.get("/api/v1/reports")
    mine = [r for r in reports["data"] if r["message"]["id"] == rude["id"]]
    assert mine and mine[0]["reason"] == "rude" and mine[0]["reporter_id"] == bob["id"]

    url = f"/api/v1/messages/{rude['id']}/moderation"
    assert (await world.tenant.post(url, {"action": "hide"}))[0] == 204
    _, page = await bob_w.get(f"/api/widget/conversations/{cid}/messages")
    hidden = {m["id"]: m for m in page["data"]}[rude["id"]]
    assert hidden["deleted"] is True and hidden["content"] == ""
    assert (await world.tenant.post(url, {"action": "restore"}))[0] == 204
    _, page = await bob_w.get(f"/api/widget/conversations/{cid}/messages")
    assert {m["id"]: m for m in page["data"]}[rude["id"]]["content"] == "rude words"
    _, listing = await world.tenant.get("/api/v1/conversations", params={"user_id": ann["id"]})
    assert cid in [c["id"] for c in listing["data"]]


async def test_typing_is_published_but_not_stored(world: World, stack: RunningStack) -> None:
    ann, ann_w = await world.user("Ann")
    bob, _ = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    nc = await bus.connect(stack.info["nats_url"], "test")
    try:
        sub = await nc.subscribe(f"ephemeral.{world.workspace['id']}.{cid}.typing")
        status, _ = await ann_w.post(f"/api/widget/conversations/{cid}/typing", {"is_typing": True})
        assert status == 204
        msg = await sub.next_msg(timeout=5)
        assert b'"is_typing":true' in msg.data.replace(b" ", b"") and ann["id"].encode() in msg.data
        names = [
            e.type
            async for e in read_subject(
                nc, "CONVERSATIONS", messaging.subject(world.workspace["id"], cid)
            )
        ]
        assert "typing" not in " ".join(names)
    finally:
        await nc.close()


async def test_a_demo_room_and_a_guest_from_its_link_share_a_conversation(world: World) -> None:
    """The demo page's two calls (``confab up`` gives the gateway the demo key)."""
    page = world.tenant.as_()  # the demo's endpoints take no credentials
    status, room = await page.post("/demo/api/rooms")
    assert status == 201 and room["link"] == f"/demo#room={room['room_token']}", room
    status, joined = await page.post(f"/demo/api/rooms/{room['room_token']}/guests")
    assert status == 201 and joined["conversation_id"] == room["conversation_id"], joined
    assert joined["guest"]["user_id"] != room["guest"]["user_id"]
    creator, guest = (
        page.as_(Authorization=f"Bearer {r['guest']['token']}") for r in (room, joined)
    )
    await send(creator, room["conversation_id"], "hi from the creator")
    _, messages = await guest.get(f"/api/widget/conversations/{room['conversation_id']}/messages")
    assert [m["content"] for m in messages["data"]] == ["hi from the creator"]


async def test_every_acknowledged_send_survives_a_messaging_crash(
    world: World, stack: RunningStack
) -> None:
    ann, ann_w = await world.user("Ann")
    bob, _ = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    url = f"/api/widget/conversations/{cid}/messages"
    acknowledged: list[str] = []
    stop = asyncio.Event()
    progress = asyncio.Event()

    async def until_acknowledged(count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(acknowledged) < count and (left := deadline - time.monotonic()) > 0:
            progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), left)

    async def sender(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            status, body = await ann_w.post(
                url, {"content": f"{n}-{i}", "client_msg_id": f"{n}-{i}"}
            )
            if status == 201:
                acknowledged.append(body["id"])
                progress.set()

    senders = [asyncio.create_task(sender(n)) for n in range(8)]
    await until_acknowledged(50, timeout=30)
    os.kill(stack.pids()["messaging"], signal.SIGKILL)
    during = len(acknowledged)
    await until_acknowledged(during + 50, timeout=60)  # resumes once messaging is restarted
    stop.set()
    await asyncio.gather(*senders)
    assert len(acknowledged) >= during + 50, "sends did not resume after the restart"

    nc = await bus.connect(stack.info["nats_url"], "test")
    try:
        logged = [
            e.event.message_id
            async for e in read_subject(
                nc, "CONVERSATIONS", messaging.subject(world.workspace["id"], cid)
            )
            if e.type == "message.posted"
        ]
    finally:
        await nc.close()
    assert set(acknowledged) <= set(logged)
    assert len(logged) == len(set(logged))

    stored: list[str] = []
    after = 0
    while True:
        status, page = await ann_w.get(url, params={"after": after, "limit": 100})
        assert status == 200
        stored += [m["id"] for m in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["seq"]
    assert stored == logged  # the read model skipped nothing and repeated nothing


async def test_twenty_senders_through_two_messaging_processes(
    world: World, stack: RunningStack
) -> None:
    """A second messaging process joins the queue group; seqs stay unique and gap-free."""
    env = {
        **os.environ,
        "CONFAB_NATS_URL": stack.info["nats_url"],
        "CONFAB_DATABASE_URL": stack.info["database_url"],
        "CONFAB_INSTANCE": "messaging-second",
    }
    second = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("confab-messaging")),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        nc = await bus.connect(stack.info["nats_url"], "test")
        try:
            # Both processes answer health on the queue group: wait until the second one does.
            rpc = RpcClient(nc, timeout=2)
            deadline = time.monotonic() + 30
            seen: set[str] = set()
            while len(seen) < 2 and time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    reply = await rpc.call(
                        HealthQuery(), subject=HealthQuery.subject_for("messaging")
                    )
                    seen.add(reply.instance)
            assert "messaging-second" in seen

            users = [await world.user(f"S{i}") for i in range(20)]
            status, conv = await world.tenant.post(
                "/api/v1/conversations",
                {"participant_ids": [u["id"] for u, _ in users], "type": "group"},
            )
            assert status == 201
            cid = conv["id"]
            url = f"/api/widget/conversations/{cid}/messages"
            results = await asyncio.gather(
                *(
                    widget.post(url, {"content": f"from {i}-{k}"})
                    for i, (_, widget) in enumerate(users)
                    for k in range(5)
                )
            )
            assert [s for s, _ in results] == [201] * 100
            message_seqs = sorted(m["seq"] for _, m in results)
            assert len(set(message_seqs)) == 100

            events = [
                e
                async for e in read_subject(
                    nc, "CONVERSATIONS", messaging.subject(world.workspace["id"], cid)
                )
            ]
            seqs = [e.event.seq for e in events if e.event.seq]
            assert seqs == list(range(1, len(seqs) + 1))  # gap-free, no repeat
            posted = [e.event.seq for e in events if e.type == "message.posted"]
            assert sorted(posted) == message_seqs
        finally:
            await nc.close()
    finally:
        second.terminate()
        await asyncio.wait_for(second.wait(), 30)


async def test_text_with_a_nul_character_is_refused_and_the_read_models_keep_going(
    world: World,
) -> None:
    ann, ann_w = await world.user("Ann")
    bob, _ = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    for path, body in [
        (f"/api/widget/conversations/{cid}/messages", {"content": "nul\u0000here"}),
        (f"/api/widget/conversations/{cid}/messages", {"content": "x", "metadata": {"k\u0000": 1}}),
    ]:
        status, error = await ann_w.post(path, body)
        assert (status, error["error"]["code"]) == (422, "invalid_request"), error
    status, error = await world.tenant.post(
        "/api/v1/users", {"external_id": "nul\u0000", "name": "N"}
    )
    assert status == 422, error
    status, error = await world.tenant.get("/api/v1/conversations", params={"user_id": "a\u0000"})
    assert status == 422, error
    # Nothing was stored: the next message is projected and read back as usual.
    after = await send(ann_w, cid, "after the refusals")
    _, page = await ann_w.get(f"/api/widget/conversations/{cid}/messages")
    assert after["id"] in [m["id"] for m in page["data"]]

"""Enforcement over the real stack: freezing a conversation, muting and banning users in
it, each in force on every path the moment its call returns, and timed ones lifting
themselves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from confab import bus
from confab.contracts.events import identity
from confab.eventlog import read_subject
from tests.client import Api, new_workspace
from tests.stack import RunningStack
from tests.test_authority import Socket, sockets, three, world
from tests.test_messaging_api import World, send
from tests.waiting import until

__all__ = ["sockets", "world"]  # fixtures used here


async def post(widget: Api, cid: str, content: str) -> tuple[int, Any]:
    return await widget.post(f"/api/widget/conversations/{cid}/messages", {"content": content})


async def test_a_frozen_conversation_refuses_posts_and_client_events(
    world: World, sockets: Callable[[], Awaitable[Socket]]
) -> None:
    (ann, ann_w), (_, bob_w), (_, cat_w), cid = await three(world)
    channel = f"private-conversation.{cid}"
    hello = await send(ann_w, cid, "hello")
    ann_sock, witness = await sockets(), await sockets()
    await ann_sock.join(ann_w, channel)
    await witness.join(cat_w, channel)
    await ann_sock.send("client-typing", {"round": 1}, channel)
    await witness.wait(lambda f: f["event"] == "client-typing" and f["data"] == {"round": 1})

    assert (await world.tenant.post(f"/api/v1/conversations/{cid}/freeze"))[0] == 204
    # Every user action is refused at once, with a reason.
    status, body = await post(bob_w, cid, "anyone?")
    assert (status, body["error"]["code"]) == (403, "frozen"), body
    base = f"/api/widget/conversations/{cid}"
    for status, body in [
        await ann_w.patch(f"{base}/messages/{hello['id']}", {"content": "edited"}),
        await bob_w.post(f"{base}/messages/{hello['id']}/reactions", {"emoji": "👍"}),
        await bob_w.post(f"{base}/typing", {"is_typing": True}),
    ]:
        assert (status, body["error"]["code"]) == (403, "frozen"), body
    # Clients hear of it, and the conversation says so.
    update = await witness.wait(lambda f: f["event"] == "conversation.updated")
    assert update["data"]["frozen"] is True
    status, conv = await ann_w.get(f"/api/widget/conversations/{cid}")
    assert status == 200 and conv["conversation"]["frozen"] is True
    # Client events are refused on the conversation's channel (4301), and reach nobody.
    await ann_sock.send("client-typing", {"round": 2}, channel)
    refused = await ann_sock.wait(
        lambda f: f["event"] == "pusher:error" and "frozen" in f["data"]["message"]
    )
    assert refused["data"]["code"] == 4301
    # The tenant can still post (a system message); reading goes on.
    status, notice = await world.tenant.post(
        f"/api/v1/conversations/{cid}/messages", {"content": "This chat is closed."}
    )
    assert status == 201, notice
    await witness.wait(
        lambda f: f["event"] == "message.created" and f["data"]["id"] == notice["id"]
    )
    assert not [f for f in witness.frames if f.get("data") == {"round": 2}]

    assert (await world.tenant.delete(f"/api/v1/conversations/{cid}/freeze"))[0] == 204
    await send(bob_w, cid, "open again")
    await ann_sock.send("client-typing", {"round": 3}, channel)
    await witness.wait(lambda f: f["event"] == "client-typing" and f["data"] == {"round": 3})
    assert (await world.tenant.post(f"/api/v1/conversations/{ann['id']}/freeze"))[0] == 404


async def test_mutes_and_bans_and_their_timed_lifting(world: World, stack: RunningStack) -> None:
    (ann, ann_w), (bob, bob_w), (cat, cat_w), cid = await three(world)
    mutes, bans = f"/api/v1/conversations/{cid}/mutes", f"/api/v1/conversations/{cid}/bans"
    await send(ann_w, cid, "hi all")

    # Muted: reads, cannot post; listed; lifted: posts again.
    assert (await world.tenant.get(mutes))[1] == {"data": []}
    assert (await world.tenant.post(mutes, {"user_id": bob["id"]}))[0] == 204
    status, listed = await world.tenant.get(mutes)
    assert (status, listed) == (200, {"data": [{"user_id": bob["id"], "until": None}]})
    status, body = await post(bob_w, cid, "let me talk")
    assert (status, body["error"]["code"]) == (403, "muted"), body
    status, history = await bob_w.get(f"/api/widget/conversations/{cid}/messages")
    assert status == 200 and [m["content"] for m in history["data"]] == ["hi all"]
    assert (await world.tenant.delete(f"{mutes}/{bob['id']}"))[0] == 204
    assert (await world.tenant.get(mutes))[1] == {"data": []}
    await send(bob_w, cid, "thanks")

    # A timed mute lifts itself: refused now, allowed once its time has passed.
    assert (await world.tenant.post(mutes, {"user_id": cat["id"], "duration_seconds": 1}))[0] == 204
    status, body = await post(cat_w, cid, "too soon")
    assert (status, body["error"]["code"]) == (403, "muted"), body
    status, listed = await world.tenant.get(mutes)
    assert [m["user_id"] for m in listed["data"]] == [cat["id"]]
    assert listed["data"][0]["until"] is not None

    async def cat_may_post() -> bool:
        return (await post(cat_w, cid, "back"))[0] == 201

    await until(cat_may_post, "cat_may_post", 15)
    assert (await world.tenant.get(mutes))[1] == {"data": []}  # run out: not listed

    # Banned here: out at once, cannot be added back until the ban lifts (by itself).
    status, _ = await world.tenant.post(bans, {"user_id": bob["id"], "duration_seconds": 2})
    assert status == 204
    status, body = await post(bob_w, cid, "still here?")
    assert status == 404, body
    status, listed = await world.tenant.get(bans)
    assert status == 200 and [b["user_id"] for b in listed["data"]] == [bob["id"]], listed
    add = f"/api/v1/conversations/{cid}/participants"
    status, body = await world.tenant.post(add, {"user_id": bob["id"]})
    assert (status, body["error"]["code"]) == (403, "forbidden"), body

    async def bob_may_rejoin() -> bool:
        return (await world.tenant.post(add, {"user_id": bob["id"]}))[0] == 204

    await until(bob_may_rejoin, "bob_may_rejoin", 15)
    assert (await post(bob_w, cid, "I am back"))[0] == 201

    # Hostile: users cannot enforce; bad input is a 4xx; another workspace's ids are 404.
    assert (await ann_w.post(mutes, {"user_id": bob["id"]}))[0] == 401
    assert (await ann_w.get(mutes))[0] == 401
    for body in [
        {"user_id": bob["id"], "duration_seconds": 0},
        {"user_id": bob["id"], "duration_seconds": -5},
        {"user_id": bob["id"], "duration_seconds": 10**12},
        {"user_id": "../../x"},
        {"user_id": bob["id"], "extra": 1},
    ]:
        status, reply = await world.tenant.post(mutes, body)
        assert status in (404, 422), (body, reply)
    status, reply = await world.tenant.post(mutes, {"user_id": "usr_nobody"})
    assert status == 404, reply
    # Another workspace's backend cannot reach this conversation at all.
    admin = Api(world.tenant.http, world.tenant.base, stack.admin_headers)
    other = World(admin, await new_workspace(admin, "Other"))
    for path, body in [
        (f"/api/v1/conversations/{cid}/freeze", None),
        (mutes, {"user_id": bob["id"]}),
        (bans, {"user_id": bob["id"]}),
    ]:
        status, reply = await other.tenant.post(path, body)
        assert status == 404, (path, reply)
    for path in (mutes, bans, f"/api/v1/conversations/{bob['id']}/mutes"):
        status, reply = await other.tenant.get(path)
        assert status == 404, (path, reply)
    assert (await other.tenant.post(f"/api/v1/users/{bob['id']}/ban"))[0] == 404
    direct = await world.conversation(ann, cat)
    status, reply = await world.tenant.post(
        f"/api/v1/conversations/{direct}/bans", {"user_id": cat["id"]}
    )
    assert status == 422, reply


async def test_a_timed_workspace_ban_lifts_itself_through_the_log(
    world: World, stack: RunningStack
) -> None:
    (ann, ann_w), (_, bob_w), (_, _), cid = await three(world)
    ban = f"/api/v1/users/{ann['id']}/ban"
    for bad in ("0", "-1", "soon", str(10**12)):
        status, body = await world.tenant.post(ban, params={"duration_seconds": bad})
        assert status == 422, (bad, body)
    status, user = await world.tenant.post(ban, params={"duration_seconds": "1"})
    assert (status, user["banned"]) == (200, True), user
    status, body = await post(ann_w, cid, "may I?")
    assert (status, body["error"]["code"]) == (403, "banned"), body

    async def ann_may_post() -> bool:
        return (await post(ann_w, cid, "I am back"))[0] == 201

    await until(ann_may_post, "ann_may_post", 15)
    status, user = await world.tenant.get(f"/api/v1/users/{ann['id']}")
    assert (status, user["banned"]) == (200, False), user
    # The lifting is a user.unbanned in the log, appended by identity's schedule.
    subject = identity.subject(world.workspace["id"], "user", ann["id"])
    nc = await bus.connect(stack.info["nats_url"], "test")
    try:
        stored = [e async for e in read_subject(nc, bus.IDENTITY.name, subject)]
    finally:
        await nc.close()
    kinds = [(type(e.event).__name__, e.actor) for e in stored[-2:]]
    assert kinds == [("UserBanned", kinds[0][1]), ("UserUnbanned", "schedule")], kinds
    # A ban without a duration stays until lifted by hand.
    assert (await world.tenant.post(ban))[1]["banned"] is True
    assert (await post(bob_w, cid, "ann is out"))[0] == 201
    assert (await world.tenant.delete(ban))[1]["banned"] is False


async def test_a_muted_member_sends_no_client_events_until_unmuted(
    world: World, sockets: Callable[[], Awaitable[Socket]]
) -> None:
    (_ann, ann_w), (bob, bob_w), (_, cat_w), cid = await three(world)
    channel = f"private-conversation.{cid}"
    mutes = f"/api/v1/conversations/{cid}/mutes"
    bob_sock, witness = await sockets(), await sockets()
    await bob_sock.join(bob_w, channel)
    await witness.join(cat_w, channel)
    await bob_sock.send("client-typing", {"round": 1}, channel)
    await witness.wait(lambda f: f["event"] == "client-typing" and f["data"] == {"round": 1})

    # The mute is stored (seq 0, outside the timeline) before its call returns; the node
    # asks the log at the next client event, so it is refused at once, with the reason.
    assert (await world.tenant.post(mutes, {"user_id": bob["id"]}))[0] == 204
    await bob_sock.send("client-typing", {"round": 2}, channel)
    refused = await bob_sock.wait(
        lambda f: f["event"] == "pusher:error" and "muted" in f["data"]["message"]
    )
    assert refused["data"]["code"] == 4301
    status, body = await bob_w.post(f"/api/widget/conversations/{cid}/typing", {"is_typing": True})
    assert (status, body["error"]["code"]) == (403, "muted"), body
    # Others still talk; the muted one's event reached nobody.
    ann_sock = await sockets()
    await ann_sock.join(ann_w, channel)
    await ann_sock.send("client-typing", {"round": 3}, channel)
    await witness.wait(lambda f: f["event"] == "client-typing" and f["data"] == {"round": 3})
    assert not [f for f in witness.frames if f.get("data") == {"round": 2}]

    # Unmuted: through again, at once.
    assert (await world.tenant.delete(f"{mutes}/{bob['id']}"))[0] == 204
    await bob_sock.send("client-typing", {"round": 4}, channel)
    await witness.wait(lambda f: f["event"] == "client-typing" and f["data"] == {"round": 4})
    # A timed mute lifts itself on the sockets too.
    assert (await world.tenant.post(mutes, {"user_id": bob["id"], "duration_seconds": 1}))[0] == 204
    await bob_sock.send("client-typing", {"round": 5}, channel)
    await bob_sock.wait(lambda f: f["event"] == "pusher:error" and "muted" in f["data"]["message"])

    async def through() -> bool:
        await bob_sock.send("client-typing", {"round": 6}, channel)
        return any(f.get("data") == {"round": 6} for f in witness.frames)

    await until(through, "through", 15)
    assert not [f for f in witness.frames if f.get("data") == {"round": 5}]

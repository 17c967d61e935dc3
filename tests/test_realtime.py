"""Real-time end to end: widgets on pusher-js and Laravel Echo against a running stack.

The widgets authorize through the gateway's ``/api/widget/broadcasting/auth``
with their session token, exactly as a browser would. What one widget does over
REST reaches the other as the ``api.md`` events, with the very payloads the
recovery endpoint returns; a non-participant is refused; two fanout nodes
deliver every event once, and the clients of a node killed with ``kill -9``
come back on the other and resume by ``seq`` with no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pusher
import pytest

from confab.ids import numeric_app_id
from confab_fanout.testing import (
    Balancer,
    FanoutNode,
    JsDriver,
)
from tests.client import Api, new_workspace
from tests.stack import RunningStack
from tests.test_messaging_api import World, send

# What the stored log numbers; the rest (protocol, whispers, typing) has no seq.
NUMBERED = {
    "message.created",
    "message.updated",
    "message.deleted",
    "reaction.added",
    "reaction.removed",
    "message.read",
    "participant.added",
    "participant.removed",
}


@pytest.fixture
async def world(stack: RunningStack, http: aiohttp.ClientSession) -> World:
    admin = Api(http, stack.gateway, stack.admin_headers)
    return World(admin, await new_workspace(admin))


def fanout_address(stack: RunningStack) -> tuple[str, int]:
    url = urlsplit(stack.info["fanout_ws_url"])
    assert url.hostname is not None and url.port is not None
    return url.hostname, url.port


async def widget_socket(
    driver: JsDriver,
    cid: str,
    stack: RunningStack,
    world: World,
    widget: Api,
    *,
    address: tuple[str, int] | None = None,
    echo: bool = False,
) -> str | None:
    """A widget's pusher-js (or Echo) client, authorizing through the gateway."""
    host, port = address or fanout_address(stack)
    return await driver.connect_to(
        cid,
        host,
        port,
        world.workspace["app_key"],
        auth_endpoint=f"{stack.gateway}/api/widget/broadcasting/auth",
        user_auth_endpoint=f"{stack.gateway}/api/widget/broadcasting/user-auth",
        headers={"Authorization": widget.headers["Authorization"]},
        echo=echo,
    )


def numbered(driver: JsDriver, cid: str, channel: str) -> list[dict[str, Any]]:
    return [r for r in driver.find(id=cid, type="event", channel=channel) if r["event"] in NUMBERED]


async def test_what_one_widget_does_reaches_the_other(
    world: World, stack: RunningStack, driver: JsDriver
) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    _, eve_w = await world.user("Eve")
    cid = await world.conversation(ann, bob)
    conv, presence = f"private-conversation.{cid}", f"presence-conversation.{cid}"
    base = f"/api/widget/conversations/{cid}"

    await widget_socket(driver, "bob", stack, world, bob_w)
    await widget_socket(driver, "eve", stack, world, eve_w)
    await widget_socket(driver, "ann", stack, world, ann_w, echo=True)  # Laravel Echo

    # A non-participant, or anyone but the user on a user channel, is refused.
    for channel in (conv, presence, f"private-user.{bob['id']}"):
        await driver.send("subscribe", id="eve", channel=channel)
        refused = await driver.wait(
            id="eve", type="event", channel=channel, event="pusher:subscription_error"
        )
        assert refused["data"]["status"] == 403, refused
    await driver.subscribe("bob", conv)
    await driver.subscribe("bob", f"private-user.{bob['id']}")
    here = await driver.subscribe("bob", presence)
    assert here["members"]["me"] == {"id": bob["id"], "info": {"name": "Bob", "avatar_url": None}}

    # Echo: Ann listens for .message.created and whispers; Bob's pusher-js gets the whisper.
    await driver.send(
        "echo_private", id="ann", channel=f"conversation.{cid}", listen=".message.created"
    )
    await driver.wait(id="ann", type="echo_subscribed")
    await driver.send(
        "echo_whisper", id="ann", channel=f"conversation.{cid}", event="typing", data={"n": 1}
    )
    whisper = await driver.wait(id="bob", type="event", channel=conv, event="client-typing")
    assert whisper["data"] == {"n": 1}

    # Typing over REST.
    assert (await ann_w.post(f"{base}/typing", {"is_typing": True}))[0] == 204
    typing = await driver.wait(id="bob", type="event", channel=conv, event="user.typing")
    assert typing["data"] == {"user_id": ann["id"], "name": "Ann", "is_typing": True}

    # A message: Bob gets the stored message and its seq; Echo's listen() fires for Ann.
    hello = await send(ann_w, cid, "Hello Bob", metadata={"k": "v"})
    created = await driver.wait(id="bob", type="event", channel=conv, event="message.created")
    assert created["data"] == {**hello, "event_seq": hello["seq"]}
    heard = await driver.wait(id="ann", type="echo_event", event=".message.created")
    assert heard["data"]["id"] == hello["id"]

    # Read receipt, reactions, an edit, a delete.
    assert (await bob_w.post(f"{base}/read", {}))[0] == 204
    read = await driver.wait(id="bob", type="event", channel=conv, event="message.read")
    assert read["data"]["user_id"] == bob["id"] and read["data"]["seq"] == hello["seq"]
    react = f"{base}/messages/{hello['id']}/reactions"
    assert (await bob_w.post(react, {"emoji": "👍"}))[0] == 204
    assert (await ann_w.post(react, {"emoji": "🎉"}))[0] == 204
    assert (await ann_w.delete(f"{react}/🎉"))[0] == 204
    removed = await driver.wait(id="bob", type="event", channel=conv, event="reaction.removed")
    assert removed["data"]["emoji"] == "🎉" and removed["data"]["user_id"] == ann["id"]
    status, edited = await ann_w.patch(f"{base}/messages/{hello['id']}", {"content": "Hi Bob"})
    assert status == 200
    updated = await driver.wait(id="bob", type="event", channel=conv, event="message.updated")
    assert updated["data"]["content"] == "Hi Bob"
    assert updated["data"]["edited_at"] == edited["edited_at"]
    assert updated["data"]["reactions"] == {"👍": {"count": 1, "me": False}}
    bye = await send(bob_w, cid, "bye")
    assert (await bob_w.delete(f"{base}/messages/{bye['id']}"))[0] == 204
    deleted = await driver.wait(id="bob", type="event", channel=conv, event="message.deleted")
    assert deleted["data"] == {"id": bye["id"], "seq": bye["seq"], "event_seq": bye["seq"] + 1}

    # Everything numbered Bob saw live, the recovery endpoint gives again, in order; each
    # message as it is now (what history shows): the edited one with its edit and
    # reactions, the deleted one as its tombstone.
    status, history = await bob_w.get(f"{base}/events", params={"after": 1})
    assert status == 200
    live = [(r["event"], r["data"]) for r in numbered(driver, "bob", conv)]
    replay = [(e["event"], e["data"]) for e in history["data"]]
    assert [(n, d["event_seq"]) for n, d in live] == [(n, d["event_seq"]) for n, d in replay]
    now = {d["id"]: d for n, d in live if n in ("message.created", "message.updated")}
    for (name, data), (_, seen) in zip(replay, live, strict=True):
        if name not in ("message.created", "message.updated"):
            assert data == seen
        elif data["id"] == bye["id"]:
            assert (data["content"], data["deleted"]) == ("", True)
        else:
            assert {**data, "event_seq": 0} == {**now[data["id"]], "event_seq": 0}

    # A new conversation reaches each participant's user channel.
    group = await world.conversation(bob, ann, kind="group")
    news = await driver.wait(
        id="bob", type="event", channel=f"private-user.{bob['id']}", event="conversation.created"
    )
    assert news["data"]["id"] == group and news["data"]["event_seq"] == 1
    assert {p["name"] for p in news["data"]["participants"]} == {"Ann", "Bob"}

    # Removed from a conversation: told so, then let go (nothing more reaches the socket).
    room = f"private-conversation.{group}"
    await driver.subscribe("bob", room)
    await driver.send(
        "echo_private", id="ann", channel=f"conversation.{group}", listen=".message.created"
    )
    await driver.wait(id="ann", type="echo_subscribed", channel=f"conversation.{group}")
    status, _ = await world.tenant.delete(f"/api/v1/conversations/{group}/participants/{bob['id']}")
    assert status == 204
    left = await driver.wait(id="bob", type="event", channel=room, event="participant.removed")
    assert left["data"]["user_id"] == bob["id"]
    gone = await driver.wait(
        id="bob", type="event", channel=room, event="pusher:subscription_error"
    )
    assert gone["data"]["status"] == 403
    after = await send(ann_w, group, "not for Bob")
    await driver.wait(lambda r: r["data"]["id"] == after["id"], id="ann", type="echo_event")
    assert not driver.find(id="bob", type="event", channel=room, event="message.created")

    # The tenant's backend pushes its own event with the official SDK, by pusher_app_id.
    status, me = await bob_w.get("/api/widget/me")
    assert status == 200 and me["pusher_app_id"] == numeric_app_id(world.workspace["id"])
    assert world.workspace["pusher_app_id"] == me["pusher_app_id"]
    host, port = fanout_address(stack)
    sdk = pusher.Pusher(
        app_id=me["pusher_app_id"],
        key=world.workspace["app_key"],
        secret=world.workspace["app_secret"],
        host=host,
        port=port,
        ssl=False,
    )
    await asyncio.to_thread(sdk.trigger, conv, "booking.confirmed", {"id": 7})
    custom = await driver.wait(id="bob", type="event", channel=conv, event="booking.confirmed")
    assert custom["data"] == {"id": 7}


async def test_resume_before_and_after_subscribing(
    world: World, stack: RunningStack, driver: JsDriver
) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    conv = f"private-conversation.{cid}"
    sent = [await send(ann_w, cid, f"m{i}") for i in range(6)]
    after = sent[1]["seq"]

    # Before subscribing: the backlog starts the moment the subscription does.
    await widget_socket(driver, "early", stack, world, bob_w)
    await driver.send(
        "send", id="early", event="confab:resume", data={"channel": conv, "after_seq": after}
    )
    await driver.subscribe("early", conv)
    # After subscribing (the spec's order).
    await widget_socket(driver, "late", stack, world, bob_w)
    await driver.subscribe("late", conv)
    await driver.send(
        "send", id="late", event="confab:resume", data={"channel": conv, "after_seq": after}
    )
    for cid_ in ("early", "late"):
        done = await driver.wait(id=cid_, type="event", channel=conv, event="confab:resumed")
        assert done["data"] == {"after_seq": after, "last_seq": sent[-1]["seq"], "count": 4}
    live = await send(ann_w, cid, "live")
    for cid_ in ("early", "late"):
        await driver.wait(
            lambda r: r["data"]["id"] == live["id"],
            id=cid_,
            type="event",
            channel=conv,
            event="message.created",
        )
        got = [r["data"]["event_seq"] for r in numbered(driver, cid_, conv)]
        assert got == [m["seq"] for m in sent[2:]] + [live["seq"]]

    # An edit of a message this fanout never rendered (posted before anyone subscribed):
    # asked of messaging, and the same as what recovery says.
    base = f"/api/widget/conversations/{cid}"
    status, edited = await ann_w.patch(f"{base}/messages/{sent[0]['id']}", {"content": "m0!"})
    assert status == 200 and edited["content"] == "m0!"
    updated = await driver.wait(id="early", type="event", channel=conv, event="message.updated")
    status, history = await bob_w.get(f"{base}/events", params={"after": live["seq"]})
    assert [(e["event"], e["data"]) for e in history["data"]] == [
        ("message.updated", updated["data"])
    ]
    assert updated["data"]["content"] == "m0!" and updated["data"]["seq"] == sent[0]["seq"]

    # Not a conversation channel, or too far behind: resync over REST.
    await driver.send(
        "send", id="late", event="confab:resume", data={"channel": "news", "after_seq": 0}
    )
    failed = await driver.wait(id="late", type="message", event="confab:resume_failed")
    assert failed["data"]["after_seq"] == 0


async def test_two_nodes_deliver_once_and_a_dead_nodes_clients_resume(
    world: World, stack: RunningStack, driver: JsDriver, tmp_path: Path
) -> None:
    second = FanoutNode(stack.info["nats_url"], tmp_path).start()
    balancer: Balancer | None = None
    try:
        await second.wait_ready()
        balancer = await Balancer([fanout_address(stack), (second.host, second.port)]).start()
        ann, ann_w = await world.user("Ann")
        bob, bob_w = await world.user("Bob")
        cid = await world.conversation(ann, bob)
        conv = f"private-conversation.{cid}"
        # Four tabs of Bob's, alternately on either node (round robin). Two resume as soon
        # as they are connected again, two once they are subscribed again.
        tabs = {"t0": "connected", "t1": "connected", "t2": "subscribed", "t3": "subscribed"}
        for tab, when in tabs.items():
            await widget_socket(
                driver, tab, stack, world, bob_w, address=(balancer.host, balancer.port)
            )
            await driver.subscribe(tab, conv)
            await driver.send("resume", id=tab, channel=conv, when=when)
        on_second = [
            t for t, port in zip(tabs, balancer.routes, strict=True) if port == second.port
        ]
        assert on_second == ["t1", "t3"], balancer.routes

        posted: list[dict[str, Any]] = []
        progress = asyncio.Event()
        stop = asyncio.Event()

        async def poster() -> None:
            i = 0
            while not stop.is_set():
                posted.append(await send(ann_w, cid, f"n{i}"))
                progress.set()
                i += 1

        async def until_posted(count: int, timeout: float = 60) -> None:
            deadline = time.monotonic() + timeout
            while len(posted) < count:
                assert time.monotonic() < deadline, f"only {len(posted)} posted"
                progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(progress.wait(), deadline - time.monotonic())

        task = asyncio.create_task(poster())
        try:
            await until_posted(10)
            second.kill()  # kill -9: its tabs' sockets drop and come back through the balancer
            for tab in on_second:
                await driver.wait(id=tab, type="resume_sent", timeout=60)
            await until_posted(len(posted) + 10)
        finally:
            stop.set()
            await task
        # Reconnections went to the live node only.
        assert set(balancer.routes[len(tabs) :]) == {balancer.backends[0][1]}

        expected = [m["seq"] for m in posted]
        for tab, when in tabs.items():
            await driver.wait(
                lambda r: r["data"]["event_seq"] == expected[-1],
                id=tab,
                type="event",
                channel=conv,
                event="message.created",
            )
            got = [r["data"]["event_seq"] for r in numbered(driver, tab, conv)]
            assert sorted(got) == expected, (tab, got)  # every event, exactly once
            if when == "connected":
                assert got == expected, (tab, got)  # and in order
    finally:
        second.kill()
        if balancer is not None:
            await balancer.stop()


async def test_webhooks_are_configured_through_the_admin_api(
    world: World, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    admin = Api(http, stack.gateway, stack.admin_headers)
    url = f"/api/admin/workspaces/{world.workspace['id']}/webhooks"
    assert await admin.get(url) == (200, {"webhooks": []})
    config = {
        "webhooks": [
            {"url": "https://example.com/pusher", "event_types": ["member_added"]},
            {"url": "https://example.com/all"},
        ]
    }
    status, body = await admin.call("PUT", url, config)
    assert status == 200 and body["webhooks"][0] == config["webhooks"][0]
    assert (await admin.get(url))[1]["webhooks"] == body["webhooks"]
    status, body = await admin.call("PUT", url, {"webhooks": [{"url": "ftp://x"}]})
    assert status == 422, body
    status, body = await admin.call(
        "PUT", url, {"webhooks": [{"url": "https://x", "event_types": ["nope"]}]}
    )
    assert status == 422, body
    assert (await admin.get("/api/admin/workspaces/ws_unknown/webhooks"))[0] == 404
    assert (await admin.call("PUT", url, {"webhooks": []}))[1] == {"webhooks": []}

"""Mentions, threads and pins (issue 23) through the gateway, against the running stack.

Each feature on every read path (the reply, history, ``/events``, live frames,
``confab:resume``), and what a hostile participant of the same workspace tries:
other conversations' ids as ``parent_id`` or as the message to pin, mentions of
people who are not participants, offsets outside the text, too many or too deep.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.client import Api, new_workspace
from tests.stack import RunningStack
from tests.test_authority import sockets, three
from tests.test_messaging_api import World, send

__all__ = ["sockets"]  # the fixture, used by name


@pytest.fixture
async def world(stack: RunningStack, http: aiohttp.ClientSession) -> World:
    admin = Api(http, stack.gateway, stack.admin_headers)
    return World(admin, await new_workspace(admin))


def mention(text: str, name: str, user: dict[str, Any], nth: int = 0) -> dict[str, Any]:
    """The mention of ``@name`` (its ``nth`` occurrence) in ``text``."""
    start = -1
    for _ in range(nth + 1):
        start = text.index("@" + name, start + 1)
    return {"user_id": user["id"], "start": start, "end": start + 1 + len(name)}


def spans(message: dict[str, Any]) -> list[tuple[str, str]]:
    """(user id, the text each mention covers) of a message object."""
    text = message["content"]
    return [(m["user_id"], text[m["start"] : m["end"]]) for m in message["mentions"]]


async def test_mentions_are_checked_kept_through_edits_and_listed(
    world: World, sockets: Any
) -> None:
    (_ann, ann_w), (bob, bob_w), (cat, _cat_w), cid = await three(world)
    _dan, dan_w = await world.user("Dan")  # of the workspace, not of the conversation
    base = f"/api/widget/conversations/{cid}"
    sock = await sockets()
    channel = f"private-conversation.{cid}"
    await sock.join(bob_w, channel)

    # Code points, not UTF-16 units or bytes: an emoji before the mention.
    text = "🎉 hi @Bob and @Cat"
    given = [mention(text, "Cat", cat), mention(text, "Bob", bob)]
    posted = await send(ann_w, cid, text, mentions=given)
    assert spans(posted) == [(bob["id"], "@Bob"), (cat["id"], "@Cat")]  # in text order
    frame = await sock.wait(
        lambda f: f["event"] == "message.created" and f["data"]["id"] == posted["id"]
    )
    assert spans(frame["data"]) == spans(posted)

    # An edit without mentions keeps those whose text it did not touch, where they are now.
    edited_text = "🎉 hello there, hi @Bob and @Cat"
    status, edited = await ann_w.patch(f"{base}/messages/{posted['id']}", {"content": edited_text})
    assert status == 200, edited
    assert spans(edited) == [(bob["id"], "@Bob"), (cat["id"], "@Cat")]
    # Cat leaves; the next edit (again without mentions) drops her mention, keeps Bob's.
    status, _ = await world.tenant.delete(f"/api/v1/conversations/{cid}/participants/{cat['id']}")
    assert status == 204
    status, edited = await ann_w.patch(
        f"{base}/messages/{posted['id']}", {"content": edited_text + "!"}
    )
    assert status == 200 and spans(edited) == [(bob["id"], "@Bob")], edited
    # An edit that gives mentions replaces them (checked as a post's are).
    status, edited = await ann_w.patch(
        f"{base}/messages/{posted['id']}", {"content": "just @Bob", "mentions": []}
    )
    assert status == 200 and edited["mentions"] == []
    status, edited = await ann_w.patch(
        f"{base}/messages/{posted['id']}",
        {"content": "just @Bob", "mentions": [mention("just @Bob", "Bob", bob)]},
    )
    assert status == 200 and spans(edited) == [(bob["id"], "@Bob")]

    # Every read path shows the mentions of the text as it is now.
    status, history = await bob_w.get(f"{base}/messages")
    assert status == 200
    (shown,) = [m for m in history["data"] if m["id"] == posted["id"]]
    assert spans(shown) == [(bob["id"], "@Bob")]
    status, events = await bob_w.get(f"{base}/events", params={"after": 0})
    created = [e for e in events["data"] if e["event"] == "message.created"]
    assert spans(created[-1]["data"]) == [(bob["id"], "@Bob")]
    fresh = await sockets()  # a socket that saw nothing live
    await fresh.join(bob_w, channel)
    resumed = await fresh.resume(channel, 0)
    replayed = [f for f in resumed if f["event"] == "message.created"]
    assert replayed, resumed
    assert spans(replayed[-1]["data"]) == [(bob["id"], "@Bob")]

    # "Messages mentioning me": Bob's lists it; Dan's (never a participant) nothing.
    other = await send(ann_w, cid, "no mention here")
    status, mine = await bob_w.get("/api/widget/mentions")
    assert status == 200 and [m["id"] for m in mine["data"]] == [posted["id"]], mine
    status, mine = await bob_w.get("/api/widget/mentions", params={"conversation_id": cid})
    assert status == 200 and [m["id"] for m in mine["data"]] == [posted["id"]]
    status, theirs = await dan_w.get("/api/widget/mentions")
    assert status == 200 and theirs["data"] == []
    status, _ = await dan_w.get("/api/widget/mentions", params={"conversation_id": cid})
    assert status == 404
    # Deleted: gone from the list.
    assert (await ann_w.delete(f"{base}/messages/{posted['id']}"))[0] == 204
    status, mine = await bob_w.get("/api/widget/mentions")
    assert status == 200 and mine["data"] == []
    assert other["mentions"] == []


async def test_hostile_mentions_are_refused(world: World) -> None:
    (_ann, ann_w), (bob, _), (_cat, _), cid = await three(world)
    dan, _ = await world.user("Dan")
    url = f"/api/widget/conversations/{cid}/messages"
    text = "hi @Bob and @Dan"
    cases: list[tuple[Any, int, str]] = [
        ([mention(text, "Dan", dan)], 422, "not a participant"),  # of the workspace only
        ([{"user_id": "usr_nobody", "start": 3, "end": 7}], 422, "not a participant"),
        ([{"user_id": bob["id"], "start": 3, "end": 99}], 422, "not inside the text"),
        ([{"user_id": bob["id"], "start": 7, "end": 3}], 422, "not inside the text"),
        ([{"user_id": bob["id"], "start": 2, "end": 7}], 422, "does not start with @"),
        ([{"user_id": bob["id"], "start": -1, "end": 3}], 422, ""),
        ([{"user_id": bob["id"], "start": 3, "end": 10**9}], 422, ""),
        ([{"user_id": bob["id"], "start": 3, "end": 7}] * 2, 422, "overlaps"),
        ([{"user_id": bob["id"], "start": 3, "end": 7, "extra": 1}], 422, ""),
        ([{"user_id": {"$gt": ""}, "start": 3, "end": 7}], 422, ""),
        ([[[[[]]]]], 422, ""),
        ("@Bob", 422, ""),
        ([{"user_id": bob["id"], "start": 3, "end": 7}] * 51, 422, ""),
    ]
    for given, want, why in cases:
        status, body = await ann_w.post(url, {"content": text, "mentions": given})
        assert status == want, (given, body)
        assert body["error"]["code"] == "invalid_request", body
        assert why in json.dumps(body), (why, body)
    # A mention far past the end of a long text, and one just inside it.
    long = "x" * 9_990 + " @Bob"
    status, ok = await ann_w.post(url, {"content": long, "mentions": [mention(long, "Bob", bob)]})
    assert status == 201 and spans(ok) == [(bob["id"], "@Bob")]


async def test_threads_page_count_read_and_catch_up_after_a_gap(world: World, sockets: Any) -> None:
    (ann, ann_w), (_bob, bob_w), (cat, cat_w), cid = await three(world)
    base = f"/api/widget/conversations/{cid}"
    parent = await send(ann_w, cid, "Where shall we eat?")
    sock = await sockets()
    channel = f"private-conversation.{cid}"
    await sock.join(bob_w, channel)
    await sock.resume(channel, 0)
    seen = max(f["data"]["event_seq"] for f in sock.seen(channel) if "event_seq" in f["data"])
    await sock.close()  # Bob drops off: everything below is a gap to catch up

    first = await send(cat_w, cid, "Pizza", parent_id=parent["id"], client_msg_id="c-1")
    # A resend (a flaky network) returns the original reply, never a second one.
    status, again = await cat_w.post(
        f"{base}/messages", {"content": "Pizza", "parent_id": parent["id"], "client_msg_id": "c-1"}
    )
    assert status == 200 and again["id"] == first["id"], again
    second = await send(ann_w, cid, "Sushi?", parent_id=parent["id"])
    third = await send(cat_w, cid, "Both", parent_id=parent["id"])
    top = await send(ann_w, cid, "(unrelated)")
    replies = [first["id"], second["id"], third["id"]]
    assert all(m["parent_id"] == parent["id"] for m in (first, second, third))

    # /events after the gap: each reply once, in order, then the top-level message.
    status, events = await bob_w.get(f"{base}/events", params={"after": seen})
    assert status == 200
    created = [e["data"] for e in events["data"] if e["event"] == "message.created"]
    assert [m["id"] for m in created] == [*replies, top["id"]]
    assert [m["parent_id"] for m in created] == [parent["id"]] * 3 + [None]
    seqs = [e["seq"] for e in events["data"]]
    assert seqs == list(range(seen + 1, seen + 1 + len(seqs)))  # no gap, no duplicate
    # And by confab:resume on a new socket: the same.
    sock = await sockets()
    await sock.join(bob_w, channel)
    resumed = await sock.resume(channel, seen)
    assert [f["data"]["id"] for f in resumed if f["event"] == "message.created"] == [
        *replies,
        top["id"],
    ]
    # The parent as it is now, on the replay of its own creation too.
    status, events = await bob_w.get(f"{base}/events", params={"after": 0})
    (replayed,) = [e["data"] for e in events["data"] if e["data"].get("id") == parent["id"]]
    assert replayed["thread"]["reply_count"] == 3

    # The main timeline has top-level messages only; the thread has the replies.
    status, history = await bob_w.get(f"{base}/messages")
    assert [m["id"] for m in history["data"]] == [parent["id"], top["id"]]
    thread = history["data"][0]["thread"]
    assert thread["reply_count"] == 3 and thread["last_reply_id"] == third["id"]
    assert thread["participants"] == [ann["id"], cat["id"]]  # the author first
    status, page = await bob_w.get(f"{base}/messages/{parent['id']}/thread", params={"limit": 2})
    assert status == 200, page
    assert [m["id"] for m in page["data"]] == replies[1:] and page["has_more"]
    status, older = await bob_w.get(
        f"{base}/messages/{parent['id']}/thread", params={"before": page["next_cursor"]}
    )
    assert [m["id"] for m in older["data"]] == replies[:1] and not older["has_more"]
    # Unread per thread: three replies by others for Bob; the conversation counts one.
    assert page["unread_count"] == 3 and page["last_read_seq"] == 0
    status, convs = await bob_w.get("/api/widget/conversations")
    assert next(c for c in convs["data"] if c["id"] == cid)["unread_count"] == 2
    status, _ = await bob_w.post(f"{base}/read", {"seq": second["seq"], "parent_id": parent["id"]})
    assert status == 204
    status, page = await bob_w.get(f"{base}/messages/{parent['id']}/thread")
    assert (page["last_read_seq"], page["unread_count"]) == (second["seq"], 1)
    frame = await sock.wait(
        lambda f: f["event"] == "message.read" and f["data"].get("parent_id") == parent["id"]
    )
    assert frame["data"]["seq"] == second["seq"]
    status, convs = await bob_w.get("/api/widget/conversations")
    assert next(c for c in convs["data"] if c["id"] == cid)["unread_count"] == 2  # unmoved
    # A live reply reaches the socket as message.created with its parent.
    fourth = await send(bob_w, cid, "Fine", parent_id=parent["id"])
    frame = await sock.wait(
        lambda f: f["event"] == "message.created" and f["data"]["id"] == fourth["id"]
    )
    assert frame["data"]["parent_id"] == parent["id"]


async def test_hostile_thread_ids_are_refused(world: World) -> None:
    (ann, ann_w), (bob, bob_w), (_cat, _), cid = await three(world)
    elsewhere = await world.conversation(ann, bob, kind="group")
    parent = await send(ann_w, cid, "parent")
    foreign = await send(ann_w, elsewhere, "in another conversation")
    reply = await send(bob_w, cid, "a reply", parent_id=parent["id"])
    url = f"/api/widget/conversations/{cid}/messages"
    for parent_id, why in (
        (foreign["id"], "parent_id"),  # another conversation's message
        (reply["id"], "top-level"),  # a reply's thread: one level only
        ("msg_nope", "parent_id"),
    ):
        status, body = await bob_w.post(url, {"content": "x", "parent_id": parent_id})
        assert status == 422 and why in json.dumps(body), body
    for parent_id in ("../../x", "a" * 65, "<b>"):
        status, body = await bob_w.post(url, {"content": "x", "parent_id": parent_id})
        assert status == 422, body
    base = f"/api/widget/conversations/{cid}/messages"
    assert (await bob_w.get(f"{base}/{foreign['id']}/thread"))[0] == 404
    assert (await bob_w.get(f"{base}/{reply['id']}/thread"))[0] == 404
    _dan, dan_w = await world.user("Dan")
    assert (await dan_w.get(f"{base}/{parent['id']}/thread"))[0] == 404
    status, body = await bob_w.post(
        f"/api/widget/conversations/{cid}/read", {"parent_id": foreign["id"]}
    )
    assert status == 404, body
    # A deleted parent takes no new replies.
    assert (await ann_w.delete(f"{base}/{parent['id']}"))[0] == 204
    status, body = await bob_w.post(url, {"content": "late", "parent_id": parent["id"]})
    assert status == 422, body


async def test_pins_limit_permissions_and_list(world: World, sockets: Any) -> None:
    (ann, ann_w), (bob, bob_w), (_cat, _), cid = await three(world)
    elsewhere = await world.conversation(ann, bob, kind="group")
    foreign = await send(ann_w, elsewhere, "elsewhere")
    base = f"/api/widget/conversations/{cid}"
    messages = [await send(ann_w, cid, f"m{i}") for i in range(26)]
    sock = await sockets()
    await sock.join(bob_w, f"private-conversation.{cid}")

    first = messages[0]
    assert (await bob_w.post(f"{base}/messages/{first['id']}/pin"))[0] == 204
    frame = await sock.wait(
        lambda f: (
            f["event"] == "message.updated"
            and f["data"]["id"] == first["id"]
            and f["data"]["pinned_at"] is not None
        )
    )
    assert frame["data"]["pinned_by"] == bob["id"]
    assert (await bob_w.post(f"{base}/messages/{first['id']}/pin"))[0] == 204  # no-op
    for m in messages[1:25]:
        assert (await ann_w.post(f"{base}/messages/{m['id']}/pin"))[0] == 204
    status, body = await ann_w.post(f"{base}/messages/{messages[25]['id']}/pin")
    assert status == 409 and body["error"]["code"] == "conflict", body
    status, pins = await bob_w.get(f"{base}/pins")
    assert status == 200 and len(pins["data"]) == 25
    assert pins["data"][0]["id"] == messages[24]["id"]  # most recently pinned first
    # Unpinning makes room; a deleted message is unpinned and leaves the list.
    assert (await ann_w.delete(f"{base}/messages/{messages[1]['id']}/pin"))[0] == 204
    assert (await ann_w.delete(f"{base}/messages/{messages[2]['id']}"))[0] == 204
    assert (await ann_w.post(f"{base}/messages/{messages[25]['id']}/pin"))[0] == 204
    status, pins = await bob_w.get(f"{base}/pins")
    ids = {m["id"] for m in pins["data"]}
    assert len(ids) == 24 and messages[1]["id"] not in ids and messages[2]["id"] not in ids

    # Other conversations' messages, and people outside, get 404.
    assert (await bob_w.post(f"{base}/messages/{foreign['id']}/pin"))[0] == 404
    _dan, dan_w = await world.user("Dan")
    assert (await dan_w.post(f"{base}/messages/{first['id']}/pin"))[0] == 404
    assert (await dan_w.get(f"{base}/pins"))[0] == 404
    # Moderators only: participants are refused, the tenant is not.
    status, _ = await world.tenant.patch(
        f"/api/v1/conversations/{cid}", {"pin_policy": "moderators"}
    )
    assert status == 200
    status, body = await bob_w.delete(f"{base}/messages/{first['id']}/pin")
    assert status == 403, body
    tenant_msg = f"/api/v1/conversations/{cid}/messages/{first['id']}/pin"
    assert (await world.tenant.delete(tenant_msg))[0] == 204
    status, pins = await world.tenant.get(f"/api/v1/conversations/{cid}/pins")
    assert status == 200 and first["id"] not in {m["id"] for m in pins["data"]}
    tenant_foreign = f"/api/v1/conversations/{cid}/messages/{foreign['id']}/pin"
    assert (await world.tenant.post(tenant_foreign))[0] == 404

"""Support conversations end to end (issue 19): a visitor writes to the team, staff work the
inbox over the tenant API, and internal notes never reach the visitor on any path."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from confab import bus
from confab.contracts.messaging import Actor
from confab.contracts.support import AddNote, ListNotes
from confab.errors import ConfabError
from confab.rpc import RpcClient
from tests.client import Api, new_workspace
from tests.stack import RunningStack
from tests.test_messaging_api import World

SECRET = "internal: the customer is on the legacy plan"


@pytest.fixture
async def world(stack: RunningStack, http: aiohttp.ClientSession) -> World:
    admin = Api(http, stack.gateway, stack.admin_headers)
    world = World(admin, await new_workspace(admin))
    status, body = await world.tenant.call("PUT", "/api/v1/support/settings", {"enabled": True})
    assert status == 200, body
    return world


async def start(widget: Api, content: str = "Hello, I need help") -> dict[str, Any]:
    status, conversation = await widget.post(
        "/api/widget/support/conversations", {"content": content}
    )
    assert status == 201, conversation
    assert conversation["type"] == "support"
    assert conversation["last_message"]["content"] == content
    return dict(conversation)


def support(cid: str, rest: str = "") -> str:
    return f"/api/v1/support/conversations/{cid}{rest}"


async def inbox(tenant: Api, view: str, **params: str) -> dict[str, Any]:
    status, page = await tenant.get(
        "/api/v1/support/conversations", params={"view": view, **params}
    )
    assert status == 200, page
    return dict(page)


def ids(page: dict[str, Any]) -> list[str]:
    return [c["id"] for c in page["data"]]


async def test_the_inbox_views_counts_status_assignment_tags_and_reply(world: World) -> None:
    visitor, visitor_w = await world.user("Visitor")
    agent, _ = await world.user("Agent Ann")
    conversation = await start(visitor_w)
    cid = conversation["id"]
    tenant = world.tenant

    page = await inbox(tenant, "unassigned", assignee_id=agent["id"])
    assert ids(page) == [cid]
    assert page["counts"] == {"unassigned": 1, "mine": 0, "all": 1, "snoozed": 0, "closed": 0}
    found = page["data"][0]
    assert found["status"] == "open" and found["visitor_id"] == visitor["id"]
    assert found["first_response_at"] is None and found["resolved_at"] is None
    assert found["conversation"]["last_message"]["content"] == "Hello, I need help"

    status, found = await tenant.post(support(cid, "/assign"), {"assignee_id": agent["id"]})
    assert status == 200 and found["assignee_id"] == agent["id"], found
    page = await inbox(tenant, "mine", assignee_id=agent["id"])
    assert ids(page) == [cid] and page["counts"]["unassigned"] == 0
    assert page["counts"]["mine"] == 1

    status, found = await tenant.call(
        "PUT", support(cid, "/tags"), {"tags": [" Billing ", "billing", "VIP  customer"]}
    )
    assert status == 200 and found["tags"] == ["billing", "vip customer"], found
    assert ids(await inbox(tenant, "all", tag="billing")) == [cid]
    assert ids(await inbox(tenant, "all", tag="other")) == []

    # The agent replies as themselves: they join, and the first response is stamped.
    status, message = await tenant.post(
        support(cid, "/replies"), {"author_id": agent["id"], "content": "Happy to help!"}
    )
    assert status == 201 and message["sender"]["id"] == agent["id"], message
    status, found = await tenant.get(support(cid))
    assert status == 200 and found["first_response_at"] is not None, found
    assert agent["id"] in [p["id"] for p in found["conversation"]["participants"]]
    status, mine = await visitor_w.get(f"/api/widget/conversations/{cid}")
    assert status == 200
    assert [m["content"] for m in mine["messages"]] == ["Hello, I need help", "Happy to help!"]
    # A reply is a message like any other: in a thread, quoting, naming the visitor.
    question = mine["messages"][0]
    text = "@Visitor here is how"
    threaded = {
        "author_id": agent["id"],
        "content": text,
        "parent_id": question["id"],
        "reply_to": question["id"],
        "mentions": [{"user_id": visitor["id"], "start": 0, "end": 8}],
        "metadata": {"macro": "how-to"},
    }
    status, answer = await tenant.post(support(cid, "/replies"), threaded)
    assert status == 201, answer
    assert answer["parent_id"] == question["id"] and answer["metadata"] == {"macro": "how-to"}
    assert answer["reply_to"] == question["id"], answer
    assert [(m["user_id"], text[m["start"] : m["end"]]) for m in answer["mentions"]] == [
        (visitor["id"], "@Visitor")
    ]
    status, body = await tenant.post(
        support(cid, "/replies"), {**threaded, "parent_id": "msg_not_here"}
    )
    assert status in (404, 422), body

    # Snoozed until later: in the snoozed view, not in mine; closed, then reopened.
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    status, found = await tenant.post(
        support(cid, "/status"), {"status": "snoozed", "snoozed_until": later}
    )
    assert status == 200 and found["status"] == "snoozed", found
    page = await inbox(tenant, "snoozed", assignee_id=agent["id"])
    assert ids(page) == [cid] and page["counts"]["mine"] == 0 and page["counts"]["all"] == 1
    status, found = await tenant.post(support(cid, "/status"), {"status": "closed"})
    assert status == 200 and found["resolved_at"] is not None and found["snoozed_until"] is None
    page = await inbox(tenant, "closed")
    assert ids(page) == [cid] and page["counts"]["all"] == 0 and page["counts"]["closed"] == 1
    status, found = await tenant.post(support(cid, "/status"), {"status": "open"})
    assert status == 200 and found["status"] == "open" and found["resolved_at"] is None

    # Unassigned again: back in the unassigned view.
    status, found = await tenant.post(support(cid, "/assign"), {"assignee_id": None})
    assert status == 200 and found["assignee_id"] is None
    assert ids(await inbox(tenant, "unassigned")) == [cid]

    # A snooze wakes by itself: once its time has passed the conversation reads as open.
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    status, found = await tenant.post(
        support(cid, "/status"), {"status": "snoozed", "snoozed_until": soon}
    )
    assert status == 200, found
    deadline = time.monotonic() + 10
    while (page := await inbox(tenant, "unassigned"))["counts"]["snoozed"]:
        assert time.monotonic() < deadline, page
        await asyncio.sleep(0.1)
    assert ids(page) == [cid] and page["data"][0]["status"] == "open"
    assert page["data"][0]["snoozed_until"] is None


async def test_notes_never_reach_the_visitor(world: World, stack: RunningStack) -> None:
    visitor, visitor_w = await world.user("Visitor")
    agent, _ = await world.user("Agent")
    cid = (await start(visitor_w))["id"]
    tenant = world.tenant
    status, note = await tenant.post(
        support(cid, "/notes"), {"author_id": agent["id"], "content": SECRET}
    )
    assert status == 201 and note["content"] == SECRET and note["author_id"] == agent["id"]
    await tenant.post(support(cid, "/replies"), {"author_id": agent["id"], "content": "On it"})
    status, notes = await tenant.get(support(cid, "/notes"))
    assert status == 200 and [n["content"] for n in notes["data"]] == [SECRET]

    # Every read the visitor can make: none holds the note.
    bodies = []
    for path in (
        "/api/widget/conversations",
        f"/api/widget/conversations/{cid}",
        f"/api/widget/conversations/{cid}/messages",
        f"/api/widget/conversations/{cid}/events?after=0",
    ):
        status, body = await visitor_w.get(path)
        assert status == 200, body
        bodies.append(json.dumps(body))
    assert all(SECRET not in b and "note" not in b for b in bodies), bodies
    events = json.loads(bodies[-1])["data"]
    # The visitor's timeline is gap-free: notes take no seq.
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert "On it" in bodies[-1]

    # The staff routes refuse a widget session outright, and messaging refuses its actor.
    for path in (support(cid), support(cid, "/notes")):
        status, body = await visitor_w.get(path)
        assert status == 401, body
    status, body = await visitor_w.post(support(cid, "/assign"), {"assignee_id": visitor["id"]})
    assert status == 401, body
    nc = await bus.connect(stack.info["nats_url"], "test")
    try:
        rpc = RpcClient(nc, timeout=5)
        actor = Actor(workspace_id=world.workspace["id"], user_id=visitor["id"])
        for request in (
            ListNotes(actor=actor, conversation_id=cid),
            AddNote(actor=actor, conversation_id=cid, author_id=visitor["id"], content="x"),
        ):
            with pytest.raises(ConfabError) as refused:
                await rpc.call(request)
            assert refused.value.status == 403
    finally:
        await nc.close()

    # Erasing the note's author leaves the note without content.
    status, _ = await tenant.delete(f"/api/v1/users/{agent['id']}")
    assert status == 204
    status, notes = await tenant.get(support(cid, "/notes"))
    assert status == 200 and [n["content"] for n in notes["data"]] == [""], notes


async def test_hostile_input_and_other_workspaces(
    world: World, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    _, visitor_w = await world.user("Visitor")
    agent, _ = await world.user("Agent")
    cid = (await start(visitor_w))["id"]
    tenant = world.tenant
    admin = Api(http, stack.gateway, stack.admin_headers)
    other = World(admin, await new_workspace(admin, "Other"))
    stranger, stranger_w = await other.user("Stranger")
    # A workspace that has not enabled support takes no messages from its widget.
    status, body = await stranger_w.post("/api/widget/support/conversations", {"content": "hi"})
    assert status == 403, body

    # Another workspace's key sees nothing of it, and cannot act on it.
    status, body = await other.tenant.get(support(cid))
    assert status == 404, body
    status, body = await other.tenant.post(support(cid, "/status"), {"status": "closed"})
    assert status == 404, body
    assert ids(await inbox(other.tenant, "all")) == []
    # Nor can this workspace assign, note or reply as the other's user.
    status, body = await tenant.post(support(cid, "/assign"), {"assignee_id": stranger["id"]})
    assert status == 404, body
    for rest in ("/notes", "/replies"):
        status, body = await tenant.post(
            support(cid, rest), {"author_id": stranger["id"], "content": "hi"}
        )
        assert status == 404, body
    # A conversation that is not a support conversation is not in the inbox.
    plain = await world.conversation(agent, kind="group")
    status, body = await tenant.post(support(plain, "/status"), {"status": "closed"})
    assert status == 404, body

    bad: list[tuple[str, str, Any]] = [
        ("POST", "/status", {"status": "snoozed"}),  # no time
        ("POST", "/status", {"status": "snoozed", "snoozed_until": "2001-01-01T00:00:00Z"}),
        ("POST", "/status", {"status": "open", "snoozed_until": "2999-01-01T00:00:00Z"}),
        ("POST", "/status", {"status": "deleted"}),
        ("PUT", "/tags", {"tags": [f"t{i}" for i in range(21)]}),
        ("PUT", "/tags", {"tags": ["x" * 51]}),
        ("PUT", "/tags", {"tags": ["   "]}),
        ("POST", "/notes", {"content": "no author"}),  # an API key must name the author
        ("POST", "/notes", {"author_id": agent["id"], "content": "x" * 10_001}),
        ("POST", "/notes", {"author_id": agent["id"], "content": {"a": [[[[1]]]]}}),
        ("POST", "/replies", {"content": "no author"}),
        ("POST", "/assign", {"assignee_id": "../x"}),
    ]
    for method, rest, payload in bad:
        status, body = await tenant.call(method, support(cid, rest), payload)
        assert status in (400, 422), (rest, payload, status, body)
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    status, body = await tenant.post(support(cid, "/notes"), {"content": deep})
    assert status in (400, 422), body
    status, body = await tenant.get("/api/v1/support/conversations", params={"view": "mine"})
    assert status == 422, body
    status, body = await tenant.get("/api/v1/support/conversations", params={"cursor": "zz"})
    assert status == 422, body

    # Replay: the same reply with its client_msg_id is one message.
    reply = {"author_id": agent["id"], "content": "once", "client_msg_id": "c-1"}
    first = await tenant.post(support(cid, "/replies"), reply)
    second = await tenant.post(support(cid, "/replies"), reply)
    assert first[0] == second[0] == 201 and first[1]["id"] == second[1]["id"]
    status, history = await visitor_w.get(f"/api/widget/conversations/{cid}/messages")
    assert [m["content"] for m in history["data"]].count("once") == 1


SETTINGS = {
    "enabled": True,
    "greeting": "Hi! Ask us anything.",
    "team_name": "Acme support",
    "team_avatars": ["https://example.com/a.png"],
    "reply_time": "minutes",
    "prechat_name": "optional",
    "prechat_email": "required",
    "allow_anonymous": True,
    "allowed_origins": ["https://shop.example.com"],
    "round_robin": True,
}


async def test_settings_visitors_and_round_robin(
    world: World, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    tenant, ws = world.tenant, world.workspace
    public = Api(http, stack.gateway, {})
    status, body = await public.get("/api/widget/support", params={"app_key": ws["app_key"]})
    assert status == 200 and body["enabled"] is True and body["allow_anonymous"] is False
    # Anonymous visitors without an origin to come from: refused.
    status, body = await tenant.call(
        "PUT", "/api/v1/support/settings", {**SETTINGS, "allowed_origins": []}
    )
    assert status == 422, body
    for bad in ({"team_avatars": ["javascript:alert(1)"]}, {"allowed_origins": ["*"]}):
        status, body = await tenant.call("PUT", "/api/v1/support/settings", {**SETTINGS, **bad})
        assert status in (400, 422), (bad, body)
    status, setup = await tenant.call("PUT", "/api/v1/support/settings", SETTINGS)
    assert status == 200 and setup["settings"] == SETTINGS, setup

    # Two agents; one online. The widget sees the team online.
    ann, _ = await world.user("Ann")
    bob, _ = await world.user("Bob")
    status, body = await tenant.call(
        "PUT", f"/api/v1/support/agents/{ann['id']}/availability", {"status": "online"}
    )
    assert status == 200 and body["agents"][0]["status"] == "online", body
    status, body = await public.get("/api/widget/support", params={"app_key": ws["app_key"]})
    assert status == 200 and body["team_online"] is True and body["reply_time"] == "minutes"
    assert "allowed_origins" not in body and "round_robin" not in body

    # A visitor from an allowed page gets a session; from elsewhere, not.
    page = {"Origin": "https://shop.example.com"}
    status, session = await public.post(
        "/api/widget/visitors", {"app_key": ws["app_key"]}, headers=page
    )
    assert status == 201 and session["user"]["name"] == "Visitor", session
    for origin in ("https://evil.example.com", "http://shop.example.com", ""):
        status, body = await public.post(
            "/api/widget/visitors",
            {"app_key": ws["app_key"]},
            headers={"Origin": origin} if origin else {},
        )
        assert status == 403, (origin, body)
    status, body = await public.post("/api/widget/visitors", {"app_key": "app_nope"}, headers=page)
    assert status == 404, body
    visitor_w = public.as_(Authorization=f"Bearer {session['token']}")
    # The workspace asks visitors for their email before they write.
    status, body = await visitor_w.post("/api/widget/support/conversations", {"content": "Hello"})
    assert status == 422 and "email" in body["error"]["details"], body
    status, first = await visitor_w.post(
        "/api/widget/support/conversations",
        {"content": "Hello, I need help", "name": "Vera", "email": "vera@example.com"},
    )
    assert status == 201, first
    status, me = await tenant.get(f"/api/v1/users/{session['user']['id']}")
    assert (me["name"], me["email"]) == ("Vera", "vera@example.com"), me
    # The conversation was made once messaging's users read model had the new name, so
    # every reader of it (the staff's inbox first) shows the visitor as "Vera".
    visitor_part = [p for p in first["participants"] if p["id"] == session["user"]["id"]]
    assert [p["name"] for p in visitor_part] == ["Vera"], first
    status, found = await tenant.get(support(first["id"]))
    names = [p["name"] for p in found["conversation"]["participants"]]
    assert status == 200 and "Vera" in names, found

    # Round-robin: the conversation went to the agent online.
    cid = first["id"]
    status, found = await tenant.get(support(cid))
    assert status == 200 and found["assignee_id"] == ann["id"], found
    status, body = await tenant.call(
        "PUT", f"/api/v1/support/agents/{bob['id']}/availability", {"status": "online"}
    )
    assert status == 200
    second = (await start(visitor_w, "Another question"))["id"]
    status, found = await tenant.get(support(second))
    assert found["assignee_id"] == bob["id"], found  # Ann has one open already

    # Per address and workspace, attempts are limited: 5 at once (4 spent above).
    status, body = await public.post(
        "/api/widget/visitors", {"app_key": ws["app_key"]}, headers=page
    )
    assert status == 201, body
    status, body = await public.post(
        "/api/widget/visitors", {"app_key": ws["app_key"]}, headers=page
    )
    assert status == 429 and body["error"]["details"]["retry_after"] > 0, body

    # Another workspace's user is no agent here.
    other = World(Api(http, stack.gateway, stack.admin_headers), ws)
    stranger, _ = await World(
        Api(http, stack.gateway, stack.admin_headers),
        await new_workspace(Api(http, stack.gateway, stack.admin_headers), "Other"),
    ).user("Stranger")
    status, body = await other.tenant.call(
        "PUT", f"/api/v1/support/agents/{stranger['id']}/availability", {"status": "online"}
    )
    assert status == 404, body


async def test_merge_a_visitor_into_a_known_user(
    world: World, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    tenant, ws = world.tenant, world.workspace
    status, _ = await tenant.call(
        "PUT",
        "/api/v1/support/settings",
        {"enabled": True, "allow_anonymous": True, "allowed_origins": ["https://shop.example.com"]},
    )
    assert status == 200
    public = Api(http, stack.gateway, {})
    status, session = await public.post(
        "/api/widget/visitors",
        {"app_key": ws["app_key"]},
        headers={"Origin": "https://shop.example.com"},
    )
    assert status == 201, session
    visitor = session["user"]
    visitor_w = public.as_(Authorization=f"Bearer {session['token']}")
    agent, _ = await world.user("Agent")
    cid = (await start(visitor_w, "I am Vera, my order is late"))["id"]
    await tenant.post(support(cid, "/replies"), {"author_id": agent["id"], "content": "Sorry!"})
    status, _ = await visitor_w.post(f"/api/widget/conversations/{cid}/read", {})
    assert status == 204
    vera, vera_w = await world.user("Vera")

    status, body = await visitor_w.post(f"/api/v1/users/{vera['id']}/merge", {"visitor_id": "x"})
    assert status == 401, body
    status, body = await tenant.post(
        f"/api/v1/users/{vera['id']}/merge", {"visitor_id": vera["id"]}
    )
    assert status == 422, body
    other = World(
        Api(http, stack.gateway, stack.admin_headers),
        await new_workspace(Api(http, stack.gateway, stack.admin_headers), "Other"),
    )
    stranger, _ = await other.user("Stranger")
    for path, who in ((vera["id"], stranger["id"]), (stranger["id"], visitor["id"])):
        status, body = await tenant.post(f"/api/v1/users/{path}/merge", {"visitor_id": who})
        assert status == 404, body

    status, merged = await tenant.post(
        f"/api/v1/users/{vera['id']}/merge", {"visitor_id": visitor["id"]}
    )
    assert status == 200 and merged["conversations"] == 1, merged
    # Vera has the conversation, read up to where the visitor read, her messages hers.
    status, page = await vera_w.get("/api/widget/conversations")
    assert [(c["id"], c["unread_count"]) for c in page["data"]] == [(cid, 0)], page
    status, history = await vera_w.get(f"/api/widget/conversations/{cid}/messages")
    senders = [(m["content"], m["sender"]["id"]) for m in history["data"]]
    assert senders == [("I am Vera, my order is late", vera["id"]), ("Sorry!", agent["id"])]
    status, found = await tenant.get(support(cid))
    assert found["visitor_id"] == vera["id"], found
    status, events = await vera_w.get(f"/api/widget/conversations/{cid}/events?after=0")
    left = [e["data"] for e in events["data"] if e["event"] == "participant.removed"]
    assert left == [
        {"user_id": visitor["id"], "merged_into": vera["id"], "event_seq": left[0]["event_seq"]}
    ]
    # The visitor is no longer in it; merging again finds nothing to move.
    status, body = await visitor_w.get(f"/api/widget/conversations/{cid}")
    assert status == 404, body
    status, again = await tenant.post(
        f"/api/v1/users/{vera['id']}/merge", {"visitor_id": visitor["id"]}
    )
    assert status == 200 and again["conversations"] == 0, again

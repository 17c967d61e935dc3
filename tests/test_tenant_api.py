"""The tenant's reading API (``/api/v1``, API key) against the stack: users, a user's
conversations, one conversation, conversations by participant, type, activity and
metadata (with the index the metadata filter uses), and history as moderators see it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from confab.db import create_engine
from confab_messaging.store import TABLES, _metadata_has
from tests.client import Api, new_workspace
from tests.stack import RunningStack
from tests.test_media_api import png_bytes, upload
from tests.test_messaging_api import World, send


@pytest.fixture
async def world(stack: RunningStack, http: aiohttp.ClientSession) -> World:
    admin = Api(http, stack.gateway, stack.admin_headers)
    return World(admin, await new_workspace(admin))


async def pages(api: Api, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list, following next_cursor."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        status, page = await api.get(
            path, params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert status == 200, page
        out += page["data"]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return out
        cursor = page["next_cursor"]


async def test_users_are_listed_by_last_change_and_filtered(world: World) -> None:
    tenant = world.tenant
    made = []
    for i in range(5):
        body = {
            "external_id": f"crm-{i}-{uuid.uuid4().hex[:6]}",
            "name": f"U{i}",
            "email": f"u{i}.{uuid.uuid4().hex[:6]}@example.com",
        }
        status, user = await tenant.post("/api/v1/users", body)
        assert status == 201
        made.append(user)
    listed = await pages(tenant, "/api/v1/users", limit=2)
    assert [u["id"] for u in listed] == [u["id"] for u in made]  # each once, in order
    status, one = await tenant.get("/api/v1/users", params={"external_id": made[3]["external_id"]})
    assert status == 200 and [u["id"] for u in one["data"]] == [made[3]["id"]]
    status, one = await tenant.get("/api/v1/users", params={"email": made[1]["email"]})
    assert [u["id"] for u in one["data"]] == [made[1]["id"]]

    since = datetime.now(UTC).isoformat()
    assert (await tenant.patch(f"/api/v1/users/{made[0]['id']}", {"name": "Renamed"}))[0] == 200
    changed = await pages(tenant, "/api/v1/users", updated_since=since)
    assert [(u["id"], u["name"]) for u in changed] == [(made[0]["id"], "Renamed")]
    assert (await tenant.delete(f"/api/v1/users/{made[2]['id']}"))[0] == 204
    assert made[2]["id"] not in [u["id"] for u in await pages(tenant, "/api/v1/users")]

    for params in ({"cursor": "nonsense"}, {"limit": 500}, {"updated_since": "yesterday"}):
        status, body = await tenant.get("/api/v1/users", params=params)
        assert (status, body["error"]["code"]) == (422, "invalid_request"), params


async def test_conversations_by_participant_type_activity_and_metadata(world: World) -> None:
    tenant = world.tenant
    ann, ann_w = await world.user("Ann")
    bob, _ = await world.user("Bob")
    cat, _ = await world.user("Cat")

    async def create(users: list[dict[str, Any]], kind: str, metadata: dict[str, Any]) -> str:
        status, conv = await tenant.post(
            "/api/v1/conversations",
            {"participant_ids": [u["id"] for u in users], "type": kind, "metadata": metadata},
        )
        assert status == 201, conv
        return str(conv["id"])

    inquiry = await create(
        [ann, bob], "direct", {"type": "inquiry", "property_id": "p-1", "rooms": 3}
    )
    booking = await create([ann, cat], "group", {"type": "booking", "property_id": "p-1"})
    other = await create([bob, cat], "group", {"type": "inquiry", "property_id": "p-2"})

    async def ids(**params: Any) -> list[str]:
        return [c["id"] for c in await pages(tenant, "/api/v1/conversations", **params)]

    assert await ids(**{"metadata.property_id": "p-1"}) == [booking, inquiry]  # newest first
    assert await ids(**{"metadata.property_id": "p-1", "metadata.type": "inquiry"}) == [inquiry]
    assert await ids(**{"metadata.rooms": "3"}) == [inquiry]  # the JSON number it spells
    assert await ids(**{"metadata.property_id": "p-3"}) == []
    assert await ids(participant_id=cat["id"]) == [other, booking]
    assert await ids(participant_id=cat["id"], type="group", **{"metadata.type": "inquiry"}) == [
        other
    ]
    assert await ids(type="direct", **{"metadata.property_id": "p-1"}) == [inquiry]
    since = datetime.now(UTC).isoformat()
    await send(ann_w, inquiry, "news")
    assert await ids(updated_since=since, **{"metadata.property_id": "p-1"}) == [inquiry]
    status, mine = await tenant.get(f"/api/v1/users/{bob['id']}/conversations")
    assert status == 200 and {c["id"] for c in mine["data"]} == {inquiry, other}
    assert (await tenant.get("/api/v1/users/usr_nobody/conversations"))[0] == 404

    too_many = {f"metadata.k{i}": "v" for i in range(11)}
    for params in (too_many, {"type": "channel"}, {"metadata.": "x"}):
        status, body = await tenant.get("/api/v1/conversations", params=params)
        assert (status, body["error"]["code"]) == (422, "invalid_request"), params
    # A widget cannot filter (or see) other people's conversations.
    status, body = await ann_w.get("/api/widget/conversations", params={"metadata.type": "x"})
    assert status == 200 and {c["id"] for c in body["data"]} == {inquiry, booking}


async def test_the_metadata_filter_is_served_by_its_index(stack: RunningStack) -> None:
    """The filter's exact expression (``_metadata_has``, as the store builds it) matches the
    GIN index ``conversations_metadata``. With the workspace filter beside it, which index
    the planner takes depends on the numbers of rows; here there are too few to say."""
    c = TABLES.conversations
    query = sa.select(c.c.id).where(_metadata_has(c.c.metadata, "property_id", "p-1"))
    engine = create_engine(stack.info["database_url"])
    try:
        async with engine.connect() as conn:
            # Few rows here: make the planner show what it would use on many.
            await conn.execute(sa.text("SET enable_seqscan = off"))
            compiled = query.compile(engine.sync_engine)
            names = compiled.positiontup or []
            params = tuple(
                json.dumps(v) if isinstance(v, dict) else v
                for v in (compiled.params[n] for n in names)
            )
            plan = (await conn.exec_driver_sql(f"EXPLAIN {compiled}", params)).all()
    finally:
        await engine.dispose()
    text = "\n".join(row[0] for row in plan)
    assert "conversations_metadata" in text, text


async def test_one_conversation_and_history_as_moderators_see_it(
    world: World, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    tenant = world.tenant
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    kept = await send(ann_w, cid, "hello")
    rude = await send(bob_w, cid, "something rude")
    gone = await send(bob_w, cid, "sent by mistake")
    assert (await tenant.post(f"/api/v1/messages/{rude['id']}/moderation", {"action": "hide"}))[
        0
    ] == 204
    assert (await bob_w.delete(f"/api/widget/conversations/{cid}/messages/{gone['id']}"))[0] == 204

    status, conv = await tenant.get(f"/api/v1/conversations/{cid}")
    assert status == 200 and conv["id"] == cid
    assert {p["id"] for p in conv["participants"]} == {ann["id"], bob["id"]}
    assert conv["last_message"]["id"] == gone["id"]
    assert (await tenant.get("/api/v1/conversations/conv_nope"))[0] == 404

    history: list[dict[str, Any]] = []
    after = 0
    while True:  # paged by seq, as the widget pages
        status, page = await tenant.get(
            f"/api/v1/conversations/{cid}/messages", params={"after": after, "limit": 2}
        )
        assert status == 200, page
        history += page["data"]
        if not page["has_more"]:
            break
        after = int(page["next_cursor"])
    shown = {m["id"]: (m["content"], m["hidden"], m["deleted"]) for m in history}
    assert shown == {
        kept["id"]: ("hello", False, False),
        rude["id"]: ("something rude", True, False),  # moderators still see it, flagged
        gone["id"]: ("", False, True),
    }
    status, widget = await ann_w.get(f"/api/widget/conversations/{cid}/messages")
    assert status == 200
    hidden = next(m for m in widget["data"] if m["id"] == rude["id"])
    assert (hidden["content"], hidden["deleted"]) == ("", True) and "hidden" not in hidden
    status, events = await tenant.get(f"/api/v1/conversations/{cid}/events", params={"after": 1})
    assert status == 200 and events["data"][0]["seq"] == 2
    assert "sent by mistake" not in str(events)
    # Another workspace's key sees none of it.
    admin = Api(http, stack.gateway, stack.admin_headers)
    stranger = World(admin, await new_workspace(admin, "Other")).tenant
    for path in ("", "/messages", "/events"):
        status, body = await stranger.get(f"/api/v1/conversations/{cid}{path}")
        assert (status, body["error"]["code"]) == (404, "not_found")


async def test_a_users_data_export_holds_everything_of_theirs_and_nothing_else(
    world: World, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    tenant = world.tenant
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    cat, _ = await world.user("Cat")
    first = await world.conversation(ann, bob)
    group = await world.conversation(ann, bob, cat, kind="group")
    status, photo = await upload(ann_w, first, png_bytes((4, 3)), "photo.png")
    assert status == 201
    hello = await send(ann_w, first, "hello Bob", attachment_ids=[photo["id"]])
    oops = await send(ann_w, group, "oops")
    await send(bob_w, first, "Bob's own words")
    assert (await ann_w.delete(f"/api/widget/conversations/{group}/messages/{oops['id']}"))[
        0
    ] == 204
    react = f"/api/widget/conversations/{first}/messages/{hello['id']}/reactions"
    assert (await ann_w.post(react, {"emoji": "👍"}))[0] == 204
    assert (await ann_w.post(f"/api/widget/conversations/{first}/read", {}))[0] == 204
    removed = f"/api/v1/conversations/{group}/participants/{ann['id']}"
    assert (await tenant.delete(removed))[0] == 204

    async with http.get(
        f"{stack.gateway}/api/v1/users/{ann['id']}/export", headers=tenant.headers
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Disposition"].startswith("attachment")
        export = json.loads(await response.read())
    assert export["user"]["id"] == ann["id"] and export["user"]["name"] == "Ann"
    joined = {c["conversation_id"]: c for c in export["conversations"]}
    assert set(joined) == {first, group}
    assert joined[first]["active"] and not joined[group]["active"]
    assert joined[first]["last_read_seq"] >= hello["seq"]
    assert export["reactions"] == [
        {"conversation_id": first, "message_id": hello["id"], "emoji": "👍"}
    ]
    messages = {m["id"]: m for m in export["messages"]}
    assert set(messages) == {hello["id"], oops["id"]}  # hers only
    assert (messages[oops["id"]]["content"], messages[oops["id"]]["deleted"]) == ("", True)
    (attached,) = messages[hello["id"]]["attachments"]
    assert attached["id"] == photo["id"] and attached["url"].startswith("http")
    assert "Bob's own words" not in json.dumps(export)

    admin = Api(http, stack.gateway, stack.admin_headers)
    stranger = World(admin, await new_workspace(admin, "Other")).tenant
    assert (await stranger.get(f"/api/v1/users/{ann['id']}/export"))[0] == 404
    assert (await tenant.delete(f"/api/v1/users/{ann['id']}"))[0] == 204
    status, body = await tenant.get(f"/api/v1/users/{ann['id']}/export")
    assert (status, body["error"]["code"]) == (404, "not_found")  # erased: nothing to export


async def test_the_tenant_changes_a_conversation_and_every_reader_sees_it(world: World) -> None:
    tenant = world.tenant
    ann, ann_w = await world.user("Ann")
    bob, _ = await world.user("Bob")
    status, conv = await tenant.post(
        "/api/v1/conversations",
        {
            "participant_ids": [ann["id"], bob["id"]],
            "type": "group",
            "title": "Inquiry",
            "metadata": {"property_id": "p-1", "stage": "new", "agent": {"id": 7}},
        },
    )
    assert status == 201
    cid = conv["id"]
    path = f"/api/v1/conversations/{cid}"
    status, changed = await tenant.patch(
        path, {"title": "Booking", "metadata": {"stage": "booked", "agent": None, "nights": 3}}
    )
    assert status == 200, changed
    assert changed["title"] == "Booking"
    assert changed["metadata"] == {"property_id": "p-1", "stage": "booked", "nights": 3}
    status, found = await tenant.get("/api/v1/conversations", params={"metadata.stage": "booked"})
    assert [c["id"] for c in found["data"]] == [cid]  # the filter sees it at once
    status, mine = await ann_w.get(f"/api/widget/conversations/{cid}")
    assert mine["conversation"]["title"] == "Booking"
    status, events = await ann_w.get(f"/api/widget/conversations/{cid}/events")
    updated = [e for e in events["data"] if e["event"] == "conversation.updated"]
    assert [u["data"]["title"] for u in updated] == ["Booking"]
    # Renamed again: a replay shows the title as it is now.
    assert (await tenant.patch(path, {"title": "Stay in May"}))[0] == 200
    status, events = await ann_w.get(f"/api/widget/conversations/{cid}/events")
    titles = [e["data"]["title"] for e in events["data"] if e["event"] == "conversation.updated"]
    assert titles == ["Stay in May", "Stay in May"]
    status, body = await ann_w.patch(f"/api/widget/conversations/{cid}", {"title": "x"})
    assert status in (404, 405)  # a widget has no such route
    for bad in ({"title": ""}, {"metadata": {"x": "y" * 9000}}, {"owner": "me"}):
        status, body = await tenant.patch(path, bad)
        assert (status, body["error"]["code"]) == (422, "invalid_request"), bad


async def test_messages_have_a_type_given_or_derived(world: World) -> None:
    tenant = world.tenant
    ann, ann_w = await world.user("Ann")
    bob, _ = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    # What a Soketi/Sanctum client sends.
    status, text = await ann_w.post(
        f"/api/widget/conversations/{cid}/messages", {"content": "hi", "type": "text"}
    )
    assert (status, text["type"]) == (201, "text")
    status, photo = await upload(ann_w, cid, png_bytes((4, 3)), "p.png")
    assert status == 201
    image = await send(ann_w, cid, "look", attachment_ids=[photo["id"]])
    assert image["type"] == "image"
    status, system = await tenant.post(
        f"/api/v1/conversations/{cid}/messages", {"content": "Booking confirmed"}
    )
    assert (status, system["type"]) == (201, "system")
    status, body = await ann_w.post(
        f"/api/widget/conversations/{cid}/messages", {"content": "x", "type": "image"}
    )
    assert (status, body["error"]["code"]) == (422, "invalid_request")
    assert "type" in body["error"]["details"]
    status, history = await ann_w.get(f"/api/widget/conversations/{cid}/messages")
    assert [m["type"] for m in history["data"]] == ["text", "image", "system"]

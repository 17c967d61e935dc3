"""Search over the real stack: what a widget and a tenant find, and what they never find.

Every removal (deleting, hiding, erasing, leaving) is checked right after its call
returns: the index is a projection settled before those calls reply.
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest

from tests.client import Api, new_workspace
from tests.stack import RunningStack
from tests.test_messaging_api import World, send
from tests.waiting import until


@pytest.fixture
async def world(stack: RunningStack, http: aiohttp.ClientSession) -> World:
    admin = Api(http, stack.gateway, stack.admin_headers)
    return World(admin, await new_workspace(admin))


def word() -> str:
    """A word (letters only: the parser reads letters and digits as another kind of token,
    which no language stems) found nowhere else in the test database."""
    return "zq" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:10])


async def found(api: Api, path: str, q: str, **params: Any) -> list[dict[str, Any]]:
    status, page = await api.get(path, params={"q": q, **params})
    assert status == 200, page
    return list(page["data"])


async def widget_ids(api: Api, q: str, **params: Any) -> list[str]:
    return [h["message"]["id"] for h in await found(api, "/api/widget/search", q, **params)]


async def tenant_ids(api: Api, q: str, **params: Any) -> list[str]:
    return [h["message"]["id"] for h in await found(api, "/api/v1/search", q, **params)]


async def test_search_shows_members_only_and_never_what_is_gone(world: World) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    cid, cid_w = await world.user("Cid")
    ab = await world.conversation(ann, bob, kind="group")
    bc = await world.conversation(bob, cid)
    fruit = word()
    in_ab = await send(bob_w, ab, f"Shall we get {fruit}salad tonight?")
    in_bc = await send(cid_w, bc, f"{fruit}juice for breakfast")
    markup = await send(ann_w, ab, f"<img src=x onerror=alert(1)> {fruit}")

    # A prefix of the word finds it, in the conversations the user is in only.
    assert set(await widget_ids(ann_w, fruit[:8])) == {in_ab["id"], markup["id"]}
    assert set(await widget_ids(bob_w, fruit)) == {in_ab["id"], in_bc["id"], markup["id"]}
    assert await widget_ids(ann_w, fruit, conversation_id=bc) == []
    hits = await found(ann_w, "/api/widget/search", fruit)
    by_id = {h["message"]["id"]: h for h in hits}
    assert f"<mark>{fruit}salad</mark>" in by_id[in_ab["id"]]["snippet_html"]
    risky = by_id[markup["id"]]["snippet_html"]
    assert "<" not in risky.replace("<mark>", "").replace("</mark>", ""), risky
    assert "alert(1)&gt;" in risky, risky
    assert by_id[markup["id"]]["message"]["seq"] == markup["seq"]  # to jump to it in context

    # Deleted by its author: gone from search when the call returns.
    status, _ = await bob_w.delete(f"/api/widget/conversations/{ab}/messages/{in_ab['id']}")
    assert status == 204
    assert in_ab["id"] not in await widget_ids(ann_w, fruit)
    # Hidden by a moderator: gone until restored.
    moderation = f"/api/v1/messages/{markup['id']}/moderation"
    assert (await world.tenant.post(moderation, {"action": "hide"}))[0] == 204
    assert await widget_ids(ann_w, fruit) == []
    assert await tenant_ids(world.tenant, fruit) == [in_bc["id"]]
    assert (await world.tenant.post(moderation, {"action": "restore"}))[0] == 204
    assert await widget_ids(ann_w, fruit) == [markup["id"]]
    # Left the conversation: nothing of it is found any more.
    status, _ = await world.tenant.delete(f"/api/v1/conversations/{ab}/participants/{ann['id']}")
    assert status == 204
    assert await widget_ids(ann_w, fruit) == []
    # Erased: their messages are found by nobody.
    assert (await world.tenant.delete(f"/api/v1/users/{cid['id']}"))[0] == 204
    assert in_bc["id"] not in await widget_ids(bob_w, fruit)
    assert in_bc["id"] not in await tenant_ids(world.tenant, fruit)


async def test_tenant_filters_paging_and_edits(world: World) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    status, group = await world.tenant.post(
        "/api/v1/conversations",
        {
            "participant_ids": [ann["id"], bob["id"]],
            "type": "group",
            "metadata": {"listing": "prop-7"},
        },
    )
    assert status == 201, group
    other = await world.conversation(ann, bob)
    term = word()
    sent = [await send(ann_w, group["id"], f"{term} number {i}") for i in range(5)]
    by_bob = await send(bob_w, other, f"{term} from bob")

    # Paging: every hit once, in rank order, over pages of two.
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"q": term, "limit": 2, **({"cursor": cursor} if cursor else {})}
        status, page = await world.tenant.get("/api/v1/search", params=params)
        assert status == 200, page
        seen += [h["message"]["id"] for h in page["data"]]
        ranks = [h["rank"] for h in page["data"]]
        assert ranks == sorted(ranks, reverse=True)
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert sorted(seen) == sorted([m["id"] for m in sent] + [by_bob["id"]])

    assert await tenant_ids(world.tenant, term, sender_id=bob["id"]) == [by_bob["id"]]
    assert await tenant_ids(world.tenant, term, conversation_id=other) == [by_bob["id"]]
    in_listing = await tenant_ids(world.tenant, term, **{"metadata.listing": "prop-7"})
    assert sorted(in_listing) == sorted(m["id"] for m in sent)
    assert await tenant_ids(world.tenant, term, has_attachment="true") == []
    assert await tenant_ids(world.tenant, term, since="2999-01-01T00:00:00Z") == []
    assert len(await tenant_ids(world.tenant, term, until="2999-01-01T00:00:00Z")) == 6

    # An edit is searched by its new text only.
    fresh = word()
    base = f"/api/widget/conversations/{other}/messages/{by_bob['id']}"
    assert (await bob_w.patch(base, {"content": f"now about {fresh}"}))[0] == 200
    assert await widget_ids(ann_w, fresh) == [by_bob["id"]]
    assert by_bob["id"] not in await widget_ids(ann_w, f"{term} from")


async def test_search_language_stems_words(world: World) -> None:
    ann, ann_w = await world.user("Ann")
    bob, _ = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    # A consonant before the suffix: English Snowball turns "-ies" into "-i" always, but
    # "-y" into "-i" only after a consonant ("zqay" stays "zqay", and "zqaies" is "zqai").
    stem = word() + "t"
    posted = await send(ann_w, cid, f"Many {stem}ies were visited")
    assert await widget_ids(ann_w, f"{stem}y") == []  # simple: no stemming
    status, body = await world.tenant.call(
        "PUT", "/api/v1/settings/search", {"language": "english"}
    )
    assert (status, body) == (200, {"language": "english"}), body
    assert (await world.tenant.get("/api/v1/settings/search")) == (200, {"language": "english"})
    # The index was rebuilt in English: "<stem>y" and "<stem>ies" share a stem now. The
    # reply waits for the re-index, but only so long (``Lookups.read_wait``, 2 s), so on a
    # busy machine this asks until the index has caught up.
    hits = await until(lambda: widget_ids(ann_w, f"{stem}y"), "the English index", 30)
    assert hits == [posted["id"]]
    status, body = await world.tenant.call("PUT", "/api/v1/settings/search", {"language": "xx"})
    assert status == 422, body


async def test_search_refuses_hostile_input(world: World, stack: RunningStack) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    secret = word()
    await send(bob_w, cid, f"{secret} in workspace one")
    # Another workspace finds nothing of this one.
    admin = Api(world.tenant.http, stack.gateway, stack.admin_headers)
    other = World(admin, await new_workspace(admin, "Other"))
    assert await tenant_ids(other.tenant, secret) == []
    _eve, eve_w = await other.user("Eve")
    assert await widget_ids(eve_w, secret) == []
    assert await widget_ids(eve_w, secret, conversation_id=cid) == []
    # Query syntax is words only: operators are not operators, and never an error.
    for q in ["a & | ! ( ) :* '", "'; DROP TABLE x; --", "<->", "\\", "🙂", "((((((((((a"]:
        assert await widget_ids(ann_w, q) == [], q
    status, body = await ann_w.get("/api/widget/search", params={"q": secret + "'&!|:*"})
    assert status == 200 and len(body["data"]) == 1, body
    for params in [
        {"q": ""},
        {"q": "x" * 201},
        {"q": "ok", "cursor": "not-a-cursor"},
        {"q": "ok", "cursor": "A" * 22 + "A"},
        {"q": "ok", "limit": "1000"},
        {"q": "ok", "conversation_id": "../x"},
        {},
    ]:
        status, body = await ann_w.get("/api/widget/search", params=params)
        assert status == 422, (params, body)
    status, body = await world.tenant.get("/api/v1/search", params={"q": "ok", "since": "soon"})
    assert status == 422, body
    status, body = await world.tenant.get(
        "/api/v1/search", params={"q": "ok", **{f"metadata.k{i}": "v" for i in range(11)}}
    )
    assert status == 422, body
    # No credentials, or a session on the tenant route: 401.
    assert (await ann_w.get("/api/v1/search", params={"q": "x"}))[0] == 401
    assert (await world.tenant.get("/api/widget/search", params={"q": "x"}))[0] == 401

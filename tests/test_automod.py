"""Automatic moderation on the send path, over the real stack: each action, the dry run,
what is recorded in the log, and rules a hostile tenant or user might try."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from confab import bus
from confab.contracts.events import messaging
from confab.contracts.events.moderation import MessageBlocked
from confab.eventlog import read_subject
from tests.client import Api, new_workspace
from tests.stack import RunningStack
from tests.test_authority import sockets, three
from tests.test_messaging_api import World, send

__all__ = ["sockets"]  # a fixture used here

RULES: list[dict[str, Any]] = [
    {"id": "gambling", "kind": "word", "action": "block", "words": ["casino", "jackpot"]},
    {"id": "phones", "kind": "phone", "action": "mask"},
    {"id": "emails", "kind": "email", "action": "flag"},
    {"id": "paylinks", "kind": "regex", "action": "mask", "pattern": r"(?i)paypal\.me/\w+"},
]
AUTOMOD = "/api/v1/moderation/automod"


@pytest.fixture
async def world(stack: RunningStack, http: aiohttp.ClientSession) -> World:
    admin = Api(http, stack.gateway, stack.admin_headers)
    return World(admin, await new_workspace(admin))


async def put_rules(world: World, rules: list[dict[str, Any]], dry_run: bool = False) -> Any:
    status, body = await world.tenant.call("PUT", AUTOMOD, {"rules": rules, "dry_run": dry_run})
    assert status == 200, body
    return body


async def reports_for(world: World, message_id: str) -> list[dict[str, Any]]:
    status, page = await world.tenant.get("/api/v1/reports", params={"status": "all"})
    assert status == 200, page
    return [r for r in page["data"] if r["message"]["id"] == message_id]


async def test_each_action_and_the_dry_run(world: World, stack: RunningStack) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    base = f"/api/widget/conversations/{cid}/messages"
    body = await put_rules(world, RULES)
    assert [r["id"] for r in body["rules"]] == [r["id"] for r in RULES] and not body["dry_run"]
    assert (await world.tenant.get(AUTOMOD))[1]["rules"] == body["rules"]

    # block: a clear 422 that says why; nothing posted; the refusal is a message.blocked.
    status, refused = await ann_w.post(base, {"content": "Meet me at the CASINO"})
    assert status == 422, refused
    assert refused["error"]["code"] == "message_blocked"
    assert refused["error"]["details"]["rules"] == ["gambling"]
    status, history = await bob_w.get(base)
    assert status == 200 and history["data"] == [], history
    subject = messaging.subject(world.workspace["id"], cid)
    nc = await bus.connect(stack.info["nats_url"], "test")
    try:
        stored = [e.event async for e in read_subject(nc, bus.CONVERSATIONS.name, subject)]
    finally:
        await nc.close()
    blocked = [e for e in stored if isinstance(e, MessageBlocked)]
    assert [(b.sender_id, b.seq, [h.rule_id for h in b.hits]) for b in blocked] == [
        (ann["id"], 0, ["gambling"])
    ]

    # mask: the match replaced, in the reply and in what others read.
    masked = await send(ann_w, cid, "Call me on +1 (555) 123-4567 or paypal.me/annie")
    assert masked["content"] == "Call me on *** or ***", masked
    status, history = await bob_w.get(base)
    assert [m["content"] for m in history["data"]] == ["Call me on *** or ***"]

    # flag: posted as it is, and in the report queue as a system report.
    flagged = await send(ann_w, cid, "Write to ann@example.com")
    assert flagged["content"] == "Write to ann@example.com"
    (report,) = await reports_for(world, flagged["id"])
    assert report["reporter_id"] == "automod" and "emails" in report["reason"], report

    # An edit passes the same rules: masked, or refused.
    edit = f"{base}/{flagged['id']}"
    status, edited = await ann_w.patch(edit, {"content": "New number 555 123 4567"})
    assert (status, edited["content"]) == (200, "New number ***"), edited
    status, refused = await ann_w.patch(edit, {"content": "jackpot!"})
    assert (status, refused["error"]["code"]) == (422, "message_blocked"), refused

    # Dry run: nothing is blocked or masked; every match is flagged.
    await put_rules(world, RULES, dry_run=True)
    tried = await send(bob_w, cid, "casino tonight? +44 20 7946 0958")
    assert tried["content"] == "casino tonight? +44 20 7946 0958"
    (report,) = await reports_for(world, tried["id"])
    assert report["reporter_id"] == "automod"
    assert "gambling" in report["reason"] and "phones" in report["reason"], report

    # No rules: nothing happens.
    await put_rules(world, [])
    plain = await send(bob_w, cid, "casino")
    assert plain["content"] == "casino" and await reports_for(world, plain["id"]) == []


async def test_rules_refuse_what_could_hurt(world: World, stack: RunningStack) -> None:
    ann, ann_w = await world.user("Ann")
    bob, _ = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    # A pattern that backtracks catastrophically elsewhere is linear in RE2: the worst
    # input at the longest allowed length is answered like any other post.
    await put_rules(
        world, [{"id": "evil", "kind": "regex", "action": "block", "pattern": r"^(a+)+$"}]
    )
    evil = await send(ann_w, cid, "a" * 9_998 + "!")
    assert evil["content"].endswith("!")
    status, refused = await ann_w.post(
        f"/api/widget/conversations/{cid}/messages", {"content": "a" * 9_999}
    )
    assert (status, refused["error"]["code"]) == (422, "message_blocked")
    bad_rules: list[Any] = [
        [{"id": "x", "kind": "regex", "action": "block", "pattern": r"(a)\1"}],  # back-ref
        [{"id": "x", "kind": "regex", "action": "block", "pattern": r"(?=a)b"}],  # look-ahead
        [{"id": "x", "kind": "regex", "action": "block", "pattern": "(" * 300 + ")" * 200}],
        [{"id": "x", "kind": "regex", "action": "block", "pattern": "a{1000}{1000}"}],
        [{"id": "x", "kind": "regex", "action": "block", "pattern": "x" * 501}],
        [{"id": "x", "kind": "regex", "action": "block"}],
        [{"id": "x", "kind": "word", "action": "block", "words": []}],
        [{"id": "x", "kind": "word", "action": "block", "words": ["ok"] * 201}],
        [{"id": "x", "kind": "phone", "action": "block", "pattern": "1"}],
        [{"id": "x", "kind": "phone", "action": "explode"}],
        [
            {"id": "x", "kind": "phone", "action": "mask"},
            {"id": "x", "kind": "url", "action": "flag"},
        ],
        [{"id": f"r{i}", "kind": "url", "action": "flag"} for i in range(51)],
        [{"id": "a.b", "kind": "url", "action": "flag"}],
    ]
    for rules in bad_rules:
        status, body = await world.tenant.call("PUT", AUTOMOD, {"rules": rules})
        assert status == 422, (rules, body)
    # RE2's reason, in words at the field (its errors carry bytes).
    status, body = await world.tenant.call("PUT", AUTOMOD, {"rules": bad_rules[0]})
    assert body["error"]["details"] == {"rules[0]": "invalid escape sequence: \\1"}, body
    # What was in force stays in force.
    assert [r["id"] for r in (await world.tenant.get(AUTOMOD))[1]["rules"]] == ["evil"]
    # Two editors read version v; the first to write wins, the second gets 409 with the
    # version now, and its rules are not in force.
    read = (await world.tenant.get(AUTOMOD))[1]
    first = {"rules": [*read["rules"], {"id": "urls", "kind": "url", "action": "flag"}]}
    status, won = await world.tenant.call("PUT", AUTOMOD, {**first, "version": read["version"]})
    assert status == 200 and won["version"] > read["version"], won
    second = {"rules": [{"id": "phones", "kind": "phone", "action": "flag"}]}
    status, body = await world.tenant.call("PUT", AUTOMOD, {**second, "version": read["version"]})
    assert (status, body["error"]["code"]) == (409, "conflict"), body
    assert body["error"]["details"] == {"version": won["version"]}, body
    assert [r["id"] for r in (await world.tenant.get(AUTOMOD))[1]["rules"]] == ["evil", "urls"]
    status, body = await world.tenant.call("PUT", AUTOMOD, {**second, "version": -1})
    assert status == 422, body
    # Without a version the last write wins, as before.
    status, body = await world.tenant.call("PUT", AUTOMOD, {"rules": read["rules"]})
    assert status == 200 and [r["id"] for r in body["rules"]] == ["evil"], body
    # Users cannot read or change rules; another workspace's rules are its own.
    assert (await ann_w.get(AUTOMOD))[0] == 401
    assert (await ann_w.call("PUT", AUTOMOD, {"rules": []}))[0] == 401
    admin = Api(world.tenant.http, stack.gateway, stack.admin_headers)
    other = World(admin, await new_workspace(admin, "Other"))
    assert (await other.tenant.get(AUTOMOD))[1] == {"rules": [], "dry_run": False, "version": 0}
    eve, eve_w = await other.user("Eve")
    fay, _ = await other.user("Fay")
    there = await other.conversation(eve, fay)
    assert (await send(eve_w, there, "a" * 20))["content"] == "a" * 20


async def test_shadowed_posts_are_their_senders_alone_on_every_path(
    world: World, stack: RunningStack, sockets: Any
) -> None:
    (ann, ann_w), (_, bob_w), (_, cat_w), cid = await three(world)
    channel = f"private-conversation.{cid}"
    base = f"/api/widget/conversations/{cid}"
    await put_rules(world, [{"id": "links", "kind": "url", "action": "shadow"}])
    bob_sock = await sockets()
    await bob_sock.join(bob_w, channel)
    before = await send(ann_w, cid, "hello")

    # A shadow rule: the sender is answered as usual and sees it in their history.
    link = await send(ann_w, cid, "buy at cheap-deals.com today", client_msg_id="c-1")
    assert link["content"] == "buy at cheap-deals.com today" and link["seq"] == before["seq"]
    status, again = await ann_w.post(
        f"{base}/messages", {"content": "buy at cheap-deals.com today", "client_msg_id": "c-1"}
    )
    assert (status, again["id"]) == (200, link["id"])  # a resend names the original
    # Shadow-banned: every post of the user, whatever it says.
    assert (await world.tenant.post(f"/api/v1/users/{ann['id']}/shadow-ban"))[0] == 204
    quiet = await send(ann_w, cid, "anyone there?")
    after = await send(bob_w, cid, "visible to all")
    await bob_sock.wait(
        lambda f: f["event"] == "message.created" and f["data"]["id"] == after["id"]
    )

    shadowed = {link["id"], quiet["id"]}
    status, mine = await ann_w.get(f"{base}/messages")
    assert status == 200
    assert [m["id"] for m in mine["data"]] == [before["id"], link["id"], quiet["id"], after["id"]]
    for reader in (bob_w, cat_w):
        status, theirs = await reader.get(f"{base}/messages")
        assert [m["id"] for m in theirs["data"]] == [before["id"], after["id"]], theirs
        status, events = await reader.get(f"{base}/events", params={"after": 0})
        assert not shadowed & {e["data"].get("id") for e in events["data"]}
        status, conv = await reader.get(base)
        assert [m["id"] for m in conv["messages"]] == [before["id"], after["id"]]
    seen = {f["data"].get("id") for f in bob_sock.seen(channel) if isinstance(f["data"], dict)}
    assert not shadowed & seen
    # No gap for the others: the seqs they see run on.
    assert after["seq"] == before["seq"] + 1
    status, found = await bob_w.get("/api/widget/search", params={"q": "cheap deals"})
    assert status == 200 and found["data"] == []
    # Lifted: posts are everyone's again; what was shadowed stays the sender's alone.
    assert (await world.tenant.delete(f"/api/v1/users/{ann['id']}/shadow-ban"))[0] == 204
    back = await send(ann_w, cid, "I am back")
    await bob_sock.wait(lambda f: f["event"] == "message.created" and f["data"]["id"] == back["id"])
    status, theirs = await bob_w.get(f"{base}/messages")
    assert [m["id"] for m in theirs["data"]] == [before["id"], after["id"], back["id"]]
    assert (await ann_w.post(f"/api/v1/users/{ann['id']}/shadow-ban"))[0] == 401


async def test_a_shadowed_post_is_edited_and_deleted_by_its_sender_alone(
    world: World, stack: RunningStack, sockets: Any
) -> None:
    (_ann, ann_w), (_, bob_w), (_, cat_w), cid = await three(world)
    channel = f"private-conversation.{cid}"
    base = f"/api/widget/conversations/{cid}"
    rules = [
        {"id": "links", "kind": "url", "action": "shadow"},
        {"id": "phones", "kind": "phone", "action": "mask"},
        {"id": "gambling", "kind": "word", "action": "block", "words": ["casino"]},
    ]
    await put_rules(world, rules)
    bob_sock = await sockets()
    await bob_sock.join(bob_w, channel)
    before = await send(ann_w, cid, "hello")
    link = await send(ann_w, cid, "buy at cheap-deals.com today")
    mine = f"{base}/messages/{link['id']}"

    # Its sender edits it like any message; the edit passes the rules again (masked).
    status, edited = await ann_w.patch(mine, {"content": "cheap-deals.com or 555 123 4567"})
    assert status == 200, edited
    assert edited["content"] == "cheap-deals.com or ***" and edited["edited_at"], edited
    status, refused = await ann_w.patch(mine, {"content": "casino night"})
    assert (status, refused["error"]["code"]) == (422, "message_blocked"), refused
    status, history = await ann_w.get(f"{base}/messages")
    assert [m["content"] for m in history["data"]] == ["hello", "cheap-deals.com or ***"]
    # Nobody else can touch it, or learn that it exists.
    for other in (bob_w, cat_w):
        assert (await other.patch(mine, {"content": "mine now"}))[0] == 404
        assert (await other.delete(mine))[0] == 404

    # The edit reaches nobody else: not history, /events, frames or search.
    after = await send(bob_w, cid, "visible to all")
    await bob_sock.wait(
        lambda f: f["event"] == "message.created" and f["data"]["id"] == after["id"]
    )
    for reader in (bob_w, cat_w):
        status, theirs = await reader.get(f"{base}/messages")
        assert [m["id"] for m in theirs["data"]] == [before["id"], after["id"]], theirs
        status, events = await reader.get(f"{base}/events", params={"after": 0})
        assert link["id"] not in {e["data"].get("id") for e in events["data"]}
    assert not [f for f in bob_sock.seen(channel) if link["id"] in json.dumps(f)]
    status, found = await bob_w.get("/api/widget/search", params={"q": "cheap deals"})
    assert status == 200 and found["data"] == []

    # Its sender deletes it: a tombstone in their history, once; then it is gone for edits.
    assert (await ann_w.delete(mine))[0] == 204
    assert (await ann_w.delete(mine))[0] == 204
    assert (await ann_w.patch(mine, {"content": "back"}))[0] == 404
    status, history = await ann_w.get(f"{base}/messages")
    (gone,) = [m for m in history["data"] if m["id"] == link["id"]]
    assert gone["deleted"] is True and gone["content"] == "", gone
    # In the log: seq 0 events, outside the timeline every other reader follows.
    nc = await bus.connect(stack.info["nats_url"], "test")
    try:
        subject = messaging.subject(world.workspace["id"], cid)
        stored = [e.event async for e in read_subject(nc, bus.CONVERSATIONS.name, subject)]
    finally:
        await nc.close()
    shadow = [e for e in stored if getattr(e, "message_id", None) == link["id"]]
    assert [(e.type, e.seq) for e in shadow] == [
        ("message.shadowed", 0),
        ("message.shadow_edited", 0),
        ("message.shadow_deleted", 0),
    ]
    # A subscription after a seq-0 event (the last on the subject) is answered at once.
    cat_sock = await sockets()
    await cat_sock.join(cat_w, channel)


async def test_masking_keeps_mention_entities_on_the_text_they_name(world: World) -> None:
    (_, ann_w), (bob, bob_w), (cat, _), cid = await three(world)
    rules = [
        {"id": "phones", "kind": "phone", "action": "mask"},
        {"id": "emails", "kind": "email", "action": "mask"},
    ]
    await put_rules(world, rules)

    def mention(text: str, name: str, user: dict[str, Any]) -> dict[str, Any]:
        start = text.index(name)
        return {"user_id": user["id"], "start": start, "end": start + len(name)}

    sent = "Ring 555 123 4567, @Bob, or mail x@cat.io (@Cat)"
    given = [mention(sent, "@Bob", bob), mention(sent, "@cat", cat), mention(sent, "@Cat", cat)]
    posted = await send(ann_w, cid, sent, mentions=given)
    stored = "Ring ***, @Bob, or mail *** (@Cat)"
    assert posted["content"] == stored, posted

    def named(message: dict[str, Any]) -> list[tuple[str, str]]:
        text = message["content"]
        return [(m["user_id"], text[m["start"] : m["end"]]) for m in message["mentions"]]

    # The mention inside the masked address is dropped; the others moved with their text.
    assert named(posted) == [(bob["id"], "@Bob"), (cat["id"], "@Cat")]
    status, history = await bob_w.get(f"/api/widget/conversations/{cid}/messages")
    assert status == 200 and named(history["data"][-1]) == named(posted)
    # An edit's mentions likewise.
    text = "+44 20 7946 0958 is @Cat's"
    status, edited = await ann_w.patch(
        f"/api/widget/conversations/{cid}/messages/{posted['id']}",
        {"content": text, "mentions": [mention(text, "@Cat", cat)]},
    )
    assert status == 200, edited
    assert edited["content"] == "*** is @Cat's" and named(edited) == [(cat["id"], "@Cat")]

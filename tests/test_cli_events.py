"""``confab streams`` and ``confab events tail | export | import`` against running stacks, and
the audit trail: every admin and moderation action is an event with its actor."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from confab_infra.testing import TestBackends, fresh_database
from tests.client import Api
from tests.ops import Chat, confab, target, wait_caught_up
from tests.stack import CONFAB, RunningStack, backend_flags, running_stack


@pytest.fixture
def admin(stack: RunningStack, http: aiohttp.ClientSession) -> Api:
    return Api(http, stack.gateway, stack.admin_headers)


def lines(text: str) -> list[dict[str, Any]]:
    # Split on newlines only: str.splitlines() also splits on U+2028 and the like, which
    # JSON leaves unescaped inside strings (the fuzzing tests store such names).
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def test_streams_shows_counts_bytes_and_consumer_lag(stack: RunningStack) -> None:
    shown = confab("streams", *target(stack), "--json")
    assert shown.returncode == 0, shown.stderr
    streams = {s["name"]: s for s in json.loads(shown.stdout)}
    assert {"IDENTITY", "CONVERSATIONS", "MEDIA"} <= set(streams)
    identity = streams["IDENTITY"]
    assert identity["messages"] > 0 and identity["bytes"] > 0 and identity["last_seq"] > 0
    # The conversations projection is partitioned: a consumer per process feeding it (one
    # process here; a restarted one's old consumer lingers until the server removes it).
    feeding = [
        c
        for c in streams["CONVERSATIONS"]["consumers"]
        if c["name"].startswith("proj_messaging_conversations_")
    ]
    assert feeding, streams["CONVERSATIONS"]["consumers"]
    projection = feeding[0]
    assert projection["durable"] and projection["filter"] == ["conv.evt.>"]
    assert projection["lag"] == projection["num_pending"] + projection["num_ack_pending"] >= 0

    table = confab("streams", *target(stack))
    assert table.returncode == 0, table.stderr
    assert "CONVERSATIONS" in table.stdout and projection["name"] in table.stdout
    assert "NUM_PENDING" in table.stdout and "BYTES" in table.stdout


async def test_tail_shows_live_events_filtered_by_workspace_and_type(
    stack: RunningStack, admin: Api
) -> None:
    chat = await Chat.create(admin, "Tail")
    other = await Chat.create(admin, "Elsewhere")
    ann, bob = await chat.user("Ann"), await chat.user("Bob")
    cid = await chat.conversation(ann, bob)
    stranger = await other.user("Eve")
    elsewhere = await other.conversation(stranger, await other.user("Zed"))

    tail = await asyncio.create_subprocess_exec(
        CONFAB,
        "events",
        "tail",
        *target(stack),
        "--workspace",
        chat.id,
        "--type",
        "message.*",
        "--json",
        "--count",
        "2",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert tail.stderr is not None
        # Printed once its consumers exist: everything stored from here on is shown.
        ready = await asyncio.wait_for(tail.stderr.readline(), 30)
        assert b"showing events" in ready, ready
        await chat.send(ann, cid, "first")
        await other.send(stranger, elsewhere, "not for this tail")
        read = f"/api/widget/conversations/{cid}/read"
        assert (await chat.widgets[bob["id"]].post(read, {}))[0] == 204  # not a message.*
        await chat.send(bob, cid, "second")
        out, _ = await asyncio.wait_for(tail.communicate(), 30)
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()
    assert tail.returncode == 0
    shown = lines(out.decode())
    assert [e["type"] for e in shown] == ["message.posted", "message.posted"]
    # As stored: the text is sealed with its sender's key (confab.personal), never in clear.
    assert [e["body"]["content"] for e in shown] == ["", ""]
    assert all(e["body"]["sealed"].startswith("v1.") for e in shown)
    assert {e["headers"]["Confab-Workspace"] for e in shown} == {chat.id}
    assert [e["headers"]["Confab-Actor"] for e in shown] == [ann["id"], bob["id"]]

    # The past too, for one conversation, as lines for people.
    human = confab(
        "events", "tail", *target(stack), "--conversation", cid, "--since", "10m", "--no-follow"
    )
    assert human.returncode == 0, human.stderr
    rows = human.stdout.splitlines()
    kinds = ["conversation.created", "message.posted", "read.marked", "message.posted"]
    assert [row.split("  ")[2] for row in rows] == kinds
    assert all(cid in row and "CONVERSATIONS#" in row for row in rows)
    assert f"actor={bob['id']}" in rows[3] and '"sealed":"v1.' in rows[3]


async def test_admin_and_moderation_actions_are_events_with_their_actor(
    stack: RunningStack, admin: Api
) -> None:
    chat = await Chat.create(admin, "Audited")
    ann, bob = await chat.user("Ann"), await chat.user("Bob")
    cid = await chat.conversation(ann, bob)
    rude = await chat.send(bob, cid, "rude words")
    status, key = await admin.post(f"/api/admin/workspaces/{chat.id}/api-keys")
    assert status == 201, key
    assert (await admin.delete(f"/api/admin/workspaces/{chat.id}/api-keys/{key['id']}"))[0] == 204
    report = f"/api/widget/messages/{rude['id']}/report"
    assert (await chat.widgets[ann["id"]].post(report, {"reason": "rude"}))[0] == 204
    assert (await chat.tenant.post(f"/api/v1/users/{bob['id']}/ban"))[0] == 200
    moderation = f"/api/v1/messages/{rude['id']}/moderation"
    assert (await chat.tenant.post(moderation, {"action": "hide"}))[0] == 204
    assert (await chat.tenant.delete(f"/api/v1/users/{bob['id']}/ban"))[0] == 200

    types = ["workspace.created", "api_key.*", "user.banned", "user.unbanned"]
    types += ["message.reported", "message.moderated"]
    found = confab(
        "events",
        "tail",
        *target(stack),
        *("--workspace", chat.id, "--since", "10m", "--no-follow", "--json"),
        *(arg for t in types for arg in ("--type", t)),
    )
    assert found.returncode == 0, found.stderr
    events = lines(found.stdout)
    # Streams are read side by side: compare each stream's events in their order.
    identity = [e for e in events if e["stream"] == "IDENTITY"]
    tenant_key = identity[1]["body"]["key_id"]  # issued with the workspace; the tenant uses it
    assert [(e["type"], e["headers"]["Confab-Actor"]) for e in identity] == [
        ("workspace.created", "admin"),
        ("api_key.issued", "admin"),
        ("api_key.issued", "admin"),
        ("api_key.revoked", "admin"),
        ("user.banned", tenant_key),
        ("user.unbanned", tenant_key),
    ]
    conversation = [e for e in events if e["stream"] == "CONVERSATIONS"]
    assert [(e["type"], e["headers"]["Confab-Actor"]) for e in conversation] == [
        ("message.reported", ann["id"]),
        ("message.moderated", tenant_key),
    ]
    assert conversation[1]["body"]["action"] == "hide"
    assert conversation[1]["body"]["by"] == tenant_key


async def snapshot(chat: Chat, base: str, http: aiohttp.ClientSession) -> dict[str, Any]:
    """What the API shows of a workspace: the tenant's conversation list, and every
    participant's conversations and messages (pages of 100)."""
    tenant = Api(http, base, chat.tenant.headers)
    status, listing = await tenant.get("/api/v1/conversations", params={"limit": 100})
    assert status == 200, listing
    seen: dict[str, Any] = {"tenant": listing}
    for user_id, widget in chat.widgets.items():
        w = Api(http, base, widget.headers)
        status, mine = await w.get("/api/widget/conversations", params={"limit": 100})
        assert status == 200, mine
        seen[user_id] = mine
        for conv in mine["data"]:
            status, page = await w.get(
                f"/api/widget/conversations/{conv['id']}/messages", params={"limit": 100}
            )
            assert status == 200, page
            seen[f"{user_id}:{conv['id']}"] = page
    return seen


async def test_export_then_import_into_a_new_stack_gives_the_same_read_models_and_api(
    stack: RunningStack,
    admin: Api,
    backends: TestBackends,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    chat = await Chat.create(admin, "Migrated")
    ann, bob, cat = await chat.user("Ann"), await chat.user("Bob"), await chat.user("Cat")
    first = await chat.conversation(ann, bob, title="Ann & Bob")
    second = await chat.conversation(bob, cat, ann, title="Three")
    hello = await chat.send(ann, first, "hello 👋")
    await chat.send(bob, first, "hi!")
    await chat.send(cat, second, "meow")
    w = chat.widgets
    assert (await w[bob["id"]].post(f"/api/widget/conversations/{first}/read", {}))[0] == 204
    reaction = f"/api/widget/conversations/{first}/messages/{hello['id']}/reactions"
    assert (await w[bob["id"]].post(reaction, {"emoji": "🎉"}))[0] == 204
    edit = f"/api/widget/conversations/{first}/messages/{hello['id']}"
    assert (await w[ann["id"]].patch(edit, {"content": "hello, edited"}))[0] == 200
    await wait_caught_up(stack)
    before = await snapshot(chat, stack.gateway, http)

    dump = tmp_path / "log.jsonl"
    exported = confab("events", "export", *target(stack), "--out", str(dump))
    assert exported.returncode == 0, exported.stderr
    records = lines(dump.read_text())
    assert "exported" in exported.stderr and f"{len(records):,} events" in exported.stderr
    assert {r["stream"] for r in records} >= {"IDENTITY", "CONVERSATIONS"}
    # Derived decisions come before what they are derived from (see MOVED_ORDER).
    order = [r["stream"] for r in records]
    if "NOTIFIER" in order:
        assert order.index("NOTIFIER") < order.index("CONVERSATIONS"), order
    mine = [r for r in records if r["headers"].get("Confab-Workspace") == chat.id]
    assert any(r["type"] == "message.edited" for r in mine)
    assert all(r["headers"]["Nats-Msg-Id"] and r["time"].endswith("Z") for r in mine)

    with (
        fresh_database(backends.database_url) as database_url,
        running_stack(
            tmp_path / "restored", "--no-demo", *backend_flags(backends, database_url)
        ) as restored,
    ):
        imported = confab("events", "import", str(dump), *target(restored))
        assert imported.returncode == 0, imported.stderr
        assert f"Imported {len(records):,} events" in imported.stdout
        again = confab("events", "import", str(dump), *target(restored))
        assert again.returncode != 0 and "not empty" in again.stderr

        await wait_caught_up(restored)
        for name in ("identity", "messaging"):
            verified = confab("projections", "verify", name, *target(restored))
            assert verified.returncode == 0, verified.stdout + verified.stderr
            assert "identical" in verified.stdout
        # The same keys and sessions work there, and show the same conversations.
        after = await snapshot(chat, restored.gateway, http)
        assert after == before
        # The imported log is the exported one: same order, bodies, headers and ids.
        copy = confab("events", "export", *target(restored))
        assert copy.returncode == 0, copy.stderr

        def same(r: dict[str, Any]) -> tuple[Any, ...]:
            kept = {k: v for k, v in r["headers"].items() if not k.startswith("Nats-Expected")}
            # The event streams keep their sequences. The key bucket's cannot: erasing a
            # user purges their key with a roll-up, which leaves a gap in the original
            # that an import, appending in order, does not reproduce (keys are found by
            # subject, so nothing reads them by sequence).
            seq = None if r["stream"].startswith("KV_") else r["seq"]
            return r["stream"], seq, r["subject"], r["body"], kept

        # The notifier of the new stack decides by the clock: a notification that fell due
        # after the export is appended there (as it would have been in the original).
        notified = max((r["seq"] for r in records if r["stream"] == "NOTIFIER"), default=0)
        copied = [
            r for r in lines(copy.stdout) if r["stream"] != "NOTIFIER" or r["seq"] <= notified
        ]
        assert [same(r) for r in copied] == [same(r) for r in records]

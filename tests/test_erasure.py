"""Erasure holds for the log: after ``DELETE /api/v1/users/{id}`` the user's message text and
profile are nowhere — not in the API, not in the read models (live or rebuilt), not in
``confab events export``, not in the stack's files — because the log only ever held them
sealed with a key that the erasure destroyed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from confab.db import plain_url
from tests.client import Api
from tests.ops import Chat, confab, target, wait_caught_up
from tests.stack import RunningStack

# Strings that appear nowhere but in what the erased user wrote or was called.
NAME = "Zelda Quartzfield"
EMAIL = "zelda.quartzfield@example.com"
AVATAR = "https://img.example/zelda-quartzfield.png"
PHONE = "+1-555-0199-7781"
SENT = "my plum pudding recipe 7781"
EDITED = "actually kiwi sorbet 4471"
SECRET_META = "locker code 90210"
HERS = (NAME, EMAIL, AVATAR, PHONE, SENT, EDITED, SECRET_META)
BOBS = "Bob still says hello 5150"


@pytest.fixture
def admin(stack: RunningStack, http: aiohttp.ClientSession) -> Api:
    return Api(http, stack.gateway, stack.admin_headers)


def found_in(text: str) -> list[str]:
    return [s for s in HERS if s in text]


async def read_models_text(stack: RunningStack) -> str:
    """Every row of the identity and messaging read models, as JSON text."""
    conn = await asyncpg.connect(plain_url(stack.info["database_url"]))
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema IN ('identity', 'messaging')"
        )
        out = []
        for t in tables:
            rows = await conn.fetch(f'SELECT row_to_json(x)::text AS j FROM "{t[0]}"."{t[1]}" x')
            out.extend(r["j"] for r in rows)
        return "\n".join(out)
    finally:
        await conn.close()


def files_text(root: Path) -> str:
    """The bytes of every file under ``root`` (the JetStream store, logs, state)."""
    chunks = []
    for path in root.rglob("*"):
        if path.is_file():
            chunks.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(chunks)


async def api_text(chat: Chat, bob: dict[str, Any], conversation_id: str) -> str:
    widget = chat.widgets[bob["id"]]
    seen = []
    for path in (
        f"/api/widget/conversations/{conversation_id}",
        f"/api/widget/conversations/{conversation_id}/messages",
        f"/api/widget/conversations/{conversation_id}/events?after=0",
        "/api/widget/conversations",
    ):
        status, body = await widget.get(path)
        assert status == 200, (path, body)
        seen.append(json.dumps(body, ensure_ascii=False))
    status, body = await chat.tenant.get("/api/v1/conversations", params={"user_id": bob["id"]})
    assert status == 200, body
    seen.append(json.dumps(body, ensure_ascii=False))
    return "\n".join(seen)


async def test_erased_users_text_and_profile_are_gone_from_api_read_models_export_and_files(
    stack: RunningStack, admin: Api
) -> None:
    chat = await Chat.create(admin, "Erasure")
    status, zelda = await chat.tenant.post(
        "/api/v1/users",
        {
            "external_id": f"zelda-{uuid.uuid4().hex[:6]}",
            "name": NAME,
            "email": EMAIL,
            "avatar_url": AVATAR,
            "metadata": {"phone": PHONE},
        },
    )
    assert status == 201, zelda
    status, session = await chat.tenant.post("/api/v1/sessions", {"user_id": zelda["id"]})
    assert status == 201, session
    chat.widgets[zelda["id"]] = chat.tenant.as_(Authorization=f"Bearer {session['token']}")
    bob = await chat.user("Bob")
    cid = await chat.conversation(zelda, bob, title="Before")
    first = await chat.send(zelda, cid, SENT)
    status, _ = await chat.widgets[zelda["id"]].post(
        f"/api/widget/conversations/{cid}/messages",
        {"content": "second thought", "metadata": {"note": SECRET_META}},
    )
    assert status == 201
    status, _ = await chat.widgets[zelda["id"]].patch(
        f"/api/widget/conversations/{cid}/messages/{first['id']}", {"content": EDITED}
    )
    assert status == 200
    await chat.send(bob, cid, BOBS)
    await wait_caught_up(stack)

    # Before the erasure everything shows, but the log holds it only sealed.
    before = await api_text(chat, bob, cid)
    assert set(found_in(before)) >= {NAME, EDITED, SECRET_META}
    assert found_in(await read_models_text(stack))
    exported = confab("events", "export", *target(stack))
    assert exported.returncode == 0, exported.stderr
    assert found_in(exported.stdout) == []
    assert chat.id in exported.stdout  # the workspace's events are there, sealed

    status, _ = await chat.tenant.delete(f"/api/v1/users/{zelda['id']}")
    assert status == 204
    await wait_caught_up(stack)

    after = await api_text(chat, bob, cid)
    assert found_in(after) == [] and BOBS in after
    assert (await chat.tenant.get(f"/api/v1/users/{zelda['id']}"))[0] == 404
    assert found_in(await read_models_text(stack)) == []

    exported = confab("events", "export", *target(stack))
    assert exported.returncode == 0, exported.stderr
    assert found_in(exported.stdout) == []
    keys = [
        json.loads(line)
        for line in exported.stdout.splitlines()
        if line.strip() and f"{chat.id}.{zelda['id']}" in line
    ]
    # Her key is gone from the key stream: only the tombstone of the purge is left.
    assert keys and all(
        r["headers"].get("KV-Operation") == "PURGE" and not (r.get("body_base64") or r.get("body"))
        for r in keys
    )

    # Live blanking matches a replay, and a rebuild of every read model shows nothing either.
    for name in ("identity", "messaging"):
        verified = confab("projections", "verify", name, *target(stack))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        rebuilt = confab("projections", "rebuild", name, *target(stack))
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert found_in(await read_models_text(stack)) == []
    rebuilt_api = await api_text(chat, bob, cid)
    assert found_in(rebuilt_api) == [] and BOBS in rebuilt_api

    # Nor anywhere in the stack's own files: the JetStream store and the logs.
    assert found_in(files_text(stack.data_dir)) == []


async def test_an_erased_user_cannot_be_written_for_again(stack: RunningStack, admin: Api) -> None:
    chat = await Chat.create(admin, "Erasure twice")
    ann, bob = await chat.user("Ann"), await chat.user("Bob")
    cid = await chat.conversation(ann, bob)
    await chat.send(ann, cid, "bye")
    status, _ = await chat.tenant.delete(f"/api/v1/users/{ann['id']}")
    assert status == 204
    assert (await chat.tenant.delete(f"/api/v1/users/{ann['id']}"))[0] == 404
    status, body = await chat.tenant.post(
        f"/api/v1/conversations/{cid}/messages", {"content": "as Ann", "sender_id": ann["id"]}
    )
    assert status == 404, body
    status, body = await chat.tenant.patch(f"/api/v1/users/{ann['id']}", {"name": "Ann again"})
    assert status == 404, body

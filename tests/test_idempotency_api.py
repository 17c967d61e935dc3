"""Idempotency-Key through the running stack's API: replay, reuse, concurrency, scope.

The issue this answers: the same key twice made two conversations and two system
messages. Here a repeat replays the first answer and nothing runs twice: the
conversation's history shows each message once.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest

from tests.client import Api, new_workspace
from tests.stack import RunningStack

REPLAYED = "Idempotent-Replayed"


class Tenant:
    def __init__(self, http: aiohttp.ClientSession, stack: RunningStack) -> None:
        self.http = http
        self.base = stack.gateway
        self.admin = Api(http, stack.gateway, stack.admin_headers)

    async def start(self) -> Tenant:
        self.workspace = await new_workspace(self.admin, "Idempotent")
        self.api = self.admin.as_(**{"X-API-Key": self.workspace["api_key"]})
        self.users = [await self.user(name) for name in ("ann", "bob")]
        return self

    async def user(self, name: str) -> dict[str, Any]:
        status, user = await self.api.post("/api/v1/users", {"external_id": name, "name": name})
        assert status == 201, user
        return dict(user)

    async def raw_post(
        self, path: str, body: Any, key: str, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, bool]:
        """(status, body, replayed?) of a POST with an Idempotency-Key."""
        async with self.http.post(
            self.base + path,
            json=body,
            headers={**(headers or self.api.headers), "Idempotency-Key": key},
        ) as response:
            answer = await response.json() if response.status != 204 else None
            return response.status, answer, response.headers.get(REPLAYED) == "true"


@pytest.fixture
async def tenant(stack: RunningStack, http: aiohttp.ClientSession) -> Tenant:
    return await Tenant(http, stack).start()


def new_key() -> str:
    return f"test-{uuid.uuid4()}"


async def test_the_same_key_and_body_replay_the_first_answer(tenant: Tenant) -> None:
    body = {"participant_ids": [u["id"] for u in tenant.users], "type": "group", "title": "T"}
    key = new_key()
    first = await tenant.raw_post("/api/v1/conversations", body, key)
    again = await tenant.raw_post("/api/v1/conversations", body, key)
    assert first[0] == 201 and not first[2], first
    assert again == (201, first[1], True)
    status, listed = await tenant.api.get("/api/v1/conversations")
    assert [c["id"] for c in listed["data"]].count(first[1]["id"]) == 1

    # A system message, twice with one key: one message.
    path = f"/api/v1/conversations/{first[1]['id']}/messages"
    key = new_key()
    sent = await tenant.raw_post(path, {"content": "Welcome"}, key)
    resent = await tenant.raw_post(path, {"content": "Welcome"}, key)
    assert sent[0] == 201 and resent == (201, sent[1], True)
    session = await tenant.api.post("/api/v1/sessions", {"user_id": tenant.users[0]["id"]})
    widget = tenant.api.as_(Authorization=f"Bearer {session[1]['token']}")
    status, page = await widget.get(f"/api/widget/conversations/{first[1]['id']}/messages")
    assert status == 200 and [m["content"] for m in page["data"]].count("Welcome") == 1


async def test_the_same_key_with_another_body_is_422(tenant: Tenant) -> None:
    key = new_key()
    status, user, _ = await tenant.raw_post("/api/v1/users", {"external_id": "x", "name": "X"}, key)
    assert status == 201
    status, error, replayed = await tenant.raw_post(
        "/api/v1/users", {"external_id": "x", "name": "Y"}, key
    )
    assert (status, error["error"]["code"], replayed) == (422, "invalid_request", False)
    status, now = await tenant.api.get(f"/api/v1/users/{user['id']}")
    assert (status, now["name"]) == (200, "X")  # the second request did not run


async def test_concurrent_duplicates_run_once(tenant: Tenant) -> None:
    body = {"participant_ids": [u["id"] for u in tenant.users], "type": "group", "title": "Race"}
    key = new_key()
    answers = await asyncio.gather(
        *(tenant.raw_post("/api/v1/conversations", body, key) for _ in range(6))
    )
    ran = [a for a in answers if a[0] == 201 and not a[2]]
    assert len(ran) == 1, answers
    for status, answer, _ in answers:
        if status == 409:
            assert answer["error"]["code"] == "conflict"
        else:
            assert (status, answer) == (201, ran[0][1])
    # Once it has finished, the key answers with the stored result.
    assert await tenant.raw_post("/api/v1/conversations", body, key) == (201, ran[0][1], True)
    status, listed = await tenant.api.get("/api/v1/conversations")
    assert [c["title"] for c in listed["data"]].count("Race") == 1


async def test_keys_are_scoped_per_credential(tenant: Tenant) -> None:
    workspace_id = tenant.workspace["id"]
    status, other = await tenant.admin.post(f"/api/admin/workspaces/{workspace_id}/api-keys")
    assert status == 201, other
    key, body = new_key(), {"user_id": tenant.users[0]["id"]}
    first = await tenant.raw_post("/api/v1/sessions", body, key)
    mine_again = await tenant.raw_post("/api/v1/sessions", body, key)
    other_key = await tenant.raw_post(
        "/api/v1/sessions", body, key, headers={"X-API-Key": other["api_key"]}
    )
    assert first[0] == 201 and mine_again == (201, first[1], True)
    assert other_key[0] == 201 and not other_key[2]
    assert other_key[1]["token"] != first[1]["token"]  # a session of its own


async def test_widget_posts_take_a_key_and_a_bad_key_is_400(tenant: Tenant) -> None:
    status, conversation = await tenant.api.post(
        "/api/v1/conversations",
        {"participant_ids": [u["id"] for u in tenant.users], "type": "direct"},
    )
    session = await tenant.api.post("/api/v1/sessions", {"user_id": tenant.users[0]["id"]})
    widget = {"Authorization": f"Bearer {session[1]['token']}"}
    path = f"/api/widget/conversations/{conversation['id']}/messages"
    key = new_key()
    sent = await tenant.raw_post(path, {"content": "once"}, key, widget)
    resent = await tenant.raw_post(path, {"content": "once"}, key, widget)
    assert sent[0] == 201 and resent == (201, sent[1], True)
    read = f"/api/widget/conversations/{conversation['id']}/read"
    assert (await tenant.raw_post(read, {}, key + "-read", widget))[0] == 204
    assert await tenant.raw_post(read, {}, key + "-read", widget) == (204, None, True)

    for bad in ("", "x" * 256, "with space"):
        status, error, _ = await tenant.raw_post(path, {"content": "no"}, bad, widget)
        assert (status, error["error"]["code"]) == (400, "invalid_request"), bad

"""Hostile input against every dashboard route (``/dashboard/api/…``).

``/openapi.json`` leaves the dashboard's own routes out, so the schema-driven fuzz
(``test_api_fuzz.py``) never reaches them. Here every one of them gets, as a signed-in
owner with a valid CSRF token: bytes that are not JSON, JSON of the wrong shape, deep
nesting, wrong types in every field of its body, oversized strings, and path
parameters that are garbage, traversal, or another workspace's ids. Each answer must
be a 4xx (or a 2xx where the input happens to be acceptable) with the error body of
``api.md``, never a 5xx, and never a ``retry_after`` for a client error. Sign-out and
sign-out everywhere are left out: any input ends the session there, as it should.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from confab_gateway.dashboard import router as dashboard_router
from tests.client import Api, new_workspace
from tests.stack import RunningStack
from tests.staff import Member, Team, new_team

SKIPPED = {"/dashboard/api/sign-out", "/dashboard/api/sign-out-everywhere"}


@pytest.fixture(scope="module")
async def owner(stack: RunningStack) -> AsyncIterator[tuple[Team, Member]]:
    async with aiohttp.ClientSession() as http:
        team = await new_team(stack, http, roles=False)
        try:
            yield team, team.members["owner"]
        finally:
            await team.close()


def deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = {"a": [value]}
    return value


def wrong_types(body: type | None) -> list[dict[str, Any]]:
    """For each field of ``body``: the field as a list, a number, a huge string, null."""
    if body is None or not issubclass(body, msgspec.Struct):
        return [{"unexpected": True}]
    fields = body.__struct_fields__
    out: list[dict[str, Any]] = []
    for wrong in ([1, 2], 12345678901234567890, "\x00" + "é" * 100_000, None, {"$ne": 1}):
        out.append(dict.fromkeys(fields, wrong))
    return out


RAW = [
    b"",
    b"\xff\xfe\x00not json",
    b"{",
    b'{"a": 1}{"b": 2}',
    b"[]",
    b"null",
    b"1e999999",
]


async def post_raw(member: Member, method: str, path: str, raw: bytes) -> tuple[int, Any]:
    headers = {**member.csrf, "Content-Type": "application/json"}
    return await member.api.call(method, path, data=raw, headers=headers)


def judge(where: str, status: int, body: Any) -> None:
    assert status < 500, where
    if 400 <= status < 500 and status != 429:
        assert "retry_after" not in (body or {}).get("error", {}).get("details", {}), where


async def test_every_dashboard_route_refuses_hostile_input_without_a_5xx(
    owner: tuple[Team, Member], stack: RunningStack
) -> None:
    team, member = owner
    # Ids of another workspace: found nowhere from this one.
    async with aiohttp.ClientSession() as http:
        admin = Api(http, stack.gateway, stack.admin_headers)
        other = await new_workspace(admin, "Elsewhere")
        tenant = admin.as_(**{"X-API-Key": other["api_key"]})
        status, user = await tenant.post(
            "/api/v1/users", {"external_id": "someone", "name": "Someone"}
        )
        assert status == 201, user
        status, conversation = await tenant.post(
            "/api/v1/conversations", {"type": "group", "participant_ids": [user["id"]]}
        )
        assert status == 201, conversation
    foreign = {"user_id": user["id"], "conversation_id": conversation["id"]}
    garbage = ["zz_none", "..%2F..%2Fadmin", "a" * 300, "%00", "usr_" + "0" * 26]

    endpoints = [e for e in dashboard_router.endpoints if e.path not in SKIPPED]
    assert len(endpoints) > 10
    tried = 0
    for e in endpoints:
        params = e.path_params
        paths = []
        for value in [*garbage, None]:
            path = e.path
            for name in params:
                path = path.replace("{" + name + "}", value or foreign.get(name, "zz_none"))
            paths.append(path)
        if not params:
            paths = [e.path]
        for path in paths:
            if e.method in ("GET", "DELETE"):
                status, body = await member.call(e.method, path)
                judge(f"{e.method} {path} -> {status} {body}", status, body)
                tried += 1
                continue
            for raw in RAW:
                status, body = await post_raw(member, e.method, path, raw)
                judge(f"{e.method} {path} {raw!r} -> {status} {body}", status, body)
                tried += 1
            for hostile in [deep(300), *wrong_types(e.body)]:
                status, body = await member.call(e.method, path, hostile)
                judge(f"{e.method} {path} -> {status} {body}", status, body)
                tried += 1
    assert tried > 100
    # The session is still whole: nothing above signed it out or broke it.
    status, me = await member.call("GET", "/dashboard/api/me")
    assert status == 200 and me["workspace_id"] == team.workspace["id"]

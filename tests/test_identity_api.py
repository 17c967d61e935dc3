"""Workspaces, API keys, users and sessions through the gateway, against the real stack."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from tests.client import Api, new_workspace
from tests.stack import RunningStack


@pytest.fixture
def admin(stack: RunningStack, http: aiohttp.ClientSession) -> Api:
    return Api(http, stack.gateway, stack.admin_headers)


@pytest.fixture
async def tenant(admin: Api) -> Api:
    workspace = await new_workspace(admin)
    return admin.as_(**{"X-API-Key": workspace["api_key"]})


async def test_a_new_workspace_key_works_and_a_revoked_one_stops_at_once(admin: Api) -> None:
    workspace = await new_workspace(admin, "Key rotation")
    assert workspace["api_key"].startswith("sk_")
    assert workspace["app_key"] and workspace["app_secret"]
    first = admin.as_(**{"X-API-Key": workspace["api_key"]})
    status, user = await first.post("/api/v1/users", {"external_id": "e1", "name": "Ann"})
    assert status == 201

    status, issued = await admin.post(f"/api/admin/workspaces/{workspace['id']}/api-keys")
    assert status == 201 and issued["api_key"] != workspace["api_key"]
    second = admin.as_(**{"X-API-Key": issued["api_key"]})
    assert (await second.get(f"/api/v1/users/{user['id']}"))[0] == 200

    key_id = issued["id"]
    status, _ = await admin.delete(f"/api/admin/workspaces/{workspace['id']}/api-keys/{key_id}")
    assert status == 204
    # It was cached as valid a moment ago; the revocation must end that now.
    status, body = await second.get(f"/api/v1/users/{user['id']}")
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert (await first.get(f"/api/v1/users/{user['id']}"))[0] == 200


async def test_workspaces_are_listed_without_secrets(admin: Api) -> None:
    created = await new_workspace(admin, "Listed")
    found = []
    cursor = None
    for _ in range(1000):
        status, page = await admin.get(
            "/api/admin/workspaces", params={"limit": 100, **({"after": cursor} if cursor else {})}
        )
        assert status == 200
        found += page["data"]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    mine = [w for w in found if w["id"] == created["id"]]
    assert mine and set(mine[0]) == {"id", "name", "app_key", "created_at"}


async def test_upsert_by_external_id_creates_then_updates(tenant: Api) -> None:
    status, created = await tenant.post(
        "/api/v1/users", {"external_id": "guest-1", "name": "John", "email": "j@example.com"}
    )
    assert status == 201
    assert created["name"] == "John" and created["email"] == "j@example.com"
    status, updated = await tenant.post(
        "/api/v1/users",
        {"external_id": "guest-1", "name": "John Doe", "metadata": {"plan": "pro"}},
    )
    assert status == 200
    assert updated["id"] == created["id"]
    assert (updated["name"], updated["metadata"]) == ("John Doe", {"plan": "pro"})
    status, read = await tenant.get(f"/api/v1/users/{created['id']}")
    assert (status, read["name"]) == (200, "John Doe")

    status, patched = await tenant.patch(f"/api/v1/users/{created['id']}", {"email": None})
    assert (status, patched["email"], patched["name"]) == (200, None, "John Doe")


async def test_concurrent_upserts_of_one_external_id_make_one_user(tenant: Api) -> None:
    results = await asyncio.gather(
        *(tenant.post("/api/v1/users", {"external_id": "race", "name": f"R{i}"}) for i in range(10))
    )
    assert sorted(status for status, _ in results) == [200] * 9 + [201]
    assert len({body["id"] for _, body in results}) == 1


async def test_a_session_is_issued_used_and_revoked(tenant: Api) -> None:
    _, user = await tenant.post("/api/v1/users", {"external_id": "s1", "name": "Sam"})
    status, session = await tenant.post("/api/v1/sessions", {"user_id": user["id"]})
    assert status == 201
    assert session["token"].startswith("st_") and session["user"]["id"] == user["id"]
    widget = tenant.as_(Authorization=f"Bearer {session['token']}")
    status, me = await widget.get("/api/widget/me")
    assert status == 200 and me["user"]["id"] == user["id"]

    status, _ = await tenant.delete(f"/api/v1/sessions/{session['token']}")
    assert status == 204
    status, body = await widget.get("/api/widget/me")
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert (await tenant.delete(f"/api/v1/sessions/{session['token']}"))[0] == 404


async def test_erasing_a_user_ends_their_sessions_and_profile(tenant: Api) -> None:
    _, user = await tenant.post(
        "/api/v1/users", {"external_id": "gone", "name": "Eve", "email": "eve@example.com"}
    )
    _, session = await tenant.post("/api/v1/sessions", {"user_id": user["id"]})
    widget = tenant.as_(Authorization=f"Bearer {session['token']}")
    assert (await widget.get("/api/widget/me"))[0] == 200
    assert (await tenant.delete(f"/api/v1/users/{user['id']}"))[0] == 204
    assert (await widget.get("/api/widget/me"))[0] == 401
    status, _ = await tenant.get(f"/api/v1/users/{user['id']}")
    assert status == 404
    assert (await tenant.post("/api/v1/sessions", {"user_id": user["id"]}))[0] == 404


async def test_ban_and_unban(tenant: Api) -> None:
    _, user = await tenant.post("/api/v1/users", {"external_id": "b1", "name": "Bo"})
    status, banned = await tenant.post(f"/api/v1/users/{user['id']}/ban")
    assert (status, banned["banned"]) == (200, True)
    status, unbanned = await tenant.delete(f"/api/v1/users/{user['id']}/ban")
    assert (status, unbanned["banned"]) == (200, False)


async def test_another_workspace_sees_nothing(admin: Api) -> None:
    a = await new_workspace(admin, "A")
    b = await new_workspace(admin, "B")
    api_a = admin.as_(**{"X-API-Key": a["api_key"]})
    api_b = admin.as_(**{"X-API-Key": b["api_key"]})
    _, user_b = await api_b.post("/api/v1/users", {"external_id": "x", "name": "Bea"})
    _, session_b = await api_b.post("/api/v1/sessions", {"user_id": user_b["id"]})
    uid = user_b["id"]
    attempts = [
        api_a.get(f"/api/v1/users/{uid}"),
        api_a.patch(f"/api/v1/users/{uid}", {"name": "Hacked"}),
        api_a.delete(f"/api/v1/users/{uid}"),
        api_a.post(f"/api/v1/users/{uid}/ban"),
        api_a.delete(f"/api/v1/users/{uid}/ban"),
        api_a.post("/api/v1/sessions", {"user_id": uid}),
        api_a.delete(f"/api/v1/sessions/{session_b['token']}"),
    ]
    for status, body in await asyncio.gather(*attempts):
        assert (status, body["error"]["code"]) == (404, "not_found")
        assert uid not in body["error"]["message"] and "Bea" not in str(body)
    status, still = await api_b.get(f"/api/v1/users/{uid}")
    assert (status, still["name"], still["banned"]) == (200, "Bea", False)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 401),
        ({"X-API-Key": ""}, 401),
        ({"X-API-Key": "sk_not-a-real-key-at-all-000000000000"}, 401),
        ({"X-API-Key": "garbage"}, 401),
        ({"X-API-Key": "sk_" + "a" * 5000}, 401),
        ({"Authorization": "Bearer sk_wrong-place"}, 401),
    ],
)
async def test_missing_or_bad_api_keys_are_401(
    admin: Api, headers: dict[str, str], expected: int
) -> None:
    status, body = await admin.as_(**headers).post(
        "/api/v1/users", {"external_id": "x", "name": "y"}
    )
    assert (status, body["error"]["code"]) == (expected, "unauthorized")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"external_id": "x", "name": "y", "bogus": 1}, 422, "bogus"),
        ({"name": "y"}, 422, "external_id"),
        ({"external_id": 5, "name": "y"}, 422, "external_id"),
        ({"external_id": "x", "name": ""}, 422, "name"),
        ({"external_id": "x", "name": "y" * 201}, 422, "name"),
        ({"external_id": "x", "name": "y", "email": "not-an-email"}, 422, "email"),
        ({"external_id": "x", "name": "y", "avatar_url": "javascript:alert(1)"}, 422, "avatar_url"),
        ({"external_id": "x", "name": "y", "metadata": {"k": "v" * 9000}}, 422, "metadata"),
        ({"external_id": "x", "name": "y", "metadata": []}, 422, "metadata"),
        ([1, 2], 422, "body"),
    ],
)
async def test_invalid_fields_are_422_with_details(
    tenant: Api, body: object, status: int, field: str
) -> None:
    got, error = await tenant.post("/api/v1/users", body)
    assert (got, error["error"]["code"]) == (status, "invalid_request")
    assert field in error["error"]["details"], error


async def test_malformed_bodies_are_clear_4xx(tenant: Api) -> None:
    json_header = {"Content-Type": "application/json"}
    cases = [
        (dict(data=b"{not json", headers=json_header), 400, "invalid_request"),
        (dict(data=b"", headers=json_header), 400, "invalid_request"),
        (
            dict(data=b"name=x", headers={"Content-Type": "application/x-www-form-urlencoded"}),
            415,
            "unsupported_media_type",
        ),
        (
            dict(data=b'{"a": "' + b"x" * 2_000_000 + b'"}', headers=json_header),
            413,
            "payload_too_large",
        ),
    ]
    for kwargs, status, code in cases:
        got, body = await tenant.call("POST", "/api/v1/users", **kwargs)
        assert (got, body["error"]["code"]) == (status, code), body


async def test_ids_that_cannot_exist_are_404_not_500(tenant: Api) -> None:
    for path in ("/api/v1/users/a.b", "/api/v1/users/%2A", "/api/v1/users/" + "x" * 300):
        status, body = await tenant.get(path)
        assert (status, body["error"]["code"]) == (404, "not_found")
    status, body = await tenant.get("/api/v1/nowhere")
    assert status == 404
    status, body = await tenant.call("PUT", "/api/v1/users")
    assert status == 405


async def test_session_ttl_is_bounded(tenant: Api) -> None:
    _, user = await tenant.post("/api/v1/users", {"external_id": "ttl", "name": "T"})
    for ttl in (0, 59, 10**9, "60"):
        status, body = await tenant.post(
            "/api/v1/sessions", {"user_id": user["id"], "ttl_seconds": ttl}
        )
        assert (status, body["error"]["code"]) == (422, "invalid_request")
        assert "ttl_seconds" in body["error"]["details"]


async def test_no_secret_reaches_the_logs(admin: Api, stack: RunningStack) -> None:
    workspace = await new_workspace(admin, "Secretive")
    tenant = admin.as_(**{"X-API-Key": workspace["api_key"]})
    _, user = await tenant.post("/api/v1/users", {"external_id": "l", "name": "L"})
    _, session = await tenant.post("/api/v1/sessions", {"user_id": user["id"]})
    widget = tenant.as_(Authorization=f"Bearer {session['token']}")
    await widget.get("/api/widget/me")
    await tenant.delete(f"/api/v1/sessions/{session['token']}")
    await admin.as_(**{"X-API-Key": workspace["api_key"] + "x"}).get("/api/v1/users/u")
    logs = stack.logs()
    assert logs  # the services did log something
    for secret in (
        workspace["api_key"],
        workspace["app_secret"],
        session["token"],
        stack.info["admin_token"],
    ):
        assert secret not in logs
    assert not re.search(r"\b(sk|st)_[A-Za-z0-9_-]{20,}", logs)

"""Staff accounts and dashboard sessions against the stack (issue 19): the role table on
every tenant route, invitations, lockout, CSRF, cookie flags, sign-out (everywhere),
role changes in force at once, and staff sockets on conversation channels."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from yarl import URL

from confab.staff import ROLES, grants
from confab_gateway import sessions
from confab_gateway.app import ROUTERS
from confab_gateway.dashboard import INVITE_BURST
from confab_gateway.dashboard import router as dashboard_router
from tests.client import Api, new_workspace
from tests.stack import RunningStack
from tests.staff import PASSWORD, Team, new_team, visible
from tests.test_authority import Socket

DUMMY_ID = "zz_none"


@pytest.fixture
async def team(stack: RunningStack, http: aiohttp.ClientSession) -> AsyncIterator[Team]:
    """A team of one's own, for the tests that change it (roles, sign-outs, removals)."""
    made = await new_team(stack, http)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture(scope="module")
async def shared(stack: RunningStack) -> AsyncIterator[Team]:
    """One team for the tests that leave it as it was (argon2 makes every account cost)."""
    async with aiohttp.ClientSession() as http:
        made = await new_team(stack, http)
        try:
            yield made
        finally:
            await made.close()


def _path(path: str) -> str:
    return re.sub(r"{\w+}", DUMMY_ID, path)


async def test_every_route_answers_each_role_as_the_table_says(shared: Team) -> None:
    """Every tenant route (and every dashboard route with a permission), for every role:
    refused (403) exactly when the role lacks the route's permission, and always when the
    route names none (API keys only)."""
    every = [e for router in [*ROUTERS, dashboard_router] for e in router.endpoints]
    routes = [e for e in every if e.auth == "api_key" or e.permission is not None]
    assert any(e.permission is None for e in routes)  # the API-key-only ones are covered
    checked: dict[tuple[str, bool], int] = {}
    for role in ROLES:
        member = shared.members[role]
        for e in routes:
            body = {} if e.method in ("POST", "PATCH", "PUT") else None
            status, reply = await member.call(e.method, _path(e.path), body)
            allowed = e.permission is not None and grants(role, e.permission)
            where = f"{role} {e.method} {e.path} -> {status} {reply}"
            if allowed:
                assert status not in (401, 403), where
            else:
                assert status == 403, where
                assert reply["error"]["code"] == "forbidden", where
            checked[(e.permission or "", allowed)] = (
                checked.get((e.permission or "", allowed), 0) + 1
            )
    # Each permission some route names was seen allowed, and refused unless every role has it.
    named = {e.permission for e in routes if e.permission}
    for permission in named:
        assert checked.get((permission, True)), permission
        if not all(grants(role, permission) for role in ROLES):
            assert checked.get((permission, False)), permission


async def test_an_api_key_keeps_every_permission_and_manages_keys(shared: Team) -> None:
    status, made = await shared.tenant.post("/api/v1/api-keys")
    assert status == 201 and made["api_key"].startswith("sk_")
    status, listed = await shared.tenant.get("/api/v1/api-keys")
    assert status == 200 and made["id"] in [k["id"] for k in listed["data"]]
    assert all("api_key" not in k for k in listed["data"])  # secrets are never listed
    admin = shared.members["admin"]
    status, _ = await admin.call("DELETE", f"/api/v1/api-keys/{made['id']}")
    assert status == 204
    new_key = shared.tenant.as_(**{"X-API-Key": made["api_key"]})
    status, _ = await new_key.get("/api/v1/users")
    assert status == 401  # revoked everywhere before the reply


async def test_roles_cannot_be_escalated(team: Team) -> None:
    owner, admin, agent = (team.members[r] for r in ("owner", "admin", "agent"))
    status, body = await admin.call(
        "PATCH", f"/dashboard/api/staff/{admin.user_id}", {"role": "owner"}
    )
    assert status == 403 and "owner" in body["error"]["message"]
    status, _ = await admin.call(
        "PATCH", f"/dashboard/api/staff/{owner.user_id}", {"role": "agent"}
    )
    assert status == 403
    status, _ = await admin.call(
        "POST", "/dashboard/api/invitations", {"email": "boss@example.com", "role": "owner"}
    )
    assert status == 403
    status, _ = await agent.call(
        "PATCH", f"/dashboard/api/staff/{agent.user_id}", {"role": "admin"}
    )
    assert status == 403
    status, body = await agent.call("GET", "/api/v1/api-keys")
    assert status == 403 and "keys.manage" in body["error"]["message"]
    # An agent sets their own availability, not a colleague's.
    availability = "/api/v1/support/agents/{}/availability"
    status, _ = await agent.call("PUT", availability.format(agent.user_id), {"status": "online"})
    assert status == 200
    status, _ = await agent.call("PUT", availability.format(admin.user_id), {"status": "away"})
    assert status == 403
    # The last owner cannot step down.
    status, _ = await owner.call(
        "PATCH", f"/dashboard/api/staff/{owner.user_id}", {"role": "admin"}
    )
    assert status == 409
    # A demotion is in force on the member's very next call, same session.
    status, _ = await admin.call("GET", "/api/v1/api-keys")
    assert status == 200
    status, changed = await owner.call(
        "PATCH", f"/dashboard/api/staff/{admin.user_id}", {"role": "agent"}
    )
    assert status == 200 and changed["role"] == "agent"
    status, _ = await admin.call("GET", "/api/v1/api-keys")
    assert status == 403
    status, me = await admin.call("GET", "/dashboard/api/me")
    assert status == 200 and me["role"] == "agent" and "keys.manage" not in me["permissions"]
    # Removed: every session ends at once.
    status, _ = await owner.call("DELETE", f"/dashboard/api/staff/{admin.user_id}")
    assert status == 204
    status, _ = await admin.call("GET", "/dashboard/api/me")
    assert status == 401
    status, staff = await owner.call("GET", "/dashboard/api/staff")
    assert admin.user_id not in [m["user_id"] for m in staff["data"]]


async def test_csrf_is_required_for_every_change_made_with_the_cookie(
    shared: Team, stack: RunningStack
) -> None:
    agent = shared.members["agent"]
    path = "/dashboard/api/sign-out"
    status, body = await agent.api.post(path, headers={"Origin": stack.gateway})
    assert status == 403 and "X-CSRF-Token" in body["error"]["message"]
    status, body = await agent.api.post(
        path, headers={"Origin": stack.gateway, "X-CSRF-Token": "forged"}
    )
    assert status == 403 and "does not match" in body["error"]["message"]
    # The right token from another origin: refused too.
    status, body = await agent.api.post(
        path, headers={"Origin": "https://evil.example", "X-CSRF-Token": agent.me["csrf_token"]}
    )
    assert status == 403 and "origin" in body["error"]["message"]
    # Another member's token is not this session's.
    other = shared.members["moderator"].me["csrf_token"]
    status, _ = await agent.api.post(path, headers={"Origin": stack.gateway, "X-CSRF-Token": other})
    assert status == 403
    # A read needs none; the tenant routes follow the same rule.
    status, _ = await agent.api.get("/api/v1/conversations")
    assert status == 200
    status, _ = await agent.api.post("/api/v1/conversations", {"participant_ids": []})
    assert status == 403
    # Signing in from another site's page is refused (no login CSRF).
    status, _ = await Api(agent.http, stack.gateway, {}).post(
        "/dashboard/api/sign-in",
        {"workspace_id": shared.workspace["id"], "email": agent.email, "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert status == 403
    # Still signed in: none of the refused sign-outs happened.
    status, _ = await agent.call("GET", "/dashboard/api/me")
    assert status == 200


async def test_the_cookie_is_http_only_strict_and_secure_off_loopback(
    stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    team = await new_team(stack, http, roles=False)
    try:
        owner = team.members["owner"]
        async with owner.http.post(
            stack.gateway + "/dashboard/api/sign-in",
            json={"workspace_id": team.workspace["id"], "email": owner.email, "password": PASSWORD},
            headers={"Origin": stack.gateway},
        ) as response:
            assert response.status == 200
            cookie = response.headers["Set-Cookie"]
            body = await response.json()
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
        assert cookie.startswith("confab_dashboard=sd_")
        assert {"httponly", "samesite", "path", "max-age"} <= attributes
        assert "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "secure" not in attributes  # the stack is on 127.0.0.1
        assert "sd_" not in str(body)  # the token is in the cookie only
    finally:
        await team.close()
    for host, secure in (
        ("dash.example.com", True),
        ("localhost:8080", False),
        ("[::1]:80", False),
    ):
        request = make_mocked_request("POST", "/", headers={"Host": host})
        response = aiohttp.web.Response()
        sessions.set_cookie(response, request, "sd_x", 60)
        morsel = response.cookies[sessions.COOKIE]
        assert bool(morsel["secure"]) is secure, host
        assert morsel["httponly"] and morsel["samesite"] == "Strict"


async def test_wrong_passwords_lock_the_account_not_others(
    stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    team = await new_team(stack, http, roles=False)
    try:
        owner = team.members["owner"]
        for _ in range(4):
            status, body, _m = await team.sign_in(owner.email, "wrong password!")
            assert status == 401, body
        status, body, _m = await team.sign_in(owner.email, "wrong password!")
        assert status == 429 and "locked until" in body["error"]["message"]
        status, body, _m = await team.sign_in(owner.email)  # the right one: still locked
        assert status == 429 and "locked until" in body["error"]["message"]
        # The session made before the lockout is untouched; an unknown email is plain 401.
        status, _ = await owner.call("GET", "/dashboard/api/me")
        assert status == 200
        status, body, _m = await team.sign_in("nobody@example.com")
        assert status == 401 and body["error"]["message"] == "The email or password is not right."
    finally:
        await team.close()


async def test_sign_out_and_sign_out_everywhere(team: Team, stack: RunningStack) -> None:
    agent = team.members["agent"]
    status, body, second = await team.sign_in(agent.email)
    assert status == 200, body
    status, _ = await second.call("POST", "/dashboard/api/sign-out")
    assert status == 204
    # The browser dropped the cookie; replaying the old token is refused too.
    jar = second.http.cookie_jar.filter_cookies(URL(stack.gateway))
    assert sessions.COOKIE not in jar or jar[sessions.COOKIE].value == ""
    status, _ = await agent.call("GET", "/dashboard/api/me")
    assert status == 200  # the other session lives on
    status, _ = await agent.call("POST", "/dashboard/api/sign-out-everywhere")
    assert status == 204
    status, body = await agent.call("GET", "/dashboard/api/me")
    assert status == 401, body
    # Garbage and widget tokens are no dashboard sessions, nor staff cookies widget tokens.
    for token in ("sd_" + "x" * 40, "garbage"):
        status, _ = await Api(
            agent.http, stack.gateway, {"Cookie": f"{sessions.COOKIE}={token}"}
        ).get("/dashboard/api/me")
        assert status == 401


async def test_a_revoked_cookie_cannot_be_replayed(team: Team, stack: RunningStack) -> None:
    moderator = team.members["moderator"]
    token = moderator.http.cookie_jar.filter_cookies(URL(stack.gateway))[sessions.COOKIE].value
    assert token.startswith("sd_")
    status, _ = await moderator.call("POST", "/dashboard/api/sign-out")
    assert status == 204
    replay = Api(moderator.http, stack.gateway, {"Cookie": f"{sessions.COOKIE}={token}"})
    status, _ = await replay.get("/api/v1/reports")
    assert status == 401
    # A dashboard token is no widget bearer token either.
    status, _ = await team.tenant.as_(Authorization=f"Bearer {token}").get("/api/widget/me")
    assert status == 401


async def test_invitations_are_single_use_and_can_be_withdrawn(shared: Team) -> None:
    owner = shared.members["owner"]
    status, made = await owner.call(
        "POST", "/dashboard/api/invitations", {"email": "twice@example.com", "role": "agent"}
    )
    assert status == 201
    token = made["link"].split("#accept=", 1)[1]
    status, pending = await owner.call("GET", "/dashboard/api/invitations")
    assert made["invitation"]["id"] in [i["id"] for i in pending["data"]]
    accept = {"token": token, "name": "Twice", "password": PASSWORD}
    http = shared.browser()
    guest = Api(http, shared.stack.gateway, {"Origin": shared.stack.gateway})
    status, _ = await guest.post("/dashboard/api/invitations/accept", accept)
    assert status == 200
    status, body = await guest.post("/dashboard/api/invitations/accept", accept)
    assert status == 404 and "not valid" in body["error"]["message"]
    status, made = await owner.call(
        "POST", "/dashboard/api/invitations", {"email": "later@example.com", "role": "moderator"}
    )
    status, _ = await owner.call("DELETE", f"/dashboard/api/invitations/{made['invitation']['id']}")
    assert status == 204
    token = made["link"].split("#accept=", 1)[1]
    status, _ = await guest.post("/dashboard/api/invitations/accept", {**accept, "token": token})
    assert status == 404
    status, _ = await guest.post(
        "/dashboard/api/invitations/accept", {**accept, "token": "inv_" + "a" * 40}
    )
    assert status == 404
    # A short password is refused before anything is spent.
    status, made = await owner.call(
        "POST", "/dashboard/api/invitations", {"email": "short@example.com", "role": "agent"}
    )
    token = made["link"].split("#accept=", 1)[1]
    status, _ = await guest.post(
        "/dashboard/api/invitations/accept", {**accept, "token": token, "password": "short"}
    )
    assert status == 422


async def test_a_workspace_cannot_send_invitations_without_end(team: Team, shared: Team) -> None:
    owner = team.members["owner"]
    # All at once: they cannot pass the limit together (each takes its place before it
    # is made). The team's own members were invited too: the burst is partly spent.
    answers = await asyncio.gather(
        *(
            owner.call(
                "POST",
                "/dashboard/api/invitations",
                {"email": f"i{n}@example.com", "role": "agent"},
            )
            for n in range(INVITE_BURST + 5)
        )
    )
    made = [n for n, (status, _) in enumerate(answers) if status == 201]
    refused = [body for status, body in answers if status == 429]
    assert 0 < len(made) <= INVITE_BURST and len(made) + len(refused) == len(answers), answers
    body = refused[0]
    assert body["error"]["code"] == "rate_limited", body
    assert body["error"]["details"]["retry_after"] > 0
    assert "too many invitations" in body["error"]["message"]
    status, pending = await owner.call("GET", "/dashboard/api/invitations")
    emails = {i["email"] for i in pending["data"]}
    assert {f"i{n}@example.com" for n in made} <= emails
    assert not {f"i{n}@example.com" for n in range(len(answers)) if n not in made} & emails
    # Bad input is still a 422, and another workspace is not held back.
    status, _ = await owner.call(
        "POST", "/dashboard/api/invitations", {"email": "x", "role": "agent"}
    )
    assert status == 422
    status, _ = await shared.members["owner"].call(
        "POST", "/dashboard/api/invitations", {"email": "other@example.com", "role": "agent"}
    )
    assert status == 201


async def test_staff_sockets_watch_their_workspace_only(
    team: Team, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    status, user = await team.tenant.post(
        "/api/v1/users", {"external_id": f"v-{uuid.uuid4().hex[:6]}", "name": "Visitor"}
    )
    status, conv = await team.tenant.post(
        "/api/v1/conversations", {"participant_ids": [user["id"]], "type": "group"}
    )
    assert status == 201, conv
    channel = f"private-conversation.{conv['id']}"
    agent = team.members["agent"]
    await visible(agent, f"/api/v1/conversations/{conv['id']}")
    socket = await Socket.open(http, stack, team.workspace["app_key"])
    try:
        status, signed = await agent.call(
            "POST",
            "/dashboard/api/broadcasting/auth",
            {"socket_id": socket.socket_id, "channel_name": channel},
        )
        assert status == 200, signed
        assert '"role":"agent"' in signed["channel_data"]
        reply = await socket.subscribe(channel, signed)
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply
        # Another workspace's conversation: no signature, and a forged role gets nothing.
        admin = Api(http, stack.gateway, stack.admin_headers)
        other = await new_workspace(admin, "Other")
        other_tenant = admin.as_(**{"X-API-Key": other["api_key"]})
        status, stranger = await other_tenant.post(
            "/api/v1/users", {"external_id": "s", "name": "Stranger"}
        )
        status, theirs = await other_tenant.post(
            "/api/v1/conversations", {"participant_ids": [stranger["id"]], "type": "group"}
        )
        status, _ = await agent.call(
            "POST",
            "/dashboard/api/broadcasting/auth",
            {"socket_id": socket.socket_id, "channel_name": f"private-conversation.{theirs['id']}"},
        )
        assert status == 403
        # Signing out closes the socket (4009) before the call returns.
        status, _ = await agent.call("POST", "/dashboard/api/sign-out")
        assert status == 204
        assert await socket.closed() == 4009
    finally:
        await socket.close()


async def test_a_role_change_closes_the_members_sockets(
    team: Team, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    moderator = team.members["moderator"]
    socket = await Socket.open(http, stack, team.workspace["app_key"])
    try:
        channel = f"private-user.{moderator.user_id}"
        status, signed = await moderator.call(
            "POST",
            "/dashboard/api/broadcasting/user-auth",
            {"socket_id": socket.socket_id},
        )
        assert status == 200, signed
        await socket.send("pusher:signin", signed)
        await socket.wait(lambda f: f["event"] == "pusher:signin_success")
        del channel
        owner = team.members["owner"]
        status, _ = await owner.call(
            "PATCH", f"/dashboard/api/staff/{moderator.user_id}", {"role": "agent"}
        )
        assert status == 200
        assert await socket.closed() == 4009
    finally:
        await socket.close()


async def test_users_are_searched_by_part_of_name_email_or_external_id(shared: Team) -> None:
    tag = uuid.uuid4().hex[:6]
    made = {}
    for name, email, external in (
        (f"Zoë {tag}", f"zoe.{tag}@example.com", f"crm-1-{tag}"),
        (f"Bob {tag}", f"bob_{tag}@example.com", f"crm-2-{tag}"),
    ):
        status, user = await shared.tenant.post(
            "/api/v1/users", {"name": name, "email": email, "external_id": external}
        )
        assert status == 201
        made[name.split()[0]] = user["id"]
    agent = shared.members["agent"]

    async def search(q: str) -> set[str]:
        status, page = await agent.api.get("/api/v1/users", params={"q": q})
        assert status == 200, page
        return {u["id"] for u in page["data"]}

    assert await search(f"zOë {tag}") == {made["Zoë"]}  # ASCII case folds (C collation)
    assert await search(f"bob_{tag}@") == {made["Bob"]}
    assert await search(f"crm-2-{tag}") == {made["Bob"]}
    assert await search(tag) == set(made.values())
    assert await search(f"%{tag}") == set()  # taken literally, not as a wildcard


async def test_reports_count_conversations_messages_and_median_times(shared: Team) -> None:
    """Computed from the read models: a support conversation, a reply, its closing."""
    from tests.test_messaging_api import World
    from tests.test_support_api import SETTINGS, start, support

    status, body = await shared.tenant.call("PUT", "/api/v1/support/settings", SETTINGS)
    assert status == 200, body
    world = World(shared.tenant, shared.workspace)
    _visitor, widget = await world.user("Visitor")
    conversation = await start(widget, "Where is my parcel?")
    agent = shared.members["agent"]
    status, _ = await agent.call(
        "POST", support(conversation["id"], "/replies"), {"content": "On its way!"}
    )
    assert status == 201
    status, _ = await agent.call(
        "POST", support(conversation["id"], "/status"), {"status": "closed"}
    )
    assert status == 200
    today = datetime.now(UTC).date()
    deadline = time.monotonic() + 10
    while True:  # the messages read model may trail the reply's acknowledgement
        status, report = await agent.api.get("/api/v1/support/reports")
        assert status == 200, report
        if report["totals"]["messages"] == 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert len(report["days"]) == 14 and report["until"] == today.isoformat()
    day = report["days"][-1]
    assert day["conversations"] == 1 and day["messages"] == 2
    assert day["median_first_response_seconds"] is not None
    assert day["median_resolution_seconds"] >= day["median_first_response_seconds"] >= 0
    assert report["totals"]["conversations"] == 1
    assert all(d["conversations"] == 0 for d in report["days"][:-1])
    # Bad ranges are 422; another workspace sees none of it.
    for params in ({"since": "2026-02-01", "until": "2026-01-01"}, {"since": "2025-01-01"}):
        status, body = await agent.api.get("/api/v1/support/reports", params=params)
        assert status == 422, body
    status, other = await shared.tenant.as_(
        **{
            "X-API-Key": (await new_workspace(shared.tenant.as_(**shared.stack.admin_headers)))[
                "api_key"
            ]
        }
    ).get("/api/v1/support/reports")
    assert status == 200 and other["totals"]["conversations"] == 0


async def test_another_workspaces_ids_lead_nowhere(
    shared: Team, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    other = await new_team(stack, http, roles=False)
    try:
        theirs = other.members["owner"]
        status, invited = await theirs.call(
            "POST", "/dashboard/api/invitations", {"email": "x@example.com", "role": "agent"}
        )
        assert status == 201
        status, user = await other.tenant.post(
            "/api/v1/users", {"external_id": "their-user", "name": "Theirs"}
        )
        status, conv = await other.tenant.post(
            "/api/v1/conversations", {"participant_ids": [user["id"]], "type": "group"}
        )
        ours = shared.members["owner"]
        for method, path, body in (
            ("PATCH", f"/dashboard/api/staff/{theirs.user_id}", {"role": "agent"}),
            ("DELETE", f"/dashboard/api/staff/{theirs.user_id}", None),
            ("DELETE", f"/dashboard/api/invitations/{invited['invitation']['id']}", None),
            ("GET", f"/api/v1/users/{user['id']}", None),
            ("GET", f"/api/v1/conversations/{conv['id']}", None),
            ("POST", f"/api/v1/users/{user['id']}/ban", None),
        ):
            status, reply = await ours.call(method, path, body)
            assert status == 404, (method, path, reply)
        # Their owner is untouched, their invitation still pending.
        status, me = await theirs.call("GET", "/dashboard/api/me")
        assert status == 200 and me["role"] == "owner"
        status, pending = await theirs.call("GET", "/dashboard/api/invitations")
        assert [i["id"] for i in pending["data"]] == [invited["invitation"]["id"]]
        # Our cookie says nothing in their workspace: a session is its workspace's only.
        status, body = await ours.api.post(
            "/dashboard/api/sign-in",
            {"workspace_id": other.workspace["id"], "email": ours.email, "password": PASSWORD},
            headers={"Origin": stack.gateway},
        )
        assert status == 401
    finally:
        await other.close()

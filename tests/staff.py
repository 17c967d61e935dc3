"""Helpers for tests of staff accounts and the dashboard: a workspace with one member of
each role, each with their own cookie jar (what a browser keeps)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from confab import bus
from confab.contracts.identity import CreateOwner, OwnerInput, StaffMember
from confab.rpc import RpcClient
from tests.client import Api, new_workspace
from tests.stack import RunningStack

PASSWORD = "correct horse battery staple"


async def make_owner(stack: RunningStack, workspace_id: str, email: str) -> StaffMember:
    nc = await bus.connect(stack.info["nats_url"], "test-staff")
    try:
        owner = OwnerInput(email=email, name="Olive Owner", password=PASSWORD)
        member: StaffMember = await RpcClient(nc, timeout=10).call(
            CreateOwner(workspace_id=workspace_id, input=owner)
        )
        return member
    finally:
        await nc.close()


@dataclass
class Member:
    """A signed-in staff member: their browser's cookies, and the CSRF token."""

    http: aiohttp.ClientSession
    api: Api
    me: dict[str, Any]
    email: str

    @property
    def csrf(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.me["csrf_token"], "Origin": self.api.base}

    async def call(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        """As the dashboard calls: with the CSRF token and the page's origin."""
        return await self.api.call(method, path, json, headers=self.csrf)

    @property
    def user_id(self) -> str:
        return str(self.me["member"]["user_id"])


@dataclass
class Team:
    stack: RunningStack
    workspace: dict[str, Any]
    tenant: Api
    members: dict[str, Member] = field(default_factory=dict)
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    def browser(self) -> aiohttp.ClientSession:
        # unsafe: keep cookies of an IP host (the gateway listens on 127.0.0.1).
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.sessions.append(http)
        return http

    async def sign_in(self, email: str, password: str = PASSWORD) -> tuple[int, Any, Member]:
        http = self.browser()
        api = Api(http, self.stack.gateway, {})
        status, body = await api.post(
            "/dashboard/api/sign-in",
            {"workspace_id": self.workspace["id"], "email": email, "password": password},
            headers={"Origin": self.stack.gateway},
        )
        return status, body, Member(http, api, body or {}, email)

    async def invite_and_accept(self, by: Member, role: str, name: str) -> Member:
        email = f"{role}.{uuid.uuid4().hex[:6]}@example.com"
        status, made = await by.call(
            "POST", "/dashboard/api/invitations", {"email": email, "role": role}
        )
        assert status == 201, made
        token = made["link"].split("#accept=", 1)[1]
        http = self.browser()
        api = Api(http, self.stack.gateway, {})
        status, me = await api.post(
            "/dashboard/api/invitations/accept",
            {"token": token, "name": name, "password": PASSWORD},
            headers={"Origin": self.stack.gateway},
        )
        assert status == 200, me
        assert me["role"] == role
        return Member(http, api, me, email)

    async def close(self) -> None:
        for http in self.sessions:
            await http.close()


async def new_team(stack: RunningStack, http: aiohttp.ClientSession, roles: bool = True) -> Team:
    admin = Api(http, stack.gateway, stack.admin_headers)
    workspace = await new_workspace(admin)
    team = Team(stack, workspace, admin.as_(**{"X-API-Key": workspace["api_key"]}))
    email = f"owner.{uuid.uuid4().hex[:6]}@example.com"
    await make_owner(stack, workspace["id"], email)
    status, body, owner = await team.sign_in(email)
    assert status == 200, body
    team.members["owner"] = owner
    if roles:
        for role, name in (("admin", "Ada"), ("agent", "Aggie"), ("moderator", "Mo")):
            team.members[role] = await team.invite_and_accept(owner, role, name)
    return team


def host_of(url: str) -> str:
    return urlsplit(url).netloc


async def visible(member: Member, path: str, timeout: float = 10.0) -> Any:
    """``path`` as the member reads it once the read model has it (a condition, waited on
    with a deadline: the tenant's write was acknowledged, its projection may lag)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await member.call("GET", path)
        if status == 200:
            return body
        if status != 404 or time.monotonic() > deadline:
            raise AssertionError(f"{path}: {status} {body}")
        await asyncio.sleep(0.05)

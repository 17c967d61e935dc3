"""Rate limits of a real gateway in front of a real identity service: per credential,
and on failed authentications per address.

Both run in this process on the session's NATS and a fresh PostgreSQL database,
with limits low enough to reach in a handful of requests. The refill is slow (one
request per ``REFILL`` seconds) so that a slow machine cannot refill a bucket
while the test empties it; recovery is polled for with a deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from confab.bus import IDENTITY
from confab.service import Service
from confab_gateway import app as gateway_app
from confab_gateway.settings import GatewaySettings
from confab_identity import app as identity_app
from confab_identity.settings import IdentitySettings
from confab_infra.ports import free_port
from confab_infra.testing import TestBackends

BURST = 5
REFILL = 2.0  # seconds per request once the burst is spent
ADMIN_TOKEN = "admin-token-for-rate-limit-tests"


@dataclass
class Gateway:
    url: str
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, headers: dict[str, str], body: Any = None
    ) -> tuple[int, dict[str, str], Any]:
        async with self.http.request(
            method, self.url + path, headers=headers, json=body
        ) as response:
            return response.status, dict(response.headers), await response.json()

    async def post(self, path: str, headers: dict[str, str], body: Any) -> Any:
        status, _, answer = await self.call("POST", path, headers, body)
        assert status in (200, 201), answer
        return answer


@pytest.fixture
async def gateway(backends: TestBackends, fresh_database_url: str) -> AsyncIterator[Gateway]:
    instance = f"test-{uuid.uuid4().hex[:6]}"
    identity = Service(
        "identity",
        IdentitySettings(
            nats_url=backends.nats_url,
            database_url=fresh_database_url,
            instance=instance,
            read_wait_seconds=10.0,
        ),
    )
    port = free_port()
    gateway = Service(
        "gateway",
        GatewaySettings(
            nats_url=backends.nats_url,
            instance=instance,
            port=port,
            admin_token=ADMIN_TOKEN,
            rpc_timeout=10.0,
            api_key_requests_per_second=1 / REFILL,
            api_key_request_burst=BURST,
            session_requests_per_second=1 / REFILL,
            session_request_burst=BURST,
            auth_failures_per_second=1 / REFILL,
            auth_failure_burst=BURST,
        ),
    )
    await identity.start()
    try:
        await identity_app.setup(identity)
        # A fresh read model replays the shared stream first: let it catch up.
        last = (await identity.js.stream_info(IDENTITY.name)).state.last_seq
        assert await identity.runners["identity"].wait_for(last, 60)
        await gateway.start()
        try:
            await gateway_app.setup(gateway)
            async with aiohttp.ClientSession() as http:
                yield Gateway(f"http://127.0.0.1:{port}", http)
        finally:
            await gateway.stop()
    finally:
        await identity.stop()


def served(status: int) -> bool:
    """Let through by the limit (a read by another credential may miss a fresh user: 404)."""
    assert status in (200, 404, 429), status
    return status != 429


async def until_refused(
    gateway: Gateway, path: str, headers: dict[str, str], answers: tuple[int, ...] = (200, 404)
) -> tuple[int, dict[str, str], Any]:
    """Call until the first 429 (before it: ``answers``): how many came before, its parts."""
    for count in range(BURST + 20):  # 20 more than the burst would take 40 s to refill
        status, response_headers, body = await gateway.call("GET", path, headers)
        if status == 429:
            return count, response_headers, body
        assert status in answers, body
    raise AssertionError(f"{path} was never rate limited")


async def served_again(gateway: Gateway, path: str, headers: dict[str, str]) -> bool:
    deadline = time.monotonic() + 10 * REFILL
    while time.monotonic() < deadline:
        if served((await gateway.call("GET", path, headers))[0]):
            return True
        await asyncio.sleep(0.1)
    return False


def assert_documented_429(headers: dict[str, str], body: Any, message: str) -> None:
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == "rate_limited"
    assert error["message"].startswith(message)
    assert set(error["details"]) == {"retry_after"}
    assert 0 < error["details"]["retry_after"] <= REFILL
    assert 1 <= int(headers["Retry-After"]) <= REFILL


async def test_api_keys_and_sessions_over_their_limit_get_429_then_recover(
    gateway: Gateway,
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    workspace = await gateway.post("/api/admin/workspaces", admin, {"name": "Limited"})
    keys = f"/api/admin/workspaces/{workspace['id']}/api-keys"
    key, other_key = [{"X-API-Key": (await gateway.post(keys, admin, {}))["api_key"]} for _ in "ab"]
    setup_key = {"X-API-Key": workspace["api_key"]}  # spends 4 of its burst of 5
    sessions = []
    for name in ("ann", "bob"):
        user = await gateway.post("/api/v1/users", setup_key, {"external_id": name, "name": name})
        session = await gateway.post("/api/v1/sessions", setup_key, {"user_id": user["id"]})
        sessions.append({"Authorization": f"Bearer {session['token']}"})
    user_path = f"/api/v1/users/{user['id']}"

    count, headers, body = await until_refused(gateway, user_path, key)
    assert count >= BURST
    assert_documented_429(headers, body, "Too many requests for this API key")
    # Another key of the same workspace has its own bucket.
    assert served((await gateway.call("GET", user_path, other_key))[0])

    count, headers, body = await until_refused(gateway, "/api/widget/me", sessions[0])
    assert count >= BURST
    assert_documented_429(headers, body, "Too many requests for this session")
    # Another session of the same workspace has its own bucket.
    assert served((await gateway.call("GET", "/api/widget/me", sessions[1]))[0])

    assert await served_again(gateway, user_path, key)
    assert await served_again(gateway, "/api/widget/me", sessions[0])


async def test_an_address_that_fails_too_often_gets_429_for_unverified_credentials(
    gateway: Gateway,
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    workspace = await gateway.post("/api/admin/workspaces", admin, {"name": "Failing"})
    key = {"X-API-Key": workspace["api_key"]}
    tokens = []
    for name in ("ann", "bob"):
        user = await gateway.post("/api/v1/users", key, {"external_id": name, "name": name})
        tokens.append(
            (await gateway.post("/api/v1/sessions", key, {"user_id": user["id"]}))["token"]
        )
    verified, unverified = ({"Authorization": f"Bearer {token}"} for token in tokens)
    assert served((await gateway.call("GET", "/api/widget/me", verified))[0])

    made_up = {"Authorization": "Bearer st_" + "x" * 40}
    count, headers, body = await until_refused(gateway, "/api/widget/me", made_up, (401,))
    assert count >= BURST
    assert_documented_429(headers, body, "Too many failed authentications from your address")

    # Credentials verified before go on; new ones from this address wait, right or wrong.
    assert served((await gateway.call("GET", "/api/widget/me", verified))[0])
    assert (await gateway.call("GET", "/api/widget/me", unverified))[0] == 429
    assert (await gateway.call("GET", "/api/admin/workspaces", admin))[0] == 200
    wrong_admin = {"Authorization": "Bearer wrong"}
    assert (await gateway.call("GET", "/api/admin/workspaces", wrong_admin))[0] == 429
    assert await served_again(gateway, "/api/widget/me", unverified)

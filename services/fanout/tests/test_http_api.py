"""How the fanout finds apps, and the HTTP API's authentication and errors (raw requests)."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
from nats.aio.client import Client as NATS

from confab_fanout import auth
from confab_fanout.testing import (
    FanoutNode,
    IdentityStub,
    TestApp,
    create_app,
    new_test_app,
    wait_app_known,
)


async def api(
    node: FanoutNode,
    app: TestApp,
    method: str,
    path: str,
    body: Any = None,
    params: dict[str, str] | None = None,
    tamper: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    query = auth.sign_request(app.key, app.secret, method, path, params, data)
    query.update(tamper or {})
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, node.http_url + path, params=query, data=data) as response,
    ):
        return response.status, await response.json(content_type=None)


async def established(node: FanoutNode, key: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.ws_connect(node.ws_url(key)) as ws:
        return json.loads((await ws.receive(15)).data)


async def test_a_new_workspace_works_without_restart(node: FanoutNode, nats: NATS) -> None:
    """Known from its workspace.created event alone (identity is not asked)."""
    app = await create_app(nats.jetstream())
    await wait_app_known(node, app)
    assert (await established(node, app.key))["event"] == "pusher:connection_established"


async def test_an_app_only_identity_knows(node: FanoutNode, identity: IdentityStub) -> None:
    """Created before this node followed the log: asked of identity (GetAppCredentials)."""
    app = identity.add(new_test_app())
    assert (await established(node, app.key))["event"] == "pusher:connection_established"
    status, body = await api(node, app, "GET", f"/apps/{app.id}/channels")
    assert (status, body) == (200, {"channels": {}})


async def test_path_app_id_and_signatures(node: FanoutNode, app: TestApp) -> None:
    for app_id in (app.id, app.numeric_id):
        assert await api(node, app, "GET", f"/apps/{app_id}/channels") == (200, {"channels": {}})
    status, body = await api(node, app, "GET", "/apps/123/channels")
    assert status == 404 and body["code"] == 404
    path = f"/apps/{app.id}/channels"
    assert (await api(node, app, "GET", path, tamper={"auth_signature": "0" * 64}))[0] == 401
    assert (await api(node, app, "GET", path, tamper={"auth_key": "nobody"}))[0] == 401
    stale = str(int(time.time()) - 3600)
    assert (await api(node, app, "GET", path, tamper={"auth_timestamp": stale}))[0] == 401
    assert (await api(node, app, "GET", path, tamper={"body_md5": "0" * 32}))[0] == 401
    other = TestApp(app.id, app.key, "wrong secret")
    assert (await api(node, other, "GET", path))[0] == 401
    async with aiohttp.ClientSession() as http, http.get(node.http_url + path) as response:
        assert response.status == 401


async def test_trigger_validation(node: FanoutNode, app: TestApp) -> None:
    path = f"/apps/{app.id}/events"
    ok = {"name": "e", "channels": ["a"], "data": "{}"}
    assert await api(node, app, "POST", path, ok) == (200, {})
    assert (await api(node, app, "POST", path, {**ok, "channel": "b", "channels": None}))[0] == 200
    assert (await api(node, app, "POST", path, {**ok, "data": {"as": "object"}}))[0] == 200
    for bad in (
        b"not json",
        {"channels": ["a"], "data": "{}"},
        {**ok, "name": "x" * 201},
        {**ok, "channels": []},
        {**ok, "channels": ["bad name"]},
        {**ok, "channels": ["private-encrypted-a", "b"]},
        {**ok, "socket_id": "nope"},
    ):
        status, body = await api(node, app, "POST", path, bad)
        assert status == 400, (bad, body)
    assert (await api(node, app, "POST", path, {**ok, "data": "é" * 5200}))[0] == 413
    batch = f"/apps/{app.id}/batch_events"
    assert (await api(node, app, "POST", batch, {"batch": []}))[0] == 400
    assert (await api(node, app, "POST", batch, {"batch": [ok]}))[0] == 400  # needs "channel"


async def test_channel_queries_need_the_right_kind(node: FanoutNode, app: TestApp) -> None:
    base = f"/apps/{app.id}/channels"
    assert (await api(node, app, "GET", f"{base}/news", params={"info": "user_count"}))[0] == 400
    assert (await api(node, app, "GET", f"{base}/news/users"))[0] == 400
    assert await api(node, app, "GET", f"{base}/presence-x/users") == (200, {"users": []})
    status, body = await api(node, app, "GET", f"{base}/presence-x", params={"info": "user_count"})
    assert (status, body) == (200, {"occupied": False, "user_count": 0})
    assert (await api(node, app, "GET", f"{base}/bad%20name"))[0] == 400
    terminate = f"/apps/{app.id}/users/42/terminate_connections"
    assert await api(node, app, "POST", terminate, {}) == (200, {})

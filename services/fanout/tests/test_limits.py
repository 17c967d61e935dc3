"""Limits per address, app, user and socket, against a real fanout process started with
small ones: past each, the documented answer; everyone else goes on unaffected.

The node trusts 127.0.0.1 as a proxy, so each test speaks for addresses of its own
through ``X-Forwarded-For`` (the peer is always 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from confab.addresses import TrustedProxies
from confab_fanout import auth
from confab_fanout.limits import ApiRateLimit, ConnectionLimits
from confab_fanout.settings import FanoutSettings
from confab_fanout.testing import (
    FanoutNode,
    IdentityStub,
    TestApp,
    bucket_env,
    create_app,
    wait_app_known,
)

PER_ADDRESS, PER_APP, PER_USER, SUBSCRIPTIONS, API_BURST = 3, 6, 2, 5, 3
SUBSCRIBE_BURST = 8
OVER_CAPACITY = 4100
TIMEOUT = 15.0


@pytest.fixture(scope="module")
async def limited(
    fanout_nats_url: str, identity: IdentityStub, log_dir: Path
) -> AsyncIterator[FanoutNode]:
    env = {
        **bucket_env(),
        "CONFAB_FANOUT_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
        "CONFAB_FANOUT_MAX_CONNECTIONS_PER_APP": str(PER_APP),
        "CONFAB_FANOUT_MAX_CONNECTIONS_PER_USER": str(PER_USER),
        "CONFAB_FANOUT_MAX_SUBSCRIPTIONS_PER_SOCKET": str(SUBSCRIPTIONS),
        "CONFAB_TRUSTED_PROXIES": "127.0.0.1",
        # One token per 1,000 s: whatever the machine's speed, the burst is all there is.
        "CONFAB_FANOUT_SUBSCRIBES_PER_SECOND": "0.001",
        "CONFAB_FANOUT_SUBSCRIBE_BURST": str(SUBSCRIBE_BURST),
        "CONFAB_FANOUT_API_REQUESTS_PER_SECOND": "0.001",
        "CONFAB_FANOUT_API_REQUEST_BURST": str(API_BURST),
    }
    fanout = FanoutNode(fanout_nats_url, log_dir, env=env).start()
    try:
        await fanout.wait_ready()
        yield fanout
    finally:
        fanout.terminate()


async def new_app(nats: NATS, node: FanoutNode, identity: IdentityStub) -> TestApp:
    created = await create_app(nats.jetstream())
    identity.add(created)
    await wait_app_known(node, created)  # one signed API request: a token of the app's
    return created


class Socket:
    """A Pusher connection made through ``X-Forwarded-For: address``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, first: dict[str, Any]) -> None:
        self.ws = ws
        self.first = first

    @property
    def socket_id(self) -> str:
        return str(self.first["data"]["socket_id"])

    async def send(self, event: str, data: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps({"event": event, "data": data}))

    async def next(self) -> dict[str, Any]:
        """The next frame, past pings; ``{"closed": code}`` once the server closed."""
        while True:
            msg = await self.ws.receive(TIMEOUT)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return {"closed": self.ws.close_code}
            frame = json.loads(msg.data)
            if isinstance(frame.get("data"), str) and frame["data"][:1] == "{":
                frame["data"] = json.loads(frame["data"])
            if frame["event"] != "pusher:ping":
                return frame


@contextlib.asynccontextmanager
async def sockets() -> AsyncIterator[Any]:
    """``open(app, address)`` for as many sockets as a test needs; all closed at the end."""
    async with aiohttp.ClientSession() as http:
        opened: list[aiohttp.ClientWebSocketResponse] = []

        async def open_socket(node: FanoutNode, app: TestApp, address: str) -> Socket:
            ws = await http.ws_connect(
                node.ws_url(app.key), headers={"X-Forwarded-For": address}, autoping=True
            )
            opened.append(ws)
            sock = Socket(ws, {})
            sock.first = await sock.next()
            return sock

        try:
            yield open_socket
        finally:
            for ws in opened:
                await ws.close()


async def refused(sock: Socket) -> tuple[int | None, int | None]:
    """The ``pusher:error`` code a refused socket got, and its close code."""
    assert sock.first["event"] == "pusher:error", sock.first
    return sock.first["data"]["code"], (await sock.next())["closed"]


async def test_connections_per_address(
    limited: FanoutNode, nats: NATS, identity: IdentityStub
) -> None:
    app, other_app = [await new_app(nats, limited, identity) for _ in range(2)]
    async with sockets() as open_socket:
        held = [await open_socket(limited, app, "192.0.2.1") for _ in range(PER_ADDRESS)]
        assert all(s.first["event"] == "pusher:connection_established" for s in held)
        over = await open_socket(limited, app, "192.0.2.1")
        assert await refused(over) == (OVER_CAPACITY, OVER_CAPACITY)
        # The address is over in every app; other addresses are not.
        assert await refused(await open_socket(limited, other_app, "192.0.2.1")) == (
            OVER_CAPACITY,
            OVER_CAPACITY,
        )
        other = await open_socket(limited, app, "192.0.2.2")
        assert other.first["event"] == "pusher:connection_established"
        # A socket that goes gives its place back.
        await held[0].ws.close()
        deadline = time.monotonic() + TIMEOUT
        while (await open_socket(limited, app, "192.0.2.1")).first["event"] == "pusher:error":
            assert time.monotonic() < deadline, "the closed socket's place was not given back"
            await asyncio.sleep(0.05)


async def test_connections_per_app(limited: FanoutNode, nats: NATS, identity: IdentityStub) -> None:
    app, other_app = [await new_app(nats, limited, identity) for _ in range(2)]
    async with sockets() as open_socket:
        held = [await open_socket(limited, app, f"198.51.100.{i}") for i in range(PER_APP)]
        assert all(s.first["event"] == "pusher:connection_established" for s in held)
        assert await refused(await open_socket(limited, app, "198.51.100.99")) == (
            OVER_CAPACITY,
            OVER_CAPACITY,
        )
        other = await open_socket(limited, other_app, "198.51.100.99")
        assert other.first["event"] == "pusher:connection_established"
        # Those already in are not disturbed.
        await held[0].send("pusher:ping", {})
        assert (await held[0].next())["event"] == "pusher:pong"


async def test_connections_per_signed_in_user(
    limited: FanoutNode, nats: NATS, identity: IdentityStub
) -> None:
    app = await new_app(nats, limited, identity)

    async def sign_in(sock: Socket, user_id: str) -> dict[str, Any]:
        user_data = json.dumps({"id": user_id})
        signature = auth.user_auth(app.key, app.secret, sock.socket_id, user_data)
        await sock.send("pusher:signin", {"user_data": user_data, "auth": signature})
        return await sock.next()

    async with sockets() as open_socket:
        tabs = [await open_socket(limited, app, "203.0.113.1") for _ in range(PER_USER + 1)]
        for tab in tabs[:PER_USER]:
            assert (await sign_in(tab, "alice"))["event"] == "pusher:signin_success"
        answer = await sign_in(tabs[PER_USER], "alice")
        assert (answer["event"], answer["data"]["code"]) == ("pusher:error", OVER_CAPACITY)
        assert (await tabs[PER_USER].next())["closed"] == OVER_CAPACITY
        # Signing in again as the same user takes no second place.
        assert (await sign_in(tabs[0], "alice"))["event"] == "pusher:signin_success"
        bob = await open_socket(limited, app, "203.0.113.2")
        assert (await sign_in(bob, "bob"))["event"] == "pusher:signin_success"
        # A tab that goes gives its place back.
        await tabs[0].ws.close()
        deadline = time.monotonic() + TIMEOUT
        while True:
            tab = await open_socket(limited, app, "203.0.113.3")
            if tab.first["event"] == "pusher:connection_established" and (
                (await sign_in(tab, "alice"))["event"] == "pusher:signin_success"
            ):
                break
            assert time.monotonic() < deadline, "the closed tab's place was not given back"
            await asyncio.sleep(0.05)


async def test_subscriptions_per_socket(
    limited: FanoutNode, nats: NATS, identity: IdentityStub
) -> None:
    app = await new_app(nats, limited, identity)
    async with sockets() as open_socket:
        sock = await open_socket(limited, app, "192.0.2.50")
        names = [f"many-{i}" for i in range(SUBSCRIPTIONS + 2)]
        for name in names:
            await sock.send("pusher:subscribe", {"channel": name})
        answers = [await sock.next() for _ in names]
        assert [a["event"] for a in answers] == (
            ["pusher_internal:subscription_succeeded"] * SUBSCRIPTIONS
            + ["pusher:subscription_error"] * 2
        )
        error = answers[-1]
        assert error["channel"] == names[-1]
        assert (error["data"]["type"], error["data"]["status"]) == ("LimitReached", 403)
        # Subscribing again to a channel it is in is no new channel; leaving makes room.
        await sock.send("pusher:subscribe", {"channel": names[0]})
        assert (await sock.next())["event"] == "pusher_internal:subscription_succeeded"
        await sock.send("pusher:unsubscribe", {"channel": names[0]})
        await sock.send("pusher:subscribe", {"channel": names[-1]})
        assert (await sock.next())["event"] == "pusher_internal:subscription_succeeded"
        # Another socket has channels of its own to spend.
        other = await open_socket(limited, app, "192.0.2.51")
        await other.send("pusher:subscribe", {"channel": names[-1]})
        assert (await other.next())["event"] == "pusher_internal:subscription_succeeded"


async def test_subscribe_rate_per_socket(
    limited: FanoutNode, nats: NATS, identity: IdentityStub
) -> None:
    """Subscribing and leaving in a loop stays within the channel limit; the rate stops it."""
    app = await new_app(nats, limited, identity)
    async with sockets() as open_socket:
        sock = await open_socket(limited, app, "192.0.2.60")
        events = []
        for i in range(SUBSCRIBE_BURST + 2):
            await sock.send("pusher:subscribe", {"channel": f"churn-{i}"})
            events.append(await sock.next())
            await sock.send("pusher:unsubscribe", {"channel": f"churn-{i}"})
        assert [e["event"] for e in events] == (
            ["pusher_internal:subscription_succeeded"] * SUBSCRIBE_BURST
            + ["pusher:subscription_error"] * 2
        )
        assert (events[-1]["data"]["type"], events[-1]["data"]["status"]) == ("LimitReached", 429)
        # The socket is still served, and another socket has a rate of its own.
        await sock.send("pusher:ping", {})
        assert (await sock.next())["event"] == "pusher:pong"
        other = await open_socket(limited, app, "192.0.2.61")
        await other.send("pusher:subscribe", {"channel": "churn-0"})
        assert (await other.next())["event"] == "pusher_internal:subscription_succeeded"


async def test_http_api_requests_per_app(
    limited: FanoutNode, nats: NATS, identity: IdentityStub
) -> None:
    app, other_app = [await new_app(nats, limited, identity) for _ in range(2)]
    path = f"/apps/{app.id}/events"
    body = json.dumps({"name": "e", "channel": "c", "data": "{}"}).encode()
    async with aiohttp.ClientSession() as http:

        async def trigger(target: TestApp) -> aiohttp.ClientResponse:
            target_path = f"/apps/{target.id}/events"
            query = auth.sign_request(target.key, target.secret, "POST", target_path, None, body)
            async with http.post(limited.http_url + target_path, params=query, data=body) as r:
                await r.read()
                return r

        statuses = [(await trigger(app)).status for _ in range(API_BURST)]
        # wait_app_known took one token: the burst's last request is over.
        assert statuses[-1] == 429 and set(statuses) == {200, 429}, statuses
        query = auth.sign_request(app.key, app.secret, "POST", path, None, body)
        async with http.post(limited.http_url + path, params=query, data=body) as response:
            assert response.status == 429
            assert int(response.headers["Retry-After"]) >= 1
            answer = await response.json()
        assert answer["code"] == 429 and "at most" in answer["error"]
        # A request with a bad signature is not the app's and costs it nothing: 401 still.
        query["auth_signature"] = "0" * 64
        async with http.post(limited.http_url + path, params=query, data=body) as response:
            assert response.status == 401
        assert (await trigger(other_app)).status == 200


# -- the counters themselves ---------------------------------------------------------------------


def test_connection_counts_are_given_back_and_forgotten() -> None:
    limits = ConnectionLimits(
        FanoutSettings(
            max_connections_per_address=2,
            max_connections_per_app=0,  # no limit
            max_connections_per_user=1,
        )
    )
    assert limits.connect("a", "app") is None
    assert limits.connect("a", "app") is None
    assert (
        limits.connect("a", "app")
        == "Over capacity: this address has 2 connections, the most allowed"
    )
    for i in range(1000):
        assert limits.connect(f"b{i}", "app") is None
    limits.disconnect("a", "app")
    assert limits.connect("a", "app") is None
    assert limits.sign_in("app", "u") is None
    assert (
        limits.sign_in("app", "u") == "Over capacity: this user has 1 connections, the most allowed"
    )
    assert limits.sign_in("other-app", "u") is None
    limits.sign_out("app", "u")
    limits.sign_out("other-app", "u")
    limits.disconnect("a", "app")
    limits.disconnect("a", "app")
    for i in range(1000):
        limits.disconnect(f"b{i}", "app")
    assert limits.addresses == limits.apps == limits.users == {}


def test_api_rate_limit_bursts_then_refills() -> None:
    now = [100.0]
    limit = ApiRateLimit(2.0, 4, clock=lambda: now[0])
    assert [limit.take("app") for _ in range(4)] == [0.0] * 4
    assert limit.take("app") == 0.5
    assert limit.take("other") == 0.0
    now[0] += 0.5
    assert limit.take("app") == 0.0


class Request:
    def __init__(self, remote: str, forwarded: str | None = None) -> None:
        self.remote = remote
        self.headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    proxies = TrustedProxies("10.0.0.0/8, 127.0.0.1")
    assert proxies.client(Request("10.1.2.3", "6.6.6.6, 1.2.3.4, 10.9.9.9")) == "1.2.3.4"  # type: ignore[arg-type]
    assert proxies.client(Request("127.0.0.1")) == "127.0.0.1"  # type: ignore[arg-type]
    assert proxies.client(Request("5.5.5.5", "1.2.3.4")) == "5.5.5.5"  # type: ignore[arg-type]
    assert TrustedProxies("").client(Request("10.1.2.3", "1.2.3.4")) == "10.1.2.3"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CONFAB_TRUSTED_PROXIES: 'nope'"):
        TrustedProxies("nope")

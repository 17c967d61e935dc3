"""Two fanout processes on one NATS: exactly-once delivery, shared presence, node death.

Clients are split across the nodes; the Python SDK triggers through either.
After ``kill -9`` of a node its presence members vanish everywhere within the
presence TTL; after SIGTERM the other node's sockets get 4200.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from nats.aio.client import Client as NATS

from confab_fanout.testing import (
    FAST_TIMERS,
    AuthServer,
    FanoutNode,
    IdentityStub,
    JsDriver,
    TestApp,
    bucket_env,
    create_app,
    wait_app_known,
)

TTL = 3.0


async def users(app: TestApp, node: FanoutNode, channel: str) -> list[str]:
    reply = await asyncio.to_thread(app.client(node).users_info, channel)
    return sorted(u["id"] for u in reply["users"])


async def until_users(
    app: TestApp, node: FanoutNode, channel: str, expected: list[str], timeout: float = 20
) -> float:
    """Seconds it took until ``/users`` on ``node`` said ``expected``."""
    start = time.monotonic()
    while (found := await users(app, node, channel)) != expected:
        assert time.monotonic() - start < timeout, f"{node.port}: users {found} != {expected}"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_two_nodes(
    fanout_nats_url: str,
    log_dir: Path,
    nats: NATS,
    identity: IdentityStub,
    auth_server: AuthServer,
    driver: JsDriver,
) -> None:
    env = {**FAST_TIMERS, **bucket_env(ttl=TTL)}
    n1 = FanoutNode(fanout_nats_url, log_dir, env=env).start()
    n2 = FanoutNode(fanout_nats_url, log_dir, env=env).start()
    try:
        await asyncio.gather(n1.wait_ready(), n2.wait_ready())
        app = await create_app(nats.jetstream())
        identity.add(app)
        auth_server.add(app)
        await asyncio.gather(wait_app_known(n1, app), wait_app_known(n2, app))
        await _scenario(app, n1, n2, auth_server, driver, nats)
    finally:
        n1.kill()
        n2.kill()


async def _scenario(
    app: TestApp,
    n1: FanoutNode,
    n2: FanoutNode,
    backend: AuthServer,
    driver: JsDriver,
    nats: NATS,
) -> None:
    room, news, chat = "presence-room", "news", "private-chat"
    # Ann on node 1; Bob on node 2; Ann's second tab on node 2.
    await driver.connect("ann", n1, app, backend, user_id="1", name="Ann")
    bob_socket = await driver.connect("bob", n2, app, backend, user_id="2", name="Bob")
    await driver.connect("ann2", n2, app, backend, user_id="1", name="Ann")
    clients = ("ann", "bob", "ann2")

    await driver.subscribe("ann", room)
    await until_users(app, n2, room, ["1"])
    bob_view = await driver.subscribe("bob", room)
    assert bob_view["members"]["ids"] == ["1", "2"]
    added = await driver.wait(id="ann", type="event", event="pusher:member_added")
    assert added["data"]["id"] == "2"
    tab = await driver.subscribe("ann2", room)
    assert tab["members"]["ids"] == ["1", "2"]
    for node in (n1, n2):
        await until_users(app, node, room, ["1", "2"])
    for cid in clients:
        await driver.subscribe(cid, news)
        await driver.subscribe(cid, chat)

    # Triggers through either node reach every socket exactly once.
    for i in range(10):
        for node in (n1, n2):
            await asyncio.to_thread(
                app.client(node).trigger, news, "tick", {"i": i, "via": node.port}
            )
    # socket_id exclusion across nodes: Bob is on node 2, the trigger goes to node 1.
    await asyncio.to_thread(app.client(n1).trigger, news, "not-bob", {}, socket_id=bob_socket)
    # A whisper from node 1 to node 2.
    await driver.send("trigger", id="ann", channel=chat, event="client-typing", data={"by": 1})
    await driver.wait(id="bob", type="event", event="client-typing")
    for node in (n2, n1):
        await asyncio.to_thread(app.client(node).trigger, [news, chat], "marker", {})
    for cid in clients:
        await driver.wait(id=cid, type="event", channel=chat, event="marker", count=2)
        await driver.wait(id=cid, type="event", channel=news, event="marker", count=2)
        ticks = [json.dumps(r["data"], sort_keys=True) for r in driver.events(cid, "tick")]
        assert len(ticks) == 20 and len(set(ticks)) == 20, (cid, ticks)
        assert len(driver.events(cid, "not-bob")) == (0 if cid == "bob" else 1)
        assert len(driver.events(cid, "client-typing")) == (0 if cid == "ann" else 1)
    # Ann's second tab never made news: nobody heard she joined twice.
    assert len(driver.events("ann", "pusher:member_added")) == 1
    assert driver.events("bob", "pusher:member_added") == []
    assert driver.events("ann2", "pusher:member_added") == []

    # kill -9 node 2: Bob (only there) leaves within the TTL; Ann stays (node 1).
    n2.kill()
    killed = time.monotonic()
    removed = await driver.wait(id="ann", type="event", event="pusher:member_removed", timeout=30)
    elapsed = time.monotonic() - killed
    assert removed["data"]["id"] == "2"
    assert elapsed <= TTL + 2.0, f"members of a dead node took {elapsed:.1f} s to vanish"
    await until_users(app, n1, room, ["1"], timeout=5)
    # The leader removes the dead node's entries from the bucket.
    kv = await nats.jetstream().key_value(n1.env["CONFAB_FANOUT_PRESENCE_BUCKET"])
    deadline = time.monotonic() + 20
    while len(nodes := {key.rsplit(".", 1)[1] for key in await kv.keys()}) > 1:
        assert time.monotonic() < deadline, f"entries of a dead node remain: {nodes}"
        await asyncio.sleep(0.2)
    assert len(driver.events("ann", "pusher:member_removed")) == 1

    # SIGTERM node 1: its sockets get 4200 (reconnect elsewhere at once).
    await _graceful_close(app, n1)


async def _graceful_close(app: TestApp, node: FanoutNode) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(node.ws_url(app.key)) as ws:
        frame: dict[str, Any] = json.loads((await ws.receive(15)).data)
        assert frame["event"] == "pusher:connection_established"
        stopped = asyncio.create_task(asyncio.to_thread(node.terminate))
        error = json.loads((await ws.receive(15)).data)
        assert error["event"] == "pusher:error"
        assert json.loads(error["data"])["code"] == 4200
        closing = await ws.receive(15)
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4200
        assert await stopped == 0, node.logs()

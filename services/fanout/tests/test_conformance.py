"""The protocol reference's conformance checklist (§7) with real clients.

pusher-js and Laravel Echo run under Node (``tests/js/driver.cjs``); the
official Python ``pusher`` SDK triggers and queries; a raw aiohttp client
checks what the JS clients hide (close codes, handshake fields).

"Not delivered" is never checked by waiting: a later marker event is sent to
the same sockets, and a socket's frames arrive in order, so once the marker
is in, anything before it that is missing was not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

import aiohttp
import pusher
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS

from confab_fanout import auth
from confab_fanout.testing import AuthServer, FanoutNode, JsDriver, TestApp
from confab_infra.backends import free_port


async def trigger(app: TestApp, node: FanoutNode, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(app.client(node).trigger, *args, **kwargs)


async def raw_frames(ws: aiohttp.ClientWebSocketResponse, timeout: float = 15) -> dict[str, Any]:
    msg = await ws.receive(timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    frame = json.loads(msg.data)
    if isinstance(frame.get("data"), str) and frame["data"].startswith("{"):
        frame["data"] = json.loads(frame["data"])
    return frame


# -- 1. connection ---------------------------------------------------------------------------


async def test_handshake_and_unknown_key(node: FanoutNode, app: TestApp) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            node.ws_url(app.key, "protocol=7&client=js&version=8.6.0")
        ) as ws:
            frame = await raw_frames(ws)
            assert frame["event"] == "pusher:connection_established"
            assert re.fullmatch(r"\d+\.\d+", frame["data"]["socket_id"])
            assert frame["data"]["activity_timeout"] > 0
        async with http.ws_connect(node.ws_url("no-such-key")) as ws:
            frame = await raw_frames(ws)
            assert frame == {
                "event": "pusher:error",
                "data": {"code": 4001, "message": "Application does not exist"},
            }
            closing = await ws.receive(15)
            assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4001
        async with http.ws_connect(node.ws_url(app.key, "client=js")) as ws:
            assert (await raw_frames(ws))["data"]["code"] == 4008
        async with http.ws_connect(node.ws_url(app.key, "protocol=3")) as ws:
            assert (await raw_frames(ws))["data"]["code"] == 4007


async def test_pusher_js_refused_for_an_unknown_key(
    driver: JsDriver, node: FanoutNode, app: TestApp, auth_server: AuthServer
) -> None:
    bogus = TestApp(app.id, "no-such-key", app.secret)
    await driver.send("pusher", id="x", key=bogus.key, host=node.host, port=node.port)
    error = await driver.wait(id="x", type="error")
    assert error["error"]["code"] == 4001
    await driver.wait(id="x", type="state", current="disconnected")
    assert not driver.find(id="x", type="state", current="connected")


# -- 2. ping/pong and activity -------------------------------------------------------------------


async def test_ping_pong_and_idle_connection_survives(
    driver: JsDriver, node: FanoutNode, app: TestApp, auth_server: AuthServer
) -> None:
    await driver.connect("a", node, app, auth_server)
    await driver.subscribe("a", "idle")
    # activity_timeout is 2 s: pusher-js pings when idle, the server pongs. Two
    # rounds mean more than twice the timeout idle, on one connection.
    await driver.wait(id="a", type="message", event="pusher:pong", count=2, timeout=30)
    states = [r["current"] for r in driver.find(id="a", type="state")]
    assert states == ["connected"]  # (pusher-js is "connecting" before the driver listens)
    await trigger(app, node, "idle", "still-here", {"ok": True})
    record = await driver.wait(id="a", type="event", channel="idle", event="still-here")
    assert record["data"] == {"ok": True}


async def test_raw_ping_with_empty_data(node: FanoutNode, app: TestApp) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(node.ws_url(app.key)) as ws:
        await raw_frames(ws)
        for data in ('""', "{}", None):
            body = '{"event":"pusher:ping"' + (f',"data":{data}' if data else "") + "}"
            await ws.send_str(body)
            assert await raw_frames(ws) == {"event": "pusher:pong", "data": {}}
        await ws.send_str("not json")
        assert (await raw_frames(ws))["event"] == "pusher:error"
        await ws.send_str('{"event":"pusher:ping"}')
        assert (await raw_frames(ws))["event"] == "pusher:pong"  # still open


async def test_silent_socket_is_pinged_then_closed_with_4201(
    node: FanoutNode, app: TestApp
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(node.ws_url(app.key), autoping=False) as ws,
    ):
        await raw_frames(ws)
        assert await raw_frames(ws) == {"event": "pusher:ping", "data": {}}
        error = await raw_frames(ws)
        assert error["event"] == "pusher:error" and error["data"]["code"] == 4201
        closing = await ws.receive(15)
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4201


async def test_websocket_control_pings_count_as_activity(node: FanoutNode, app: TestApp) -> None:
    """A native client that only sends WS pings outlives ping_interval + pong_timeout."""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(node.ws_url(app.key), autoping=False) as ws,
    ):
        await raw_frames(ws)
        pongs = 0
        deadline = time.monotonic() + 6.5  # ping_interval 3 s + pong_timeout 2 s, and more
        while time.monotonic() < deadline:
            await ws.ping(b"hi")
            msg = await ws.receive(5)
            assert msg.type is aiohttp.WSMsgType.PONG, msg
            assert msg.data == b"hi"
            pongs += 1
            await asyncio.sleep(0.5)  # the client's own ping cadence, not synchronisation
        assert pongs >= 10 and not ws.closed


# -- 3. public channels and triggers ---------------------------------------------------------------


async def test_public_trigger_verbatim_names_and_socket_exclusion(
    driver: JsDriver, node: FanoutNode, app: TestApp, auth_server: AuthServer
) -> None:
    socket_a = await driver.connect("a", node, app, auth_server)
    await driver.connect("b", node, app, auth_server)
    for cid in ("a", "b"):
        await driver.subscribe(cid, "orders")
    name = "App\\Events\\Order.Shipped"
    await trigger(app, node, ["orders"], name, {"id": 1})
    for cid in ("a", "b"):
        record = await driver.wait(id=cid, type="event", channel="orders", event=name)
        assert record["data"] == {"id": 1}
    await trigger(app, node, "orders", "excluded", "x", socket_id=socket_a)
    await trigger(app, node, "orders", "marker", "m")
    await driver.wait(id="a", type="event", event="marker")
    await driver.wait(id="b", type="event", event="marker")
    assert len(driver.events("b", "excluded")) == 1
    assert driver.events("a", "excluded") == []


# -- 4. private channels ---------------------------------------------------------------------------


async def test_private_channel_good_and_bad_signature(
    driver: JsDriver, node: FanoutNode, app: TestApp, auth_server: AuthServer
) -> None:
    await driver.connect("good", node, app, auth_server)
    await driver.subscribe("good", "private-orders.1")
    await driver.connect("bad", node, app, auth_server, bad="1")
    await driver.send("subscribe", id="bad", channel="private-orders.1")
    error = await driver.wait(
        id="bad", type="event", channel="private-orders.1", event="pusher:subscription_error"
    )
    assert error["data"]["status"] == 401
    # The socket is not dropped: it still subscribes elsewhere and gets events.
    await driver.subscribe("bad", "public-after-error")
    await trigger(app, node, ["private-orders.1", "public-after-error"], "e", {"n": 1})
    await driver.wait(id="good", type="event", channel="private-orders.1", event="e")
    await driver.wait(id="bad", type="event", channel="public-after-error", event="e")
    assert not driver.find(id="bad", type="event", channel="private-orders.1", event="e")
    assert [r["current"] for r in driver.find(id="bad", type="state")] == ["connected"]


async def test_encrypted_channel_end_to_end(
    driver: JsDriver, node: FanoutNode, app: TestApp, auth_server: AuthServer
) -> None:
    """The SDK encrypts, pusher-js decrypts; the fanout only relays ciphertext."""
    await driver.connect("a", node, app, auth_server)
    await driver.subscribe("a", "private-encrypted-vault")
    await trigger(app, node, "private-encrypted-vault", "sealed", {"pin": 1234})
    record = await driver.wait(id="a", type="event", event="sealed")
    assert record["data"] == {"pin": 1234}
    wire = await driver.wait(id="a", type="message", event="sealed")
    assert set(wire["data"]) == {"nonce", "ciphertext"}


# -- 5. presence -----------------------------------------------------------------------------------


async def test_presence_members_deduplicated_across_tabs(
    driver: JsDriver, node: FanoutNode, app: TestApp, auth_server: AuthServer
) -> None:
    room = "presence-room.1"
    sdk = app.client(node)

    async def users() -> list[str]:
        reply = await asyncio.to_thread(sdk.users_info, room)
        return sorted(u["id"] for u in reply["users"])

    async def until_users(expected: list[str]) -> None:
        deadline = time.monotonic() + 15
        while (found := await users()) != expected:
            assert time.monotonic() < deadline, f"users {found}, expected {expected}"
            await asyncio.sleep(0.05)

    await driver.connect("a1", node, app, auth_server, user_id="1", name="Ann")
    first = await driver.subscribe("a1", room)
    assert first["members"]["count"] == 1 and str(first["members"]["me"]["id"]) == "1"
    await until_users(["1"])

    await driver.connect("b", node, app, auth_server, user_id="2", name="Bob")
    joined = await driver.subscribe("b", room)
    assert joined["members"]["count"] == 2
    assert joined["members"]["info"] == {"1": {"name": "Ann"}, "2": {"name": "Bob"}}
    added = await driver.wait(id="a1", type="event", event="pusher:member_added")
    assert added["data"] == {"id": "2", "info": {"name": "Bob"}}
    await until_users(["1", "2"])

    # Ann's second tab: she is there already, nobody hears of it.
    await driver.connect("a2", node, app, auth_server, user_id="1", name="Ann")
    tab = await driver.subscribe("a2", room)
    assert tab["members"]["count"] == 2 and tab["members"]["ids"] == ["1", "2"]
    # Ann leaves in one tab: still there.
    await driver.send("unsubscribe", id="a1", channel=room)
    await until_users(["1", "2"])
    # Bob whispers: the presence user id comes along, and marks the order for Bob.
    await driver.send("trigger", id="b", channel=room, event="client-hi", data={"x": 1})
    whisper = await driver.wait(id="a2", type="event", event="client-hi")
    assert whisper["data"] == {"x": 1}
    frame = await driver.wait(id="a2", type="message", event="client-hi")
    assert frame["user_id"] == "2"  # pusher-js hands it to callbacks as metadata
    await trigger(app, node, room, "marker", "1")
    await driver.wait(id="b", type="event", event="marker")
    assert driver.events("b", "pusher:member_added") == []
    assert driver.events("b", "pusher:member_removed") == []

    # Ann's last tab goes: removed, once.
    await driver.send("disconnect", id="a2")
    removed = await driver.wait(id="b", type="event", event="pusher:member_removed")
    assert removed["data"] == {"id": "1", "info": {"name": "Ann"}}
    await until_users(["2"])
    await trigger(app, node, room, "marker", "2")
    await driver.wait(id="b", type="event", event="marker", count=2)
    assert len(driver.events("b", "pusher:member_removed")) == 1
    assert len(driver.events("a1", "pusher:member_added")) == 1

    info = await asyncio.to_thread(sdk.channel_info, room, ["user_count", "subscription_count"])
    assert info == {"occupied": True, "user_count": 1, "subscription_count": 1}


# -- 6. client events ---------------------------------------------------------------------------


async def test_whisper_not_echoed_and_rate_limited(
    driver: JsDriver, node: FanoutNode, app: TestApp, auth_server: AuthServer
) -> None:
    channel = "private-chat.9"
    for cid in ("a", "b"):
        await driver.connect(cid, node, app, auth_server)
        await driver.subscribe(cid, channel)
    await driver.send("trigger", id="a", channel=channel, event="client-typing", data={"n": 0})
    record = await driver.wait(id="b", type="event", event="client-typing")
    assert record["data"] == {"n": 0}
    # Burst: only 10 a second get through, the rest are refused with 4301.
    for n in range(1, 16):
        await driver.send("trigger", id="a", channel=channel, event="client-burst", data={"n": n})
    error = await driver.wait(id="a", type="error")
    assert error["error"]["code"] == 4301
    await trigger(app, node, channel, "marker", "m")
    await driver.wait(id="a", type="event", event="marker")
    await driver.wait(id="b", type="event", event="marker")
    got = len(driver.events("b", "client-burst"))
    assert 9 <= got <= 11, got  # the bucket starts with 10 and refills at 10/s
    assert driver.events("a", "client-typing") == driver.events("a", "client-burst") == []
    # Public channels take no client events.
    await driver.subscribe("a", "public-x")
    await driver.send("trigger", id="a", channel="public-x", event="client-no", data={})
    await driver.wait(lambda r: r["error"]["code"] == 4009, id="a", type="error")


# -- 7. HTTP API limits ----------------------------------------------------------------------------


async def test_http_api_limits_and_signed_gets(
    driver: JsDriver, node: FanoutNode, app: TestApp, auth_server: AuthServer
) -> None:
    sdk = app.client(node)
    batch = [{"channel": "c", "name": "e", "data": "{}"} for _ in range(11)]
    with pytest.raises(pusher.errors.PusherBadRequest):
        await asyncio.to_thread(sdk.trigger_batch, batch)
    with pytest.raises(pusher.errors.PusherBadStatus, match="413"):
        await trigger(app, node, "c", "e", "x" * (10 * 1024 + 1))
    # (the SDK refuses 101 channels itself: sign the request by hand)
    body = json.dumps({"name": "e", "data": "{}", "channels": [f"c{i}" for i in range(101)]})
    path = f"/apps/{app.id}/events"
    query = auth.sign_request(app.key, app.secret, "POST", path, body=body.encode())
    async with (
        aiohttp.ClientSession() as http,
        http.post(node.http_url + path, params=query, data=body) as response,
    ):
        assert response.status == 400

    await driver.connect("a", node, app, auth_server, user_id="7")
    await driver.subscribe("a", "presence-lobby")
    await driver.subscribe("a", "news")
    reply = await asyncio.to_thread(sdk.trigger_batch, batch[:10])
    assert reply == {}
    deadline = time.monotonic() + 15
    while True:
        listing = await asyncio.to_thread(sdk.channels_info)
        if set(listing["channels"]) >= {"presence-lobby", "news"}:
            break
        assert time.monotonic() < deadline, listing
        await asyncio.sleep(0.05)
    presence = await asyncio.to_thread(sdk.channels_info, "presence-", ["user_count"])
    assert presence == {"channels": {"presence-lobby": {"user_count": 1}}}
    with pytest.raises(pusher.errors.PusherBadRequest):
        await asyncio.to_thread(sdk.channels_info, None, ["user_count"])
    assert await asyncio.to_thread(sdk.channel_info, "nobody-here") == {"occupied": False}
    with pytest.raises(pusher.errors.PusherBadRequest):
        await asyncio.to_thread(sdk.users_info, "news")
    with_info = await trigger(app, node, ["presence-lobby", "news"], "e", "{}")
    assert with_info == {}
    response = await asyncio.to_thread(
        sdk.trigger_batch,
        [
            {"channel": "presence-lobby", "name": "e", "data": "{}", "info": "user_count"},
            {"channel": "news", "name": "e", "data": "{}", "info": "subscription_count"},
        ],
    )
    assert response == {"batch": [{"user_count": 1}, {"subscription_count": 1}]}


# -- 8. sign-in and server-to-user ---------------------------------------------------------------


async def test_signin_user_events_and_terminate(
    driver: JsDriver, node: FanoutNode, app: TestApp, auth_server: AuthServer
) -> None:
    await driver.connect("u", node, app, auth_server, user_id="42")
    await driver.connect("other", node, app, auth_server, user_id="43")
    await driver.send("signin", id="u")
    await driver.wait(id="u", type="signed_in")
    await driver.wait(
        id="u",
        type="message",
        event="pusher_internal:subscription_succeeded",
        channel="#server-to-user-42",
    )
    await asyncio.to_thread(app.client(node).send_to_user, "42", "hello", {"to": "you"})
    record = await driver.wait(id="u", type="user_event", event="hello")
    assert record["data"] == {"to": "you"}
    # Subscribing to someone else's user channel is refused.
    # (pusher-js will not subscribe to "#…" channels itself: send the frame raw)
    await driver.send(
        "send", id="other", event="pusher:subscribe", data={"channel": "#server-to-user-42"}
    )
    await driver.wait(id="other", type="message", event="pusher:subscription_error")

    await asyncio.to_thread(app.client(node).terminate_user_connections, "42")
    error = await driver.wait(id="u", type="error")
    assert error["error"]["code"] == 4009
    await driver.wait(id="u", type="state", current="disconnected")
    assert len(driver.find(id="u", type="state", current="connected")) == 1
    assert [r["current"] for r in driver.find(id="other", type="state")] == ["connected"]


# -- 9. webhooks ---------------------------------------------------------------------------------


async def test_webhooks_are_signed_and_cover_every_kind(
    driver: JsDriver, node: FanoutNode, app: TestApp, auth_server: AuthServer, nats: NATS
) -> None:
    sdk = pusher.Pusher(app_id=app.numeric_id, key=app.key, secret=app.secret)
    received: list[dict[str, Any]] = []
    arrived = asyncio.Event()
    failures = {"left": 1}  # the first delivery fails: it must be retried

    async def hook(request: web.Request) -> web.Response:
        body = await request.text()
        if failures["left"]:
            failures["left"] -= 1
            return web.Response(status=500)
        key = request.headers["X-Pusher-Key"]
        valid = sdk.validate_webhook(key, request.headers["X-Pusher-Signature"], body)
        assert valid is not None, "webhook did not validate"
        received.extend(valid["events"])
        arrived.set()
        return web.Response(status=200)

    receiver = web.Application()
    receiver.add_routes([web.post("/hook", hook)])
    runner = web.AppRunner(receiver, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        kv = await nats.jetstream().key_value(node.env["CONFAB_FANOUT_WEBHOOKS_BUCKET"])
        config = {"webhooks": [{"url": f"http://127.0.0.1:{port}/hook"}]}
        await kv.put(app.id, json.dumps(config).encode())

        async def until(name: str, timeout: float = 30, **fields: Any) -> dict[str, Any]:
            deadline = time.monotonic() + timeout
            while True:
                for event in received:
                    if event["name"] == name and all(event.get(k) == v for k, v in fields.items()):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {name} {fields} in {received}")
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), left)

        socket_id = await driver.connect("a", node, app, auth_server, user_id="5")
        # The watcher applies the configuration soon, not at once: occupy probe
        # channels until one is reported (the failed first delivery is retried).
        for probe in range(1, 11):
            await driver.subscribe("a", f"probe-{probe}")
            with contextlib.suppress(AssertionError):
                await until("channel_occupied", timeout=3)
                break
        else:
            raise AssertionError("webhooks never arrived")

        await driver.subscribe("a", "presence-hooks")
        await until("channel_occupied", channel="presence-hooks")
        await until("member_added", channel="presence-hooks", user_id="5")
        await driver.send("trigger", id="a", channel="presence-hooks", event="client-x", data={})
        event = await until("client_event", channel="presence-hooks")
        assert event == {
            "name": "client_event",
            "channel": "presence-hooks",
            "event": "client-x",
            "data": "{}",
            "socket_id": socket_id,
            "user_id": "5",
        }
        await driver.send("unsubscribe", id="a", channel="presence-hooks")
        await until("member_removed", channel="presence-hooks", user_id="5")
        await until("channel_vacated", channel="presence-hooks")
        assert failures["left"] == 0
    finally:
        await runner.cleanup()


# -- Laravel Echo ------------------------------------------------------------------------------


async def test_laravel_echo_listen_whisper_and_join(
    driver: JsDriver, node: FanoutNode, app: TestApp, auth_server: AuthServer
) -> None:
    for cid, user in (("e1", "1"), ("e2", "2")):
        await driver.send(
            "echo",
            id=cid,
            key=app.key,
            host=node.host,
            port=node.port,
            authEndpoint=auth_server.url(app),
            params={"user_id": user, "name": f"user {user}"},
        )
        await driver.wait(id=cid, type="state", current="connected")
        await driver.send("echo_private", id=cid, channel="orders.1", listen=".message.created")
        await driver.send("echo_listen_whisper", id=cid, channel="orders.1", event="typing")
        await driver.wait(id=cid, type="echo_subscribed", channel="orders.1")

    await trigger(app, node, "private-orders.1", "message.created", {"id": "m1", "seq": 1})
    for cid in ("e1", "e2"):
        record = await driver.wait(id=cid, type="echo_event")
        assert record["data"] == {"id": "m1", "seq": 1}

    await driver.send("echo_whisper", id="e1", channel="orders.1", event="typing", data={"a": 1})
    whisper = await driver.wait(id="e2", type="whisper")
    assert whisper["data"] == {"a": 1}
    await trigger(app, node, "private-orders.1", "message.created", {"id": "m2", "seq": 2})
    await driver.wait(id="e1", type="echo_event", count=2)
    assert driver.find(id="e1", type="whisper") == []

    await driver.send("echo_join", id="e1", channel="room.7")
    here = await driver.wait(id="e1", type="here")
    assert here["users"] == [{"name": "user 1"}]
    await driver.send("echo_join", id="e2", channel="room.7")
    here = await driver.wait(id="e2", type="here")
    assert sorted(u["name"] for u in here["users"]) == ["user 1", "user 2"]
    joining = await driver.wait(id="e1", type="joining")
    assert joining["user"] == {"name": "user 2"}
    await driver.send("disconnect", id="e2")
    leaving = await driver.wait(id="e1", type="leaving")
    assert leaving["user"] == {"name": "user 2"}

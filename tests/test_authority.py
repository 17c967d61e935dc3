"""Every authority change reaches every path before the call that made it returns.

Against a running stack, with raw Pusher protocol 7 sockets (so that every frame a
client receives is seen, in order) authorized through the gateway as a widget's
are. For each change (delete, hide, edit, remove, ban, revoke a session, revoke an
API key, erase) and each path (history, ``/events``, ``confab:resume``, live
frames, client events): what the log means now, and nothing after the change.

"Nothing after" is shown with a witness: a socket of another participant on the
same node, which receives a later event (or a later client event); by then the
revoked socket would have had it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.client import Api, new_workspace
from tests.stack import RunningStack
from tests.test_media_api import upload
from tests.test_messaging_api import World, send

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
    b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7"
    b"5\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82"
)


@pytest.fixture
async def world(stack: RunningStack, http: aiohttp.ClientSession) -> World:
    admin = Api(http, stack.gateway, stack.admin_headers)
    return World(admin, await new_workspace(admin))


class Socket:
    """A raw Pusher client: every frame received, decoded, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, socket_id: str) -> None:
        self.ws = ws
        self.socket_id = socket_id
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, stack: RunningStack, app_key: str) -> Socket:
        url = urlsplit(stack.info["fanout_ws_url"])
        ws = await http.ws_connect(f"ws://{url.hostname}:{url.port}/app/{app_key}?protocol=7")
        hello = json.loads((await ws.receive()).data)
        assert hello["event"] == "pusher:connection_established", hello
        return cls(ws, json.loads(hello["data"])["socket_id"])

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                frame = json.loads(msg.data)
                if isinstance(frame.get("data"), str):
                    with contextlib.suppress(ValueError):
                        frame["data"] = json.loads(frame["data"])
                async with self._changed:
                    self.frames.append(frame)
                    self._changed.notify_all()
        async with self._changed:
            self.close_code = self.ws.close_code
            self._changed.notify_all()

    async def wait(self, match: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> Any:
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: any(match(f) for f in self.frames)), timeout
            )
        return next(f for f in self.frames if match(f))

    async def closed(self, timeout: float = 10.0) -> int | None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.ws.closed), timeout)
        return self.ws.close_code

    async def send(self, event: str, data: Any, channel: str | None = None) -> None:
        frame: dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            frame["channel"] = channel
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(frame))

    async def authorize(self, widget: Api, channel: str) -> tuple[int, Any]:
        """The gateway's signature for this socket (what pusher-js would ask for)."""
        return await widget.post(
            "/api/widget/broadcasting/auth",
            {"socket_id": self.socket_id, "channel_name": channel},
        )

    async def subscribe(self, channel: str, signed: dict[str, Any]) -> dict[str, Any]:
        """Subscribe with ``signed``; the reply frame (succeeded or subscription_error)."""
        await self.send("pusher:subscribe", {"channel": channel, **signed})
        return await self.wait(
            lambda f: (
                f.get("channel") == channel
                and f["event"]
                in ("pusher_internal:subscription_succeeded", "pusher:subscription_error")
            )
        )

    async def join(self, widget: Api, channel: str) -> dict[str, Any]:
        status, signed = await self.authorize(widget, channel)
        assert status == 200, signed
        reply = await self.subscribe(channel, signed)
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply
        return dict(signed)

    async def resume(self, channel: str, after: int) -> list[dict[str, Any]]:
        """``confab:resume``: the frames up to and including its answer."""
        start = len(self.frames)
        await self.send("confab:resume", {"channel": channel, "after_seq": after})
        end = await self.wait(
            lambda f: (
                f["event"] in ("confab:resumed", "confab:resume_failed")
                and self.frames.index(f) >= start
            )
        )
        return self.frames[start : self.frames.index(end) + 1]

    def seen(self, channel: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("channel") == channel]

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


@pytest.fixture
async def sockets(http: aiohttp.ClientSession, stack: RunningStack, world: World) -> Any:
    opened: list[Socket] = []

    async def open_() -> Socket:
        sock = await Socket.open(http, stack, world.workspace["app_key"])
        opened.append(sock)
        return sock

    yield open_
    for sock in opened:
        await sock.close()


async def three(world: World) -> Any:
    """Ann, Bob and Cat (each a user and a widget client) in a group conversation."""
    people = [await world.user(name) for name in ("Ann", "Bob", "Cat")]
    cid = await world.conversation(*(user for user, _ in people), kind="group")
    return (*people, cid)


def texts(frames: list[dict[str, Any]]) -> str:
    return json.dumps(frames)


async def test_replay_and_history_show_the_log_as_it_is_now(world: World, sockets: Any) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    base = f"/api/widget/conversations/{cid}"
    edited = await send(ann_w, cid, "first draft")
    deleted = await send(ann_w, cid, "sent by mistake")
    hidden = await send(bob_w, cid, "something rude")
    assert (await ann_w.patch(f"{base}/messages/{edited['id']}", {"content": "final"}))[0] == 200
    assert (await ann_w.delete(f"{base}/messages/{deleted['id']}"))[0] == 204
    url = f"/api/v1/messages/{hidden['id']}/moderation"
    assert (await world.tenant.post(url, {"action": "hide"}))[0] == 204

    # Right after the calls returned: history, /events and a socket's resume agree.
    status, history = await bob_w.get(f"{base}/messages")
    assert status == 200
    shown = {m["id"]: (m["content"], m["deleted"]) for m in history["data"]}
    assert shown == {
        edited["id"]: ("final", False),
        deleted["id"]: ("", True),
        hidden["id"]: ("", True),
    }
    status, events = await bob_w.get(f"{base}/events", params={"after": 0})
    assert status == 200
    sock = await sockets()
    channel = f"private-conversation.{cid}"
    await sock.join(bob_w, channel)
    resumed = await sock.resume(channel, 0)
    assert resumed[-1]["event"] == "confab:resumed"
    for replay in (
        [(e["event"], e["data"]) for e in events["data"]],
        [(f["event"], f["data"]) for f in resumed[:-1]],
    ):
        text = json.dumps(replay)
        for gone in ("first draft", "sent by mistake", "something rude"):
            assert gone not in text
        messages = {
            d["id"]: (d["content"], d["deleted"])
            for n, d in replay
            if n in ("message.created", "message.updated")
        }
        assert messages == shown
    assert [e["seq"] for e in events["data"]][1:] == [f["data"]["event_seq"] for f in resumed[:-1]]

    # Restored: every path shows it again.
    live = len(sock.frames)  # what came before is the resume's replay
    assert (await world.tenant.post(url, {"action": "restore"}))[0] == 204
    status, events = await bob_w.get(f"{base}/events", params={"after": hidden["seq"] - 1})
    assert status == 200
    again = next(e["data"] for e in events["data"] if e["data"].get("id") == hidden["id"])
    assert (again["content"], again["deleted"]) == ("something rude", False)
    restored = await sock.wait(
        lambda f: sock.frames.index(f) >= live and f["event"] == "message.updated"
    )
    assert (restored["data"]["id"], restored["data"]["content"]) == (hidden["id"], "something rude")


async def test_a_removed_participant_gets_nothing_after_the_removal_on_any_path(
    world: World, sockets: Any
) -> None:
    (_, ann_w), (bob, bob_w), (_, cat_w), cid = await three(world)
    channel = f"private-conversation.{cid}"
    base = f"/api/widget/conversations/{cid}"
    await send(ann_w, cid, "before")
    bob_sock, bob_spare, witness, ann_sock = [await sockets() for _ in range(4)]
    bob_signature = await bob_sock.join(bob_w, channel)
    # A signature obtained while a member, used only after the removal.
    status, old_signature = await bob_spare.authorize(bob_w, channel)
    assert status == 200
    await witness.join(cat_w, channel)
    await ann_sock.join(ann_w, channel)

    status, _ = await world.tenant.delete(f"/api/v1/conversations/{cid}/participants/{bob['id']}")
    assert status == 204
    after = await send(ann_w, cid, "after the removal")
    await witness.wait(lambda f: f["event"] == "message.created" and f["data"]["id"] == after["id"])

    seen = [f["event"] for f in bob_sock.seen(channel)]
    assert seen[-2:] == ["participant.removed", "pusher:subscription_error"]
    assert "after the removal" not in texts(bob_sock.frames)
    refused = await bob_spare.subscribe(channel, old_signature)
    assert refused["event"] == "pusher:subscription_error" and refused["data"]["status"] == 403
    # The same socket trying again with the signature it had as a member.
    start = len(bob_sock.frames)
    await bob_sock.send("pusher:subscribe", {"channel": channel, **bob_signature})
    again = await bob_sock.wait(
        lambda f: f["event"] == "pusher:subscription_error" and bob_sock.frames.index(f) >= start
    )
    assert again["data"]["status"] == 403
    await bob_sock.send("confab:resume", {"channel": channel, "after_seq": 0})
    # A client event on the channel it was let go of reaches nobody (and is refused).
    await bob_sock.send("client-typing", {"from": "bob"}, channel)
    await bob_sock.send("pusher:ping", {})
    await bob_sock.wait(lambda f: f["event"] == "pusher:pong")
    assert "after the removal" not in texts(bob_sock.frames + bob_spare.frames)
    await ann_sock.send("client-typing", {"from": "ann"}, channel)
    await witness.wait(lambda f: f["event"] == "client-typing" and f["data"] == {"from": "ann"})
    assert not [f for f in witness.frames if f.get("data") == {"from": "bob"}]
    assert (await bob_sock.authorize(bob_w, channel))[0] == 403
    for path in ("/messages", "/events"):
        status, body = await bob_w.get(base + path)
        assert (status, body["error"]["code"]) == (404, "not_found")


async def test_each_banned_action_is_refused_right_after_the_ban_returns(
    world: World, sockets: Any
) -> None:
    (_, ann_w), (bob, bob_w), (_, cat_w), cid = await three(world)
    channel = f"private-conversation.{cid}"
    base = f"/api/widget/conversations/{cid}"
    mine = await send(bob_w, cid, "mine")
    witness = await sockets()
    await witness.join(cat_w, channel)
    ban = f"/api/v1/users/{bob['id']}/ban"
    for round_ in range(20):
        bob_sock = await sockets()
        await bob_sock.join(bob_w, channel)
        # Ann's client event goes on a socket of her own each round too: one socket may
        # send 10 a second (the fanout's client_events_per_second), and on a quick machine
        # twenty rounds take less than two seconds (CI once refused her nineteenth).
        ann_sock = await sockets()
        await ann_sock.join(ann_w, channel)
        assert (await world.tenant.post(ban))[0] == 200
        attempts = {
            "post": bob_w.post(f"{base}/messages", {"content": f"banned {round_}"}),
            "edit": bob_w.patch(f"{base}/messages/{mine['id']}", {"content": "edited"}),
            "react": bob_w.post(f"{base}/messages/{mine['id']}/reactions", {"emoji": "👍"}),
            "typing": bob_w.post(f"{base}/typing", {"is_typing": True}),
            "read": bob_w.post(f"{base}/read", {}),
            "upload": upload(bob_w, cid, PNG, "a.png"),
            "channel": bob_sock.authorize(bob_w, channel),
        }
        for action, call in attempts.items():
            status, body = await call
            assert (status, body["error"]["code"]) == (403, "banned"), (round_, action, body)
        # The socket was closed with 4009 before the ban returned; what it sends now
        # reaches nobody, and nothing posted after the ban reaches it.
        await bob_sock.send("client-typing", {"from": "bob", "round": round_}, channel)
        await ann_sock.send("client-typing", {"from": "ann", "round": round_}, channel)
        later = await send(ann_w, cid, f"after ban {round_}")
        await witness.wait(
            lambda f, i=later["id"]: f["event"] == "message.created" and f["data"]["id"] == i
        )
        await witness.wait(
            lambda f, n=round_: (
                f["event"] == "client-typing" and f["data"] == {"from": "ann", "round": n}
            )
        )
        assert await bob_sock.closed() == 4009
        errors = [f for f in bob_sock.frames if f["event"] == "pusher:error"]
        assert errors and errors[0]["data"]["code"] == 4009
        assert f"after ban {round_}" not in texts(bob_sock.frames)
        assert not [f for f in witness.frames if f["data"] == {"from": "bob", "round": round_}]
        assert (await world.tenant.delete(ban))[0] == 200
        # Unbanned: everything again, at once.
        assert (await send(bob_w, cid, f"back {round_}"))["content"] == f"back {round_}"
        assert (await bob_w.post(f"{base}/read", {}))[0] == 204


async def test_a_revoked_session_loses_its_sockets_and_another_session_keeps_its_own(
    world: World, sockets: Any
) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    status, second = await world.tenant.post("/api/v1/sessions", {"user_id": bob["id"]})
    assert status == 201
    bob_phone = world.tenant.as_(Authorization=f"Bearer {second['token']}")
    cid = await world.conversation(ann, bob)
    channel = f"private-conversation.{cid}"
    revoked, spare, kept, ann_sock = [await sockets() for _ in range(4)]
    await revoked.join(bob_w, channel)
    status, old_signature = await spare.authorize(bob_w, channel)
    assert status == 200
    await kept.join(bob_phone, channel)
    await ann_sock.join(ann_w, channel)
    token = bob_w.headers["Authorization"].split()[-1]

    status, _ = await world.tenant.delete(f"/api/v1/sessions/{token}")
    assert status == 204
    later = await send(ann_w, cid, "after the revocation")
    await kept.wait(lambda f: f["event"] == "message.created" and f["data"]["id"] == later["id"])
    assert await revoked.closed() == 4009
    assert "after the revocation" not in texts(revoked.frames)
    # What the revoked socket sends reaches nobody (Bob's other session would see it).
    await revoked.send("client-typing", {"from": "revoked"}, channel)
    await ann_sock.send("client-typing", {"from": "ann"}, channel)
    await kept.wait(lambda f: f["event"] == "client-typing" and f["data"] == {"from": "ann"})
    assert not [f for f in kept.frames if f.get("data") == {"from": "revoked"}]
    refused = await spare.subscribe(channel, old_signature)
    assert refused["event"] == "pusher:subscription_error" and refused["data"]["status"] == 403
    status, body = await bob_w.get(f"/api/widget/conversations/{cid}/events")
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert (await bob_phone.get(f"/api/widget/conversations/{cid}/events"))[0] == 200


async def test_after_erasure_no_path_shows_the_users_old_content(
    world: World, sockets: Any, http: aiohttp.ClientSession
) -> None:
    ann, ann_w = await world.user("Ann")
    bob, bob_w = await world.user("Bob")
    cid = await world.conversation(ann, bob)
    channel = f"private-conversation.{cid}"
    base = f"/api/widget/conversations/{cid}"
    secret = await send(bob_w, cid, "my number is 555-0100", metadata={"phone": "555-0100"})
    watcher, bob_sock = await sockets(), await sockets()
    await watcher.join(ann_w, channel)
    await bob_sock.join(bob_w, channel)

    status, _ = await world.tenant.delete(f"/api/v1/users/{bob['id']}")
    assert status == 204
    assert await bob_sock.closed() == 4009
    url = f"/api/v1/messages/{secret['id']}/moderation"
    for action in ("hide", "restore"):
        assert (await world.tenant.post(url, {"action": action}))[0] == 204
    await watcher.wait(lambda f: f["event"] == "message.updated" and f["data"]["deleted"] is False)
    late = await sockets()
    await late.join(ann_w, channel)
    resumed = await late.resume(channel, 0)
    status, events = await ann_w.get(f"{base}/events")
    assert status == 200
    status, history = await ann_w.get(f"{base}/messages")
    assert status == 200
    everything = texts(watcher.frames + late.frames) + json.dumps(events) + json.dumps(history)
    assert "555-0100" not in everything
    restored = [f for f in watcher.frames if f["event"] == "message.updated"][-1]["data"]
    assert (restored["content"], restored["metadata"]) == ("", {})
    assert restored["sender"]["name"] == "Deleted user"
    assert resumed[-1]["event"] == "confab:resumed"


async def test_a_revoked_api_key_stops_at_once(world: World, stack: RunningStack) -> None:
    admin = world.tenant.as_(**stack.admin_headers)
    ws = world.workspace["id"]
    for _ in range(5):
        status, issued = await admin.post(f"/api/admin/workspaces/{ws}/api-keys")
        assert status == 201
        key = world.tenant.as_(**{"X-API-Key": issued["api_key"]})
        assert (await key.get("/api/v1/conversations"))[0] == 200  # cached as valid now
        status, _ = await admin.delete(f"/api/admin/workspaces/{ws}/api-keys/{issued['id']}")
        assert status == 204
        status, body = await key.get("/api/v1/conversations")
        assert (status, body["error"]["code"]) == (401, "unauthorized")

"""The live inbox and internal notes on raw sockets (issue 19).

Staff hold ``private-inbox-{workspace}``, signed with the app secret and a staff
``role`` in ``channel_data`` (as the gateway signs it for dashboard sessions);
the visitor holds their conversation channel, signed by the gateway for their
widget session. Every frame each socket receives is seen, in order: the staff
socket gets the inbox changes and the note; the visitor's never a note — shown
with a witness, the agent's reply stored after the note, which reaches the
visitor's socket (so the note would have by then).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from confab import realtime
from confab.contracts.events.messaging import NoteAdded, SupportAssigned
from confab.events import Envelope
from confab_webhooks.projections import conversation_webhook
from tests.client import Api, new_workspace
from tests.stack import RunningStack
from tests.test_authority import Socket
from tests.test_messaging_api import World
from tests.test_support_api import SECRET, start, support


async def subscribe(sock: Socket, channel: str, signed: dict[str, Any]) -> dict[str, Any]:
    """``Socket.subscribe``, answered by a frame that came after this request."""
    start = len(sock.frames)
    await sock.send("pusher:subscribe", {"channel": channel, **signed})

    def answer(frame: dict[str, Any]) -> bool:
        return frame.get("channel") == channel and frame["event"] in (
            "pusher_internal:subscription_succeeded",
            "pusher:subscription_error",
        )

    await sock.wait(lambda _: any(answer(f) for f in sock.frames[start:]))
    return next(f for f in sock.frames[start:] if answer(f))


@pytest.fixture
async def world(stack: RunningStack, http: aiohttp.ClientSession) -> World:
    admin = Api(http, stack.gateway, stack.admin_headers)
    world = World(admin, await new_workspace(admin))
    status, body = await world.tenant.call("PUT", "/api/v1/support/settings", {"enabled": True})
    assert status == 200, body
    return world


def staff_signature(
    workspace: dict[str, Any], socket_id: str, channel: str, **member: Any
) -> dict[str, Any]:
    """What the gateway signs for a dashboard session (or a tenant's backend could)."""
    channel_data = json.dumps(member, separators=(",", ":"))
    auth = realtime.channel_auth(
        workspace["app_key"], workspace["app_secret"], socket_id, channel, channel_data
    )
    return {"auth": auth, "channel_data": channel_data}


async def test_staff_see_the_inbox_live_and_the_visitor_never_sees_a_note(
    world: World, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    ws = world.workspace
    visitor, visitor_w = await world.user("Visitor")
    agent, _ = await world.user("Agent")
    inbox = f"private-inbox-{ws['id']}"
    staff = await Socket.open(http, stack, ws["app_key"])
    guest = await Socket.open(http, stack, ws["app_key"])
    try:
        # Who may not hold the inbox: no role, a visitor's role, another workspace's inbox,
        # and the widget's own channel authorization will not sign it at all.
        for member in ({"user_id": agent["id"]}, {"user_id": agent["id"], "role": "visitor"}):
            reply = await subscribe(
                staff, inbox, staff_signature(ws, staff.socket_id, inbox, **member)
            )
            assert reply["event"] == "pusher:subscription_error", reply
            assert reply["data"]["status"] == 403
        elsewhere = "private-inbox-ws_someone_else"
        signed = staff_signature(ws, staff.socket_id, elsewhere, user_id=agent["id"], role="owner")
        reply = await subscribe(staff, elsewhere, signed)
        assert reply["event"] == "pusher:subscription_error", reply
        status, body = await guest.authorize(visitor_w, inbox)
        assert status == 403, body
        signed = staff_signature(
            ws, staff.socket_id, inbox, user_id=agent["id"], role="agent", session_id="ses_x"
        )
        reply = await subscribe(staff, inbox, signed)
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply

        # A new support conversation appears live, with its first message's preview.
        cid = (await start(visitor_w, "My order is late"))["id"]
        created = await staff.wait(
            lambda f: (
                f["event"] == "inbox.conversation"
                and f["data"]["conversation_id"] == cid
                and f["data"]["change"] == "created"
                and f["data"]["visitor_id"] == visitor["id"]
            )
        )
        # A frame can come before the inbox read model has the change; its seq, given
        # as min_seq, makes the list wait for it. A seq the log has not reached is a 422.
        seq = created["data"]["seq"]
        assert seq > 0
        status, page = await world.tenant.get(
            "/api/v1/support/conversations", params={"view": "all", "min_seq": str(seq)}
        )
        assert status == 200 and cid in [c["conversation"]["id"] for c in page["data"]], page
        status, body = await world.tenant.get(
            "/api/v1/support/conversations", params={"min_seq": str(seq + 10**12)}
        )
        assert status == 422 and "min_seq" in body["error"]["details"], body
        await staff.wait(
            lambda f: (
                f["event"] == "inbox.conversation"
                and f["data"].get("preview") == "My order is late"
            )
        )
        await guest.join(visitor_w, realtime.conversation_channel(cid))

        status, _ = await world.tenant.post(
            support(cid, "/notes"), {"author_id": agent["id"], "content": SECRET}
        )
        assert status == 201
        status, _ = await world.tenant.post(support(cid, "/assign"), {"assignee_id": agent["id"]})
        assert status == 200
        status, _ = await world.tenant.call("PUT", support(cid, "/tags"), {"tags": ["Late"]})
        assert status == 200
        status, _ = await world.tenant.post(
            support(cid, "/replies"), {"author_id": agent["id"], "content": "Let me check"}
        )
        assert status == 201
        note = await staff.wait(lambda f: f["event"] == "inbox.note")
        assert note["data"]["content"] == SECRET and note["data"]["conversation_id"] == cid
        await staff.wait(
            lambda f: (
                f["event"] == "inbox.conversation"
                and f["data"]["change"] == "assigned"
                and f["data"]["assignee_id"] == agent["id"]
            )
        )
        await staff.wait(
            lambda f: f["event"] == "inbox.conversation" and f["data"].get("tags") == ["late"]
        )
        # The witness: the reply, stored after the note, reached the visitor's socket.
        await guest.wait(
            lambda f: f["event"] == "message.created" and f["data"]["content"] == "Let me check"
        )
        # The agent types and reads: the visitor sees both ("Seen by").
        status, _ = await world.tenant.post(
            support(cid, "/typing"), {"author_id": agent["id"], "is_typing": True}
        )
        assert status == 204
        await guest.wait(
            lambda f: f["event"] == "user.typing" and f["data"]["user_id"] == agent["id"]
        )
        status, _ = await world.tenant.post(support(cid, "/read"), {"author_id": agent["id"]})
        assert status == 204
        await guest.wait(
            lambda f: f["event"] == "message.read" and f["data"]["user_id"] == agent["id"]
        )
        seen = json.dumps(guest.frames)
        assert SECRET not in seen and "inbox." not in seen and "note" not in seen
        # Nor does a resume from the start carry it.
        resumed = await guest.resume(realtime.conversation_channel(cid), 0)
        assert SECRET not in json.dumps(resumed)
        assert [f["event"] for f in resumed][-1] == "confab:resumed"

        # Merged into a user the tenant knows, the visitor's socket is let go at once.
        vera, _ = await world.user("Vera")
        status, merged = await world.tenant.post(
            f"/api/v1/users/{vera['id']}/merge", {"visitor_id": visitor["id"]}
        )
        assert status == 200 and merged["conversations"] == 1, merged
        channel = realtime.conversation_channel(cid)
        await guest.wait(
            lambda f: f["event"] == "pusher:subscription_error" and f.get("channel") == channel
        )
        left = await guest.wait(lambda f: f["event"] == "participant.removed")
        assert left["data"]["merged_into"] == vera["id"], left
    finally:
        await staff.close()
        await guest.close()


def test_staff_events_are_never_webhooks() -> None:
    at = datetime.now(UTC)
    for event in (
        NoteAdded(
            conversation_id="conv_1",
            seq=0,
            at=at,
            staff_seq=1,
            note_id="note_1",
            author_id="usr_1",
            content=SECRET,
        ),
        SupportAssigned(conversation_id="conv_1", seq=0, at=at, staff_seq=2, assignee_id="u"),
    ):
        envelope = Envelope(
            event=event,
            type=event.type,
            schema=1,
            msg_id="m",
            workspace="ws_1",
            actor="key_1",
            correlation="",
            subject="conv.evt.ws_1.conv_1",
            seq=10,
        )
        assert conversation_webhook(envelope) is None


async def test_revoking_a_staff_session_closes_its_inbox_socket(
    world: World, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    ws = world.workspace
    agent, agent_w = await world.user("Agent")
    inbox = f"private-inbox-{ws['id']}"
    sock = await Socket.open(http, stack, ws["app_key"])
    try:
        # The session's id, as the gateway signs it for this session's own channels.
        status, signed = await sock.authorize(agent_w, f"private-user.{agent['id']}")
        assert status == 200, signed
        session_id = json.loads(signed["channel_data"])["session_id"]
        member = {"user_id": agent["id"], "session_id": session_id, "role": "agent"}
        reply = await subscribe(sock, inbox, staff_signature(ws, sock.socket_id, inbox, **member))
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply
        token = agent_w.headers["Authorization"].removeprefix("Bearer ")
        status, _ = await world.tenant.delete(f"/api/v1/sessions/{token}")
        assert status == 204
        assert await sock.closed() == 4009
    finally:
        await sock.close()


async def test_a_visitor_renamed_or_erased_is_a_profile_frame_and_the_list_reads_it(
    world: World, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    """The inbox names visitors: a profile change in identity's log is an ``inbox.profile``
    frame (ids and the IDENTITY seq, no name), and the list read with that seq as
    ``users_min_seq`` shows the change; a seq past the log is a 422."""
    ws = world.workspace
    visitor, visitor_w = await world.user("Vera")
    agent, _ = await world.user("Agent")
    cid = (await start(visitor_w, "Where is my parcel?"))["id"]
    inbox = f"private-inbox-{ws['id']}"
    staff = await Socket.open(http, stack, ws["app_key"])
    try:
        signed = staff_signature(ws, staff.socket_id, inbox, user_id=agent["id"], role="agent")
        reply = await subscribe(staff, inbox, signed)
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply

        def named(page: dict[str, Any]) -> str:
            found = next(c for c in page["data"] if c["conversation"]["id"] == cid)
            people = found["conversation"]["participants"]
            return str(next(p["name"] for p in people if p["id"] == visitor["id"]))

        status, _ = await world.tenant.call(
            "PATCH", f"/api/v1/users/{visitor['id']}", {"name": "Vera Renamed"}
        )
        assert status == 200
        frame = await staff.wait(
            lambda f: f["event"] == "inbox.profile" and f["data"]["user_id"] == visitor["id"]
        )
        assert frame["data"]["change"] == "updated" and frame["data"]["seq"] > 0, frame
        assert "Vera" not in json.dumps(frame)  # that it changed, never what to
        status, page = await world.tenant.get(
            "/api/v1/support/conversations",
            params={"view": "all", "users_min_seq": str(frame["data"]["seq"])},
        )
        assert status == 200 and named(page) == "Vera Renamed", page
        status, body = await world.tenant.get(
            "/api/v1/support/conversations",
            params={"users_min_seq": str(frame["data"]["seq"] + 10**12)},
        )
        assert status == 422 and "users_min_seq" in body["error"]["details"], body

        status, _ = await world.tenant.call("DELETE", f"/api/v1/users/{visitor['id']}")
        assert status in (200, 202, 204)
        erased = await staff.wait(
            lambda f: (
                f["event"] == "inbox.profile"
                and f["data"]["user_id"] == visitor["id"]
                and f["data"]["change"] == "erased"
            )
        )
        status, page = await world.tenant.get(
            "/api/v1/support/conversations",
            params={"view": "all", "users_min_seq": str(erased["data"]["seq"])},
        )
        assert status == 200 and named(page) == realtime.ERASED_NAME, page
    finally:
        await staff.close()

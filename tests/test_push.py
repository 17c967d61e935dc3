"""Push end to end: the session's ``confab up`` and its notifier, against local stand-ins
for a browser push service, FCM and APNs (``tests.pushservices``: they implement the
documented request and error contracts; the real services are unreachable here).

Web push is checked as a push service checks it (the VAPID JWT) and as the browser reads
it (the payload decrypted with the subscription's keys). Expired subscriptions and
unregistered device tokens are removed on the service's answer. The stack allows push
endpoints on loopback (``confab up`` sets ``CONFAB_NOTIFIER_ALLOW_PRIVATE`` on one
machine); the address check itself is tested without a stack (services/notifier/tests).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.client import Api
from tests.pushservices import ApnsService, FcmService, WebPushService
from tests.stack import RunningStack
from tests.test_notifications import person, setup_chat
from tests.waiting import until


@pytest.fixture
def admin(stack: RunningStack, http: aiohttp.ClientSession) -> Api:
    return Api(http, stack.gateway, stack.admin_headers)


@pytest.fixture
async def push_service() -> AsyncIterator[WebPushService]:
    service = await WebPushService().start()
    yield service
    await service.close()


async def test_web_push_end_to_end_and_an_expired_subscription_is_removed(
    admin: Api, push_service: WebPushService
) -> None:
    chat = await setup_chat(admin, 1.0)
    alice, bob = await person(chat, "Alice"), await person(chat, "Bob")
    widget = chat.widgets[alice["id"]]
    status, config = await widget.get("/api/widget/push")
    assert status == 200 and len(config["vapid_public_key"]) == 87, config
    name, browser = push_service.browser()
    status, sub = await widget.post("/api/widget/push/subscriptions", browser.subscription())
    assert status == 201 and sub["kind"] == "webpush", sub
    status, again = await widget.post("/api/widget/push/subscriptions", browser.subscription())
    assert status == 201 and again["id"] == sub["id"]  # the same subscription, once
    cid = await chat.conversation(alice, bob, title="Flat")
    await chat.send(bob, cid, "Is it free?")

    [(got, payload, k)] = await until(lambda: push_service.received, "a web push")
    assert push_service.refused == []
    assert got == name and k == config["vapid_public_key"]
    assert payload["title"] == "New message in Flat"
    assert payload["body"] == "Bob: Is it free?"
    assert payload["conversation_id"] == cid and payload["count"] == "1"

    # The push service says the subscription is gone: it is removed.
    push_service.gone.add(name)
    await chat.send(bob, cid, "Hello?")

    async def removed() -> bool:
        status, subs = await widget.get("/api/widget/push/subscriptions")
        return status == 200 and subs["data"] == []

    await until(removed, "the expired subscription removed")
    assert len(push_service.received) == 1


async def test_hostile_push_subscriptions(admin: Api, push_service: WebPushService) -> None:
    chat = await setup_chat(admin, 60.0)
    alice, bob = await person(chat, "Alice"), await person(chat, "Bob")
    _, browser = push_service.browser()
    good = browser.subscription()
    bad: list[dict[str, Any]] = [
        {**good, "endpoint": "ftp://127.0.0.1/x"},
        {**good, "endpoint": "https://user:pw@push.example/x"},
        {**good, "keys": {"p256dh": "AAAA", "auth": good["keys"]["auth"]}},
        {**good, "keys": {"p256dh": good["keys"]["p256dh"], "auth": "AAAA"}},
        {**good, "keys": {"p256dh": "not base64!", "auth": "x"}},
        {**good, "endpoint": "https://push.example/" + "x" * 3000},
        {**good, "extra": True},
    ]
    widget = chat.widgets[alice["id"]]
    for body in bad:
        status, answer = await widget.post("/api/widget/push/subscriptions", body)
        assert status in (400, 422), (body, status, answer)
    status, mine = await widget.post("/api/widget/push/subscriptions", good)
    assert status == 201
    # Bob cannot remove Alice's subscription, nor can another workspace see it.
    status, _ = await chat.widgets[bob["id"]].delete(f"/api/widget/push/subscriptions/{mine['id']}")
    assert status == 404
    status, _ = await widget.delete(f"/api/widget/push/subscriptions/{mine['id']}")
    assert status == 204


async def test_mobile_push_through_fcm_and_apns_stand_ins_removes_unregistered_tokens(
    admin: Api, fcm_service: FcmService, apns_service: ApnsService
) -> None:
    chat = await setup_chat(admin, 1.0)
    alice, bob = await person(chat, "Alice"), await person(chat, "Bob")
    status, reply = await chat.tenant.call(
        "PUT",
        "/api/v1/notification-settings/push-credentials",
        {"fcm": fcm_service.account(), "apns": apns_service.credentials()},
    )
    assert status == 200 and reply == {"platforms": ["fcm", "apns"]}, reply
    fcm_token = "fcm:" + uuid.uuid4().hex
    apns_token = uuid.uuid4().hex + uuid.uuid4().hex
    devices = f"/api/v1/users/{alice['id']}/devices"
    for platform, token in (("fcm", fcm_token), ("apns", apns_token)):
        status, device = await chat.tenant.post(devices, {"platform": platform, "token": token})
        assert status == 201 and device["kind"] == platform, device
    cid = await chat.conversation(alice, bob, title="Booking")
    await chat.send(bob, cid, "Confirmed")

    def fcm_got() -> Any:
        return [m for m in fcm_service.received if m["token"] == fcm_token]

    def apns_got() -> Any:
        return [r for r in apns_service.received if r[0] == apns_token]

    [message] = await until(fcm_got, "an FCM message")
    assert message["notification"] == {"title": "New message in Booking", "body": "Bob: Confirmed"}
    assert message["data"]["conversation_id"] == cid
    [(_, headers, payload)] = await until(apns_got, "an APNs push")
    assert headers["apns-topic"] == apns_service.topic and headers["apns-push-type"] == "alert"
    assert payload["aps"]["alert"]["body"] == "Bob: Confirmed"
    assert fcm_service.refused == [] and apns_service.refused == []

    # Both providers say the tokens are no longer valid: both devices are removed.
    fcm_service.unregistered.add(fcm_token)
    apns_service.unregistered.add(apns_token)
    await chat.send(bob, cid, "Still there?")

    async def removed() -> bool:
        status, listed = await chat.tenant.get(devices)
        return status == 200 and listed["data"] == []

    await until(removed, "the unregistered devices removed")

    # Hostile: other workspaces, bad platforms, bad tokens, bad keys.
    other = await setup_chat(admin, 60.0)
    status, _ = await other.tenant.post(devices, {"platform": "fcm", "token": fcm_token})
    assert status == 404
    for body in (
        {"platform": "sms", "token": "abcdefgh"},
        {"platform": "apns", "token": "a b c d e f g h"},
        {"platform": "fcm", "token": "x" * 5000},
    ):
        status, _ = await chat.tenant.post(devices, body)
        assert status == 422, body
    status, answer = await chat.tenant.call(
        "PUT",
        "/api/v1/notification-settings/push-credentials",
        {
            "apns": {
                **apns_service.credentials(),
                "private_key": fcm_service.account()["private_key"],
            }
        },
    )
    assert status == 422, answer

"""Notifications end to end: the session's ``confab up`` (its notifier sends to a real SMTP
server, aiosmtpd, running in this test process: ``conftest.mailbox``), the tenant and
widget APIs, and one-click unsubscribe.

Each workspace sets a short delay (1 to 3 s) through the API; every wait is on a mail
arriving, with a deadline. "Nothing else arrived" is shown by a later mail of the same
conversation that must come after it, never by waiting for silence.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest

from confab.bench.webhooks import Receiver
from confab_infra.mailcatcher import MailCatcher
from tests.client import Api
from tests.ops import Chat
from tests.stack import RunningStack
from tests.waiting import until

WAIT = 45.0


@pytest.fixture
def admin(stack: RunningStack, http: aiohttp.ClientSession) -> Api:
    return Api(http, stack.gateway, stack.admin_headers)


async def setup_chat(admin: Api, delay: float, **settings: Any) -> Chat:
    chat = await Chat.create(admin, "Notify")
    status, body = await chat.tenant.patch(
        "/api/v1/notification-settings", {"delay_seconds": delay, **settings}
    )
    assert status == 200, body
    assert body["delay_seconds"] == delay
    return chat


async def person(chat: Chat, name: str, **extra: Any) -> dict[str, Any]:
    address = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.test"
    status, user = await chat.tenant.post(
        "/api/v1/users",
        {"external_id": f"{name}-{uuid.uuid4().hex[:6]}", "name": name, "email": address, **extra},
    )
    assert status == 201, user
    status, session = await chat.tenant.post("/api/v1/sessions", {"user_id": user["id"]})
    assert status == 201, session
    chat.widgets[user["id"]] = chat.tenant.as_(Authorization=f"Bearer {session['token']}")
    return {**user, "email": address}


async def mails(mailbox: MailCatcher, address: str, count: int) -> list[EmailMessage]:
    def enough() -> list[EmailMessage] | None:
        found = mailbox.to(address)
        return found if len(found) >= count else None

    return list(await until(enough, f"{count} mails to {address}"))


def parts(message: EmailMessage) -> tuple[str, str]:
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and html is not None, "both parts"
    return plain.get_content(), html.get_content()


async def test_an_email_arrives_after_the_delay_in_the_users_language_and_unsubscribes(
    admin: Api, mailbox: MailCatcher, http: aiohttp.ClientSession
) -> None:
    delay = 1.0
    chat = await setup_chat(
        admin,
        delay,
        sender_name="Acme Rentals",
        link_url="https://app.acme.test/c/{conversation_id}",
    )
    alice, bob = await person(chat, "Alice"), await person(chat, "Bob")
    status, prefs = await chat.tenant.patch(
        f"/api/v1/users/{alice['id']}/notification-preferences", {"language": "de"}
    )
    assert status == 200 and prefs["language"] == "de" and prefs["email"] is True, prefs
    cid = await chat.conversation(alice, bob, title="Wohnung")
    sent_at = time.monotonic()
    await chat.send(bob, cid, "Ist die Wohnung frei? <b>bitte</b>")

    [mail] = await mails(mailbox, alice["email"], 1)
    assert time.monotonic() - sent_at >= delay * 0.9
    assert mail["Subject"] == "Neue Nachricht in Wohnung"
    assert mail["From"].addresses[0].display_name == "Acme Rentals"
    assert mail["Content-Language"] == "de"
    text, html = parts(mail)
    assert "Bob: Ist die Wohnung frei? <b>bitte</b>" in text
    assert "&lt;b&gt;bitte&lt;/b&gt;" in html and "<b>bitte</b>" not in html
    assert f"https://app.acme.test/c/{cid}" in text and f"https://app.acme.test/c/{cid}" in html
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = mail["List-Unsubscribe"].strip("<>")
    assert url.startswith(chat.tenant.base + "/api/notifications/unsubscribe?token=")
    assert mailbox.to(bob["email"]) == []  # the sender is not told of their own message

    # A link scanner's GET changes nothing; a forged or altered token is not found.
    async with http.get(url) as page:
        assert page.status == 200 and "<form" in await page.text()
    status, prefs = await chat.tenant.get(f"/api/v1/users/{alice['id']}/notification-preferences")
    assert prefs["email"] is True
    forged = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    form = {"List-Unsubscribe": "One-Click"}
    async with http.post(forged, data=form) as answer:
        assert answer.status == 404
    async with http.post(url, data=form) as answer:
        assert answer.status == 200, await answer.text()
    status, prefs = await chat.tenant.get(f"/api/v1/users/{alice['id']}/notification-preferences")
    assert status == 200 and prefs["email"] is False, prefs
    status, mine = await chat.widgets[alice["id"]].get("/api/widget/notification-preferences")
    assert status == 200 and mine["email"] is False and mine["user_id"] == alice["id"]


async def test_five_unread_messages_make_one_digest_without_the_deleted_one(
    admin: Api, mailbox: MailCatcher
) -> None:
    chat = await setup_chat(admin, 3.0)
    receiver = await Receiver().start()
    status, hook = await chat.tenant.post(
        "/api/v1/webhooks", {"url": receiver.url("due"), "event_types": ["notification.due"]}
    )
    assert status == 201, hook
    receiver.secrets["due"] = [hook["secret"]]
    alice, bob = await person(chat, "Alice"), await person(chat, "Bob")
    cid = await chat.conversation(alice, bob, title="Deal")
    sent = [await chat.send(bob, cid, f"message {i}") for i in range(1, 7)]
    status, _ = await chat.widgets[bob["id"]].delete(
        f"/api/widget/conversations/{cid}/messages/{sent[2]['id']}"
    )
    assert status == 204

    [digest] = await mails(mailbox, alice["email"], 1)
    assert digest["Subject"] == "5 new messages in Deal"
    text, _ = parts(digest)
    assert "You have 5 new messages in Deal." in text
    assert "message 3" not in text
    assert all(f"message {i}" in text for i in (2, 4, 5, 6))
    # The tenant's webhook carries the same decision (ids and a count, no content).
    [due] = await until(lambda: receiver.of("due"), "the notification.due webhook")
    await receiver.close()
    assert due.verified and due.body["type"] == "notification.due"
    data = due.body["data"]
    assert data["user_id"] == alice["id"] and data["conversation_id"] == cid
    assert data["count"] == 5 and sent[2]["id"] not in data["message_ids"]
    assert sorted(data["message_ids"]) == sorted(m["id"] for i, m in enumerate(sent) if i != 2)
    assert "message 1" not in str(due.raw)

    # One mail for the five: the next message is a notification of its own, and it comes
    # after the digest with nothing in between.
    await chat.send(bob, cid, "one more")
    first, second = await mails(mailbox, alice["email"], 2)
    assert first is digest and "one more" in parts(second)[0]
    assert second["Subject"] == "New message in Deal"
    assert len(mailbox.to(alice["email"])) == 2


async def test_reading_before_the_delay_cancels_the_notification(
    admin: Api, mailbox: MailCatcher
) -> None:
    chat = await setup_chat(admin, 2.0)
    alice, bob = await person(chat, "Alice"), await person(chat, "Bob")
    cid = await chat.conversation(alice, bob)
    await chat.send(bob, cid, "read me now")
    status, _ = await chat.widgets[alice["id"]].post(f"/api/widget/conversations/{cid}/read", {})
    assert status in (200, 204)
    await chat.send(bob, cid, "after the read")

    [mail] = await mails(mailbox, alice["email"], 1)
    text, _ = parts(mail)
    assert "after the read" in text and "read me now" not in text
    assert mail["Subject"] == "New message in Room"


async def test_a_restart_of_the_notifier_mid_delay_neither_loses_nor_doubles(
    admin: Api, mailbox: MailCatcher, stack: RunningStack
) -> None:
    chat = await setup_chat(admin, 3.0)
    alice, bob = await person(chat, "Alice"), await person(chat, "Bob")
    cid = await chat.conversation(alice, bob)
    await chat.send(bob, cid, "before the crash")
    os.kill(stack.pids()["notifier"], signal.SIGKILL)  # confab up starts it again

    [mail] = await mails(mailbox, alice["email"], 1)
    assert "before the crash" in parts(mail)[0]
    await chat.send(bob, cid, "after the restart")
    _, second = await mails(mailbox, alice["email"], 2)
    assert "after the restart" in parts(second)[0]
    assert "before the crash" not in parts(second)[0]
    assert len(mailbox.to(alice["email"])) == 2


async def test_hostile_input_on_the_notification_routes(admin: Api) -> None:
    chat = await setup_chat(admin, 60.0)
    other = await setup_chat(admin, 60.0)
    alice = await person(chat, "Alice")
    stranger = await person(other, "Mallory")
    path = "/api/v1/users/{}/notification-preferences"
    # Another workspace's user, an unknown one, a malformed id: not found, never 500.
    for uid in (stranger["id"], "usr_" + uuid.uuid4().hex, "no.such*id"):
        status, body = await chat.tenant.patch(path.format(uid), {"email": False})
        assert status == 404, body
        assert body["error"]["code"] == "not_found"
    status, _ = await other.tenant.get(path.format(alice["id"]))
    assert status == 404
    widget = chat.widgets[alice["id"]]
    bad: list[tuple[Any, int]] = [
        ({"time_zone": "Mars/Olympus"}, 422),
        ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, 422),
        ({"level": "loud"}, 422),
        ({"digest_seconds": -1}, 422),
        ({"conversations": {f"c{i}": "none" for i in range(101)}}, 422),
        ({"conversations": {"not*an.id": "none"}}, 422),
        ({"user_id": alice["id"]}, 422),  # unknown fields are refused, not ignored
    ]
    for body, expected in bad:
        status, answer = await widget.patch("/api/widget/notification-preferences", body)
        assert status in (400, expected), (body, status, answer)
        assert 400 <= status < 500
    status, _ = await widget.call(
        "PATCH",
        "/api/widget/notification-preferences",
        data=b'{"language": "\xff\xfe"}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    status, _ = await widget.get("/api/v1/notification-settings")
    assert status == 401  # a session is not an API key
    for template, expected in (
        ({"subject": "{% if %}", "text": "x", "html": "x"}, 422),
        ({"subject": "{{ ''.__class__.__mro__[1].__subclasses__() }}", "text": "x", "html": "x"},
         422),
        ({"subject": "x", "text": "x" * 60_000, "html": "x"}, 422),
    ):  # fmt: skip
        status, answer = await chat.tenant.post(
            "/api/v1/notification-settings/preview", {"language": "en", "template": template}
        )
        assert status == expected, answer
    status, answer = await chat.tenant.patch(
        "/api/v1/notification-settings",
        {"templates": {"en": {"subject": "{% for %}", "text": "x", "html": "x"}}},
    )
    assert status == 422, answer
    template = {
        "subject": "Bonjour {{ recipient }}",
        "text": "{{ count }}",
        "html": "<p>{{ messages[1].text }}</p>",
    }
    status, preview = await chat.tenant.post(
        "/api/v1/notification-settings/preview", {"language": "fr", "template": template}
    )
    assert status == 200, preview
    assert preview["subject"] == "Bonjour Sam" and "&lt;3" in preview["html"]


async def test_a_refused_address_is_recorded_on_the_user(admin: Api) -> None:
    chat = await setup_chat(admin, 1.0)
    bob = await person(chat, "Bob")
    status, carol = await chat.tenant.post(
        "/api/v1/users",
        {"external_id": f"carol-{uuid.uuid4().hex[:6]}", "name": "Carol",
         "email": f"carol-{uuid.uuid4().hex[:6]}@refuse.invalid"},
    )  # fmt: skip
    assert status == 201, carol
    cid = await chat.conversation(carol, bob)
    await chat.send(bob, cid, "Are you there?")
    path = f"/api/v1/users/{carol['id']}/notification-preferences"

    async def refused() -> bool:
        status, prefs = await chat.tenant.get(path)
        return status == 200 and prefs["email_refused"] is True

    deadline = time.monotonic() + WAIT
    while not await refused():
        assert time.monotonic() < deadline, "the refusal was not recorded"
        await asyncio.sleep(0.1)

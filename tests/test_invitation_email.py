"""Staff invitations by email, end to end: the session's ``confab up`` (its notifier sends
to a real SMTP server, aiosmtpd in this process: ``conftest.mailbox``), the dashboard's
API, and the link in the mail accepted through that API.

Every wait is on a condition with a deadline (a mail arriving, the invitation email's
status); "never sent" is shown by the email's status reaching ``cancelled`` (final: the
notifier decided not to send it, after a failed attempt) with no mail to the address.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from confab import bus
from confab.bus import NOTIFIER
from confab.contracts.events.notifier import subject
from confab_infra.mailcatcher import MailCatcher
from confab_notifier import templates
from confab_notifier.invitations import ROLES, TEMPLATES
from tests.stack import RunningStack
from tests.staff import PASSWORD, Member, Team, new_team
from tests.test_notifications import mails, parts
from tests.waiting import until


@pytest.fixture
async def team(stack: RunningStack, http: aiohttp.ClientSession) -> Any:
    made = await new_team(stack, http, roles=False)
    yield made
    await made.close()


async def invite(owner: Member, email: str, role: str = "agent") -> dict[str, Any]:
    status, made = await owner.call(
        "POST", "/dashboard/api/invitations", {"email": email, "role": role}
    )
    assert status == 201, made
    return dict(made)


async def email_status(member: Member, invitation_id: str, *wanted: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status, body = await member.call("GET", f"/dashboard/api/invitations/{invitation_id}/email")
        assert status == 200, body
        return body if body["status"] in wanted else None

    return dict(await until(check, f"the invitation email {' or '.join(wanted)}"))


@contextlib.contextmanager
def deferred(mailbox: MailCatcher, address: str) -> Iterator[None]:
    """The mail server answers 451 (try again later) for ``address`` until the block ends."""
    handler = mailbox._controller.handler  # type: ignore[union-attr]
    original = handler.handle_RCPT

    async def handle_rcpt(server: Any, session: Any, envelope: Any, rcpt: str, opts: Any) -> str:
        if rcpt.lower() == address.lower():
            return "451 4.3.0 Try again later"
        return str(await original(server, session, envelope, rcpt, opts))

    handler.handle_RCPT = handle_rcpt
    try:
        yield
    finally:
        del handler.handle_RCPT


async def test_an_invitation_is_emailed_with_a_link_that_works(
    team: Team, mailbox: MailCatcher, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    status, body = await team.tenant.patch(
        "/api/v1/notification-settings", {"sender_name": "Acme Support", "language": "de"}
    )
    assert status == 200, body
    owner = team.members["owner"]
    address = f"new.agent-{uuid.uuid4().hex[:8]}@example.test"
    made = await invite(owner, address)
    assert made["email"] == "pending" and made["link"].startswith("/dashboard/#accept=")
    token = made["link"].split("#accept=", 1)[1]

    [mail] = await mails(mailbox, address, 1)
    assert mail["From"].addresses[0].display_name == "Acme Support"
    assert mail["Subject"] == f"Olive Owner hat Sie zu {owner.me['workspace_name']} eingeladen"
    assert mail["Content-Language"] == "de"
    assert mail["List-Unsubscribe"] is None  # not a notification: nothing to unsubscribe from
    text, html = parts(mail)
    link = f"{stack.gateway}/dashboard/#accept={token}"
    assert f"Einladung annehmen: {link}" in text and f'href="{link}"' in html
    assert "als Agent" in text and "Olive Owner hat Sie eingeladen" in html
    assert (await email_status(owner, made["invitation"]["id"], "sent"))["attempts"] == 1

    # The link from the mail works (once), through the API, as the dashboard uses it.
    emailed = text.split("#accept=", 1)[1].split()[0]
    accept = {"token": emailed, "name": "Nora New", "password": PASSWORD}
    origin = {"Origin": stack.gateway}
    async with http.post(
        stack.gateway + "/dashboard/api/invitations/accept", json=accept, headers=origin
    ) as response:
        joined = await response.json()
        assert response.status == 200, joined
    assert joined["role"] == "agent" and joined["member"]["email"] == address

    # The stream holds the request sealed: neither the secret nor the address in clear.
    nc = await bus.connect(stack.info["nats_url"], "test-invitation-mail")
    where = subject(team.workspace["id"], "invitation", made["invitation"]["id"])
    stored = await nc.jetstream().get_last_msg(NOTIFIER.name, where)
    await nc.close()
    assert stored.data and token.encode() not in stored.data
    assert address.encode() not in stored.data


async def test_a_withdrawn_invitation_still_pending_is_never_sent(
    team: Team, mailbox: MailCatcher
) -> None:
    owner = team.members["owner"]
    address = f"later-{uuid.uuid4().hex[:8]}@example.test"
    with deferred(mailbox, address):
        made = await invite(owner, address)
        invitation_id = made["invitation"]["id"]
        tried = await email_status(owner, invitation_id, "pending", "sent")
        while tried["attempts"] < 1:  # tried once, and the server said later
            tried = await email_status(owner, invitation_id, "pending")
        assert tried["status"] == "pending" and "451" in tried["last_error"]
        status, body = await owner.call("DELETE", f"/dashboard/api/invitations/{invitation_id}")
        assert status == 204, body
    # The server would take it now; at its next attempt the notifier sees it withdrawn.
    await email_status(owner, invitation_id, "cancelled")
    assert mailbox.to(address) == []


async def test_a_refused_address_is_recorded_and_only_the_team_sees_it(
    team: Team, stack: RunningStack, http: aiohttp.ClientSession
) -> None:
    owner = team.members["owner"]
    made = await invite(owner, f"nobody-{uuid.uuid4().hex[:6]}@refuse.invalid")
    invitation_id = made["invitation"]["id"]
    refused = await email_status(owner, invitation_id, "refused")
    assert refused["refused_code"] == 550 and refused["attempts"] == 1

    # An agent may not read it; another workspace's owner finds nothing.
    agent = await team.invite_and_accept(owner, "agent", "Aggie")
    status, _ = await agent.call("GET", f"/dashboard/api/invitations/{invitation_id}/email")
    assert status == 403
    other = await new_team(stack, http, roles=False)
    try:
        path = f"/dashboard/api/invitations/{invitation_id}/email"
        status, body = await other.members["owner"].call("GET", path)
        assert status == 404, body
        status, body = await other.members["owner"].call(
            "GET", "/dashboard/api/invitations/not-an-id!/email"
        )
        assert status in (404, 422), body
    finally:
        await other.close()


def test_the_invitation_email_exists_in_every_language_and_escapes_names() -> None:
    context = {
        "workspace": "Acme <b>&</b> Co",
        "inviter": "Eve\n<script>x</script>",
        "role": "agent",
        "link": "https://chat.example/dashboard/#accept=abc",
        "expires": "2026-12-13 11:40 UTC",
        "sender_name": "Acme",
    }
    assert set(TEMPLATES) == set(ROLES) == set(templates.LANGUAGES)
    for language, template in TEMPLATES.items():
        rendered = templates.render(template, {**context, "role": ROLES[language]["agent"]})
        assert "\n" not in rendered.subject and "Acme <b>&</b> Co" in rendered.subject
        assert context["link"] in rendered.text and f'href="{context["link"]}"' in rendered.html
        assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html, language
        assert ROLES[language]["agent"] in rendered.text

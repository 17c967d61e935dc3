"""The staff dashboard in Debian's Chromium (issue 19): signing in through the page, a
moderator hiding a reported message from the queue, an agent who gets neither the UI
nor the API of key management, the other pages, phone and desktop, axe-core clean."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from playwright.async_api import expect

from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    Shop,
    axe_violations,
    png_bytes,
    screenshot_path,
)
from tests.browser.test_widget import LIVE, message, send
from tests.staff import PASSWORD, Team, make_owner


async def signed_in(shop: Shop, workspace_id: str, email: str, viewport: dict[str, int]) -> Any:
    """A browser of its own, signed in through the dashboard's form."""
    page = await shop.page(
        f"{shop.stack.gateway}/dashboard/#workspace={workspace_id}", viewport=viewport, label=email
    )
    await expect(page.get_by_role("heading", name="Sign in to your workspace")).to_be_visible(
        timeout=LIVE
    )
    await expect(page.get_by_label("Workspace ID")).to_have_value(workspace_id)
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Password").press("Enter")  # keyboard only
    await expect(page.get_by_role("navigation", name="Dashboard")).to_be_visible(timeout=LIVE)
    return page


async def test_a_moderator_hides_a_reported_message_and_an_agent_gets_no_key_management(
    shop: Shop, axe_source: str
) -> None:
    # The workspace: its team (an owner, a moderator and an agent) and a reported message.
    alice, bob = await shop.person("Alice"), await shop.person("Bob")
    status, widget_me = await alice.api.get("/api/widget/me")
    assert status == 200, widget_me
    team = Team(shop.stack, {"id": widget_me["workspace_id"]}, shop.tenant)
    owner_email = f"owner.{uuid.uuid4().hex[:6]}@example.com"
    await make_owner(shop.stack, team.workspace["id"], owner_email)
    status, body, owner = await team.sign_in(owner_email)
    assert status == 200, body
    moderator = await team.invite_and_accept(owner, "moderator", "Mo Derator")
    agent = await team.invite_and_accept(owner, "agent", "Agnes Agent")
    conversation = await shop.conversation(alice, bob, kind="group", title="Trail talk")
    for text in (
        "Anyone tried the new trail?",
        "Yes, lovely views",
        "Buy cheap pills at spam.example",
    ):
        who = bob if text.startswith("Buy") else alice
        status, sent = await who.api.post(
            f"/api/widget/conversations/{conversation}/messages", {"content": text}
        )
        assert status == 201, sent
    status, _ = await alice.api.post(
        f"/api/widget/messages/{sent['id']}/report", {"reason": "spam"}
    )
    assert status in (200, 201, 204)
    await team.close()

    # The moderator: the queue shows the report with the conversation around it.
    page = await signed_in(shop, team.workspace["id"], moderator.email, DESKTOP)
    nav = page.get_by_role("navigation", name="Dashboard")
    await expect(nav.get_by_role("link", name="Moderation")).to_have_attribute(
        "aria-current", "page"
    )
    await expect(nav.get_by_role("link", name="API keys")).to_have_count(0)
    report = page.get_by_test_id("report").filter(has_text="spam.example")
    await expect(report).to_have_count(1, timeout=LIVE)
    await expect(report.get_by_test_id("reported-message")).to_contain_text("Buy cheap pills")
    await expect(report).to_contain_text("Yes, lovely views")  # in context
    await expect(report.get_by_role("button", name="Ban Bob")).to_be_visible()
    await expect(report.get_by_role("button", name="Erase Bob")).to_have_count(0)  # no users.erase
    assert await axe_violations(page, axe_source) == []
    await page.screenshot(path=screenshot_path("dashboard-moderation.png"), full_page=True)
    # Keyboard: focus the Hide button and press Enter.
    await report.get_by_role("button", name="Hide").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("report").filter(has_text="spam.example")).to_have_count(
        0, timeout=LIVE
    )
    await page.get_by_role("button", name="All").click()
    hidden = page.get_by_test_id("report").filter(has_text="spam.example")
    await expect(hidden.locator(".badge.hidden").first).to_be_visible(timeout=LIVE)
    # Everyone else no longer sees it; the moderator's history still has it, flagged.
    status, history = await alice.api.get(f"/api/widget/conversations/{conversation}/messages")
    assert "Buy cheap pills" not in str(history)
    status, moderated = await shop.tenant.get(f"/api/v1/conversations/{conversation}/messages")
    assert any(m["id"] == sent["id"] and m["hidden"] for m in moderated["data"])

    # The agent: no key management in the navigation; the page itself says no, and so
    # does the API (403) when the page's own session asks.
    agent_page = await signed_in(shop, team.workspace["id"], agent.email, PHONE)
    await expect(agent_page.get_by_role("link", name="API keys")).to_have_count(0)
    await expect(agent_page.get_by_role("link", name="Moderation")).to_have_count(0)
    await agent_page.goto(f"{shop.stack.gateway}/dashboard/#/settings/keys")
    await expect(agent_page.get_by_role("heading", name="You do not have access")).to_be_visible(
        timeout=LIVE
    )
    await expect(agent_page.get_by_role("button", name="Create API key")).to_have_count(0)
    status = await agent_page.evaluate("fetch('/api/v1/api-keys').then(r => r.status)")
    assert status == 403
    assert await axe_violations(agent_page, axe_source) == []

    # The owner: every page, each axe-clean on a phone and a desktop.
    owner_page = await signed_in(shop, team.workspace["id"], owner_email, DESKTOP)
    for path, heading in (
        ("settings/support", "Support & widget"),
        ("reports", "Reports"),
        ("settings/keys", "API keys"),
        ("settings/webhooks", "Webhooks"),
        ("settings/team", "Team"),
        ("users", "Users"),
    ):
        await owner_page.goto(f"{shop.stack.gateway}/dashboard/#/{path}")
        await expect(owner_page.get_by_role("heading", name=heading, exact=True)).to_be_visible(
            timeout=LIVE
        )
        await expect(owner_page.locator(".state.loading")).to_have_count(0, timeout=LIVE)
        assert await axe_violations(owner_page, axe_source) == [], path
    await owner_page.get_by_label("Search users").fill("Bob")
    await expect(owner_page.get_by_role("link", name="Bob")).to_be_visible(timeout=LIVE)
    await owner_page.get_by_role("link", name="Bob").click()
    await expect(owner_page.get_by_role("heading", name="Bob")).to_be_visible(timeout=LIVE)
    await expect(owner_page.get_by_text("Trail talk")).to_be_visible(timeout=LIVE)
    await expect(owner_page.get_by_role("button", name="Export data (GDPR)")).to_be_visible()
    assert await axe_violations(owner_page, axe_source) == []
    await owner_page.set_viewport_size(PHONE)
    await owner_page.goto(f"{shop.stack.gateway}/dashboard/#/settings/team")
    await expect(owner_page.get_by_test_id("member")).to_have_count(3, timeout=LIVE)
    assert await axe_violations(owner_page, axe_source) == []
    # Sign out: back to the form, and the session is gone for the API too.
    await owner_page.get_by_role("button", name="Sign out", exact=True).click()
    await expect(
        owner_page.get_by_role("heading", name="Sign in to your workspace")
    ).to_be_visible()
    status = await owner_page.evaluate("fetch('/dashboard/api/me').then(r => r.status)")
    assert status == 401


SETTINGS = {
    "enabled": True,
    "greeting": "Hi! Ask us anything.",
    "team_name": "Outfitters support",
    "team_avatars": [],
    "reply_time": "minutes",
    "prechat_name": "optional",
    "prechat_email": "off",
    "allow_anonymous": True,
    "round_robin": False,
}
NOTE = "Internal: VIP customer, refund approved"


async def test_a_visitor_writes_in_and_an_agent_answers_live_without_leaking_notes(
    shop: Shop, axe_source: str
) -> None:
    # The tenant lets visitors of its site write in; its team has an owner and an agent.
    probe = await shop.person("Probe")
    status, widget_me = await probe.api.get("/api/widget/me")
    assert status == 200
    workspace_id, app_key = widget_me["workspace_id"], widget_me["app_key"]
    status, body = await shop.tenant.call(
        "PUT", "/api/v1/support/settings", {**SETTINGS, "allowed_origins": [shop.host]}
    )
    assert status == 200, body
    team = Team(shop.stack, {"id": workspace_id}, shop.tenant)
    owner_email = f"owner.{uuid.uuid4().hex[:6]}@example.com"
    await make_owner(shop.stack, workspace_id, owner_email)
    _s, _b, owner = await team.sign_in(owner_email)
    agent = await team.invite_and_accept(owner, "agent", "Agnes Agent")
    await team.close()

    # The agent's inbox, open before anyone writes: empty, and live.
    inbox = await signed_in(shop, workspace_id, agent.email, DESKTOP)
    await expect(inbox.get_by_role("heading", name="Inbox")).to_be_visible(timeout=LIVE)
    await expect(inbox.get_by_text("No unassigned conversations")).to_be_visible(timeout=LIVE)
    await expect(inbox.get_by_test_id("count-unassigned")).to_have_text("0")
    await expect(inbox.locator(".live-state")).to_have_text("Live", timeout=LIVE)
    await inbox.get_by_test_id("presence-online").click()
    await expect(inbox.get_by_test_id("presence-online")).to_have_attribute("aria-pressed", "true")

    # The visitor, on the tenant's own site (another origin): a visitor session from the
    # public app key, a support conversation, and the widget on it. Every WebSocket frame
    # and every response body the visitor's browser receives is kept.
    frames: list[str] = []
    bodies: list[str] = []

    async def keep(response: Any) -> None:
        try:
            bodies.append(await response.text())
        except Exception:  # a redirect or an aborted request has no body
            return

    async def record(page: Any) -> None:
        page.on(
            "websocket",
            lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))),
        )
        page.on(
            "response", lambda response: shop_tasks.append(asyncio.ensure_future(keep(response)))
        )

    shop_tasks: list[asyncio.Future[None]] = []
    # "Send us a message" in the widget, by keyboard, with the optional name given.
    visitor = await shop.widget(
        None, attributes={"app-key": app_key}, before=record, label="visitor"
    )
    await visitor.get_by_test_id("launcher").click()
    await visitor.get_by_test_id("support-start").focus()
    await visitor.keyboard.press("Enter")
    await visitor.get_by_label("Your name").fill("Vera Visitor")
    await visitor.get_by_test_id("support-message").fill("Hi, my order 1234 has not arrived")
    await visitor.get_by_test_id("support-message").press("Control+Enter")
    await expect(message(visitor, "my order 1234")).to_be_visible(timeout=LIVE)

    # The agent sees it arrive, live: in the list and in the count.
    item = inbox.get_by_test_id("inbox-item").filter(has_text="Vera Visitor")
    await expect(item).to_have_count(1, timeout=LIVE)
    await expect(inbox.get_by_test_id("count-unassigned")).to_have_text("1", timeout=LIVE)
    await item.click()
    pane = inbox.get_by_role("region", name="Conversation")
    await expect(pane.get_by_role("heading", name="Vera Visitor")).to_be_visible(timeout=LIVE)
    await expect(pane.get_by_test_id("message").filter(has_text="my order 1234")).to_be_visible()
    await expect(inbox.get_by_role("complementary", name="Visitor details")).to_contain_text(
        "Vera Visitor"
    )

    # Assign to themselves, write an internal note, reply (keyboard: Enter sends).
    await pane.get_by_label("Assignee").select_option(label="Agnes Agent (you)")
    await expect(inbox.get_by_test_id("count-mine")).to_have_text("1", timeout=LIVE)
    await inbox.keyboard.press("Escape")
    await pane.get_by_test_id("mode-note").click()
    await pane.get_by_test_id("reply-box").fill(NOTE)
    await pane.get_by_test_id("reply-box").press("Enter")
    await expect(pane.get_by_test_id("note").filter(has_text="VIP customer")).to_be_visible(
        timeout=LIVE
    )
    await pane.get_by_test_id("mode-reply").click()
    await pane.get_by_test_id("attach").set_input_files(
        files=[{"name": "label.png", "mimeType": "image/png", "buffer": png_bytes()}]
    )
    await expect(pane.get_by_role("list", name="Files to send")).to_contain_text("label.png")
    await pane.get_by_test_id("reply-box").fill("Sorry about that! A new one ships today.")
    await pane.get_by_test_id("reply-box").press("Enter")

    # The visitor sees the reply, types (the agent sees it), answers, and sees "Seen by".
    await expect(message(visitor, "A new one ships today")).to_be_visible(timeout=LIVE)
    await expect(message(visitor, "A new one ships today").locator("img")).to_have_count(1)
    await visitor.get_by_test_id("composer").fill("Thanks")
    await expect(pane.get_by_test_id("typing")).to_contain_text(
        "Vera Visitor is typing", timeout=LIVE
    )
    await send(visitor, "Thanks, that was quick!")
    await expect(pane.get_by_test_id("message").filter(has_text="that was quick")).to_be_visible(
        timeout=LIVE
    )
    await expect(visitor.get_by_test_id("receipt")).to_contain_text("Seen by", timeout=LIVE)
    await pane.get_by_test_id("reply-box").fill("One more thing")

    await inbox.get_by_test_id("view-mine").click()
    await expect(inbox.get_by_test_id("inbox-item")).to_have_count(1, timeout=LIVE)
    assert await axe_violations(inbox, axe_source) == []
    await inbox.screenshot(path=screenshot_path("dashboard-inbox.png"))
    await pane.get_by_test_id("reply-box").fill("")
    # Keyboard: e closes it; it moves to the closed view.
    await pane.get_by_role("heading", name="Vera Visitor").focus()
    await inbox.keyboard.press("e")
    await expect(inbox.get_by_test_id("count-closed")).to_have_text("1", timeout=LIVE)
    phone = await signed_in(shop, workspace_id, agent.email, PHONE)
    await phone.get_by_test_id("view-closed").click()
    await phone.get_by_test_id("inbox-item").filter(has_text="Vera Visitor").click()
    await expect(phone.get_by_test_id("note")).to_be_visible(timeout=LIVE)
    assert await axe_violations(phone, axe_source) == []
    await phone.screenshot(path=screenshot_path("dashboard-conversation-phone.png"), full_page=True)

    # The reports, from the read models: one conversation, its messages, the times.
    await inbox.goto(f"{shop.stack.gateway}/dashboard/#/reports")
    await expect(inbox.get_by_role("heading", name="Reports")).to_be_visible(timeout=LIVE)
    conversations = inbox.locator(".kpi").filter(has_text="Conversations")
    await expect(conversations.locator(".kpi-value")).to_have_text("1", timeout=LIVE)
    await expect(inbox.locator("figure.chart-card")).to_have_count(4)
    assert await axe_violations(inbox, axe_source) == []
    await inbox.screenshot(path=screenshot_path("dashboard-reports.png"), full_page=True)

    # The note never reached the visitor: not in a frame, not in a response body.
    await asyncio.gather(*shop_tasks)
    assert frames and bodies
    assert not [f for f in frames if "VIP customer" in f]
    assert not [b for b in bodies if "VIP customer" in b]
    # The reply reached the visitor (by socket or by the widget's REST refresh: after
    # "Send us a message" the widget on main does not yet join the conversation channel).
    assert any("A new one ships today" in f for f in frames + bodies)

    # The tenant's backend renames the visitor: the agent's inbox shows the new name live,
    # without a reload (an inbox.profile frame, then the list read with its seq).
    joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_frame(payload: Any) -> None:
        text = str(payload)
        if "subscription_succeeded" in text and "private-inbox" in text and not joined.done():
            joined.set_result(None)

    inbox.on("websocket", lambda ws: ws.on("framereceived", on_frame))
    await inbox.goto(f"{shop.stack.gateway}/dashboard/#/inbox")
    await asyncio.wait_for(joined, LIVE / 1000)
    await inbox.get_by_test_id("view-closed").click()
    closed = inbox.get_by_test_id("inbox-item")
    await expect(closed.filter(has_text="Vera Visitor")).to_have_count(1, timeout=LIVE)
    status, page = await shop.tenant.get("/api/v1/support/conversations", params={"view": "closed"})
    assert status == 200 and len(page["data"]) == 1, page
    # The list is read again because of the frame: with its seq as users_min_seq.
    async with inbox.expect_request(lambda r: "users_min_seq=" in r.url, timeout=LIVE):
        status, body = await shop.tenant.call(
            "PATCH", f"/api/v1/users/{page['data'][0]['visitor_id']}", {"name": "Vera Renamed"}
        )
        assert status == 200, body
    await expect(closed.filter(has_text="Vera Renamed")).to_have_count(1, timeout=LIVE)
    await expect(closed.filter(has_text="Vera Visitor")).to_have_count(0)

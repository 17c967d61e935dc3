"""Issue 19 in Chromium: an anonymous visitor on a page of another origin writes to the team.

The tenant enables support (greeting, team, pre-chat email, anonymous visitors from its
site's origin); the page embeds the widget with the public app key only. The visitor
sees the team card with "typically replies in …", opens the form by keyboard, is asked
for the email the workspace requires, and starts the conversation; an agent (tenant API)
finds it in the inbox, writes an internal note and replies; the reply reaches the page
live and the note never does. axe-core finds nothing serious at desktop and phone sizes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from tests.browser.conftest import PHONE, Shop, axe_violations, screenshot_path
from tests.browser.test_widget import LIVE, live, message
from tests.client import Api, new_workspace
from tests.stack import RunningStack

NOTE = "Internal: offer the 10% voucher"


@pytest.fixture
async def support_shop(
    stack: RunningStack, browser: Any, http: aiohttp.ClientSession, host_site: str
) -> AsyncIterator[tuple[Shop, dict[str, Any]]]:
    admin = Api(http, stack.gateway, stack.admin_headers)
    workspace = await new_workspace(admin, "Example Outfitters")
    shop = Shop(stack, http, admin.as_(**{"X-API-Key": workspace["api_key"]}))
    shop.browser, shop.host = browser, host_site
    yield shop, workspace
    for context in shop.contexts:
        await context.close()
    assert not shop.foreign, f"requests outside the platform: {shop.foreign}"
    assert not shop.errors, "\n".join(shop.errors)


async def test_a_visitor_of_another_site_writes_to_the_team(
    support_shop: tuple[Shop, dict[str, Any]], axe_source: str
) -> None:
    shop, workspace = support_shop
    tenant = shop.tenant
    agent = await shop.person("Ann from Example Outfitters")
    status, body = await tenant.call(
        "PUT",
        "/api/v1/support/settings",
        {
            "enabled": True,
            "greeting": "Hi there! Questions about sizes or delivery? Ask away.",
            "team_name": "Example Outfitters",
            "reply_time": "minutes",
            "prechat_email": "required",
            "allow_anonymous": True,
            "allowed_origins": [shop.host],
        },
    )
    assert status == 200, body
    status, body = await tenant.call(
        "PUT", f"/api/v1/support/agents/{agent.id}/availability", {"status": "online"}
    )
    assert status == 200, body

    page = await shop.widget(None, attributes={"app-key": workspace["app_key"]}, label="visitor")
    await live(page)
    await page.get_by_test_id("launcher").click()
    card = page.get_by_test_id("support-card")
    await expect(card).to_contain_text("Example Outfitters", timeout=LIVE)
    await expect(page.get_by_test_id("reply-time")).to_have_text(
        "The team typically replies in a few minutes"
    )
    assert not await axe_violations(page, axe_source)
    await page.screenshot(path=screenshot_path("widget-support-desktop.png"))

    # By keyboard: the button, then the form (email first: the workspace requires it).
    start = page.get_by_test_id("support-start")
    await start.focus()
    await page.keyboard.press("Enter")
    email = page.get_by_label("Your email")
    await expect(email).to_be_focused()
    await page.get_by_test_id("support-message").fill("Does the jacket come in XL?")
    await page.get_by_test_id("support-send").click()
    await expect(page.get_by_role("alert")).to_have_text("Please fill in the required fields.")
    await expect(email).to_have_attribute("aria-invalid", "true")
    await expect(email).to_be_focused()
    await page.set_viewport_size(PHONE)
    violations = await axe_violations(page, axe_source)
    assert not violations, "\n".join(violations)
    await page.screenshot(path=screenshot_path("widget-support-form-phone.png"))
    await email.fill("vera@example.com")
    await page.get_by_test_id("support-message").press("Control+Enter")
    await expect(message(page, "Does the jacket come in XL?")).to_be_visible(timeout=LIVE)

    # The agent finds it in the inbox, notes, and replies.
    status, inbox = await tenant.get("/api/v1/support/conversations", params={"view": "all"})
    assert status == 200 and len(inbox["data"]) == 1, inbox
    found = inbox["data"][0]
    cid = found["id"]
    status, visitor = await tenant.get(f"/api/v1/users/{found['visitor_id']}")
    assert visitor["email"] == "vera@example.com", visitor
    base = f"/api/v1/support/conversations/{cid}"
    status, _ = await tenant.post(base + "/notes", {"author_id": agent.id, "content": NOTE})
    assert status == 201
    status, _ = await tenant.post(
        base + "/replies", {"author_id": agent.id, "content": "Yes! XL is in stock."}
    )
    assert status == 201
    await expect(message(page, "Yes! XL is in stock.")).to_be_visible(timeout=LIVE)
    shown = await page.evaluate(
        "() => document.querySelector('.confab-widget').shadowRoot.textContent"
    )
    assert NOTE not in shown
    violations = await axe_violations(page, axe_source)
    assert not violations, "\n".join(violations)

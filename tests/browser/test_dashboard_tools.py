"""The dashboard's tools of issue 23 in Debian's Chromium: automatic-moderation rules
(added by keyboard, a refused pattern shown at its field, edited, removed, the dry run;
read-only for a moderator, absent for an agent), and a conversation's moderation,
pins, threads and @-mentions; phone and desktop, axe-core clean, every outcome checked
through the API too."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import expect

from tests.browser.conftest import DESKTOP, PHONE, Shop, axe_violations, screenshot_path
from tests.browser.test_dashboard import signed_in
from tests.browser.test_widget import LIVE
from tests.staff import Member, Team, make_owner


@pytest.fixture
async def teams(shop: Shop) -> AsyncIterator[list[Team]]:
    """The teams a test made; their cookie jars are closed after it."""
    made: list[Team] = []
    yield made
    for team in made:
        await team.close()


async def team_of(shop: Shop, teams: list[Team], *roles: str) -> tuple[str, str, dict[str, Member]]:
    """The shop's workspace id, its owner's email and a signed-in member of each role."""
    probe = await shop.person("Probe")
    status, widget_me = await probe.api.get("/api/widget/me")
    assert status == 200, widget_me
    workspace_id = widget_me["workspace_id"]
    team = Team(shop.stack, {"id": workspace_id}, shop.tenant)
    teams.append(team)
    owner_email = f"owner.{uuid.uuid4().hex[:6]}@example.com"
    await make_owner(shop.stack, workspace_id, owner_email)
    status, body, owner = await team.sign_in(owner_email)
    assert status == 200, body
    members = {"owner": owner}
    for role in roles:
        members[role] = await team.invite_and_accept(owner, role, f"{role.title()} Person")
    return workspace_id, owner_email, members


async def test_rules_of_automatic_moderation_are_managed_from_the_dashboard(
    shop: Shop, teams: list[Team], axe_source: str
) -> None:
    workspace_id, owner_email, team = await team_of(shop, teams, "moderator", "agent")
    page = await signed_in(shop, workspace_id, owner_email, DESKTOP)
    nav = page.get_by_role("navigation", name="Dashboard")
    await nav.get_by_role("link", name="Automatic moderation").click()
    await expect(page.get_by_role("heading", name="Automatic moderation")).to_be_visible(
        timeout=LIVE
    )
    await expect(page.get_by_text("No rules yet")).to_be_visible(timeout=LIVE)

    # Keyboard only: a word list that masks.
    await page.get_by_role("button", name="Add a rule").focus()
    await page.keyboard.press("Enter")
    name = page.get_by_label("Name")
    await expect(name).to_be_focused()
    await page.keyboard.type("swearing")
    await page.keyboard.press("Tab")  # what to look for: a word list already
    await expect(page.get_by_label("What to look for")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("Words")).to_be_focused()
    await page.keyboard.type("darn\nheck")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("radio", name="Block")).to_be_focused()
    await page.keyboard.press("ArrowDown")
    await expect(page.get_by_role("radio", name="Mask")).to_be_checked()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Add rule")).to_be_focused()
    await page.keyboard.press("Enter")
    rule = page.get_by_test_id("rule").filter(has_text="swearing")
    await expect(rule).to_contain_text("darn, heck", timeout=LIVE)
    await expect(rule).to_contain_text("Mask")
    await expect(page.get_by_role("button", name="Add a rule")).to_be_focused()

    # A pattern RE2 refuses: the API's reason next to the pattern, nothing saved.
    await page.get_by_role("button", name="Add a rule").click()
    await page.get_by_label("Name").fill("money")
    await page.get_by_label("What to look for").select_option("regex")
    await page.get_by_label("Pattern").fill(r"(free)\s+\1")  # a back-reference
    await page.get_by_role("radio", name="Flag").check()
    await page.get_by_role("button", name="Add rule").click()
    pattern_error = page.locator("#rule-pattern-error")
    await expect(pattern_error).to_be_visible(timeout=LIVE)
    await expect(pattern_error).to_contain_text("RE2")
    await expect(page.get_by_label("Pattern")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Pattern")).to_be_focused()
    assert await axe_violations(page, axe_source) == []
    await page.get_by_label("Pattern").fill(r"(?i)\bfree\s+money\b")
    await page.get_by_role("button", name="Add rule").click()
    await expect(page.get_by_test_id("rule")).to_have_count(2, timeout=LIVE)

    # A detector; then the word list edited to flag, the pattern removed, a dry run.
    await page.get_by_role("button", name="Add a rule").click()
    await page.get_by_label("Name").fill("no-phones")
    await page.get_by_label("What to look for").select_option("phone")
    await expect(page.get_by_label("Words")).to_be_hidden()
    await page.get_by_role("button", name="Add rule").click()
    await expect(page.get_by_test_id("rule")).to_have_count(3, timeout=LIVE)
    await page.get_by_role("button", name="Edit swearing").click()
    await page.get_by_role("radio", name="Flag").check()
    await page.get_by_role("button", name="Save rule").click()
    await expect(rule).to_contain_text("Flag", timeout=LIVE)
    await page.get_by_role("button", name="Remove money").click()
    await page.get_by_role("dialog").get_by_role("button", name="Remove").click()
    await expect(page.get_by_test_id("rule")).to_have_count(2, timeout=LIVE)
    await page.get_by_label("Dry run").focus()
    await page.keyboard.press("Space")
    await expect(page.get_by_label("Dry run")).to_be_checked(timeout=LIVE)
    await expect(page.get_by_label("Dry run")).to_be_enabled(timeout=LIVE)
    assert await axe_violations(page, axe_source) == []
    await page.screenshot(path=screenshot_path("dashboard-automod.png"), full_page=True)

    # What the API has: exactly the rules the page shows.
    status, saved = await shop.tenant.get("/api/v1/moderation/automod")
    assert status == 200, saved
    assert saved["dry_run"] is True
    assert [(r["id"], r["kind"], r["action"], r["words"]) for r in saved["rules"]] == [
        ("swearing", "word", "flag", ["darn", "heck"]),
        ("no-phones", "phone", "block", []),
    ]

    # A moderator reads the rules (on a phone) but gets no controls, and the API says no.
    moderator = await signed_in(shop, workspace_id, team["moderator"].email, PHONE)
    await moderator.get_by_role("link", name="Automatic moderation").click()
    await expect(moderator.get_by_test_id("rule")).to_have_count(2, timeout=LIVE)
    await expect(moderator.get_by_test_id("read-only")).to_be_visible()
    await expect(moderator.get_by_role("button", name="Add a rule")).to_have_count(0)
    await expect(moderator.get_by_role("button", name="Edit swearing")).to_have_count(0)
    await expect(moderator.get_by_label("Dry run")).to_be_disabled()
    assert await axe_violations(moderator, axe_source) == []
    status, refused = await team["moderator"].call(
        "PUT", "/api/v1/moderation/automod", {"rules": [], "dry_run": False}
    )
    assert status == 403, refused

    # An agent: no menu item; the page and the API both refuse.
    agent = await signed_in(shop, workspace_id, team["agent"].email, DESKTOP)
    await expect(agent.get_by_role("link", name="Automatic moderation")).to_have_count(0)
    await agent.goto(f"{shop.stack.gateway}/dashboard/#/automod")
    await expect(agent.get_by_role("heading", name="You do not have access")).to_be_visible(
        timeout=LIVE
    )
    status = await agent.evaluate("fetch('/api/v1/moderation/automod').then(r => r.status)")
    assert status == 403
    status, still = await shop.tenant.get("/api/v1/moderation/automod")
    assert len(still["rules"]) == 2

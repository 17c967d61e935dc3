"""Issue 23: search in the widget, as a visitor uses it: from the conversation list, and
inside a conversation, each hit jumping to the message in context (older pages loaded
until it is there), with the snippet's marks drawn as elements, never parsed markup; and
a frozen conversation's refusal said in the visitor's words."""

from __future__ import annotations

import uuid

from playwright.async_api import expect

from tests.browser.conftest import Shop
from tests.browser.test_widget import LIVE, live, message, send
from tests.browser.test_widget_fixes import people, post


def word() -> str:
    return "zq" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:8])


async def test_search_finds_and_jumps_to_a_message_in_context(shop: Shop) -> None:
    ann, bob, cat = await people(shop, "Ann", "Bob", "Cat")
    with_bob = await shop.conversation(ann, bob)
    with_cat = await shop.conversation(ann, cat)
    term = word()
    # The hit is old: many messages come after it, so it is not on the first page.
    old = await post(bob, with_bob, f"The {term} is <b>blue</b> & ready")
    for i in range(45):
        await post(bob if i % 2 else ann, with_bob, f"filler {i}")
    await post(cat, with_cat, f"Is the {term} still there?")

    page = await shop.widget(ann, open_=True)
    await live(page)
    box = page.get_by_test_id("search")
    await box.fill(term[:6])
    hits = page.get_by_test_id("search-hit")
    await expect(hits).to_have_count(2, timeout=LIVE)
    await expect(page.locator(".cw-list")).to_be_hidden()
    hit = hits.filter(has_text="blue")
    await expect(hit.locator("mark")).to_have_text(term)
    # Text, never markup: no <b> element (PostgreSQL's headline drops tag-like words from
    # snippets; the message itself shows them as typed), the & as typed.
    await expect(hit.locator(".cw-search-snippet")).to_contain_text("blue & ready")
    assert await hit.locator("b").count() == 0
    await expect(hit.locator(".cw-search-title")).to_have_text("Bob")

    await hit.click()
    found = page.locator(f'[data-testid="message"][data-id="{old["id"]}"]')
    await expect(found).to_be_visible(timeout=LIVE)
    await expect(found).to_have_class("cw-msg cw-theirs cw-found")
    await expect(found).to_be_focused()
    await expect(message(page, "filler 44")).to_have_count(1)

    # Inside the conversation: only its messages.
    inside = page.get_by_test_id("search-conversation")
    await inside.fill(term)
    await expect(hits).to_have_count(1, timeout=LIVE)
    await expect(hits.first).to_contain_text("blue")
    await inside.fill("nothingmatchesthis")
    await expect(page.get_by_test_id("search-results")).to_contain_text("No messages found")
    await inside.press("Escape")
    await expect(page.get_by_test_id("search-results")).to_be_hidden()
    await expect(page.locator(".cw-thread")).to_be_visible()

    # Frozen by the tenant: a send fails with the reason in the visitor's words.
    status, _ = await shop.tenant.post(f"/api/v1/conversations/{with_bob}/freeze")
    assert status == 204
    await send(page, "Are you still there?")
    await expect(page.locator(".cw-msg-status.cw-error")).to_contain_text(
        "This conversation is closed", timeout=LIVE
    )
    assert not shop.errors, shop.errors

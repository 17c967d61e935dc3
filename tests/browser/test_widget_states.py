"""The widget's states, each one page load, at 1280x800 and 390x844: axe-core finds no
serious or critical violation (the host page included: one banner, one main), and each is
photographed for docs/screenshots/ (linked from the README)."""

from __future__ import annotations

from typing import Any

import aiohttp
from playwright.async_api import expect

from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    Person,
    Shop,
    axe_violations,
    png_bytes,
    screenshot_path,
)
from tests.browser.test_widget import LIVE, live, message

SIZES = {"desktop": DESKTOP, "phone": PHONE}


async def check(page: Any, axe_source: str, state: str) -> None:
    """axe-core and a screenshot at both sizes; the page is left at desktop size."""
    for size, viewport in SIZES.items():
        await page.set_viewport_size(viewport)
        await page.evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
        violations = await axe_violations(page, axe_source)
        assert not violations, f"{state} at {size}:\n" + "\n".join(violations)
        await page.screenshot(path=screenshot_path(f"widget-{state}-{size}.png"))
    await page.set_viewport_size(DESKTOP)


async def conversation_with_history(shop: Shop) -> tuple[Person, Person, str]:
    ann = await shop.person("Ann from Example Outfitters")
    bob = await shop.person("Bob Lee")
    cid = await shop.conversation(ann, bob)
    base = f"/api/widget/conversations/{cid}"
    script = [
        (bob, "Hi! Is the waterproof jacket still available in size M?"),
        (ann, "Hello Bob! Yes, we have two left in blue and one in black."),
        (ann, "The size guide is at https://example.com/size-guide if you want to check."),
        (bob, "Great. Does it have a hood?"),
        (ann, "It does, and it folds into the collar. Here is a photo:"),
    ]
    last: dict[str, Any] = {}
    for person, text in script:
        status, last = await person.api.post(base + "/messages", {"content": text})
        assert status == 201, last
    form = aiohttp.FormData()
    form.add_field(
        "file", png_bytes((640, 420), (14, 116, 144)), filename="blue.png", content_type="image/png"
    )
    status, upload = await ann.api.call("POST", base + "/attachments", data=form)
    assert status == 201, upload
    status, sent = await ann.api.post(
        base + "/messages", {"content": "Blue, size M", "attachment_ids": [upload["id"]]}
    )
    assert status == 201, sent
    await bob.api.post(base + f"/messages/{last['id']}/reactions", {"emoji": "👍"})
    await ann.api.post(base + "/messages", {"content": "Want me to reserve one for you?"})
    return ann, bob, cid


async def test_the_widget_states_pass_axe_at_both_sizes(shop: Shop, axe_source: str) -> None:
    _, bob, _ = await conversation_with_history(shop)
    page = await shop.widget(bob, label="states")
    await live(page)
    await page.get_by_test_id("launcher").click()
    row = page.get_by_test_id("conversation")
    await expect(row).to_be_focused(timeout=LIVE)  # once the list has loaded
    # The row's name is what it shows (no label-content-name-mismatch).
    name = await row.evaluate("el => el.textContent")
    assert "Ann from Example Outfitters" in name and "Want me to reserve" in name
    assert await page.get_by_role("banner").count() == 1
    await check(page, axe_source, "list")

    await row.click()
    await expect(message(page, "reserve one")).to_be_visible(timeout=LIVE)
    await page.get_by_test_id("composer").fill("Yes please, the blue one!")
    await check(page, axe_source, "thread")

    target = message(page, "reserve one")
    await target.hover()
    await target.get_by_test_id("more").click()
    await page.get_by_test_id("menu-react").click()
    await expect(page.get_by_test_id("emoji-picker")).to_be_visible()
    await check(page, axe_source, "picker")
    await page.keyboard.press("Escape")

    await message(page, "Blue, size M").get_by_role("button", name="Open image blue.png").click()
    lightbox = page.get_by_test_id("lightbox")
    await expect(lightbox.get_by_role("status")).to_be_hidden(timeout=LIVE)  # the full image
    await check(page, axe_source, "lightbox")


async def test_the_error_and_empty_states_pass_axe_at_both_sizes(
    shop: Shop, axe_source: str
) -> None:
    ended = await shop.widget(None, token="st_not_a_session", open_=True, label="ended")
    await expect(ended.get_by_test_id("session-ended")).to_be_visible(timeout=LIVE)
    await check(ended, axe_source, "error")

    empty = await shop.widget(await shop.person("Carol"), label="empty")
    await live(empty)
    await empty.get_by_test_id("launcher").click()
    await expect(empty.get_by_test_id("no-conversations")).to_be_visible()
    await check(empty, axe_source, "empty")

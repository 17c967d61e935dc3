"""The public demo page: create a room, share its link, chat between tabs."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import expect

from tests.browser.conftest import PHONE, Shop, screenshot_path
from tests.browser.test_widget import LIVE, live, message, send


def watch_policy(page: Any, violations: list[str]) -> None:
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )


async def test_a_room_link_lets_each_tab_in_as_its_own_guest(shop: Shop) -> None:
    violations: list[str] = []
    creator = await shop.page(f"{shop.stack.gateway}/demo", label="creator")
    watch_policy(creator, violations)
    await expect(creator.get_by_role("heading", name="Try a chat room")).to_be_visible()
    await creator.get_by_test_id("create-room").click()
    link = creator.get_by_test_id("room-link")
    await expect(link).to_have_text(re.compile(r"/demo#room=conv_\w+\.[\w-]+$"), timeout=LIVE)
    url = await link.get_attribute("href")
    assert url is not None and url == await link.inner_text()
    await live(creator)

    guest = await shop.page(url, label="guest")
    watch_policy(guest, violations)
    await live(guest)
    # A second tab of the same browser is another guest again.
    tab = await guest.context.new_page()
    shop.watch(tab, "second tab")
    await tab.goto(url)
    await live(tab)
    names = [await page.locator("#you").inner_text() for page in (creator, guest, tab)]
    assert all(n.startswith("You are ") for n in names) and len(set(names)) == 3, names

    await send(creator, "Anyone here?")
    for page in (guest, tab):
        await expect(message(page, "Anyone here?")).to_have_count(1, timeout=LIVE)
    await send(guest, "Hello from the other tab!")
    await expect(message(creator, "Hello from the other tab!")).to_have_count(1, timeout=LIVE)

    # A reload is the same guest, with the history.
    await guest.reload()
    await expect(guest.locator("#you")).to_have_text(names[1])
    await expect(message(guest, "Anyone here?")).to_have_count(1, timeout=LIVE)
    await live(guest)

    await expect(creator.get_by_test_id("receipt")).to_contain_text("Seen by", timeout=LIVE)
    await creator.get_by_test_id("composer").fill("Let's plan the trip")
    await creator.screenshot(path=screenshot_path("demo-desktop.png"))
    phone = await shop.page(url, viewport=PHONE, label="phone")
    watch_policy(phone, violations)
    await expect(message(phone, "Hello from the other tab!")).to_be_visible(timeout=LIVE)
    await live(phone)
    await phone.screenshot(path=screenshot_path("demo-phone.png"), full_page=True)
    assert not violations, violations


async def test_a_forged_room_link_is_refused(shop: Shop) -> None:
    page = await shop.page(f"{shop.stack.gateway}/demo#room=conv_01h0000000000000000000000a.nope")
    await expect(page.get_by_role("status").first).to_contain_text(
        "This room link is not valid", timeout=LIVE
    )
    await expect(page.get_by_test_id("create-room")).to_be_visible()
    await expect(page.get_by_test_id("composer")).to_have_count(0)


async def test_the_demo_start_page_on_a_phone(shop: Shop) -> None:
    page = await shop.page(f"{shop.stack.gateway}/demo", viewport=PHONE, label="phone start")
    button = page.get_by_test_id("create-room")
    await expect(button).to_be_visible()
    box = await button.bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"]
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

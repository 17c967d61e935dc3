"""Whatever people type or name their files, the widget shows it as text: no markup, no script."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import expect

from tests.browser.conftest import Shop, png_bytes
from tests.browser.test_widget import LIVE, eventually, live, message, send

PAYLOADS = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=2</script>",
    '"><svg onload="window.__xss=3"></svg>',
    '<a href="javascript:window.__xss=4">click me</a>',
]


async def assert_inert(page: Any, gateway: str) -> None:
    assert await page.evaluate("window.__xss") is None
    # Playwright's CSS engine looks inside the widget's (open) shadow root too.
    for selector in ("img[src=x]", "svg[onload]", "a[href^=javascript]", "[onerror]"):
        assert await page.locator(selector).count() == 0, selector
    # Scripts: the widget's tag on the host page and the pusher-js it loads, nothing else.
    sources = await page.locator("script").evaluate_all("els => els.map(e => e.src)")
    assert all(src.startswith(gateway + "/widget/v1/") for src in sources), sources


async def test_message_content_and_names_render_as_text(shop: Shop) -> None:
    evil = await shop.person('<img src=x onerror="window.__xss=5">Mallory')
    bob = await shop.person("Bob")
    cid = await shop.conversation(evil, bob)
    for text in PAYLOADS:
        status, body = await evil.api.post(
            f"/api/widget/conversations/{cid}/messages", {"content": text}
        )
        assert status == 201, body

    b = await shop.widget(bob, label="Bob")
    await live(b)
    await b.get_by_test_id("launcher").click()
    row = b.get_by_test_id("conversation")
    await expect(row).to_contain_text('<img src=x onerror="window.__xss=5">Mallory')
    await expect(row).to_contain_text(PAYLOADS[-1])
    await row.click()
    for text in PAYLOADS:
        await expect(message(b, text).locator(".cw-text")).to_have_text(text)
    await expect(b.get_by_role("heading", level=2)).to_have_text(
        '<img src=x onerror="window.__xss=5">Mallory'
    )

    # Live, too: what arrives over the socket is rendered the same way.
    a = await shop.widget(evil, conversation_id=cid, open_=True, label="Mallory")
    await live(a)
    live_payload = "<img src=y onerror=window.__xss=6><b>bold?</b>"
    await send(a, live_payload)
    await expect(message(b, "bold?").locator(".cw-text")).to_have_text(live_payload, timeout=LIVE)
    for page in (a, b):
        await assert_inert(page, shop.stack.gateway)


async def test_file_names_render_as_text(shop: Shop) -> None:
    evil = await shop.person("Mallory")
    bob = await shop.person("Bob")
    cid = await shop.conversation(evil, bob)
    a = await shop.widget(evil, conversation_id=cid, open_=True, label="Mallory")
    b = await shop.widget(bob, conversation_id=cid, open_=True, label="Bob")
    await live(a)
    await live(b)
    # As typed: the chips before upload show these exactly. Media then replaces characters
    # that file systems reserve (`<>:"|?*`) in the name it keeps; the second name, entities
    # and quotes, comes back unchanged (and HTML parsing would turn `&lt;` into `<`).
    image_name = "<img src=x onerror=window.__xss=7>.png"
    text_name = "<script>window.__xss=8<script> x' onmouseover='window.__xss=9' &amp;.txt"
    await a.get_by_test_id("file-input").set_input_files(
        files=[
            {"name": image_name, "mimeType": "image/png", "buffer": png_bytes((60, 40))},
            {"name": text_name, "mimeType": "text/plain", "buffer": b"just words\n"},
        ]
    )
    uploads = a.get_by_test_id("upload")
    await expect(uploads).to_have_count(2)
    await expect(uploads.nth(0).locator(".cw-upload-name")).to_have_text(image_name)
    await expect(uploads.nth(1).locator(".cw-upload-name")).to_have_text(text_name)
    await assert_inert(a, shop.stack.gateway)
    for n in range(2):  # uploaded: no state left to show (uploading, or why it failed)
        await expect(uploads.nth(n).locator(".cw-upload-state")).to_have_count(0, timeout=LIVE)
    await a.get_by_test_id("composer").fill("two files")
    await a.get_by_test_id("send").click()
    await expect(message(a, "two files")).not_to_have_attribute("data-state", re.compile("."))

    stored: dict[str, str] = {}

    async def names_stored() -> bool:
        _, page = await bob.api.get(f"/api/widget/conversations/{cid}/messages")
        for m in page["data"]:
            for f in m["attachments"]:
                stored[f["content_type"].split("/")[0]] = f["filename"]
        return len(stored) == 2

    await eventually(names_stored)
    assert stored["image"].endswith(".png") and "onerror=window.__xss=7" in stored["image"]
    assert stored["text"] == text_name.replace("<", "_").replace(">", "_")
    for page in (a, b):
        sent = message(page, "two files")
        await expect(sent).to_have_count(1, timeout=LIVE)
        await expect(sent.locator("img.cw-thumb-image")).to_have_attribute("alt", stored["image"])
        await expect(sent.locator(".cw-file-link")).to_have_text(
            re.compile("^" + re.escape(stored["text"]) + " · ")
        )
    await (
        message(b, "two files").get_by_role("button", name=f"Open image {stored['image']}").click()
    )
    await expect(b.get_by_test_id("lightbox").locator("figcaption")).to_have_text(stored["image"])
    for page in (a, b):
        await assert_inert(page, shop.stack.gateway)

"""Issue 23 in the widget, as visitors use it: "@" suggests participants (keyboard only),
the mention is sent as an entity and drawn from it; a thread opens from a message and
takes replies that reach the other side live; a pin shows on the other side; a link's
preview card arrives by itself.
One page per person, a phone viewport for one of them, axe-core on the open views.

The link is to a page this test serves on loopback: the test stack runs media with the
test-only loopback allowance (tests/stack.py).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from PIL import Image
from playwright.async_api import expect

from confab_infra.backends import free_port
from tests.browser.conftest import PHONE, Shop, axe_violations
from tests.browser.test_widget import LIVE, live, message
from tests.browser.test_widget_fixes import people, post
from tests.waiting import until

CARD = """<html><head><meta property="og:title" content="Trail boots, size 44">
<meta property="og:description" content="Waterproof, light, in stock">
<meta property="og:site_name" content="Example Outfitters">
<meta property="og:image" content="/boots.png"></head><body></body></html>"""


@pytest.fixture
async def card_site() -> AsyncIterator[str]:
    picture = io.BytesIO()
    Image.new("RGB", (60, 40), (20, 90, 160)).save(picture, "PNG")
    pages = {
        "/boots": (CARD.encode(), "text/html"),
        "/boots.png": (picture.getvalue(), "image/png"),
    }

    async def handle(request: web.Request) -> web.Response:
        body, kind = pages[request.path]
        return web.Response(body=body, content_type=kind)

    app = web.Application()
    for path in pages:
        app.router.add_get(path, handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_mentions_threads_and_link_previews_in_the_widget(
    shop: Shop, axe_source: str, card_site: str
) -> None:
    ann, bob, cat = await people(shop, "Ann", "Bob", "Catherine")
    cid = await shop.conversation(ann, bob, cat, kind="group", title="Boots")
    parent = await post(ann, cid, "Which size should I order?")
    a = await shop.widget(ann, conversation_id=cid, open_=True, label="Ann")
    b = await shop.widget(bob, conversation_id=cid, open_=True, viewport=PHONE, label="Bob")
    await live(a)
    await live(b)

    # -- mentions: "@Ca" suggests Catherine; the keyboard picks her; it goes as an entity.
    composer = b.get_by_test_id("composer")
    await composer.click()
    await composer.press_sequentially("Ask @Ca")
    options = b.get_by_test_id("mention-option")
    await expect(options).to_have_count(1, timeout=LIVE)
    await expect(options.first).to_have_text("Catherine")
    await expect(options.first).to_have_attribute("aria-selected", "true")
    assert await composer.get_attribute(
        "aria-activedescendant"
    ) == await options.first.get_attribute("id")
    assert await composer.get_attribute("aria-autocomplete") == "list"
    assert not await axe_violations(b, axe_source)
    await composer.press("Enter")  # chooses; does not send
    await expect(b.get_by_test_id("mention-list")).to_be_hidden()
    await expect(composer).to_have_value("Ask @Catherine ")
    await composer.press_sequentially("about it")
    await composer.press("Enter")  # sends
    sent = message(a, "Ask @Catherine about it")
    await expect(sent).to_be_visible(timeout=LIVE)
    mention = sent.get_by_test_id("mention")
    await expect(mention).to_have_text("@Catherine")
    _, history = await ann.api.get(f"/api/widget/conversations/{cid}/messages")
    (stored,) = [m for m in history["data"] if m["content"] == "Ask @Catherine about it"]
    assert stored["mentions"] == [{"user_id": cat.id, "start": 4, "end": 14}]

    # -- a thread: Bob opens it from Ann's message, replies; Ann sees the count and the reply.
    question = message(b, "Which size should I order?")
    await question.click()
    await question.get_by_test_id("more").click()
    await b.get_by_test_id("menu-thread").click()
    view = b.get_by_test_id("thread-view")
    await expect(view).to_be_visible()
    await expect(view.get_by_test_id("thread-parent")).to_contain_text("Which size")
    reply = view.get_by_test_id("reply-composer")
    await reply.fill("Size 44, like the last pair")
    await reply.press("Enter")
    await expect(view.get_by_test_id("reply").filter(has_text="Size 44")).to_have_count(
        1, timeout=LIVE
    )
    button = message(a, "Which size should I order?").get_by_test_id("thread-button")
    await expect(button).to_have_text("1 reply", timeout=LIVE)
    # The reply is not in the main timeline.
    await expect(message(a, "Size 44")).to_have_count(0)
    await button.click()
    a_view = a.get_by_test_id("thread-view")
    await expect(a_view.get_by_test_id("reply").filter(has_text="Size 44")).to_be_visible()
    assert not await axe_violations(a, axe_source)
    # A live reply from Ann reaches Bob's open thread.
    await post(ann, cid, "Thanks!", parent_id=parent["id"])
    await expect(view.get_by_test_id("reply").filter(has_text="Thanks!")).to_be_visible(
        timeout=LIVE
    )
    await expect(view.get_by_test_id("reply")).to_have_count(2)
    # Escape closes it and gives the focus back.
    await b.keyboard.press("Escape")
    await expect(view).to_be_hidden()
    await a_view.get_by_test_id("thread-close").click()
    await expect(a_view).to_be_hidden()

    # -- a pin: Bob pins the question from its menu; Ann sees it pinned, live.
    question = message(b, "Which size should I order?")
    await question.click()
    await question.get_by_test_id("more").click()
    await b.get_by_test_id("menu-pin").click()
    await expect(message(a, "Which size should I order?").get_by_test_id("pinned")).to_be_visible(
        timeout=LIVE
    )

    # The live frame can come before the read model Ann's REST call reads (the pin's own
    # call waits for it, bounded): asked until it has it.
    async def pinned() -> list[str]:
        _, pins = await ann.api.get(f"/api/widget/conversations/{cid}/pins")
        return [m["id"] for m in pins["data"]]

    assert await until(pinned, "the pin in Ann's pinned list", 15) == [parent["id"]]

    # -- a link preview card arrives by itself, image included, on both sides. Bob's first
    # ask for the image's URLs is answered 404, as when media's read model is behind the
    # message that shows the image (under load, longer than media waits): his widget asks
    # again and shows it.
    refused: list[str] = []

    async def first_ask_refused(route: Any) -> None:
        if refused:
            await route.continue_()
            return
        refused.append(route.request.url)
        body = {"error": {"code": "not_found", "message": "No such attachment."}}
        await route.fulfill(status=404, content_type="application/json", body=json.dumps(body))

    await b.route("**/api/widget/attachments/*", first_ask_refused)
    await post(ann, cid, f"These: {card_site}/boots")
    for page in (a, b):
        card = message(page, "These:").get_by_test_id("link-preview")
        await expect(card).to_be_visible(timeout=LIVE)
        await expect(card).to_contain_text("Trail boots, size 44")
        await expect(card).to_have_attribute("href", f"{card_site}/boots")
        await expect(card).to_have_attribute("rel", "noopener noreferrer nofollow")
        image = card.get_by_test_id("link-preview-image")
        await expect(image).to_have_attribute("src", _s3_url(shop), timeout=LIVE)
        await expect(image).to_have_js_property("complete", True, timeout=LIVE)
        assert await image.evaluate("i => i.naturalWidth") == 60  # the re-encoded image
    assert len(refused) == 1  # Bob's widget was refused once, and asked again
    assert not await axe_violations(b, axe_source)
    assert not shop.errors, shop.errors
    assert not shop.foreign, shop.foreign


def _s3_url(shop: Shop) -> Any:
    endpoint = shop.stack.info["s3_endpoint"].rstrip("/")
    return re.compile("^" + re.escape(endpoint) + "/")

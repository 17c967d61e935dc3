"""The embeddable widget in two browser contexts: two people chatting on a tenant's site."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from playwright.async_api import expect

from tests.browser.conftest import PHONE, Person, Shop, png_bytes, screenshot_path
from tests.waiting import until

LIVE = 15_000  # ms: how long a page may take to load and connect on a busy machine


async def live(page: Any) -> None:
    await expect(page.get_by_test_id("connection")).to_have_attribute(
        "data-state", "live", timeout=LIVE
    )


async def send(page: Any, text: str) -> None:
    composer = page.get_by_test_id("composer")
    await composer.fill(text)
    await page.get_by_test_id("send").click()


def message(page: Any, text: str) -> Any:
    return page.get_by_test_id("message").filter(has_text=text)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until the platform (not the page) agrees: for server-side state."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.1)


async def chat(shop: Shop, **b_options: Any) -> tuple[Person, Person, str, Any, Any]:
    """Ann (support) and Bob (a customer) in a direct conversation, each with the widget."""
    ann = await shop.person("Ann")
    bob = await shop.person("Bob")
    cid = await shop.conversation(ann, bob)
    a = await shop.widget(ann, conversation_id=cid, open_=True)
    b = await shop.widget(bob, **({"conversation_id": cid, "open_": True} | b_options))
    await live(a)
    await live(b)
    return ann, bob, cid, a, b


async def test_a_message_appears_on_the_other_side_within_a_second(shop: Shop) -> None:
    _, _, _, a, b = await chat(shop)
    await send(a, "Hello Bob!")
    await expect(message(b, "Hello Bob!")).to_have_count(1, timeout=LIVE)
    await send(b, "Hi Ann")
    await expect(message(a, "Hi Ann")).to_have_count(1, timeout=LIVE)

    for text in ("How can I help?", "Is the jacket waterproof?"):
        sender, receiver = (a, b) if text.startswith("How") else (b, a)
        started = time.monotonic()
        await send(sender, text)
        await expect(message(receiver, text)).to_have_count(1, timeout=5_000)
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"{text!r} took {elapsed:.2f} s to reach the other side"
    # The sender's optimistic copy became the stored message: no duplicate either side.
    for page in (a, b):
        await expect(page.get_by_test_id("message")).to_have_count(4)
        await expect(page.locator("[data-testid=message][data-state]")).to_have_count(0)


async def test_a_message_sent_while_the_page_loads_its_thread_and_subscribes_arrives(
    shop: Shop,
) -> None:
    """The race behind a CI failure: Bob's snapshot of the thread is read before Ann's
    message, and his channel subscribes after the fanout has sent that message live. Only
    the catch-up asked for on subscribing can bring it, and the snapshot was still loading
    then; the catch-up must be made once it has loaded."""
    ann, bob = await shop.person("Ann"), await shop.person("Bob")
    cid = await shop.conversation(ann, bob)
    channel = f"private-conversation.{cid}"
    text = "Sent while Bob's page loads"
    a_frames: list[str] = []
    b_frames: list[str] = []
    snapshot_read, release_snapshot = asyncio.Event(), asyncio.Event()
    auth_asked, release_auth = asyncio.Event(), asyncio.Event()

    async def snapshot(route: Any) -> None:
        response = await route.fetch()  # read now, before Ann's message
        snapshot_read.set()
        await release_snapshot.wait()
        await route.fulfill(response=response)

    async def channel_auth(route: Any) -> None:
        if channel in (route.request.post_data or ""):
            auth_asked.set()
            await release_auth.wait()
        await route.continue_()

    def frames_into(frames: list[str]) -> Callable[[Any], Awaitable[None]]:
        async def before(page: Any) -> None:
            page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(f)))

        return before

    async def held(page: Any) -> None:
        await frames_into(b_frames)(page)
        await page.route(f"**/api/widget/conversations/{cid}", snapshot)
        await page.route("**/api/widget/broadcasting/auth", channel_auth)

    def subscribed(frames: list[str]) -> bool:
        return any("subscription_succeeded" in f and channel in f for f in frames)

    a = await shop.widget(ann, conversation_id=cid, open_=True, before=frames_into(a_frames))
    await until(lambda: subscribed(a_frames), "Ann's page to subscribe to the conversation")
    b = await shop.widget(bob, conversation_id=cid, open_=True, before=held)
    await asyncio.wait_for(snapshot_read.wait(), LIVE / 1000)
    await asyncio.wait_for(auth_asked.wait(), LIVE / 1000)

    status, body = await ann.api.post(
        f"/api/widget/conversations/{cid}/messages", {"content": text}
    )
    assert status == 201, body
    # Sent live to the channel's sockets (Ann's) before Bob's socket is on it.
    await until(lambda: any(text in f for f in a_frames), "Ann's socket to get the message")
    release_auth.set()
    await until(lambda: subscribed(b_frames), "Bob's page to subscribe to the conversation")
    release_snapshot.set()

    await expect(message(b, text)).to_have_count(1, timeout=LIVE)
    assert not any(text in f for f in b_frames)  # it came by the catch-up, not live
    await expect(message(a, text)).to_have_count(1)


FEED_AGAIN = """async (url) => {
  const { Feed } = await import(url);
  const applied = [];
  let stored = 1; // the log, as a request finds it
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  let requests = 0;
  const feed = new Feed(async (after) => {
    const found = [];
    for (let seq = after + 1; seq <= stored; seq++) found.push({ seq, event: 'e', data: {} });
    requests += 1;
    if (requests === 1) await held; // the first answer comes late
    return { data: found, has_more: false };
  }, (_name, _data, seq) => applied.push(seq));
  feed.start(0);
  feed.catchUp(); // out: it has read the log with seq 1 only
  stored = 2; // seq 2 is stored, and the channel subscribes too late to get it live
  feed.catchUp(); // the subscription's own
  release();
  for (let i = 0; i < 100 && applied.length < 2; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { applied, requests };
}"""


async def test_a_catch_up_asked_for_while_one_is_out_is_made_again(shop: Shop) -> None:
    """The widget's Feed alone, in the page: a catch-up out when the channel subscribes
    may have read the log before what the subscription missed; it is asked again."""
    url = f"{shop.stack.gateway}/widget/v1/realtime.js"
    page = await shop.page(url, label="feed")
    found = await page.evaluate(FEED_AGAIN, url)
    assert found == {"applied": [1, 2], "requests": 2}


async def test_the_typing_indicator_shows_and_clears(shop: Shop) -> None:
    _, _, _, a, b = await chat(shop)
    typing = a.get_by_test_id("typing")
    await expect(typing).to_be_hidden()

    # Typing signals are not kept: one sent before Ann's widget has joined the
    # conversation's channel is gone. Bob goes on typing (a signal every 2.5 s) until Ann
    # sees it, as a person typing would.
    composer = b.get_by_test_id("composer")
    await composer.press_sequentially("Let me ch")

    async def seen() -> bool:
        if await typing.is_visible():
            return True
        await composer.press_sequentially("e")
        return False

    await until(seen, "Ann to see Bob typing", LIVE / 1000)
    await expect(typing).to_have_text("Bob is typing…")
    await b.get_by_test_id("composer").fill("")  # gave up: stops typing
    await expect(typing).to_be_hidden(timeout=LIVE)

    await b.get_by_test_id("composer").press_sequentially("One more question")
    await expect(typing).to_be_visible(timeout=LIVE)
    await b.get_by_test_id("send").click()  # the message clears it at once
    await expect(message(a, "One more question")).to_have_count(1, timeout=5_000)
    await expect(typing).to_be_hidden(timeout=2_000)
    await expect(b.get_by_test_id("typing")).to_be_hidden()  # never shown to oneself


async def test_the_unread_badge_counts_up_and_clears_on_read(shop: Shop) -> None:
    _, bob, cid, a, b = await chat(shop, conversation_id=None, open_=False)
    launcher = b.get_by_test_id("launcher")
    badge = launcher.get_by_test_id("unread")
    await expect(badge).to_be_hidden()

    await send(a, "Your order has shipped")
    await expect(badge).to_have_text("1", timeout=5_000)
    await send(a, "Tracking number: 1Z999")
    await expect(badge).to_have_text("2", timeout=5_000)
    await expect(launcher).to_have_attribute("aria-label", re.compile("2 unread"))

    await launcher.click()
    row = b.get_by_test_id("conversation")
    await expect(row.get_by_test_id("unread")).to_have_text("2")
    await expect(row).to_contain_text("Tracking number: 1Z999")
    await row.click()
    await expect(message(b, "Tracking number")).to_be_visible()
    await expect(badge).to_be_hidden()

    async def read_on_server() -> bool:
        _, page = await bob.api.get("/api/widget/conversations")
        return next(c["unread_count"] for c in page["data"] if c["id"] == cid) == 0

    await eventually(read_on_server)
    # Ann sees the receipt under her latest message.
    await expect(a.get_by_test_id("receipt")).to_have_text("Seen by Bob", timeout=5_000)
    await b.get_by_role("button", name="Back to conversations").click()
    await expect(b.get_by_test_id("conversation").get_by_test_id("unread")).to_have_count(0)


async def test_a_reaction_appears_on_both_sides(shop: Shop) -> None:
    _, _, _, a, b = await chat(shop)
    await send(a, "We restock on Monday")
    target = message(b, "We restock on Monday")
    await expect(target).to_have_count(1, timeout=5_000)
    await target.hover()
    await target.get_by_test_id("more").click()
    menu = b.get_by_role("menu", name="Message actions")
    await expect(menu).to_be_visible()
    await menu.get_by_role("menuitemcheckbox", name="thumbs up").click()
    await expect(menu).to_be_hidden()

    mine = target.get_by_test_id("reaction")
    await expect(mine).to_have_text("👍1")
    await expect(mine).to_have_attribute("aria-pressed", "true")
    theirs = message(a, "We restock on Monday").get_by_test_id("reaction")
    await expect(theirs).to_have_text("👍1", timeout=5_000)
    await expect(theirs).to_have_attribute("aria-pressed", "false")

    await theirs.click()  # Ann adds hers: two, on both sides
    await expect(theirs).to_have_text("👍2")
    await expect(mine).to_have_text("👍2", timeout=5_000)
    await mine.click()  # Bob takes his back
    await expect(theirs).to_have_text("👍1", timeout=5_000)
    await expect(mine).to_have_attribute("aria-pressed", "false")


async def test_the_emoji_picker_works_by_keyboard(shop: Shop) -> None:
    _, _, _, a, b = await chat(shop)
    await send(a, "Keyboard only")
    target = message(b, "Keyboard only")
    await expect(target).to_have_count(1, timeout=5_000)
    await target.focus()  # the message itself: Enter opens its menu
    await b.keyboard.press("Enter")
    await expect(b.get_by_role("menuitemcheckbox", name="thumbs up")).to_be_focused()
    await b.keyboard.press("ArrowRight")
    await expect(b.get_by_role("menuitemcheckbox", name="red heart")).to_be_focused()
    await b.keyboard.press("Escape")
    await expect(b.get_by_role("menu")).to_be_hidden()
    await expect(target).to_be_focused()
    # The whole picker: More reactions…, then arrows through its grid.
    await b.keyboard.press("Enter")
    await b.get_by_test_id("menu-react").focus()
    await b.keyboard.press("Enter")
    picker = b.get_by_role("menu", name="Choose a reaction")
    await expect(picker.get_by_role("menuitem", name="thumbs up")).to_be_focused()
    await b.keyboard.press("ArrowRight")
    await b.keyboard.press("Enter")
    await expect(message(a, "Keyboard only").get_by_test_id("reaction")).to_have_text(
        "❤️1", timeout=5_000
    )


async def test_an_image_attachment_shows_a_preview_and_opens_in_a_lightbox(shop: Shop) -> None:
    _, _, _, a, b = await chat(shop)
    await a.get_by_test_id("file-input").set_input_files(
        files=[{"name": "jacket.png", "mimeType": "image/png", "buffer": png_bytes()}]
    )
    upload = a.get_by_test_id("upload")
    await expect(upload).to_contain_text("jacket.png")
    await expect(upload.locator(".cw-upload-state")).to_have_count(0, timeout=LIVE)
    await a.get_by_test_id("composer").fill("Here it is in blue")
    await a.get_by_test_id("send").click()

    for page in (a, b):
        sent = message(page, "Here it is in blue")
        await expect(sent).to_have_count(1, timeout=LIVE)
        image = sent.locator("img.cw-thumb-image")
        await expect(image).to_be_visible(timeout=LIVE)
        await expect(image).to_have_attribute("alt", "jacket.png")
        await expect(sent.locator("[data-state]")).to_have_count(0)
        loaded = await image.evaluate("i => i.complete && i.naturalWidth > 0")
        if not loaded:
            await image.evaluate("i => new Promise((ok, no) => { i.onload = ok; i.onerror = no; })")

    thumb = message(b, "Here it is in blue").get_by_role("button", name="Open image jacket.png")
    await thumb.click()
    lightbox = b.get_by_test_id("lightbox")
    await expect(lightbox).to_be_visible()
    await expect(lightbox.get_by_role("button", name="Close image")).to_be_focused()
    await expect(lightbox.locator("img")).to_have_attribute("alt", "jacket.png")
    await b.keyboard.press("Escape")
    await expect(lightbox).to_be_hidden()
    await expect(thumb).to_be_focused()


async def test_after_the_network_returns_every_message_sent_meanwhile_shows_once(
    shop: Shop,
) -> None:
    _, _, _, a, b = await chat(shop)
    await send(a, "before the tunnel")
    await expect(message(b, "before the tunnel")).to_have_count(1, timeout=LIVE)

    await b.context.set_offline(True)
    await expect(b.get_by_test_id("connection")).to_have_attribute("data-state", "offline")
    missed = [f"while you were away {n}" for n in range(1, 6)]
    for text in missed:
        await send(a, text)
    await expect(a.locator("[data-testid=message][data-state]")).to_have_count(0, timeout=LIVE)
    # Bob writes offline: it waits, and goes out once the network is back.
    await send(b, "sent from the tunnel")
    await expect(message(b, "sent from the tunnel")).to_have_attribute("data-state", "queued")
    for text in missed:
        await expect(message(b, text)).to_have_count(0)

    await b.context.set_offline(False)
    await live(b)
    for text in missed:
        await expect(message(b, text)).to_have_count(1, timeout=LIVE)
    await expect(message(a, "sent from the tunnel")).to_have_count(1, timeout=LIVE)
    await send(a, "welcome back")
    await expect(message(b, "welcome back")).to_have_count(1, timeout=LIVE)

    expected = ["before the tunnel", *missed, "sent from the tunnel", "welcome back"]
    for page in (a, b):
        texts = await page.get_by_test_id("message").locator(".cw-text").all_inner_texts()
        assert texts == expected, texts  # each once, in order


async def test_edit_delete_and_report(shop: Shop) -> None:
    _, _, _, a, b = await chat(shop)
    await send(a, "The jacket costs $12O")
    await expect(a.locator("[data-testid=message][data-state]")).to_have_count(0, timeout=LIVE)
    message_id = await message(a, "The jacket costs").get_attribute("data-id")
    mine = a.locator(f'[data-testid=message][data-id="{message_id}"]')  # its text will change
    await mine.hover()
    await mine.get_by_test_id("more").click()
    await a.get_by_test_id("menu-edit").click()
    editor = mine.get_by_role("textbox", name="Edit message")
    await expect(editor).to_be_focused()
    await editor.fill("The jacket costs $120")
    await editor.press("Enter")
    await expect(mine).to_contain_text("(edited)")
    theirs = message(b, "The jacket costs")
    await expect(theirs).to_contain_text("$120", timeout=LIVE)
    await expect(theirs).to_contain_text("(edited)")

    await send(a, "oops, wrong chat")
    wrong = message(a, "oops, wrong chat")
    await expect(message(b, "oops, wrong chat")).to_have_count(1, timeout=LIVE)
    await wrong.hover()
    await wrong.get_by_test_id("more").click()
    await a.get_by_test_id("menu-delete").click()
    await a.get_by_test_id("confirm-delete").click()
    for page in (a, b):
        await expect(message(page, "oops, wrong chat")).to_have_count(0, timeout=LIVE)
        await expect(message(page, "This message was deleted.")).to_have_count(1)

    await theirs.hover()
    await theirs.get_by_test_id("more").click()
    await expect(b.get_by_test_id("menu-edit")).to_have_count(0)  # not Bob's to edit
    await b.get_by_test_id("menu-report").click()
    await theirs.get_by_role("combobox").select_option("Spam")
    await theirs.get_by_test_id("send-report").click()
    await expect(theirs).to_contain_text("Reported. Thank you.")

    async def reported() -> bool:
        _, page = await shop.tenant.get("/api/v1/reports")
        return any(r["reason"] == "Spam" for r in page["data"])

    await eventually(reported)


async def test_history_loads_on_scroll_by_seq(shop: Shop) -> None:
    ann = await shop.person("Ann")
    bob = await shop.person("Bob")
    cid = await shop.conversation(ann, bob)
    texts = [f"history {n:03}" for n in range(1, 86)]
    for text in texts:
        status, body = await ann.api.post(
            f"/api/widget/conversations/{cid}/messages", {"content": text}
        )
        assert status == 201, body
    b = await shop.widget(bob, conversation_id=cid, open_=True)
    await expect(message(b, "history 085")).to_be_visible(timeout=LIVE)
    await expect(b.get_by_test_id("message")).to_have_count(50)
    scroller = b.locator(".cw-scroll")
    loading = b.get_by_role("status").filter(has_text="Loading earlier messages…")
    for _ in range(5):
        if await b.get_by_test_id("message").count() == len(texts):
            break
        await scroller.evaluate(
            "el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }"
        )
        await expect(loading).to_have_count(0)
    await expect(b.get_by_test_id("message")).to_have_count(len(texts))
    shown = await b.get_by_test_id("message").locator(".cw-text").all_inner_texts()
    assert shown == texts
    seqs = [
        int(s)
        for s in await b.get_by_test_id("message").evaluate_all(
            "els => els.map(e => e.dataset.seq)"
        )
    ]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_keyboard_users_can_open_chat_and_send(shop: Shop) -> None:
    ann = await shop.person("Ann")
    bob = await shop.person("Bob")
    await shop.conversation(ann, bob)
    b = await shop.widget(bob)
    launcher = b.get_by_test_id("launcher")
    await live(b)
    await expect(launcher).to_be_visible()
    await launcher.focus()
    await b.keyboard.press("Enter")
    await expect(launcher).to_have_attribute("aria-expanded", "true")
    row = b.get_by_test_id("conversation")
    await expect(row).to_be_focused()
    await b.keyboard.press("Enter")
    await expect(b.get_by_test_id("composer")).to_be_focused(timeout=LIVE)
    await b.keyboard.type("typed without a mouse")
    await b.keyboard.press("Enter")
    await expect(message(b, "typed without a mouse")).to_have_count(1)
    await b.keyboard.press("Escape")
    await expect(b.get_by_role("dialog")).to_be_hidden()
    await expect(launcher).to_be_focused()


async def test_the_widget_fits_a_phone(shop: Shop) -> None:
    phone = await shop.widget(await shop.person("Carol"), viewport=PHONE)
    await phone.get_by_test_id("launcher").click()
    panel = phone.get_by_role("dialog")
    box = await panel.bounding_box()
    assert box is not None
    assert (box["width"], box["height"]) == (PHONE["width"], PHONE["height"])
    overflow = await phone.evaluate("document.documentElement.scrollWidth")
    assert overflow <= PHONE["width"]
    await phone.get_by_role("button", name="Close chat").click()
    await expect(panel).to_be_hidden()


async def test_the_closed_launcher_shows_a_new_message(shop: Shop) -> None:
    """docs/screenshots/widget-launcher.png, linked from the README (the other states are
    photographed by test_widget_states.py)."""
    ann = await shop.person("Ann from Example Outfitters")
    bob = await shop.person("Bob Lee")
    cid = await shop.conversation(ann, bob)
    base = f"/api/widget/conversations/{cid}"
    await ann.api.post(base + "/messages", {"content": "Your jacket is reserved."})
    await bob.api.post(base + "/read", {})
    closed = await shop.widget(bob, label="launcher")
    await live(closed)
    badge = closed.get_by_test_id("launcher").get_by_test_id("unread")
    await expect(badge).to_be_hidden(timeout=LIVE)  # Bob has read everything
    await ann.api.post(base + "/messages", {"content": "Reserved until Friday."})
    await expect(badge).to_have_text("1", timeout=LIVE)
    await closed.screenshot(path=screenshot_path("widget-launcher.png"))

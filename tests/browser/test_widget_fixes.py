"""Issue 20: each broken or missing behaviour of the widget, tried as a visitor would.

One test per point of the issue (the numbers below); each failed against the widget
before the fix. Point 8 (axe-core) is test_widget_states.py, point 16 (the README) and
the compressed files of point 15 are test_static.py.
"""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from PIL import Image
from playwright.async_api import expect

from tests.browser.conftest import PHONE, Person, Shop, png_bytes
from tests.browser.test_widget import LIVE, eventually, live, message, send

EXPIRED = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    "<Message>Request has expired</Message></Error>"
)


async def people(shop: Shop, *names: str) -> list[Person]:
    return [await shop.person(name) for name in names]


async def post(person: Person, cid: str, text: str, **extra: Any) -> dict[str, Any]:
    status, body = await person.api.post(
        f"/api/widget/conversations/{cid}/messages", {"content": text, **extra}
    )
    assert status == 201, body
    return body


async def upload(person: Person, cid: str, name: str, body: bytes, kind: str) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", body, filename=name, content_type=kind)
    status, found = await person.api.call(
        "POST", f"/api/widget/conversations/{cid}/attachments", data=form
    )
    assert status == 201, found
    return found


async def unread(person: Person, cid: str) -> int:
    _, page = await person.api.get("/api/widget/conversations")
    return int(next(c["unread_count"] for c in page["data"] if c["id"] == cid))


def scroller(page: Any) -> Any:
    return page.locator(".cw-scroll")


async def in_view(page: Any, item: Any) -> bool:
    box, view = await item.bounding_box(), await scroller(page).bounding_box()
    assert box is not None and view is not None
    return bool(
        box["y"] >= view["y"] - 1 and box["y"] + box["height"] <= view["y"] + view["height"] + 1
    )


# -- 1. attachment URLs are fresh whenever a file is opened ------------------------------------


async def test_1_files_and_images_open_with_fresh_urls(shop: Shop) -> None:
    ann, bob = await people(shop, "Ann", "Bob")
    cid = await shop.conversation(ann, bob)
    image = await upload(ann, cid, "blue.png", png_bytes(), "image/png")
    text = await upload(ann, cid, "notes.txt", b"size M, blue\n", "text/plain")
    await post(ann, cid, "Two files", attachment_ids=[image["id"], text["id"]])
    s3 = "{0.scheme}://{0.netloc}".format(urlsplit(shop.stack.info["s3_endpoint"]))
    stale: set[str] = set()
    expired = False
    fetched: list[tuple[str, int]] = []

    async def storage(route: Any) -> None:
        if expired and route.request.url in stale:  # what S3 answers after 15 minutes
            await route.fulfill(status=403, content_type="application/xml", body=EXPIRED)
        else:
            await route.continue_()

    async def before(page: Any) -> None:
        await page.clock.install()
        await page.context.route(f"{s3}/**", storage)
        page.context.on(
            "response",
            lambda r: fetched.append((r.url, r.status)) if r.url.startswith(s3) else None,
        )

    b = await shop.widget(bob, conversation_id=cid, open_=True, before=before)
    sent = message(b, "Two files")
    thumb = sent.locator("img.cw-thumb-image")
    await expect(thumb).to_be_visible(timeout=LIVE)
    await eventually(lambda: thumb.evaluate("i => i.complete && i.naturalWidth > 0"))
    link = sent.locator("a.cw-file-link")
    await expect(link).to_contain_text("notes.txt")
    # Every URL the page holds now expires, as presigned URLs do after 15 minutes.
    shown = await b.evaluate(
        """() => [...document.querySelector('.confab-widget').shadowRoot
              .querySelectorAll('img[src], a[href]')].map(e => e.src || e.href)"""
    )
    stale.update(u for u in shown if u.startswith(s3))
    stale.update(u for u, _ in fetched)
    dates = [parse_qs(urlsplit(u).query)["X-Amz-Date"][0] for u in stale]
    signed = max(datetime.strptime(d, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) for d in dates)

    async def later() -> bool:  # a URL signed from now on differs from every stale one
        return datetime.now(UTC) > signed + timedelta(seconds=1)

    await eventually(later, timeout=5)
    expired = True
    fetched.clear()

    # A file link: opened with a URL asked for at the click (a new tab, or a download).
    await link.click()

    async def fresh_file() -> bool:
        return any(
            f"/attachments/{text['id']}" in u and u not in stale and status == 200
            for u, status in fetched
        )

    await eventually(fresh_file)

    # The image viewer: the full image from fresh URLs, never the expired ones.
    await sent.get_by_role("button", name="Open image blue.png").click()
    full = b.get_by_test_id("lightbox").locator("img")
    await expect(b.get_by_test_id("lightbox").get_by_role("status")).to_be_hidden(timeout=LIVE)
    source = await full.get_attribute("src")
    assert source and source not in stale
    assert await full.evaluate("i => i.complete && i.naturalWidth > 0")
    await b.keyboard.press("Escape")

    # Back in the tab after the URLs' lifetime: the ones on screen are renewed.
    old_thumb = await thumb.get_attribute("src")
    await b.clock.fast_forward("16:00")
    await b.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    await expect(thumb).not_to_have_attribute("src", old_thumb or "", timeout=LIVE)
    renewed = await thumb.get_attribute("src")
    assert renewed not in stale
    await eventually(lambda: thumb.evaluate("i => i.complete && i.naturalWidth > 0"))


# -- 2. a thread that fails to load says so, with Retry, and the composer waits --------------


async def test_2_a_thread_that_fails_to_load_can_be_retried(shop: Shop) -> None:
    ann, bob = await people(shop, "Ann", "Bob")
    cid = await shop.conversation(ann, bob)
    await post(ann, cid, "Hello from the shop")
    failing = True

    async def snapshot(route: Any) -> None:
        if failing:
            await route.abort("failed")
        else:
            await route.continue_()

    async def before(page: Any) -> None:
        await page.route(f"**/api/widget/conversations/{cid}", snapshot)

    b = await shop.widget(bob, conversation_id=cid, open_=True, before=before)
    problem = b.get_by_test_id("thread-failed")
    await expect(problem).to_be_visible(timeout=LIVE)
    await expect(problem).to_contain_text("Messages could not be loaded")
    composer = b.get_by_test_id("composer")
    await expect(composer).to_be_disabled()
    await expect(b.get_by_test_id("send")).to_be_disabled()
    retry = b.get_by_role("button", name="Try again")
    await expect(retry).to_be_focused()
    await expect(problem).to_be_visible()  # it stays: never "Loading messages…" forever

    failing = False
    await retry.press("Enter")
    await expect(message(b, "Hello from the shop")).to_be_visible(timeout=LIVE)
    await expect(problem).to_have_count(0)
    await expect(composer).to_be_enabled()
    await expect(composer).to_be_focused()
    await send(b, "Now it works")
    await expect(message(b, "Now it works")).not_to_have_attribute("data-state", re.compile("."))


# -- 3. links ----------------------------------------------------------------------------------


async def test_3_links_are_clickable_and_safe(shop: Shop) -> None:
    ann, bob = await people(shop, "Ann", "Bob")
    cid = await shop.conversation(ann, bob)
    text = (
        "Guide: https://example.com/size?fit=slim&c=blue, mail sales@example.com or "
        "see www.example.org. Not links: javascript:alert(1) ftp://example.com/f "
        "data:text/html,hi"
    )
    await post(ann, cid, text)
    b = await shop.widget(bob, conversation_id=cid, open_=True)
    shown = message(b, "Guide:")
    await expect(shown).to_be_visible(timeout=LIVE)
    await expect(shown.locator(".cw-text")).to_have_text(text)  # nothing lost or added
    links = shown.locator("a")
    await expect(links).to_have_count(3)
    hrefs = [await a.get_attribute("href") for a in await links.all()]
    assert hrefs == [
        "https://example.com/size?fit=slim&c=blue",
        "mailto:sales@example.com",
        "http://www.example.org/",
    ], hrefs
    assert [await a.inner_text() for a in await links.all()] == [
        "https://example.com/size?fit=slim&c=blue",
        "sales@example.com",
        "www.example.org",
    ]
    for a in await links.all():
        assert await a.get_attribute("target") == "_blank"
        assert await a.get_attribute("rel") == "noopener noreferrer nofollow"


# -- 4. honest read marks, and a "New messages" pill ------------------------------------------


async def test_4_reads_wait_until_seen_and_a_pill_shows_new_messages(shop: Shop) -> None:
    ann, bob = await people(shop, "Ann", "Bob")
    cid = await shop.conversation(ann, bob)
    for n in range(1, 31):
        await post(ann, cid, f"Line {n:02}")
    b = await shop.widget(bob, conversation_id=cid, open_=True)
    await expect(message(b, "Line 30")).to_be_visible(timeout=LIVE)
    await live(b)
    await eventually(lambda: _is(unread(bob, cid), 0))  # the latest was on screen
    await scroller(b).evaluate("el => el.scrollTo(0, 0)")
    await expect(message(b, "Line 01")).to_be_in_viewport()

    await post(ann, cid, "Are you still there?")
    pill = b.get_by_test_id("new-messages")
    await expect(pill).to_have_text("1 new message", timeout=LIVE)
    await post(ann, cid, "Hello?")
    await expect(pill).to_have_text("2 new messages", timeout=LIVE)
    assert not await in_view(b, message(b, "Hello?"))
    assert await unread(bob, cid) == 2  # not read: Bob never saw them

    await pill.click()
    await expect(pill).to_be_hidden()
    await expect(message(b, "Hello?")).to_be_in_viewport()
    await eventually(lambda: _is(unread(bob, cid), 0))


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


# -- 5. actions: one at a time, beside the bubble; long press and 44 px targets on touch -----


async def test_5_one_message_toolbar_at_a_time_beside_the_bubble(shop: Shop) -> None:
    ann, bob = await people(shop, "Ann", "Bob")
    cid = await shop.conversation(ann, bob)
    await post(ann, cid, "First question")
    await post(bob, cid, "An answer")
    b = await shop.widget(bob, conversation_id=cid, open_=True)
    first, second = message(b, "First question"), message(b, "An answer")
    await expect(second).to_be_visible(timeout=LIVE)
    await first.hover()
    await expect(first.get_by_test_id("more")).to_be_visible()
    await second.focus()  # the keyboard elsewhere, the pointer still on the first
    shown = b.locator("[data-testid=more]").filter(visible=True)
    await expect(shown).to_have_count(1)
    for item in (first, second):
        await item.hover()
        more = await item.get_by_test_id("more").bounding_box()
        for part in await item.locator(".cw-author, .cw-time").all():
            box = await part.bounding_box()
            assert more and box
            apart = (
                more["x"] + more["width"] <= box["x"]
                or box["x"] + box["width"] <= more["x"]
                or more["y"] + more["height"] <= box["y"]
                or box["y"] + box["height"] <= more["y"]
            )
            assert apart, "the toolbar covers the name or the time"


async def test_5_touch_screens_get_a_long_press_and_44px_targets(shop: Shop) -> None:
    ann, bob = await people(shop, "Ann", "Bob")
    cid = await shop.conversation(ann, bob)
    for n in range(1, 6):
        sent = await post(ann, cid, f"Message {n}")
    await bob.api.post(
        f"/api/widget/conversations/{cid}/messages/{sent['id']}/reactions", {"emoji": "👍"}
    )
    await post(bob, cid, "My reply")
    b = await shop.widget(bob, conversation_id=cid, open_=True, viewport=PHONE, touch=True)
    await expect(message(b, "My reply")).to_be_visible(timeout=LIVE)
    small = await b.evaluate(
        """() => {
          const root = document.querySelector('.confab-widget').shadowRoot;
          const out = [];
          for (const el of root.querySelectorAll('button, select, textarea, a.cw-file-link')) {
            const r = el.getBoundingClientRect();
            if (!r.width || !r.height || getComputedStyle(el).visibility === 'hidden') continue;
            if (r.width < 44 || r.height < 44) out.push(`${el.className} ${r.width}x${r.height}`);
          }
          return out;
        }"""
    )
    assert not small, f"touch targets under 44 px: {small}"
    assert (
        await b.get_by_test_id("composer").evaluate("e => getComputedStyle(e).fontSize") == "16px"
    )
    assert await b.locator("[data-testid=more]").filter(visible=True).count() == 0

    # A long press on a message opens its actions from the bottom of the screen.
    target = message(b, "Message 3").locator(".cw-bubble")
    box = await target.bounding_box()
    assert box is not None
    cdp = await b.context.new_cdp_session(b)
    point = {"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2}
    await cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [point]})
    menu = b.get_by_test_id("message-menu")
    await expect(menu).to_be_visible(timeout=5_000)  # held until it opens
    await cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    assert "cw-sheet" in (await menu.get_attribute("class") or "")
    for item in await menu.locator("[role^=menuitem]").all():
        item_box = await item.bounding_box()
        assert item_box and item_box["height"] >= 44 and item_box["width"] >= 44
    await menu.get_by_role("menuitemcheckbox", name="red heart").tap()
    await expect(message(b, "Message 3").get_by_test_id("reaction")).to_have_text("❤️1")


# -- 6. a caption added to a file-only message shows ------------------------------------------


async def test_6_a_caption_added_to_a_file_only_message_shows(shop: Shop) -> None:
    ann, bob = await people(shop, "Ann", "Bob")
    cid = await shop.conversation(ann, bob)
    a = await shop.widget(ann, conversation_id=cid, open_=True)
    b = await shop.widget(bob, conversation_id=cid, open_=True)
    await live(a)
    await a.get_by_test_id("file-input").set_input_files(
        files=[{"name": "jacket.png", "mimeType": "image/png", "buffer": png_bytes()}]
    )
    await expect(a.locator(".cw-upload-state")).to_have_count(0, timeout=LIVE)
    await a.get_by_test_id("send").click()
    mine = a.get_by_test_id("message").filter(has=a.locator("img.cw-thumb-image"))
    await expect(mine).not_to_have_attribute("data-state", re.compile("."), timeout=LIVE)
    await expect(mine.locator(".cw-text")).to_have_count(0)  # files only: no text
    await mine.hover()
    await mine.get_by_test_id("more").click()
    await a.get_by_test_id("menu-edit").click()
    editor = mine.get_by_role("textbox", name="Add a caption")
    await expect(editor).to_be_focused()
    await expect(editor).to_have_value("")
    await editor.fill("Blue, size M")
    await editor.press("Enter")
    for page in (a, b):
        shown = message(page, "Blue, size M")
        await expect(shown).to_have_count(1, timeout=LIVE)
        await expect(shown).to_contain_text("(edited)")
        await expect(shown.locator("img.cw-thumb-image")).to_have_count(1)


# -- 7. the message list is one tab stop; arrows move between messages ----------------------


# The element focused in the widget's shadow root, as a person reading a failure needs it.
FOCUSED = """e => { const a = e.getRootNode().activeElement;
  if (!a) return 'nothing';
  const label = a.getAttribute('aria-label') || a.getAttribute('data-testid') || '';
  return `${a.tagName.toLowerCase()} ${label} ${(a.textContent || '').trim().slice(0, 30)}`; }"""


async def test_7_the_message_list_is_one_tab_stop(shop: Shop) -> None:
    ann, bob = await people(shop, "Ann", "Bob")
    cid = await shop.conversation(ann, bob)
    for n in range(1, 56):
        await post(ann if n % 3 else bob, cid, f"Note {n:02} https://example.com/{n}")
    b = await shop.widget(bob, conversation_id=cid, open_=True)
    await expect(message(b, "Note 55")).to_be_visible(timeout=LIVE)
    await b.get_by_test_id("back").focus()
    composer = b.get_by_test_id("composer")
    presses = 0
    stops: list[str] = []  # what each press focused: said when there are too many
    while not await composer.evaluate("e => e.getRootNode().activeElement === e"):
        await b.keyboard.press("Tab")
        presses += 1
        stops.append(await composer.evaluate(FOCUSED))
        assert presses <= 8, f"more than 8 Tab presses from the header to the composer: {stops}"
    feed = b.get_by_role("feed", name="Messages")
    last = message(b, "Note 55")
    back = 0  # attach, the last message's "…" and link, then the message: the feed's tab stop
    while not await last.evaluate("e => e.getRootNode().activeElement === e"):
        await b.keyboard.press("Shift+Tab")
        back += 1
        assert back <= 4, "the feed is not one tab stop away"
    await b.keyboard.press("ArrowUp")
    await expect(message(b, "Note 54")).to_be_focused()
    await expect(message(b, "Note 54")).to_have_attribute("tabindex", "0")
    await expect(last).to_have_attribute("tabindex", "-1")
    await b.keyboard.press("Home")
    first = feed.locator("article").first
    await expect(first).to_be_focused()
    await b.keyboard.press("End")
    await expect(last).to_be_focused()
    await b.keyboard.press("Control+End")
    await expect(composer).to_be_focused()
    tab_stops = await b.evaluate(
        """() => [...document.querySelector('.confab-widget').shadowRoot
              .querySelectorAll('.cw-feed [tabindex], .cw-feed a[href], .cw-feed button')]
              .filter(e => e.tabIndex >= 0).length"""
    )
    assert tab_stops <= 3, tab_stops  # the current message and its own controls


# -- 9. an empty list takes the focus, and Escape closes --------------------------------------


async def test_9_an_empty_list_takes_the_focus_and_escape_closes(shop: Shop) -> None:
    (carol,) = await people(shop, "Carol")
    page = await shop.widget(carol)
    await live(page)
    launcher = page.get_by_test_id("launcher")
    await launcher.focus()
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    await expect(page.get_by_test_id("no-conversations")).to_be_visible()
    inside = await dialog.evaluate("d => d.contains(d.getRootNode().activeElement)")
    assert inside, "the focus stayed on the launcher"
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(launcher).to_be_focused()


# -- 10. sessions: plain words when one ends; refreshSession gives the widget a new token ------


async def test_10_an_ended_session_is_said_plainly(shop: Shop) -> None:
    page = await shop.widget(None, token="st_expired_or_revoked", open_=True, label="ended")
    ended = page.get_by_test_id("session-ended")
    await expect(ended).to_be_visible(timeout=LIVE)
    await expect(ended).to_contain_text("Your chat session has ended")
    text = await page.get_by_role("dialog").inner_text()
    for jargon in ("401", "token", "Invalid", "Unauthorized", "Connecting"):
        assert jargon not in text, text
    await expect(page.get_by_role("button", name="Back to conversations")).to_be_hidden()
    await expect(page.get_by_test_id("connection")).to_be_hidden()


async def test_10_refresh_session_renews_the_token_on_401(shop: Shop) -> None:
    ann, bob = await people(shop, "Ann", "Bob")
    cid = await shop.conversation(ann, bob)
    await post(ann, cid, "Welcome back")
    issued: list[str] = []

    async def next_session() -> str:
        status, session = await shop.tenant.post("/api/v1/sessions", {"user_id": bob.id})
        assert status == 201, session
        issued.append(session["token"])
        return str(session["token"])

    async def before(page: Any) -> None:
        await page.expose_function("nextSession", next_session)

    mount = (
        "ConfabWidget.mount({sessionToken: 'st_expired_long_ago', open: true, "
        f"conversationId: '{cid}', refreshSession: () => window.nextSession()}})"
    )
    b = await shop.widget(None, mount=mount, before=before, label="refresh")
    await expect(message(b, "Welcome back")).to_be_visible(timeout=LIVE)
    await live(b)
    assert len(issued) == 1
    # The tenant revokes that session: the next call (and the socket) get a new one.
    status, _ = await shop.tenant.call("DELETE", f"/api/v1/sessions/{issued[0]}")
    assert status == 204
    await send(b, "Still here")
    await expect(message(b, "Still here")).not_to_have_attribute(
        "data-state", re.compile("."), timeout=LIVE
    )
    assert len(issued) >= 2
    await live(b)
    await post(ann, cid, "Live again")
    await expect(message(b, "Live again")).to_be_visible(timeout=LIVE)


# -- 11. a refused upload says why, in words; the last message stays in view ------------------


async def test_11_a_refused_upload_says_why_and_the_last_message_stays_in_view(
    shop: Shop,
) -> None:
    ann, bob = await people(shop, "Ann", "Bob")
    cid = await shop.conversation(ann, bob)
    for n in range(1, 21):
        await post(ann, cid, f"Update {n:02}")
    b = await shop.widget(bob, conversation_id=cid, open_=True)
    last = message(b, "Update 20")
    await expect(last).to_be_visible(timeout=LIVE)
    program = b"MZ\x90\x00" + bytes(2000)  # an executable, named as a picture
    await b.get_by_test_id("file-input").set_input_files(
        files=[{"name": "holiday.png", "mimeType": "image/png", "buffer": program}]
    )
    chip = b.get_by_test_id("upload")
    state = chip.locator(".cw-upload-state")
    await expect(state).to_have_text("This kind of file cannot be sent.", timeout=LIVE)
    assert await chip.locator("img").count() == 0  # a file icon, not a broken picture
    assert "/" not in await state.inner_text()  # no MIME type
    await expect(last).to_be_in_viewport(ratio=1)


# -- 12. history shows progress; the length limit is explained; drop and paste files ----------


async def test_12_history_progress_and_the_length_limit(shop: Shop) -> None:
    ann, bob = await people(shop, "Ann", "Bob")
    cid = await shop.conversation(ann, bob)
    for n in range(1, 61):
        await post(ann, cid, f"Old {n:02}")
    release = asyncio.Event()

    async def older(route: Any) -> None:
        await release.wait()
        await route.continue_()

    async def before(page: Any) -> None:
        await page.route(re.compile(rf".*/conversations/{cid}/messages\?.*before=.*"), older)

    b = await shop.widget(bob, conversation_id=cid, open_=True, before=before)
    await expect(message(b, "Old 60")).to_be_visible(timeout=LIVE)
    await scroller(b).evaluate("el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
    progress = b.get_by_test_id("history")
    await expect(progress).to_have_text("Loading earlier messages…")
    box = await progress.bounding_box()
    assert box and box["width"] > 100 and box["height"] >= 20
    release.set()
    await expect(b.get_by_test_id("message")).to_have_count(60, timeout=LIVE)

    composer = b.get_by_test_id("composer")
    await composer.fill("x" * 10_050)
    assert await composer.evaluate("e => e.value.length") == 10_050  # not cut
    note = b.get_by_test_id("note")
    await expect(note).to_contain_text("50 characters too many")
    await expect(b.get_by_test_id("send")).to_be_disabled()
    await composer.press("Enter")
    await expect(b.locator("[data-testid=message][data-state]")).to_have_count(0)
    await composer.fill("y" * 9_700)
    await expect(note).to_have_text("300 characters left")
    await expect(b.get_by_test_id("send")).to_be_enabled()


async def test_12_files_can_be_dropped_or_pasted(shop: Shop) -> None:
    ann, bob = await people(shop, "Ann", "Bob")
    cid = await shop.conversation(ann, bob)
    b = await shop.widget(bob, conversation_id=cid, open_=True)
    await live(b)
    # Files are taken only by an open conversation's enabled composer (``canAttach``).
    await expect(b.get_by_test_id("composer")).to_be_enabled()
    picture = list(png_bytes((60, 40)))
    await b.evaluate(
        """([bytes]) => {
          const root = document.querySelector('.confab-widget').shadowRoot;
          const file = (name) => new File([new Uint8Array(bytes)], name, { type: 'image/png' });
          const pasted = new DataTransfer();
          pasted.items.add(file('pasted.png'));
          const how = { bubbles: true, cancelable: true };
          root.querySelector('[data-testid=composer]').dispatchEvent(
            new ClipboardEvent('paste', { clipboardData: pasted, ...how }));
          const dropped = new DataTransfer();
          dropped.items.add(file('dropped.png'));
          const panel = root.querySelector('.cw-panel');
          for (const type of ['dragenter', 'dragover', 'drop']) {
            panel.dispatchEvent(new DragEvent(type, { dataTransfer: dropped, ...how }));
          }
        }""",
        [picture],
    )
    chips = b.get_by_test_id("upload")
    await expect(chips).to_have_count(2)
    await expect(chips.nth(0)).to_contain_text("pasted.png")
    await expect(chips.nth(1)).to_contain_text("dropped.png")
    await expect(b.locator(".cw-upload-state")).to_have_count(0, timeout=LIVE)
    await b.get_by_test_id("send").click()
    sent = b.get_by_test_id("message").filter(has=b.locator("img.cw-thumb-image"))
    await expect(sent.locator("img.cw-thumb-image")).to_have_count(2, timeout=LIVE)


# -- 13. emoji in colour ------------------------------------------------------------------------


async def test_13_the_picker_draws_emoji_in_colour(shop: Shop) -> None:
    ann, bob = await people(shop, "Ann", "Bob")
    cid = await shop.conversation(ann, bob)
    await post(ann, cid, "Pick one")
    b = await shop.widget(bob, conversation_id=cid, open_=True)
    target = message(b, "Pick one")
    await expect(target).to_be_visible(timeout=LIVE)
    await target.hover()
    await target.get_by_test_id("more").click()
    await b.get_by_test_id("menu-react").click()
    picker = b.get_by_test_id("emoji-picker")
    await expect(picker).to_be_visible()
    shot = Image.open(io.BytesIO(await picker.screenshot())).convert("RGB")
    origin = await picker.bounding_box()
    assert origin is not None
    grey = []
    for item in await picker.get_by_role("menuitem").all():
        if await item.get_attribute("aria-label") == "eyes":
            continue  # white and black in colour fonts too: nothing to tell them apart
        box = await item.bounding_box()
        assert box is not None
        left, top = box["x"] - origin["x"], box["y"] - origin["y"]
        cell = shot.crop((int(left), int(top), int(left + box["width"]), int(top + box["height"])))
        # A colour glyph has saturated pixels; a black-and-white fallback has none.
        data = cell.tobytes()
        pixels = zip(data[0::3], data[1::3], data[2::3], strict=True)
        vivid = sum(1 for p in pixels if max(p) - min(p) > 80)
        if vivid < 20:
            grey.append(await item.get_attribute("aria-label"))
    assert not grey, f"drawn without colour: {grey}"


# -- 14. groups, day separators, avatars, a welcome, the count in the page title -------------


async def test_14_groups_days_avatars_welcome_and_the_title(shop: Shop) -> None:
    ann, bob, carol = await people(shop, "Ann Smith", "Bob", "Carol")
    cid = await shop.conversation(ann, bob)
    await shop.conversation(carol, bob)  # nothing said yet
    for text in ("One", "Two", "Three"):
        await post(ann, cid, f"Ann says {text}")

    async def tomorrow(page: Any) -> None:  # the visitor reads it the next day
        await page.clock.install(time=datetime.now(UTC) + timedelta(days=1))

    b = await shop.widget(bob, attributes={"unread-in-title": "true"}, before=tomorrow)
    await live(b)
    await expect(b.get_by_test_id("launcher").get_by_test_id("unread")).to_have_text("3")
    await expect(b).to_have_title("(3) Example Outfitters")
    await post(ann, cid, "Ann says Four")
    await expect(b).to_have_title("(4) Example Outfitters", timeout=LIVE)

    await b.get_by_test_id("launcher").click()
    await b.get_by_test_id("conversation").filter(has_text="Ann Smith").click()
    await expect(message(b, "Ann says Four")).to_be_visible(timeout=LIVE)
    said = b.get_by_test_id("message")
    await expect(said.locator(".cw-day")).to_have_count(1)
    await expect(said.locator(".cw-day")).to_have_text("Yesterday")
    await expect(said.locator(".cw-author")).to_have_count(1)  # one group: one name
    await expect(said.locator(".cw-avatar")).to_have_text("AS")
    await expect(b).to_have_title("Example Outfitters", timeout=LIVE)  # read

    await b.get_by_test_id("back").click()
    await b.get_by_test_id("conversation").filter(has_text="Carol").click()
    await expect(b.get_by_test_id("welcome")).to_contain_text("Say hello")


# -- 15. the conversation list is fetched once at start -------------------------------------


async def test_15_the_conversation_list_is_fetched_once(shop: Shop) -> None:
    ann, bob = await people(shop, "Ann", "Bob")
    for _ in range(3):
        await shop.conversation(ann, bob, kind="group", title=f"Order {uuid.uuid4().hex[:4]}")
    lists: list[str] = []

    async def before(page: Any) -> None:
        await page.clock.install()
        page.on(
            "request",
            lambda r: (
                lists.append(r.url) if urlsplit(r.url).path == "/api/widget/conversations" else None
            ),
        )

    b = await shop.widget(bob, before=before)
    await live(b)
    await b.get_by_test_id("launcher").click()
    await expect(b.get_by_test_id("conversation")).to_have_count(3)
    await b.clock.run_for(5_000)  # any refresh put off for later has run now
    assert len(lists) == 1, lists
